"""Log lines: key=value fields, quoting, the connection id, and no secrets."""

from __future__ import annotations

import logging

import pytest

from surat.log import KeyValueFormatter, connection_id, fields


def render(message: str, **values: object) -> str:
    record = logging.LogRecord("surat.test", logging.INFO, __file__, 1, message, None, None)
    record.kv = fields(**values)["kv"]
    return KeyValueFormatter().format(record)


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("plain", "plain"),
        ("", '""'),
        ("two words", '"two words"'),
        ('say "hi"', '"say \\"hi\\""'),
        ("a=b", '"a=b"'),
        ("back\\slash", '"back\\\\slash"'),
        ("line\nbreak", '"line\\x0abreak"'),  # a client cannot forge a second log line
        ("tab\there", '"tab\\x09here"'),
        (250, "250"),
        (-1, "-1"),
        (True, "True"),
        (None, "None"),
    ],
)
def test_values_are_quoted_so_lines_parse(value: object, shown: str) -> None:
    line = render("smtp.transaction", result=value)
    assert line.endswith(f" smtp.transaction result={shown}")
    assert "\n" not in line


def test_line_carries_the_connection_id() -> None:
    token = connection_id.set("Ab12cd")
    try:
        assert " conn=Ab12cd " in render("event")
    finally:
        connection_id.reset(token)


@pytest.mark.parametrize("name", ["password", "pass", "secret", "body", "credentials"])
def test_fields_that_would_carry_secrets_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match="refusing to log"):
        fields(**{name: "x"})
