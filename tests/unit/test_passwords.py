"""Password hashing, SCRAM stored keys and SASLprep (RFC 4013)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

import pytest

from surat.passwords import (
    ARGON2_MEMORY_KIB,
    ARGON2_TIME_COST,
    SASLprepError,
    authenticate,
    generate_password,
    make_credentials,
    needs_rehash,
    saslprep,
    verify_nonexistent,
    verify_password,
)
from surat.proto.sasl import SCRAM_ITERATIONS, Challenge, NeedScram, Success, server_mechanism
from surat.store.base import Credentials, ScramCredentials
from surat.store.sqlite import SQLiteStore


@pytest.fixture(scope="module")
def pencil() -> Credentials:
    return make_credentials("pencil")


# ---------------------------------------------------------------------------------------- SASLprep


@pytest.mark.parametrize(
    ("given", "prepared"),
    [
        # RFC 4013 §3 examples
        ("I\u00adX", "IX"),  # SOFT HYPHEN mapped to nothing
        ("user", "user"),
        ("USER", "USER"),  # case preserved
        ("\u00aa", "a"),  # NFKC
        ("\u2168", "IX"),  # NFKC
        # more
        ("a\u00a0b", "a b"),  # non-ASCII space to SPACE
        ("a\u200bb", "ab"),  # ZERO WIDTH SPACE is "commonly mapped to nothing"
        ("caf\u0065\u0301", "caf\u00e9"),  # composed
        ("\u0627\u0628", "\u0627\u0628"),  # right-to-left only
        ("", ""),
    ],
)
def test_saslprep(given: str, prepared: str) -> None:
    assert saslprep(given) == prepared


@pytest.mark.parametrize(
    "given",
    [
        "\u0007",  # RFC 4013 §3: prohibited ASCII control
        "\u06271",  # RFC 4013 §3: bidi, RandALCat then LCat/number ending
        "\u0627a\u0628",  # mixes RandALCat and LCat
        "a\x00b",
        "\ue000",  # private use
        "\ufffe",  # non-character
        "\U000e0001",  # tagging character
        "\u2ff0",  # ideographic description character (C.7)
        "\u0221",  # unassigned in Unicode 3.2
    ],
)
def test_saslprep_prohibited(given: str) -> None:
    with pytest.raises(SASLprepError):
        saslprep(given)


def test_saslprep_unassigned_allowed_for_queries() -> None:
    assert saslprep("\u0221", allow_unassigned=True) == "\u0221"


# ---------------------------------------------------------------------------------------- hashing


def test_make_and_verify(pencil: Credentials) -> None:
    assert pencil.password_hash.startswith("$argon2id$")
    assert f"m={ARGON2_MEMORY_KIB},t={ARGON2_TIME_COST},p=1" in pencil.password_hash
    assert verify_password(pencil, "pencil")
    assert not verify_password(pencil, "Pencil")
    assert not verify_password(pencil, "pencil ")
    assert not verify_password(pencil, "")


def test_each_credential_is_salted() -> None:
    a, b = make_credentials("pencil"), make_credentials("pencil")
    assert a.password_hash != b.password_hash
    assert a.scram_sha256 is not None
    assert b.scram_sha256 is not None
    assert a.scram_sha256.salt != b.scram_sha256.salt
    assert a.scram_sha256.stored_key != b.scram_sha256.stored_key


def test_scram_values_follow_rfc5802(pencil: Credentials) -> None:
    scram = pencil.scram_sha256
    assert scram is not None
    assert scram.iterations == SCRAM_ITERATIONS >= 4096
    assert len(scram.salt) >= 16
    salted = hashlib.pbkdf2_hmac("sha256", b"pencil", scram.salt, scram.iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    assert scram.stored_key == hashlib.sha256(client_key).digest()
    assert scram.server_key == hmac.new(salted, b"Server Key", hashlib.sha256).digest()


def test_passwords_are_saslprepped_before_hashing() -> None:
    creds = make_credentials("pen\u00a0cil\u00ad")  # NO-BREAK SPACE and SOFT HYPHEN
    assert verify_password(creds, "pen cil")
    assert verify_password(creds, "pen\u2003cil")  # EM SPACE maps to SPACE too
    assert not verify_password(creds, "pencil")
    scram = creds.scram_sha256
    assert scram is not None
    salted = hashlib.pbkdf2_hmac("sha256", b"pen cil", scram.salt, scram.iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    assert scram.stored_key == hashlib.sha256(client_key).digest()


@pytest.mark.parametrize("password", ["", "\u00ad", "bell\u0007", "\u0627a\u0628"])
def test_make_credentials_refuses_bad_passwords(password: str) -> None:
    with pytest.raises(ValueError, match="password"):
        make_credentials(password)


@pytest.mark.parametrize(
    "password_hash",
    ["", "not a hash", "$argon2id$v=19$m=19456,t=3,p=1$broken", "$2b$12$abcdefghijklmnopqrstuv"],
)
def test_verify_never_raises_on_bad_hash(password_hash: str) -> None:
    assert verify_password(Credentials(password_hash=password_hash), "pencil") is False


def test_verify_prohibited_input_is_false(pencil: Credentials) -> None:
    assert verify_password(pencil, "pencil\u0007") is False


def test_verify_cost_is_within_budget(pencil: Credentials) -> None:
    # Loose bounds: the budget is 20-60 ms on a 2-core VM; CI machines vary.
    start = time.perf_counter()
    verify_password(pencil, "pencil")
    elapsed = time.perf_counter() - start
    assert 0.005 < elapsed < 1.0


def test_verify_nonexistent_is_false_and_costs_a_verification() -> None:
    verify_nonexistent("warm-up")
    start = time.perf_counter()
    assert verify_nonexistent("pencil") is False
    assert time.perf_counter() - start > 0.005


def test_needs_rehash(pencil: Credentials) -> None:
    assert not needs_rehash(pencil)
    assert needs_rehash(Credentials(password_hash=pencil.password_hash))  # no SCRAM keys
    scram = pencil.scram_sha256
    assert scram is not None
    weak_scram = ScramCredentials(scram.salt, 4096, scram.stored_key, scram.server_key)
    assert needs_rehash(Credentials(pencil.password_hash, weak_scram))
    weak_argon = pencil.password_hash.replace(f"t={ARGON2_TIME_COST}", "t=1")
    assert needs_rehash(Credentials(weak_argon, scram))
    assert needs_rehash(Credentials("garbage", scram))


def test_generate_password() -> None:
    passwords = {generate_password() for _ in range(50)}
    assert len(passwords) == 50
    for password in passwords:
        assert len(password) == 20
        assert password.isascii()
        assert password.isalnum()
        assert not set(password) & set("0O1lIio")
        assert saslprep(password) == password


# ---------------------------------------------------------------------------------------- with SASL


def scram_login(creds: Credentials, password: bytes) -> bool:
    mech = server_mechanism("SCRAM-SHA-256")
    assert mech is not None
    bare = "n=user@example.com,r=fyko+d2lbbFgONRv9qkxdawL"
    assert isinstance(mech.start(b"n,," + bare.encode()), NeedScram)
    challenge = mech.scram_credentials(creds.scram_sha256)
    assert isinstance(challenge, Challenge)
    server_first = challenge.data.decode()
    attrs = dict(part.split("=", 1) for part in server_first.split(","))
    salted = hashlib.pbkdf2_hmac("sha256", password, base64.b64decode(attrs["s"]), int(attrs["i"]))
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    without_proof = f"c=biws,r={attrs['r']}"
    auth_message = f"{bare},{server_first},{without_proof}".encode()
    signature = hmac.new(hashlib.sha256(client_key).digest(), auth_message, hashlib.sha256).digest()
    proof = base64.b64encode(bytes(a ^ b for a, b in zip(client_key, signature, strict=True)))
    return isinstance(mech.respond(f"{without_proof},p=".encode() + proof), Success)


def test_credentials_work_with_scram(pencil: Credentials) -> None:
    assert scram_login(pencil, b"pencil")
    assert not scram_login(pencil, b"pencil2")


def test_default_scram_count_is_raised_but_within_client_caps() -> None:
    # RFC 7677 §4: at least 4096; Cyrus SASL clients refuse more than 65536 (see SCRAM_ITERATIONS)
    assert SCRAM_ITERATIONS == 65_536
    creds = make_credentials("pencil", scram_iterations=100_000)
    assert creds.scram_sha256 is not None
    assert creds.scram_sha256.iterations == 100_000
    assert scram_login(creds, b"pencil")
    assert needs_rehash(creds, scram_iterations=200_000)
    assert not needs_rehash(creds, scram_iterations=100_000)


async def test_login_rederives_weaker_credentials(store: SQLiteStore) -> None:
    await store.add_domain("example.test")
    await store.add_account("alice@example.test", make_credentials("pencil", scram_iterations=10_000))
    # a wrong password changes nothing
    assert await authenticate(store, "alice@example.test", "pen", scram_iterations=20_000) is None
    found = await store.get_credentials("alice@example.test")
    assert found is not None and found[1].scram_sha256 is not None
    assert found[1].scram_sha256.iterations == 10_000
    # the right one: the keys are derived again with the configured count, and still work
    account = await authenticate(store, "alice@example.test", "pencil", scram_iterations=20_000)
    assert account is not None and account.address == "alice@example.test"
    found = await store.get_credentials("alice@example.test")
    assert found is not None and found[1].scram_sha256 is not None
    assert found[1].scram_sha256.iterations == 20_000
    assert scram_login(found[1], b"pencil")
    assert verify_password(found[1], "pencil")
    # a higher count than configured is left alone (never lowered)
    assert await authenticate(store, "alice@example.test", "pencil", scram_iterations=4096) is not None
    found = await store.get_credentials("alice@example.test")
    assert found is not None and found[1].scram_sha256 is not None
    assert found[1].scram_sha256.iterations == 20_000


def test_unknown_scram_user_is_offered_the_configured_count() -> None:
    mechanism = server_mechanism("SCRAM-SHA-256", secret=b"k" * 32, scram_iterations=123_456)
    assert mechanism is not None
    step = mechanism.start(b"n,,n=nobody,r=abcdefgh")
    assert isinstance(step, NeedScram)
    challenge = mechanism.scram_credentials(None)
    assert isinstance(challenge, Challenge)
    assert challenge.data.endswith(b",i=123456")
