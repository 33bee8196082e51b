"""A dict-backed `Resolver` for unit tests of the relay and of mail authentication.

Records are keyed by (name, type) with type one of "MX", "A", "AAAA", "TXT", "PTR", "CNAME":

    FakeResolver({
        ("example.com", "MX"): [MXRecord(10, "mx.example.com")],
        ("mx.example.com", "A"): ["192.0.2.1"],
        ("www.example.com", "CNAME"): "example.com",
        ("broken.example", "MX"): DNSErrorKind.TEMPORARY,   # this lookup raises
    })

As in the DNS, a name that has no record of any type does not exist (NXDOMAIN), a name with records
of other types answers [] (NODATA), and a CNAME is followed for every type. PTR records are keyed
by the address itself ("192.0.2.1"), not by its in-addr.arpa name.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from surat.dns.base import DNSError, DNSErrorKind, MXRecord, TLSARecord

FakeValue = Sequence[MXRecord] | Sequence[TLSARecord] | Sequence[str] | str | DNSErrorKind

_TYPES = frozenset({"MX", "A", "AAAA", "TXT", "PTR", "CNAME", "TLSA"})


class FakeResolver:
    def __init__(
        self, records: Mapping[tuple[str, str], FakeValue] | None = None, *, authentic: bool = False
    ) -> None:
        """`authentic`: what `secure_mx` and `tlsa` say of every answer (the AD bit)."""
        self.authentic = authentic
        self._records: dict[tuple[str, str], FakeValue] = {}
        self.queries: list[tuple[str, str]] = []  # every lookup made, in order: (name, type)
        for (name, rtype), value in (records or {}).items():
            self.set(name, rtype, value)

    def set(self, name: str, rtype: str, value: FakeValue) -> None:
        rtype = rtype.upper()
        if rtype not in _TYPES:
            raise ValueError(f"unknown record type {rtype}")
        if rtype == "CNAME" and not isinstance(value, (str, DNSErrorKind)):
            raise ValueError("a CNAME value is one target name")
        self._records[(_key(name), rtype)] = value

    async def mx(self, name: str) -> list[MXRecord]:
        values = self._lookup(name, "MX")
        records = [v for v in values if isinstance(v, MXRecord)]
        if len(records) != len(values):
            raise TypeError(f"MX records for {name} must be MXRecord values")
        # The Resolver contract: exchanges lower-case without the final dot ("" for a null MX).
        normalised = [MXRecord(r.preference, _key(r.exchange)) for r in records]
        return sorted(normalised, key=lambda r: r.preference)

    async def secure_mx(self, name: str) -> tuple[list[MXRecord], bool]:
        try:
            return await self.mx(name), self.authentic
        except DNSError as exc:
            if exc.kind is DNSErrorKind.NXDOMAIN:
                return [], self.authentic
            raise

    async def tlsa(self, name: str) -> tuple[list[TLSARecord], bool]:
        try:
            values = self._lookup(name, "TLSA")
        except DNSError as exc:
            if exc.kind is DNSErrorKind.NXDOMAIN:
                return [], self.authentic
            raise
        records = [v for v in values if isinstance(v, TLSARecord)]
        if len(records) != len(values):
            raise TypeError(f"TLSA records for {name} must be TLSARecord values")
        return records, self.authentic

    async def a(self, name: str) -> list[str]:
        return self._strings(name, "A")

    async def aaaa(self, name: str) -> list[str]:
        return self._strings(name, "AAAA")

    async def txt(self, name: str) -> list[str]:
        return self._strings(name, "TXT")

    async def ptr(self, address: str) -> list[str]:
        return self._strings(address, "PTR")

    def _strings(self, name: str, rtype: str) -> list[str]:
        values = self._lookup(name, rtype)
        strings = [v for v in values if isinstance(v, str)]
        if len(strings) != len(values):
            raise TypeError(f"{rtype} records for {name} must be strings")
        return strings

    def _lookup(self, name: str, rtype: str) -> list[MXRecord | TLSARecord | str]:
        self.queries.append((_key(name), rtype))
        current = _key(name)
        for _ in range(8):
            value = self._records.get((current, rtype))
            if value is None:
                target = self._records.get((current, "CNAME"))
                if isinstance(target, str):
                    current = _key(target)
                    continue
                value = target
            if isinstance(value, DNSErrorKind):
                raise DNSError(value, current, "fake")
            if value is None:
                if any(key[0] == current for key in self._records):
                    return []  # NODATA
                raise DNSError(DNSErrorKind.NXDOMAIN, current)
            if isinstance(value, str):
                return [value]
            return list(value)
        raise DNSError(DNSErrorKind.TEMPORARY, name, "CNAME loop")


def _key(name: str) -> str:
    return name.rstrip(".").lower()
