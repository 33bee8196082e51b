"""Logging: one line per event, key=value fields, the connection id from a contextvar.

Usage in protocol code:
    log.info("smtp.transaction", extra=fields(sender=..., rcpts=..., result="250"))
which renders as
    2026-11-26T14:45:00Z INFO surat.smtpd conn=Ab12 smtp.transaction sender=a@b rcpts=2 result=250

Secrets never reach this module: callers pass only the fields they mean to log, and `fields()` refuses
the names that would carry them (password, pass, secret, body).
"""

from __future__ import annotations

import contextvars
import logging
import re
import secrets
import sys
import time
from typing import Any

connection_id: contextvars.ContextVar[str] = contextvars.ContextVar("connection_id", default="-")

_FORBIDDEN_FIELDS = frozenset({"password", "pass", "passwd", "secret", "body", "data", "credentials"})


def new_connection_id() -> str:
    """A short random id that ties together every line of one connection."""
    return secrets.token_urlsafe(6)


def fields(**values: Any) -> dict[str, Any]:
    """Wrap key=value fields for `extra=`; rejects keys that would log secrets or bodies."""
    bad = _FORBIDDEN_FIELDS.intersection(values)
    if bad:
        raise ValueError(f"refusing to log field(s) {sorted(bad)}")
    return {"kv": values}


_NEEDS_QUOTES = re.compile(r'[ "=\\]')


def _quote(value: Any) -> str:
    if type(value) is int:
        return str(value)  # sizes and counts: nothing to quote
    text = str(value)
    if text == "" or _NEEDS_QUOTES.search(text) is not None or not text.isprintable():
        escaped = text.replace("\\", "\\\\").replace('"', '\\"')
        if not escaped.isprintable():  # the rare case: escape control characters one by one
            escaped = "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in escaped)
        return f'"{escaped}"'
    return text


class KeyValueFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(record.created))
        parts = [stamp, record.levelname, record.name, f"conn={connection_id.get()}", record.getMessage()]
        kv: dict[str, Any] = getattr(record, "kv", {})
        parts.extend(f"{key}={_quote(value)}" for key, value in kv.items())
        line = " ".join(parts)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def setup_logging(level: str = "INFO") -> None:
    # The logging HOWTO's "Optimization" switches: our lines show none of the caller's file, line,
    # thread or process, and finding the caller walks the stack on every line.
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(KeyValueFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # asyncio logs every client that drops a TLS connection at ERROR; those are the clients' doing.
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)
