"""The store contract for `lookup_recipient` (what SMTP's RCPT reads at once: the domain, the aliases
and the accounts of a few candidate addresses), and SMTP's resolution over it
(surat.delivery.local.resolve_recipient), on every backend."""

from __future__ import annotations

import pytest

from surat.delivery.local import resolve, resolve_recipient
from surat.store.base import MAX_LOOKUP_CANDIDATES, Account, MailboxTarget, RecipientLookup, Store

from .conftest import CREDS


async def test_lookup_reads_domain_aliases_and_accounts_of_the_candidates(
    store: Store, alice: Account
) -> None:
    await store.add_alias("team@example.test", "alice@example.test")
    await store.add_alias("team@example.test", "Carol@Example.NET")
    await store.add_alias("@example.test", "alice@example.test")
    found = await store.lookup_recipient(
        "Example.TEST", ["Alice@example.test", "team@example.test", "@example.test"]
    )
    assert found == RecipientLookup(
        domain_is_local=True,
        # Keys as the caller spelled them; targets as alias_targets returns them (sorted).
        alias_targets={
            "team@example.test": ["alice@example.test", "carol@example.net"],
            "@example.test": ["alice@example.test"],
        },
        accounts={"Alice@example.test": alice},
    )
    assert await store.lookup_recipient("example.test", ["nobody@example.test"]) == RecipientLookup(True)


async def test_lookup_in_a_domain_that_is_not_local_reads_nothing_else(store: Store, alice: Account) -> None:
    await store.add_domain("other.test")
    await store.add_alias("@other.test", "alice@example.test")
    assert await store.lookup_recipient("elsewhere.test", ["alice@example.test"]) == RecipientLookup(False)
    assert await store.lookup_recipient("bad domain", ["x@bad domain"]) == RecipientLookup(False)
    # An invalid candidate finds nothing; the others still do.
    found = await store.lookup_recipient("other.test", ["not an address", "@other.test"])
    assert found == RecipientLookup(True, alias_targets={"@other.test": ["alice@example.test"]})


async def test_lookup_refuses_more_candidates_than_its_bound(store: Store, alice: Account) -> None:
    with pytest.raises(ValueError, match="candidates"):
        await store.lookup_recipient("example.test", ["a@example.test"] * (MAX_LOOKUP_CANDIDATES + 1))


@pytest.mark.parametrize(
    "address",
    [
        "alice@example.test",
        "Alice+tag@Example.test",
        "team@example.test",
        "team+x@example.test",
        "nobody@example.test",
        "chain@example.test",
        "bob@example.test",
        "loop@example.test",
    ],
)
async def test_resolve_recipient_agrees_with_resolve(store: Store, alice: Account, address: str) -> None:
    bob = await store.add_account("bob@example.test", CREDS)
    await store.add_alias("team@example.test", "alice@example.test")
    await store.add_alias("team@example.test", "bob@example.test")
    await store.add_alias("team@example.test", "carol@example.net")
    await store.add_alias("chain@example.test", "team@example.test")
    await store.add_alias("bob@example.test", "bob@example.test")  # keep a copy...
    await store.add_alias("bob@example.test", "alice@example.test")  # ...and forward
    await store.add_alias("loop@example.test", "loop2@example.test")
    await store.add_alias("loop2@example.test", "loop@example.test")
    expected = await resolve(store, address, domain_is_local=True)
    assert await resolve_recipient(store, address) == expected
    if address.startswith("team") or address.startswith("chain"):
        assert expected.local == (MailboxTarget(alice.id), MailboxTarget(bob.id))
        assert expected.remote == ("carol@example.net",)
    assert await resolve_recipient(store, "alice@elsewhere.test") is None
