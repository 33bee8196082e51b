"""The MTA-STS policy this server publishes (RFC 8461 §3.1, §3.2): rendering and its TXT record id.
Each rendered policy must pass the strict parser senders use (surat.mailauth.mtasts, the same one
our own queue uses on other domains' policies: tests/unit/test_mailauth_mtasts.py)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fuzzing import fuzz_settings
from surat.mailauth.mtasts import (
    MAX_MAX_AGE,
    StsMode,
    StsPolicy,
    StsRecord,
    parse_policy,
    parse_record,
    policy_id,
    published_policy,
    render_policy,
)


def test_render_is_crlf_lines_that_parse_back() -> None:
    policy = published_policy("testing", 86400, "Mail.Example.TEST")
    text = render_policy(policy)
    assert text == "version: STSv1\r\nmode: testing\r\nmx: mail.example.test\r\nmax_age: 86400\r\n"
    assert parse_policy(text.encode()) == policy == StsPolicy(StsMode.TESTING, 86400, ("mail.example.test",))


def test_the_id_changes_with_the_policy_and_only_then() -> None:
    testing = published_policy("testing", 604800, "mail.example.test")
    ids = {
        policy_id(testing),
        policy_id(published_policy("enforce", 604800, "mail.example.test")),
        policy_id(published_policy("testing", 86400, "mail.example.test")),
        policy_id(published_policy("testing", 604800, "mx.example.test")),
    }
    assert len(ids) == 4
    assert policy_id(testing) == policy_id(published_policy("testing", 604800, "mail.example.test"))
    # Each is a valid sts-id (RFC 8461 §3.1) in the record `surat dns` prints.
    assert all(parse_record([f"v=STSv1; id={i};"]) == StsRecord(i) for i in ids)


def test_an_unknown_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="strict"):
        published_policy("strict", 1, "mail.example.test")


_LABEL = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?", fullmatch=True)


@pytest.mark.fuzz
@fuzz_settings()
@given(
    mode=st.sampled_from([m.value for m in StsMode]),
    max_age=st.integers(0, MAX_MAX_AGE),
    labels=st.lists(_LABEL, min_size=1, max_size=5),
)
def test_every_published_policy_parses_back(mode: str, max_age: int, labels: list[str]) -> None:
    policy = published_policy(mode, max_age, ".".join(labels))
    assert parse_policy(render_policy(policy).encode()) == policy
