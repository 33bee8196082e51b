"""surat.apppasswords: made once, kept as a digest, accepted by the mail protocols' check and not by
the web login's, refused once revoked; surat.passwords.set_password, the one password-change path."""

from __future__ import annotations

import pytest

from surat import apppasswords
from surat.passwords import SASLprepError, authenticate, set_password
from surat.store.base import Account
from surat.store.sqlite import SQLiteStore

ITERATIONS = 4096


async def test_create_use_revoke(store: SQLiteStore, alice: Account) -> None:
    created, secret = await apppasswords.create(store, alice, "  phone  ")
    assert created.name == "phone" and created.last_used is None
    assert len(secret) == 20 and secret.isalnum()
    assert (await store.find_app_password(alice.address, apppasswords.digest(secret))) == (alice, created)
    # only the digest is stored: the secret appears in no row
    assert secret not in repr(await store.list_app_passwords(alice.id))

    assert (
        await apppasswords.authenticate_mail(store, "Alice@Example.test", secret, scram_iterations=ITERATIONS)
        == alice
    )
    (used,) = await store.list_app_passwords(alice.id)
    assert used.last_used is not None
    # the web login's check knows only the account password
    assert await authenticate(store, alice.address, secret, scram_iterations=ITERATIONS) is None
    # another account's address with this secret: no
    await store.add_account("bob@example.test", (await store.get_credentials(alice.address))[1])  # type: ignore[index]
    assert (
        await apppasswords.authenticate_mail(store, "bob@example.test", secret, scram_iterations=ITERATIONS)
        is None
    )

    await apppasswords.revoke(store, alice, "phone")
    assert (
        await apppasswords.authenticate_mail(store, alice.address, secret, scram_iterations=ITERATIONS)
        is None
    )


async def test_the_account_password_still_works_beside_app_passwords(
    store: SQLiteStore, alice: Account
) -> None:
    await set_password(store, alice.address, "the account password", scram_iterations=ITERATIONS)
    await apppasswords.create(store, alice, "phone")
    found = await apppasswords.authenticate_mail(
        store, alice.address, "the account password", scram_iterations=ITERATIONS
    )
    assert found == alice
    assert (
        await apppasswords.authenticate_mail(store, alice.address, "wrong", scram_iterations=ITERATIONS)
        is None
    )


async def test_set_password_derives_new_scram_keys_and_refuses_short_ones(
    store: SQLiteStore, alice: Account
) -> None:
    await set_password(store, alice.address, "first password", scram_iterations=ITERATIONS)
    first = await store.get_credentials(alice.address)
    await set_password(store, alice.address, "second password", scram_iterations=ITERATIONS)
    second = await store.get_credentials(alice.address)
    assert first is not None and second is not None
    assert first[1].scram_sha256 is not None and second[1].scram_sha256 is not None
    assert first[1].scram_sha256.salt != second[1].scram_sha256.salt
    assert second[1].scram_sha256.iterations == ITERATIONS
    assert await authenticate(store, alice.address, "second password", scram_iterations=ITERATIONS) == alice
    with pytest.raises(SASLprepError, match="too short"):
        await set_password(store, alice.address, "short", scram_iterations=ITERATIONS)
    with pytest.raises(SASLprepError):
        await set_password(store, alice.address, "with a \x07 bell", scram_iterations=ITERATIONS)


@pytest.mark.parametrize(
    ("name", "error"),
    [("", "empty"), ("   ", "empty"), ("x" * 65, "longer than 64"), ("tab\there", "control"), ("nl\n", None)],
)
def test_names(name: str, error: str | None) -> None:
    if error is None:
        assert apppasswords.check_name(name) == name.strip()
        return
    with pytest.raises(apppasswords.AppPasswordNameError, match=error):
        apppasswords.check_name(name)
