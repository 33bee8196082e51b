"""The value conversions of `surat store migrate` (surat.store.migrate): what the PostgreSQL store
reads back from a converted SQLite row is what the SQLite store reads from the original, and the row
digests of both sides agree exactly when the values do."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fuzzing import fuzz_settings
from surat.store.migrate import MigrationFailed, _auth_client, _Digest, _message, _minutes
from surat.store.postgres.rows import joined_date
from surat.store.sqlite import _datetime

# Epoch seconds from 1970 to 2200, the range INTERNALDATE and the store's clocks live in.
_EPOCH_SECONDS = st.floats(min_value=0, max_value=7.3e9, allow_nan=False, allow_infinity=False)
# RFC 9051 date-time zones: +-HHMM, so whole minutes, less than a day.
_ZONE_SECONDS = st.integers(min_value=-(24 * 60 - 1), max_value=24 * 60 - 1).map(lambda m: m * 60)


def _sqlite_message_row(date: float, zone: int) -> tuple[object, ...]:
    return (7, 3, 42, 9, "$Label \\Seen", 1, 0, date, zone, 123, "0" * 26, "{}", None)


@pytest.mark.fuzz
@fuzz_settings()
@given(_EPOCH_SECONDS, _ZONE_SECONDS)
def test_an_internal_date_reads_back_as_the_sqlite_store_reads_it(date: float, zone: int) -> None:
    converted = _message(_sqlite_message_row(date, zone))
    moment, minutes = converted[7], converted[8]
    postgres = joined_date(moment, minutes)
    sqlite = _datetime(date, zone)
    assert postgres == sqlite
    assert postgres.utcoffset() == sqlite.utcoffset()  # INTERNALDATE is shown in its own zone


@pytest.mark.fuzz
@fuzz_settings()
@given(st.lists(_EPOCH_SECONDS, max_size=5), _EPOCH_SECONDS, _EPOCH_SECONDS)
def test_login_failure_times_keep_their_microseconds(
    failures: list[float], blocked: float, last: float
) -> None:
    text = " ".join(repr(t) for t in failures)  # how the SQLite store writes auth_clients.failures
    converted = _auth_client(("127.0.0.1", "127.0.0.1", text, blocked, 2, last))
    assert [round(m.timestamp(), 6) for m in converted[2]] == pytest.approx(
        [round(t, 6) for t in failures], abs=1e-6
    )
    assert converted[3].timestamp() == pytest.approx(blocked, abs=1e-6)


def test_a_zone_that_is_not_whole_minutes_fails_rather_than_drifting() -> None:
    assert _minutes(-18000) == -300
    with pytest.raises(MigrationFailed, match="not whole minutes"):
        _minutes(30)


def _digest(*rows: tuple[object, ...]) -> tuple[int, int]:
    digest = _Digest()
    for row in rows:
        digest.add(row)
    return digest.rows, digest.total


def test_row_digests_agree_across_value_types_and_row_order() -> None:
    when = datetime(2026, 3, 7, 3, 45, tzinfo=UTC)
    # As sent to PostgreSQL, and as psycopg reads it back (bytea as bytes, another zone's datetime).
    sent = [("a", True, when, b"\x00\x01", [when]), ("b", False, None, None, [])]
    read_back = [
        ("b", False, None, None, []),
        (
            "a",
            True,
            when.astimezone(timezone(timedelta(hours=5, minutes=30))),
            memoryview(b"\x00\x01"),
            [when],
        ),
    ]
    assert _digest(*sent) == _digest(*read_back)
    # Any one value different changes it: a flag, a microsecond, an octet, a row lost or doubled.
    assert _digest(("a", False, when, b"\x00\x01", [when]), sent[1]) != _digest(*sent)
    assert _digest(("a", True, when + timedelta(microseconds=1), b"\x00\x01", [when]), sent[1]) != _digest(
        *sent
    )
    assert _digest(("a", True, when, b"\x00\x02", [when]), sent[1]) != _digest(*sent)
    assert _digest(sent[0]) != _digest(*sent)
    assert _digest(sent[0], sent[0], sent[1])[1] != _digest(*sent)[1]
