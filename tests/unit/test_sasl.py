"""SASL step machines: PLAIN (RFC 4616), LOGIN, SCRAM-SHA-256 (RFC 5802, RFC 7677)."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from surat.proto.sasl import (
    MAX_FIELD_OCTETS,
    MAX_RESPONSE_OCTETS,
    SCRAM_ITERATIONS,
    Challenge,
    Failure,
    LoginMechanism,
    Mechanism,
    NeedScram,
    PlainMechanism,
    SASLStateError,
    SASLSyntaxError,
    ScramSha256Mechanism,
    Step,
    Success,
    VerifyPassword,
    decode_client_response,
    encode_challenge,
    same_identity,
    scram_sha256_keys,
    server_mechanism,
)


@dataclass(frozen=True, slots=True)
class Keys:
    salt: bytes
    iterations: int
    stored_key: bytes
    server_key: bytes


def keys_for(password: bytes, salt: bytes, iterations: int) -> Keys:
    stored, server = scram_sha256_keys(password, salt, iterations)
    return Keys(salt, iterations, stored, server)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def scram_client_final(
    password: bytes, client_first_bare: str, server_first: str, gs2: str = "n,,"
) -> tuple[bytes, bytes]:
    """An independent SCRAM-SHA-256 client (RFC 5802 §3): (client-final-message, expected v=...)."""
    attrs = dict(part.split("=", 1) for part in server_first.split(","))
    salted = hashlib.pbkdf2_hmac("sha256", password, base64.b64decode(attrs["s"]), int(attrs["i"]))
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    without_proof = f"c={b64(gs2.encode())},r={attrs['r']}"
    auth_message = f"{client_first_bare},{server_first},{without_proof}".encode()
    signature = hmac.new(stored_key, auth_message, hashlib.sha256).digest()
    proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    server_signature = hmac.new(server_key, auth_message, hashlib.sha256).digest()
    return f"{without_proof},p={b64(proof)}".encode(), b"v=" + base64.b64encode(server_signature)


# ---------------------------------------------------------------------------------------- helpers


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b"*", None),
        (b"", b""),
        (b"=", b""),
        (b"dXNlcg==", b"user"),
        (b"  dXNlcg==  ", b"user"),
        (b"AHVzZXIAcGVuY2ls", b"\x00user\x00pencil"),
    ],
)
def test_decode_client_response(line: bytes, expected: bytes | None) -> None:
    assert decode_client_response(line) == expected


@pytest.mark.parametrize("line", [b"dXNlcg", b"!!!!", b"dXN lcg==", b"d", b"**"])
def test_decode_client_response_rejects_bad_base64(line: bytes) -> None:
    with pytest.raises(SASLSyntaxError):
        decode_client_response(line)


def test_encode_challenge() -> None:
    assert encode_challenge(b"Username:") == b"VXNlcm5hbWU6"
    assert encode_challenge(b"") == b""
    assert decode_client_response(encode_challenge(b"\x00\xff,=")) == b"\x00\xff,="


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        ("user@example.com", "user@example.com", True),
        ("user@example.com", "user@EXAMPLE.com", True),
        ("user@example.com", "User@example.com", False),
        ("user@example.com", "other@example.com", False),
        ("user@example.com", "user@example.org", False),
        ("admin", "admin", True),
        ("admin", "admin@example.com", False),
    ],
)
def test_same_identity(a: str, b: str, same: bool) -> None:
    assert same_identity(a, b) is same
    assert same_identity(b, a) is same


def test_server_mechanism_lookup() -> None:
    assert isinstance(server_mechanism("plain"), PlainMechanism)
    assert isinstance(server_mechanism("Login"), LoginMechanism)
    assert isinstance(server_mechanism("SCRAM-SHA-256"), ScramSha256Mechanism)
    assert server_mechanism("SCRAM-SHA-256-PLUS") is None
    assert server_mechanism("CRAM-MD5") is None
    assert server_mechanism("PLAIN") is not server_mechanism("PLAIN")


# ---------------------------------------------------------------------------------------- PLAIN


def plain() -> Mechanism:
    mech = server_mechanism("PLAIN")
    assert mech is not None
    return mech


def test_plain_with_initial_response() -> None:
    mech = plain()
    step = mech.start(b"\x00user@example.com\x00pencil")
    assert step == VerifyPassword("user@example.com", "", "pencil")
    assert not mech.done
    assert mech.password_result(True) == Success("user@example.com", "", None)
    assert mech.done


def test_plain_without_initial_response() -> None:
    mech = plain()
    assert mech.start(None) == Challenge(b"")
    assert mech.respond(b"\x00user@example.com\x00p\xc3\xa4ss") == VerifyPassword(
        "user@example.com", "", "päss"
    )
    assert mech.password_result(True) == Success("user@example.com", "", None)


def test_plain_wrong_password() -> None:
    mech = plain()
    mech.start(b"\x00user@example.com\x00wrong")
    step = mech.password_result(False)
    assert isinstance(step, Failure)
    assert mech.done


def test_plain_authzid_same_user_domain_case_insensitive() -> None:
    mech = plain()
    step = mech.start(b"user@EXAMPLE.COM\x00user@example.com\x00pencil")
    assert step == VerifyPassword("user@example.com", "user@EXAMPLE.COM", "pencil")
    assert mech.password_result(True) == Success("user@example.com", "user@EXAMPLE.COM", None)


def test_plain_authzid_other_user_fails_without_password_check() -> None:
    step = plain().start(b"admin@example.com\x00user@example.com\x00pencil")
    assert isinstance(step, Failure)
    assert "authorization" in step.reason


@pytest.mark.parametrize(
    "message",
    [
        b"",
        b"user",
        b"\x00user",
        b"user\x00pencil",
        b"\x00\x00pencil",  # empty authcid
        b"\x00user\x00",  # empty password
        b"\x00user\x00pen\x00cil",  # a NUL inside the password
        b"a\x00b\x00c\x00d",
        b"\x00us\xffer\x00pencil",  # not UTF-8
        b"\x00user\x00" + b"p" * (MAX_FIELD_OCTETS + 1),
        b"\x00" + b"u" * (MAX_FIELD_OCTETS + 1) + b"\x00pencil",
        b"a" * (MAX_RESPONSE_OCTETS + 1),
    ],
)
def test_plain_malformed(message: bytes) -> None:
    mech = plain()
    assert isinstance(mech.start(message), Failure)
    assert mech.done
    with pytest.raises(SASLStateError):
        mech.respond(b"\x00user\x00pencil")


def test_plain_accepts_fields_up_to_the_limit() -> None:
    password = "p" * MAX_FIELD_OCTETS
    step = plain().start(b"\x00user\x00" + password.encode())
    assert step == VerifyPassword("user", "", password)


def test_plain_state_errors() -> None:
    mech = plain()
    with pytest.raises(SASLStateError):
        mech.respond(b"\x00user\x00pencil")  # not started
    with pytest.raises(SASLStateError):
        mech.password_result(True)  # nothing to verify
    mech.start(b"\x00user\x00pencil")
    with pytest.raises(SASLStateError):
        mech.respond(b"\x00user\x00pencil")  # waiting for password_result
    with pytest.raises(SASLStateError):
        mech.scram_credentials(None)
    mech.password_result(True)
    with pytest.raises(SASLStateError):
        mech.password_result(True)
    with pytest.raises(SASLStateError):
        mech.start(None)


def test_password_not_in_repr() -> None:
    step = plain().start(b"\x00user\x00hunter2")
    assert "hunter2" not in repr(step)
    assert "hunter2" not in str(step)


# ---------------------------------------------------------------------------------------- LOGIN


def login() -> Mechanism:
    mech = server_mechanism("LOGIN")
    assert mech is not None
    return mech


def test_login_exchange() -> None:
    mech = login()
    assert mech.start(None) == Challenge(b"Username:")
    assert mech.respond(b"user@example.com") == Challenge(b"Password:")
    assert mech.respond(b"pencil") == VerifyPassword("user@example.com", "", "pencil")
    assert mech.password_result(True) == Success("user@example.com", "", None)


def test_login_username_as_initial_response() -> None:
    mech = login()
    assert mech.start(b"user@example.com") == Challenge(b"Password:")
    assert mech.respond(b"pencil") == VerifyPassword("user@example.com", "", "pencil")
    assert isinstance(mech.password_result(False), Failure)


@pytest.mark.parametrize(
    ("username", "password"),
    [
        (b"", b"pencil"),
        (b"us\x00er", b"pencil"),
        (b"\xff", b"pencil"),
        (b"u" * (MAX_FIELD_OCTETS + 1), b"pencil"),
        (b"user", b""),
        (b"user", b"\xc3"),
        (b"user", b"p" * (MAX_FIELD_OCTETS + 1)),
    ],
)
def test_login_malformed(username: bytes, password: bytes) -> None:
    mech = login()
    mech.start(None)
    step = mech.respond(username)
    if step == Challenge(b"Password:"):
        step = mech.respond(password)
    assert isinstance(step, Failure)
    assert mech.done


# ---------------------------------------------------------------------------------------- SCRAM

# RFC 7677 §3
RFC_CLIENT_FIRST = b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO"
RFC_SERVER_NONCE = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
RFC_SERVER_FIRST = b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
RFC_CLIENT_FINAL = (
    b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
    b"p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
)
RFC_SERVER_FINAL = b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
RFC_KEYS = keys_for(b"pencil", base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ=="), 4096)
SECRET = b"s" * 32


def scram(nonce: str = RFC_SERVER_NONCE, secret: bytes = SECRET) -> Mechanism:
    mech = server_mechanism("SCRAM-SHA-256", secret=secret, nonce=lambda: nonce)
    assert mech is not None
    return mech


@pytest.mark.parametrize("initial", [True, False])
def test_scram_rfc7677_vector(initial: bool) -> None:
    mech = scram()
    if initial:
        step = mech.start(RFC_CLIENT_FIRST)
    else:
        assert mech.start(None) == Challenge(b"")
        step = mech.respond(RFC_CLIENT_FIRST)
    assert step == NeedScram("user", "")
    assert mech.scram_credentials(RFC_KEYS) == Challenge(RFC_SERVER_FIRST)
    assert mech.respond(RFC_CLIENT_FINAL) == Success("user", "", RFC_SERVER_FINAL)
    assert mech.done


def test_scram_rfc7677_vector_wrong_password() -> None:
    mech = scram()
    mech.start(RFC_CLIENT_FIRST)
    mech.scram_credentials(keys_for(b"pencil2", RFC_KEYS.salt, 4096))
    assert mech.respond(RFC_CLIENT_FINAL) == Failure("invalid proof", b"e=invalid-proof")


def run_scram(
    mech: Mechanism,
    keys: Keys | None,
    password: bytes,
    client_first: str = "n,,n=user@example.com,r=clientnonce",
) -> tuple[Step, Challenge, bytes]:
    gs2, _, bare = client_first.partition(",")
    authzid, _, bare = bare.partition(",")
    gs2 = f"{gs2},{authzid},"
    step = mech.start(client_first.encode())
    assert isinstance(step, NeedScram)
    challenge = mech.scram_credentials(keys)
    assert isinstance(challenge, Challenge)
    final, expected_v = scram_client_final(password, bare, challenge.data.decode(), gs2)
    return mech.respond(final), challenge, expected_v


def test_scram_random_nonce_and_own_client() -> None:
    keys = keys_for(b"pencil", b"0123456789abcdef", 4096)
    challenges = []
    for _ in range(2):
        mech = server_mechanism("SCRAM-SHA-256")
        assert mech is not None
        result, challenge, expected_v = run_scram(mech, keys, b"pencil")
        assert result == Success("user@example.com", "", expected_v)
        nonce = challenge.data.split(b",")[0]
        assert nonce.startswith(b"r=clientnonce")
        assert len(nonce) >= len(b"r=clientnonce") + 24
        challenges.append(challenge)
    assert challenges[0] != challenges[1]


def test_scram_uses_stored_iterations_and_salt() -> None:
    keys = keys_for(b"pencil", b"\x01" * 20, 5000)
    mech = scram(nonce="servernonce")
    result, challenge, _ = run_scram(mech, keys, b"pencil")
    assert challenge.data == b"r=clientnonceservernonce,s=" + base64.b64encode(b"\x01" * 20) + b",i=5000"
    assert isinstance(result, Success)


def test_scram_y_flag_accepted() -> None:
    keys = keys_for(b"pencil", b"salt" * 4, 4096)
    result, _, _ = run_scram(scram(), keys, b"pencil", "y,,n=user@example.com,r=abc")
    assert isinstance(result, Success)


def test_scram_authzid_same_user() -> None:
    keys = keys_for(b"pencil", b"salt" * 4, 4096)
    mech = scram()
    result, _, _ = run_scram(mech, keys, b"pencil", "n,a=user@EXAMPLE.com,n=user@example.com,r=abc")
    assert isinstance(result, Success)
    assert result.authcid == "user@example.com"
    assert result.authzid == "user@EXAMPLE.com"


def test_scram_authzid_other_user_fails() -> None:
    step = scram().start(b"n,a=admin@example.com,n=user@example.com,r=abc")
    assert isinstance(step, Failure)


def test_scram_username_escapes() -> None:
    mech = scram()
    assert mech.start(b"n,,n=a=2Cb=3Dc,r=abc") == NeedScram("a,b=c", "")


def test_scram_wrong_password_fails_at_proof() -> None:
    keys = keys_for(b"pencil", b"salt" * 4, 4096)
    result, _, _ = run_scram(scram(), keys, b"Pencil")
    assert result == Failure("invalid proof", b"e=invalid-proof")


def test_scram_unknown_user_gets_plausible_stable_challenge() -> None:
    def challenge_for(user: str, secret: bytes) -> bytes:
        mech = scram(nonce="N", secret=secret)
        assert mech.start(f"n,,n={user},r=abc".encode()) == NeedScram(user, "")
        step = mech.scram_credentials(None)
        assert isinstance(step, Challenge)
        return step.data

    first = challenge_for("nobody@example.com", SECRET)
    nonce, salt, iterations = first.split(b",")
    assert nonce == b"r=abcN"
    assert len(base64.b64decode(salt[2:])) == 16
    assert iterations == f"i={SCRAM_ITERATIONS}".encode()
    # Stable for the same name (two attempts look like a real account), differs between names.
    assert challenge_for("nobody@example.com", SECRET) == first
    assert challenge_for("nobody@EXAMPLE.com", SECRET) == first
    assert challenge_for("someone@example.com", SECRET) != first
    assert challenge_for("nobody@example.com", b"t" * 32) != first


def test_scram_unknown_user_fails_like_wrong_password() -> None:
    # Cheap iterations are fine here: the client side of the test runs PBKDF2 with the fake count.
    mech = scram(nonce="N")
    mech.start(b"n,,n=nobody@example.com,r=abc")
    challenge = mech.scram_credentials(None)
    assert isinstance(challenge, Challenge)
    final, _ = scram_client_final(b"pencil", "n=nobody@example.com,r=abc", challenge.data.decode())
    step = mech.respond(final)
    assert isinstance(step, Failure)
    assert step.final_data == b"e=invalid-proof"
    assert step.reason == "unknown user"


def test_scram_channel_binding_required_by_client_fails() -> None:
    step = scram().start(b"p=tls-server-end-point,,n=user,r=abc")
    assert step == Failure("client requires channel binding", b"e=channel-binding-not-supported")


@pytest.mark.parametrize(
    "client_first",
    [
        b"",
        b"n,,",
        b"n",
        b"x,,n=user,r=abc",
        b"n,b=user,n=user,r=abc",
        b"n,a=,n=user,r=abc",
        b"n,,m=ext,n=user,r=abc",
        b"n,,r=abc,n=user",
        b"n,,n=user",
        b"n,,n=,r=abc",
        b"n,,n=us=er,r=abc",
        b"n,,n=us=2Xer,r=abc",
        b"n,,n=user,r=",
        b"n,,n=user,r=a\x7fbc",
        b"n,,n=us\xffer,r=abc",
        b"n,,n=user,r=abc," + b"x" * MAX_RESPONSE_OCTETS,
    ],
)
def test_scram_malformed_client_first(client_first: bytes) -> None:
    mech = scram()
    step = mech.start(client_first)
    assert isinstance(step, Failure)
    assert step.final_data is not None
    assert step.final_data.startswith(b"e=")
    assert mech.done


def scram_at_final() -> tuple[Mechanism, str]:
    mech = scram(nonce="srv")
    mech.start(b"n,,n=user,r=cli")
    step = mech.scram_credentials(RFC_KEYS)
    assert isinstance(step, Challenge)
    return mech, step.data.decode()


def test_scram_client_final_variants_of_a_good_message() -> None:
    mech, server_first = scram_at_final()
    final, expected_v = scram_client_final(b"pencil", "n=user,r=cli", server_first)
    assert mech.respond(final) == Success("user", "", expected_v)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda f: f.replace(b"c=biws", b"c=eSws"),  # "y,," while the client said "n,,"
        lambda f: f.replace(b"r=clisrv", b"r=clisrx"),  # nonce changed
        lambda f: f.replace(b"r=clisrv", b"r=cli"),  # server nonce dropped
        lambda f: f.replace(b",p=", b",m=x,p="),  # mandatory extension
        lambda f: f.split(b",p=")[0],  # no proof
        lambda f: f.split(b",p=")[0] + b",p=AAAA",  # proof of the wrong length
        lambda f: f.split(b",p=")[0] + b",p=!!",  # proof not base64
        lambda f: f.replace(b"c=biws", b"c=biws!"),  # cbind not base64
        lambda f: f[f.index(b"r=") :],  # no channel binding attribute
        lambda f: f + b"\xff",
        lambda f: b"x" * (MAX_RESPONSE_OCTETS + 1),
    ],
)
def test_scram_malformed_client_final(mutate: Callable[[bytes], bytes]) -> None:
    mech, server_first = scram_at_final()
    final, _ = scram_client_final(b"pencil", "n=user,r=cli", server_first)
    step = mech.respond(mutate(final))
    assert isinstance(step, Failure)
    assert step.final_data is not None
    assert step.final_data.startswith(b"e=")
    with pytest.raises(SASLStateError):
        mech.respond(final)


def test_scram_bit_flipped_proof_fails() -> None:
    mech, server_first = scram_at_final()
    final, _ = scram_client_final(b"pencil", "n=user,r=cli", server_first)
    head, _, proof = final.rpartition(b",p=")
    raw = bytearray(base64.b64decode(proof))
    raw[0] ^= 1
    step = mech.respond(head + b",p=" + base64.b64encode(bytes(raw)))
    assert step == Failure("invalid proof", b"e=invalid-proof")


def test_scram_state_errors() -> None:
    mech = scram()
    with pytest.raises(SASLStateError):
        mech.respond(RFC_CLIENT_FIRST)  # not started
    with pytest.raises(SASLStateError):
        mech.scram_credentials(RFC_KEYS)
    mech.start(RFC_CLIENT_FIRST)
    with pytest.raises(SASLStateError):
        mech.respond(RFC_CLIENT_FINAL)  # still waiting for credentials
    with pytest.raises(SASLStateError):
        mech.password_result(True)
    mech.scram_credentials(RFC_KEYS)
    with pytest.raises(SASLStateError):
        mech.scram_credentials(RFC_KEYS)
    with pytest.raises(SASLStateError):
        mech.start(None)


def test_scram_rejects_bad_injected_nonce() -> None:
    mech = scram(nonce="bad,nonce")
    mech.start(RFC_CLIENT_FIRST)
    with pytest.raises(ValueError, match="nonce"):
        mech.scram_credentials(RFC_KEYS)
