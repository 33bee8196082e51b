"""Fuzz: the SASL step machines (PLAIN, LOGIN, SCRAM-SHA-256; surat.proto.sasl) driven as a shell drives
them, with random and mutated client responses.

Every step is one of the documented ``Step`` types; an exchange ends in ``Success`` or ``Failure`` within a
bounded number of steps; random responses never succeed unless the shell confirmed the password; after
the end, a further response is a ``SASLStateError`` (a shell bug, never a crash on client input).
"""

from __future__ import annotations

import base64
import binascii

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fuzzing import fuzz_settings
from surat.proto import sasl
from surat.store.base import ScramCredentials

pytestmark = pytest.mark.fuzz

MAX_STEPS = 10  # every mechanism here ends in at most three client responses

_stored, _server = sasl.scram_sha256_keys(b"secret", b"salt-for-fuzzing", 4096)
KEYS = ScramCredentials(b"salt-for-fuzzing", 4096, _stored, _server)

_TOKENS = st.sampled_from(
    [
        b"",
        b"\x00",
        b"alice",
        b"secret",
        b"n,,",
        b"y,,",
        b"p=tls-unique,,",
        b"n=alice",
        b",r=",
        b"nonce",
        b",c=biws",
        b",p=",
        b"=2C",
        b"=3D",
        b"=ZZ",
        b"a=bob,",
        b",",
        b"\xff",
        b"v=",
        b"e=x",
    ]
)
_RESPONSES = st.one_of(st.binary(max_size=200), st.lists(_TOKENS, max_size=12).map(b"".join))


@fuzz_settings()
@given(
    st.sampled_from(["PLAIN", "LOGIN", "SCRAM-SHA-256"]),
    st.one_of(st.none(), _RESPONSES),
    st.lists(_RESPONSES, max_size=MAX_STEPS),
    st.lists(st.booleans(), max_size=MAX_STEPS),
)
def test_random_exchanges_end_in_success_or_failure(
    name: str, initial: bytes | None, responses: list[bytes], verdicts: list[bool]
) -> None:
    mechanism = sasl.server_mechanism(name, secret=b"k" * 32)
    assert mechanism is not None
    step = mechanism.start(initial)
    confirmed = False
    for _ in range(MAX_STEPS * 3):
        match step:
            case sasl.Challenge():
                if not responses:
                    return  # the client went away mid-exchange
                step = mechanism.respond(responses.pop(0))
            case sasl.VerifyPassword():
                confirmed = verdicts.pop(0) if verdicts else False
                step = mechanism.password_result(confirmed)
            case sasl.NeedScram():
                step = mechanism.scram_credentials(KEYS if verdicts and verdicts.pop(0) else None)
            case sasl.Success():
                # Random responses cannot prove a SCRAM password; PLAIN/LOGIN succeed only as told.
                assert name != "SCRAM-SHA-256" and confirmed
                break
            case sasl.Failure():
                break
            case _:
                raise AssertionError(f"not a documented step: {step!r}")
    else:
        raise AssertionError("the exchange did not end")
    assert mechanism.done
    with pytest.raises(sasl.SASLStateError):
        mechanism.respond(b"more")


@fuzz_settings()
@given(st.one_of(st.binary(max_size=200), st.text(max_size=100).map(str.encode)))
def test_client_response_lines_decode_or_raise_their_error(line: bytes) -> None:
    try:
        decoded = sasl.decode_client_response(line)
    except sasl.SASLSyntaxError:
        return
    stripped = line.strip(b" \t")
    if decoded is None:
        assert stripped == b"*"
    elif stripped not in (b"", b"="):
        try:
            assert base64.b64decode(stripped, validate=True) == decoded
        except binascii.Error:
            raise AssertionError("accepted what is not base64") from None
