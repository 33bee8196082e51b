"""Pebble, the ACME test CA from the Let's Encrypt project (Debian's `pebble` package), on loopback
for the ACME tests: its own HTTPS certificate (from a throwaway CA the client is told to trust, as
[acme] ca_file), HTTP-01 validation against our http listener's port, and host names resolved by
the tests' DNS server (tests/integration/dns_server.py). Skipped without pebble, a failure under
CI=true (.ci/run installs it).
"""

from __future__ import annotations

import contextlib
import json
import os
import ssl
import subprocess
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from conftest import free_port, require_tool, wait_listening
from dns_server import DNSServer

from surat.certs import write_dev_certificates


@dataclass(frozen=True, slots=True)
class Pebble:
    directory: str  # the ACME directory URL, for [acme] directory
    ca_file: Path  # trusts Pebble's HTTPS certificate, for [acme] ca_file
    management: str  # https://127.0.0.1:PORT: the roots and intermediates Pebble issues under
    dns: DNSServer
    log: Path

    def get(self, path: str) -> bytes:
        """A GET on Pebble's management interface."""
        context = ssl.create_default_context(cafile=str(self.ca_file))
        with urllib.request.urlopen(self.management + path, context=context, timeout=10) as answer:
            return bytes(answer.read())

    def root_pem(self) -> bytes:
        """The root that issued certificates chain to (random per Pebble run)."""
        return self.get("/roots/0")


@contextlib.contextmanager
def pebble(
    tmp_path: Path, http_port: int, hostnames: list[str], *, validity: int | None = None
) -> Iterator[Pebble]:
    """A running Pebble validating HTTP-01 on 127.0.0.1:`http_port`, `hostnames` resolving to
    127.0.0.1; `validity`: seconds its certificates last (default Pebble's 5 years)."""
    binary = require_tool("pebble")
    root = tmp_path / "pebble"
    root.mkdir()
    tls = write_dev_certificates(root, ["localhost", "127.0.0.1"])
    assert tls.ca is not None
    port, management_port = free_port(), free_port()
    settings: dict[str, object] = {
        "listenAddress": f"127.0.0.1:{port}",
        "managementListenAddress": f"127.0.0.1:{management_port}",
        "certificate": str(tls.cert),
        "privateKey": str(tls.key),
        "httpPort": http_port,
        "tlsPort": free_port(),  # TLS-ALPN-01: unused, nothing listens there
        "ocspResponderURL": "",
        "externalAccountBindingRequired": False,
    }
    if validity is not None:
        settings["certificateValidityPeriod"] = validity
    config = root / "pebble-config.json"
    config.write_text(json.dumps({"pebble": settings}))
    dns = DNSServer({(f"{name}.", "A"): ["127.0.0.1"] for name in hostnames})
    environment = {
        **os.environ,
        "PEBBLE_VA_NOSLEEP": "1",  # validate at once, not after a random pause
        "PEBBLE_VA_ALWAYS_VALID": "0",  # really fetch the challenge answer from our listener
        "PEBBLE_WFE_NONCEREJECT": "0",  # no random badNonce (the library retries them, but slower)
        "PEBBLE_AUTHZREUSE": "0",  # every order validates again, renewals included
    }
    log = root / "pebble.log"
    with log.open("ab") as output:
        process = subprocess.Popen(
            [binary, "-config", str(config), "-dnsserver", f"127.0.0.1:{dns.port}"],
            env=environment,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_listening(port, process, config, log)
        yield Pebble(
            f"https://127.0.0.1:{port}/dir", tls.ca, f"https://127.0.0.1:{management_port}", dns, log
        )
    finally:
        process.terminate()
        process.wait(10)
        dns.close()
