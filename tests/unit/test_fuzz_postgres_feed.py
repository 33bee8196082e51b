"""Fuzz: the PostgreSQL change feed's notification payloads (surat.store.postgres.feed) encode within
PostgreSQL's limit and back to what subscribers need, and any text decodes or raises the documented
ChangeNotificationError."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fuzzing import fuzz_settings
from surat.store.base import Change, ChangeKind
from surat.store.postgres.feed import MAX_PAYLOAD, ChangeNotificationError, decode_payload, encode_payload

pytestmark = pytest.mark.fuzz

_KIND = st.sampled_from(list(ChangeKind))
_ID = st.integers(0, 2**63)
_CHANGE = st.builds(Change, _KIND, _ID, st.none() | _ID, st.lists(_ID, max_size=3).map(tuple), _ID)
_STORE_ID = st.text("0123456789abcdef", min_size=1, max_size=16)


def _check(payload: str) -> None:
    try:
        store_id, changes = decode_payload(payload)
    except ChangeNotificationError:
        return
    assert store_id and (changes is None or all(isinstance(change, Change) for change in changes))


@fuzz_settings()
@given(_STORE_ID, st.lists(_CHANGE, max_size=400))
def test_encoded_changes_fit_and_decode_to_what_subscribers_use(store_id: str, changes: list[Change]) -> None:
    payload = encode_payload(store_id, changes)
    sent = [change for change in changes if change.kind is not ChangeKind.OVERFLOW]
    if payload is None:
        assert sent == []
        return
    assert len(payload.encode()) <= MAX_PAYLOAD
    decoded_id, decoded = decode_payload(payload)
    assert decoded_id == store_id
    if decoded is None:
        return  # the summary: receivers re-read everything
    # Every (kind, account, mailbox) sent arrives once, in the order of its first change, with the
    # highest MODSEQ; UIDs stay home.
    expected: dict[tuple[ChangeKind, int, int | None], int] = {}
    for change in sent:
        key = (change.kind, change.account_id, change.mailbox_id)
        expected[key] = max(expected.get(key, change.modseq), change.modseq)
    assert decoded == [
        Change(kind, account, mailbox, (), modseq) for (kind, account, mailbox), modseq in expected.items()
    ]


@fuzz_settings()
@given(st.text(max_size=200))
def test_any_text_decodes_or_raises_the_documented_error(payload: str) -> None:
    _check(payload)


@fuzz_settings()
@given(_STORE_ID, st.lists(_CHANGE, min_size=1, max_size=5), st.data())
def test_mutated_payloads_decode_or_raise_the_documented_error(
    store_id: str, changes: list[Change], data: st.DataObject
) -> None:
    encoded = encode_payload(store_id, changes)
    payload = list(encoded if encoded is not None else store_id)
    for _ in range(data.draw(st.integers(1, 4))):
        position = data.draw(st.integers(0, len(payload) - 1))
        payload[position] = data.draw(st.characters())
    _check("".join(payload))
