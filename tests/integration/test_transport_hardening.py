"""Transport hardening (issue 11): STARTTLS injection, COMPRESS, deflate, write backpressure, deadlines.

Each test sends the bytes of the security review's probe to the real server over a socket and asserts
the fixed behaviour.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import PASSWORD, USER, RunningServer, read_line
from test_abuse import connect, start, tls

from surat.config import HostPort
from surat.imapd.session import IMAPService
from surat.net.listener import Handler, Listeners, ListenerSpec
from surat.pop3d.service import POP3Service


@dataclass(frozen=True)
class Upgrade:
    """One protocol's STARTTLS dialogue, for the injection tests."""

    role: str
    hello: bytes  # sent (and its reply read) before the upgrade; b"" for none
    starttls: bytes
    ready: bytes  # how the reply that starts the handshake begins
    injected: bytes  # the plaintext command smuggled after the upgrade command
    probe: bytes  # sent over TLS; the first reply must be its own
    probe_reply: bytes


UPGRADES = [
    Upgrade(
        "smtp", b"EHLO client.example\r\n", b"STARTTLS\r\n", b"220 ", b"XINJECT\r\n", b"EHLO x\r\n", b"250-"
    ),
    Upgrade("imap", b"", b"a STARTTLS\r\n", b"a OK", b"x XINJECT\r\n", b"e CAPABILITY\r\n", b"* CAPABILITY"),
    Upgrade("pop3", b"", b"STLS\r\n", b"+OK", b"XINJECT\r\n", b"CAPA\r\n", b"+OK"),
]


def read_reply(sock: socket.socket) -> bytes:
    """An SMTP reply (all its lines) or one IMAP/POP3 line; reads nothing beyond it."""
    data = read_line(sock)
    while data[:3].isdigit() and data.splitlines()[-1][3:4] == b"-":
        data += read_line(sock)
    return data


def begin_upgrade(server: RunningServer, upgrade: Upgrade) -> socket.socket:
    sock = connect(server, upgrade.role)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    read_line(sock)  # the greeting
    if upgrade.hello:
        sock.sendall(upgrade.hello)
        assert read_reply(sock).startswith(b"250-")
    return sock


def probe_over_tls(server: RunningServer, sock: socket.socket, upgrade: Upgrade) -> bytes | None:
    """The first line the server sends over TLS after the probe command; None if the handshake or the
    connection failed (plaintext sent during the handshake ends it: that is the fix working too)."""
    try:
        secure = tls(server).wrap_socket(sock, server_hostname="mail.example.test")
    except (ssl.SSLError, OSError):
        return None
    try:
        secure.sendall(upgrade.probe)
        line = read_line(secure)
        return line or None
    except (ssl.SSLError, OSError):
        return None
    finally:
        secure.close()


@pytest.mark.parametrize("upgrade", UPGRADES, ids=[u.role for u in UPGRADES])
@pytest.mark.parametrize("variant", ["one_packet", "split_command", "split_after_crlf"])
def test_plaintext_pipelined_after_starttls_is_never_executed(
    server: RunningServer, upgrade: Upgrade, variant: str
) -> None:
    sock = begin_upgrade(server, upgrade)
    payload = upgrade.starttls + upgrade.injected
    # RFC 3207 §4.2, RFC 9051 §6.2.1, RFC 2595 §4: the server discards what follows the command.
    cut = {
        "one_packet": len(payload),
        "split_command": len(upgrade.starttls) - 3,  # the STARTTLS line itself arrives in two pieces
        "split_after_crlf": len(upgrade.starttls) + 2,  # the injected command in two pieces
    }[variant]
    sock.sendall(payload[:cut])
    time.sleep(0.02)
    sock.sendall(payload[cut:])
    assert read_reply(sock).startswith(upgrade.ready)
    first = probe_over_tls(server, sock, upgrade)
    if variant == "split_after_crlf":
        # The server answered as soon as the STARTTLS line was complete; the rest of the injected command
        # came later and went to the TLS layer as if it were a TLS record: the handshake fails.
        assert first is None, first
    else:
        # The injected bytes came with the command: read in plaintext and dropped, so the handshake works
        # and the probe's reply comes first.
        assert first is not None and first.startswith(upgrade.probe_reply), first


# Bound on the racy variant: the old code ran injected bytes 1 time in 200 (they had to land in one
# event-loop turn); 200 rounds per protocol (two timings, alternating) take about 3 s each; the deterministic form of
# this race is tests/unit/test_connection_starttls.py.
RACE_ROUNDS = 200


@pytest.mark.parametrize("upgrade", UPGRADES, ids=[u.role for u in UPGRADES])
def test_plaintext_arriving_just_before_the_handshake_is_never_executed(
    server: RunningServer, upgrade: Upgrade
) -> None:
    for round_ in range(RACE_ROUNDS):
        sock = begin_upgrade(server, upgrade)
        try:
            sock.sendall(upgrade.starttls)
            if round_ % 2:
                # Bytes on their way while the server answers: sent before the reply is read.
                time.sleep((round_ % 7) * 0.00005)
                sock.sendall(upgrade.injected)
                assert read_reply(sock).startswith(upgrade.ready)
            else:
                # Bytes sent the moment the reply arrives, while the server starts the handshake.
                assert read_reply(sock).startswith(upgrade.ready)
                sock.sendall(upgrade.injected)
            first = probe_over_tls(server, sock, upgrade)
        finally:
            sock.close()
        # None: the injected bytes reached the TLS layer and failed the handshake (nothing ran).
        assert first is None or first.startswith(upgrade.probe_reply), (round_, first)


# ------------------------------------------------------------------------------------------- IMAP COMPRESS


def test_compress_before_login_is_refused_and_starttls_carries_nothing_over(server: RunningServer) -> None:
    # The review's probe: COMPRESS, compressed commands, STARTTLS; they were answered inside TLS.
    sock = connect(server, "imap")
    read_line(sock)
    sock.sendall(b"a COMPRESS DEFLATE\r\n")
    # RFC 4978 §5: a command-auth, valid only in the authenticated or selected state.
    assert read_line(sock) == b"a BAD COMPRESS is not allowed in this state\r\n"
    sock.sendall(b"b STARTTLS\r\n")
    assert read_line(sock).startswith(b"b OK")
    secure = tls(server).wrap_socket(sock, server_hostname="mail.example.test")
    secure.sendall(b"e CAPABILITY\r\n")
    received = read_line(secure)
    while b"e OK" not in received:
        received += read_line(secure)
    # Nothing but the answer to the command sent over TLS.
    assert received.startswith(b"* CAPABILITY ") and received.count(b"\r\n") == 2, received
    secure.close()


def imaps_logged_in(server: RunningServer) -> ssl.SSLSocket:
    sock = tls(server).wrap_socket(connect(server, "imaps"), server_hostname="mail.example.test")
    read_line(sock)
    sock.sendall(f'l LOGIN {USER} "{PASSWORD}"\r\n'.encode())
    while not (line := read_line(sock)).startswith(b"l "):
        assert line
    assert line.startswith(b"l OK")
    return sock


EMPTY_STORED_BLOCK = b"\x00\x00\x00\xff\xff"  # RFC 1951 §3.2.4: BFINAL=0, BTYPE=00, LEN=0, NLEN=0xffff


def test_ten_thousand_empty_deflate_blocks_then_a_command(server: RunningServer) -> None:
    sock = imaps_logged_in(server)
    sock.sendall(b"c COMPRESS DEFLATE\r\n")
    assert read_line(sock).startswith(b"c OK")
    # One block per write (one TLS record each), so the server reads many of them on their own and
    # each read inflates to nothing.
    for _ in range(10_000):
        sock.sendall(EMPTY_STORED_BLOCK)
    compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
    sock.sendall(
        compressor.compress(b"n NOOP\r\nz COMPRESS DEFLATE\r\n") + compressor.flush(zlib.Z_SYNC_FLUSH)
    )
    inflate = zlib.decompressobj(-15)
    received = b""
    while b"z BAD" not in received:
        chunk = sock.recv(65536)
        assert chunk, received
        received += inflate.decompress(chunk)
    # RFC 4978 §3: BAD for a second COMPRESS.
    assert received == b"n OK NOOP completed\r\nz BAD COMPRESS is already active\r\n"
    with contextlib.suppress(OSError):
        sock.close()


# ------------------------------------------------------------------------------------------- deadlines


def drip_or_repeat(sock: socket.socket, payload: bytes, interval: float, limit: float) -> tuple[float, bytes]:
    """Send ``payload`` every ``interval`` seconds until the server closes the connection (or ``limit``
    seconds pass); returns when it closed (seconds after the first send) and everything it sent."""
    started = time.monotonic()
    received = b""
    sock.settimeout(interval)
    while time.monotonic() - started < limit:
        with contextlib.suppress(OSError):
            sock.sendall(payload)
        try:
            while chunk := sock.recv(65536):
                received += chunk
            return time.monotonic() - started, received  # closed
        except TimeoutError:
            continue
        except OSError:
            return time.monotonic() - started, received
    raise AssertionError(f"the server kept the session open for {limit} s: {received[-300:]!r}")


def serve(server: RunningServer, role: str, handler: Handler) -> tuple[Listeners, int]:
    """Another listener of the running server's store, for a service built with short timers."""
    listeners = Listeners()
    server.call(
        listeners.start(ListenerSpec(role=role, addresses=(HostPort("127.0.0.1", 0),), handler=handler))
    )
    return listeners, listeners.bound(role)[0][1]


def test_smtp_slow_drip_line_ends_at_the_idle_timeout(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    running = start(tmp_path, tmp_path_factory, smtp_idle_timeout=1)
    try:
        sock = connect(running, "smtp")
        assert read_line(sock).startswith(b"220 ")
        # One octet every 0.25 s, never a whole line: each octet used to restart the 1 s timer.
        elapsed, rest = drip_or_repeat(sock, b"N", 0.25, limit=6)
        assert rest == b"421 4.4.2 Idle timeout, closing connection\r\n"
        assert 0.9 <= elapsed < 2.5, elapsed
        sock.close()
    finally:
        running.stop()


@pytest.mark.parametrize("role", ["pop3", "imap"])
def test_pop3_and_imap_slow_drip_line_ends_at_the_idle_timeout(server: RunningServer, role: str) -> None:
    tls = server.server.tls
    service: POP3Service | IMAPService = (
        POP3Service(server.config, server.store, tls, idle_timeout=1.0)
        if role == "pop3"
        else IMAPService(server.config, server.store, tls, autologout=1.0)
    )
    listeners, port = serve(server, role, service.handler(role))
    try:
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        read_line(sock)
        elapsed, rest = drip_or_repeat(sock, b"C", 0.25, limit=6)
        # RFC 1939 §3: POP3 closes without a word; IMAP says BYE (RFC 9051 §7.1.5).
        assert rest == (b"" if role == "pop3" else b"* BYE autologout: idle for too long\r\n")
        assert 0.9 <= elapsed < 2.5, elapsed
        sock.close()
    finally:
        server.call(listeners.stop())


SESSION_ENDS = [
    ("smtp", b"NOOP\r\n", b"421 4.4.2 Session time limit reached, closing connection\r\n"),
    ("pop3", b"CAPA\r\n", b"-ERR [SYS/TEMP] session time limit reached\r\n"),
    ("imap", b"a NOOP\r\n", b"* BYE session time limit reached\r\n"),
]


def test_busy_sessions_end_at_their_deadline(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    running = start(
        tmp_path,
        tmp_path_factory,
        smtp_session_deadline=1.5,
        pop3_session_deadline=1.5,
        imap_session_deadline=1.5,
    )
    try:
        for role, command, farewell in SESSION_ENDS:
            sock = connect(running, role)
            read_line(sock)
            # A complete command every 0.2 s: never idle, and still bounded.
            elapsed, rest = drip_or_repeat(sock, command, 0.2, limit=8)
            assert rest.endswith(farewell), (role, rest[-200:])
            assert 1.3 <= elapsed < 3, (role, elapsed)
            sock.close()
    finally:
        running.stop()


def flood_until_closed(server: RunningServer, role: str, commands: bytes) -> bytes:
    """Read the greeting, send ``commands`` at once, and return all the server sent until it closed."""
    with connect(server, role) as sock:
        read_line(sock)
        sock.sendall(commands)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
        return received


def test_smtp_junk_command_flood_is_cut_off(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    running = start(tmp_path, tmp_path_factory, junk_commands=5, bad_commands=3)
    try:
        received = flood_until_closed(running, "smtp", b"NOOP\r\n" * 50)
        # Five free, two more counted, then the budget is spent (Postfix's smtpd_junk_command_limit).
        assert received == b"250 2.0.0 OK\r\n" * 7 + b"421 4.7.0 Too many errors, closing connection\r\n"
    finally:
        running.stop()


def test_imap_noop_flood_runs_out_of_budget(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    running = start(tmp_path, tmp_path_factory, junk_commands=5, bad_commands=3)
    try:
        received = flood_until_closed(running, "imap", b"a NOOP\r\n" * 50)
        # The burst of five, then BAD for each one past the budget, and three BADs in a row end it.
        assert received == (
            b"a OK NOOP completed\r\n" * 5
            + b"a BAD too many NOOP commands, slow down\r\n" * 3
            + b"* BYE too many errors\r\n"
        )
        # A poller is not cut off: seven NOOPs half a second apart stay within five plus the refill.
        sock = connect(running, "imap")
        read_line(sock)
        for _ in range(7):
            sock.sendall(b"p NOOP\r\n")
            assert read_line(sock) == b"p OK NOOP completed\r\n"
            time.sleep(0.5)
        sock.close()
        # Nor is a busy client polling between its work: a command that does work refills the budget
        # (bench/imap_load.py --shared mixes NOOPs into its load and was refused before).
        sock = imaps_logged_in(running)
        for _ in range(4):
            sock.sendall(b"p NOOP\r\n" * 4 + b'p LIST "" ""\r\n')
            expected = (
                b"p OK NOOP completed\r\n" * 4 + b'* LIST (\\Noselect) "/" ""\r\np OK LIST completed\r\n'
            )
            received = b""
            while len(received) < len(expected) and (chunk := sock.recv(65536)):
                received += chunk
            assert received == expected
        sock.close()
    finally:
        running.stop()
