"""The SMTP shell hands replies to pipelined commands to the transport in bounded pieces and waits for the
client (``drain``) between them, instead of producing all the replies one read of commands asks for."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from surat.config import parse_config
from surat.delivery.dkim import SigningKeys
from surat.net.connection import OUTPUT_HIGH_WATER, TLSInfo
from surat.smtpd.service import Role, SMTPService
from surat.store.keyfiles import FileKeyStore


class FloodConnection:
    """A client that sent one read's worth of pipelined EHLOs and reads the replies only at drain()."""

    peer_host = "192.0.2.1"
    tls: TLSInfo | None = None

    def __init__(self, flood: bytes) -> None:
        self.flood = flood
        self.unread = 0  # octets written since the client last read
        self.most_unread = 0
        self.written = b""

    async def read(self, timeout: float) -> bytes:
        data, self.flood = self.flood, b""
        return data  # then b"": the client hangs up

    def write(self, data: bytes) -> None:
        self.written += data
        self.unread += len(data)
        self.most_unread = max(self.most_unread, self.unread)

    async def drain(self) -> None:
        self.unread = 0


async def test_pipelined_ehlo_flood_is_written_in_bounded_pieces(tmp_path: Path) -> None:
    config = parse_config(
        {"hostname": "mail.example.test", "limits": {"greet_pause": 0, "mail_auth": False}}, base_dir=tmp_path
    )
    store: Any = None  # EHLO touches no store
    service = SMTPService(config, store, None, signing_keys=SigningKeys(FileKeyStore(tmp_path)))
    commands = 65536 // len(b"EHLO client.example\r\n")  # one read's worth: ~3 000 commands
    conn = FloodConnection(b"EHLO client.example\r\n" * commands)
    await service.handle(conn, Role.MX)  # type: ignore[arg-type]
    # Every EHLO was answered ...
    assert conn.written.count(b"250 ") == commands
    # ... but never more than the high-water mark (and one reply) waited for the client: the old
    # shell wrote the ~600 KB of replies to this one read at once.
    assert conn.most_unread < OUTPUT_HIGH_WATER + 1024
