"""A small authoritative DNS server for integration tests: UDP on 127.0.0.1, answers from a dict,
in a thread of its own (so any event loop, or none, can query it). dnspython builds the answers."""

from __future__ import annotations

import socket
import threading

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset


class DNSServer:
    """records: {(name with trailing dot, "MX"|"A"|"TXT"|"TLSA"...): [rdata text, ...]}; unknown names: NXDOMAIN."""

    def __init__(self, records: dict[tuple[str, str], list[str]]) -> None:
        self.records = {(name.lower(), rdtype): values for (name, rdtype), values in records.items()}
        self.queries: list[tuple[str, str]] = []
        # Answer as a validating resolver would for a signed zone: the AD bit set (DANE tests).
        self.authentic = False
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.settimeout(0.2)
        self.port: int = self._sock.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="test-dns", daemon=True)
        self._thread.start()

    def _answer(self, wire: bytes) -> bytes:
        query = dns.message.from_wire(wire)
        question = query.question[0]
        name = question.name.to_text().lower()
        rdtype = dns.rdatatype.to_text(question.rdtype)
        self.queries.append((name, rdtype))
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        if self.authentic:
            response.flags |= dns.flags.AD
        values = self.records.get((name, rdtype))
        if values:
            response.answer.append(dns.rrset.from_text(name, 60, "IN", rdtype, *values))
        elif not any(known == name for known, _ in self.records):
            response.set_rcode(dns.rcode.NXDOMAIN)
        return response.to_wire()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                wire, peer = self._sock.recvfrom(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            self._sock.sendto(self._answer(wire), peer)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self._sock.close()
