"""Recipient resolution (surat.delivery.local) over a small in-memory directory."""

from __future__ import annotations

from typing import Any

import pytest

from surat.delivery.local import alias_cycle, base_address, owns, resolve
from surat.store.base import Account, MailboxTarget


class Directory:
    """The four Store methods resolution uses, over dicts (enough to exercise the rules)."""

    def __init__(self, domains: set[str], accounts: list[str], aliases: list[tuple[str, str]]) -> None:
        self.domains = domains
        self.accounts = {address: Account(index + 1, address) for index, address in enumerate(accounts)}
        self.aliases = aliases
        self.lookups = 0

    async def is_local_domain(self, name: str) -> bool:
        return name.lower() in self.domains

    async def get_account(self, address: str) -> Account | None:
        self.lookups += 1
        return self.accounts.get(address.lower())

    async def alias_targets(self, source: str) -> list[str]:
        self.lookups += 1
        return [target for src, target in self.aliases if src == source.lower()]

    async def aliases_of(self, target: str) -> list[str]:
        return [src for src, dst in self.aliases if dst == target.lower()]


def directory(*aliases: tuple[str, str]) -> Any:
    return Directory(
        {"example.test", "other.test"}, ["alice@example.test", "bob@example.test"], list(aliases)
    )


ALICE = MailboxTarget(1)
BOB = MailboxTarget(2)


@pytest.mark.parametrize(
    ("aliases", "address", "local", "remote"),
    [
        ((), "alice@example.test", (ALICE,), ()),
        ((), "Alice@Example.TEST", (ALICE,), ()),
        ((), "alice+news@example.test", (ALICE,), ()),
        ((), "alice+a+b@example.test", (ALICE,), ()),
        ((), "nobody@example.test", (), ()),
        ((), "+tag@example.test", (), ()),
        ((), "x@remote.example", (), ("x@remote.example",)),
        ((("team@example.test", "alice@example.test"), ("team@example.test", "bob@example.test")),
         "team@example.test", (ALICE, BOB), ()),
        ((("team@example.test", "alice@example.test"),), "team+tag@example.test", (ALICE,), ()),
        ((("@example.test", "bob@example.test"),), "nobody@example.test", (BOB,), ()),
        ((("@example.test", "bob@example.test"),), "alice@example.test", (ALICE,), ()),
        ((("@other.test", "alice@example.test"),), "anything@other.test", (ALICE,), ()),
        ((("fwd@example.test", "Friend@Remote.example"),), "fwd@example.test", (), ("friend@remote.example",)),
        # an alias on an account replaces it, unless it lists the account itself
        ((("alice@example.test", "bob@example.test"),), "alice@example.test", (BOB,), ()),
        ((("alice@example.test", "bob@example.test"), ("alice@example.test", "alice@example.test")),
         "alice@example.test", (ALICE, BOB), ()),
        # chains, and loops that name nobody
        ((("a@example.test", "b@example.test"), ("b@example.test", "alice@example.test")),
         "a@example.test", (ALICE,), ()),
        ((("a@example.test", "b@example.test"), ("b@example.test", "a@example.test")), "a@example.test", (), ()),
        ((("a@example.test", "b@example.test"), ("b@example.test", "a@example.test"),
          ("b@example.test", "bob@example.test")), "a@example.test", (BOB,), ()),
    ],
)  # fmt: skip
async def test_resolve(
    aliases: tuple[tuple[str, str], ...],
    address: str,
    local: tuple[MailboxTarget, ...],
    remote: tuple[str, ...],
) -> None:
    resolution = await resolve(directory(*aliases), address)
    assert sorted(resolution.local, key=lambda t: t.account_id) == list(local)
    assert tuple(r.lower() for r in resolution.remote) == remote
    assert resolution.found == bool(local or remote)


@pytest.mark.parametrize(
    ("aliases", "address", "found", "loop"),
    [
        ((("a@example.test", "b@example.test"), ("b@example.test", "a@example.test")), "a@example.test",
         False, ("a@example.test", "b@example.test", "a@example.test")),
        # the catch-all does not hide a cycle
        ((("a@example.test", "b@example.test"), ("b@example.test", "c@example.test"),
          ("c@example.test", "b@example.test"), ("@example.test", "bob@example.test")), "a+x@example.test",
         False, ("b@example.test", "c@example.test", "b@example.test")),
        # a cycle through the base address of a +tag
        ((("a@example.test", "b@example.test"), ("b@example.test", "a@example.test")), "a+x@example.test",
         False, ("a@example.test", "b@example.test", "a@example.test")),
        # a cycle beside a real target delivers to the target (each address once)
        ((("a@example.test", "b@example.test"), ("b@example.test", "a@example.test"),
          ("b@example.test", "bob@example.test")), "a@example.test", True,
         ("a@example.test", "b@example.test", "a@example.test")),
        # "keep a copy here" is no loop
        ((("alice@example.test", "alice@example.test"), ("alice@example.test", "bob@example.test")),
         "alice@example.test", True, ()),
    ],
)  # fmt: skip
async def test_resolve_names_an_alias_cycle(
    aliases: tuple[tuple[str, str], ...], address: str, found: bool, loop: tuple[str, ...]
) -> None:
    resolution = await resolve(directory(*aliases), address)
    assert resolution.found == found
    assert resolution.loop == loop


@pytest.mark.parametrize(
    ("aliases", "source", "target", "cycle"),
    [
        ((("b@example.test", "a@example.test"),), "a@example.test", "b@example.test",
         ("a@example.test", "b@example.test", "a@example.test")),
        ((("b@example.test", "c@example.test"), ("c@example.test", "d@example.test"),
          ("d@example.test", "a@example.test")), "a@example.test", "b@example.test",
         ("a@example.test", "b@example.test", "c@example.test", "d@example.test", "a@example.test")),
        # through a +tag target: b+x is b
        ((("b@example.test", "a@example.test"),), "a@example.test", "B+x@example.test",
         ("a@example.test", "b+x@example.test", "a@example.test")),
        ((("b@example.test", "alice@example.test"),), "a@example.test", "b@example.test", None),
        ((), "a@example.test", "a@example.test", None),
    ],
)  # fmt: skip
async def test_alias_cycle(
    aliases: tuple[tuple[str, str], ...], source: str, target: str, cycle: tuple[str, ...] | None
) -> None:
    assert await alias_cycle(directory(*aliases), source, target) == cycle


async def test_long_alias_chain_is_bounded() -> None:
    chain = [(f"a{n}@example.test", f"a{n + 1}@example.test") for n in range(50)]
    chain.append(("a50@example.test", "alice@example.test"))
    store = directory(*chain)
    resolution = await resolve(store, "a0@example.test")
    assert not resolution.found  # deeper than MAX_ALIAS_DEPTH: treated as a loop
    assert store.lookups < 100


async def test_wide_alias_fan_out_is_bounded() -> None:
    fan = [("big@example.test", f"m{n}@example.test") for n in range(3000)]
    store = directory(*fan, ("m1@example.test", "alice@example.test"))
    resolution = await resolve(store, "big@example.test")
    assert resolution.local == (ALICE,)
    assert store.lookups < 5000


def test_base_address() -> None:
    assert base_address("user+tag@d") == "user@d"
    assert base_address("user@d") == "user@d"
    assert base_address("+tag@d") == "+tag@d"


async def test_owns() -> None:
    store = directory(
        ("info@example.test", "alice@example.test"),
        ("@other.test", "alice@example.test"),
        ("team@example.test", "bob@example.test"),
    )
    assert await owns(store, "alice@example.test", "alice@example.test")
    assert await owns(store, "alice@example.test", "Alice@example.test")
    assert await owns(store, "alice@example.test", "alice+x@example.test")
    assert await owns(store, "alice@example.test", "info@example.test")
    assert await owns(store, "alice@example.test", "info+x@example.test")
    assert not await owns(store, "alice@example.test", "bob@example.test")
    assert not await owns(store, "alice@example.test", "team@example.test")
    assert not await owns(store, "alice@example.test", "anyone@other.test")  # catch-all is not ownership
