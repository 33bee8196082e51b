"""Fuzz: whatever path segment a client sends to /.well-known/acme-challenge/, the lookup answers
with the key authorization written for exactly that token or with nothing; it never reads another
file (the status file, the keys beside the challenges)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fuzzing import fuzz_settings
from surat.acme.files import MAX_KEY_AUTHORIZATION, AcmeFiles, RenewalStatus

pytestmark = pytest.mark.fuzz

KNOWN = "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA"
_PIECES = st.sampled_from(
    [*"aZ09-_./\\%\x00é ", KNOWN, "..", "status.json", "key.pem", "challenges", "A" * 130]
)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> AcmeFiles:
    acme = AcmeFiles(tmp_path_factory.mktemp("fuzz-acme"))
    acme.write_status(RenewalStatus(last_error="must never be served"))
    acme.key.write_text("must never be served")
    acme.put_challenge(KNOWN, f"{KNOWN}.thumbprint")
    return acme


@fuzz_settings()
@given(token=st.lists(_PIECES, max_size=12).map("".join))
def test_challenge_lookup_answers_only_written_tokens(files: AcmeFiles, token: str) -> None:
    answer = files.challenge(token)
    if token == KNOWN:
        assert answer == f"{KNOWN}.thumbprint".encode()
    else:
        assert answer is None


def test_a_long_answer_is_read_only_up_to_the_bound(tmp_path: Path) -> None:
    files = AcmeFiles(tmp_path)
    files.put_challenge(KNOWN, "x" * (MAX_KEY_AUTHORIZATION * 4))
    assert files.challenge(KNOWN) == b"x" * MAX_KEY_AUTHORIZATION
