"""The Sieve scripts `surat user vacation` and `surat user forward` write: plain scripts the user can
read and edit (and take elsewhere), chained so that they combine with the user's own script.

The chain: `surat-vacation` (when on) → `surat-forward` (when on) → the user's own script (the one
that was active before). Each generated script ends with an `include :personal :optional` line naming
the next one (RFC 6609 §3.2); the first of the chain is the active script. Turning one off deletes it
and re-links the rest; with none left, the user's own script is active again. Pure text: the CLI
(surat.cli) reads and writes the store.
"""

from __future__ import annotations

import re

__all__ = [
    "FORWARD_SCRIPT",
    "GENERATED_SCRIPTS",
    "VACATION_SCRIPT",
    "forward_script",
    "next_script",
    "relink",
    "vacation_script",
]

VACATION_SCRIPT = "surat-vacation"
FORWARD_SCRIPT = "surat-forward"
GENERATED_SCRIPTS = (VACATION_SCRIPT, FORWARD_SCRIPT)  # in chain order

# The line each generated script ends with; found again (and only this spelling) to re-link the chain.
_NEXT_LINE = re.compile(r'^include :personal :optional "((?:[^"\\]|\\.)*)";[ \t]*$', re.MULTILINE)


def quoted(text: str) -> str:
    """A Sieve quoted string (RFC 5228 §2.4.2: `\\` and `"` escaped)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _unquoted(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text)


def _multiline(text: str) -> str:
    """A `text:` multi-line string (RFC 5228 §2.4.2): lines starting with "." get one more."""
    lines = text.replace("\r\n", "\n").rstrip("\n").split("\n")
    body = "\n".join("." + line if line.startswith(".") else line for line in lines)
    return f"text:\n{body}\n.\n"


def _next_line(name: str | None) -> str:
    if name is None:
        return ""
    return f"# Then the script that was active before:\ninclude :personal :optional {quoted(name)};\n"


def vacation_script(subject: str, days: int, body: str, then: str | None) -> str:
    return (
        "# Written by `surat user vacation`: an out-of-office reply, at most once every"
        f" {days} day(s) per sender.\n"
        "# Edit it freely; `surat user vacation ADDRESS off` removes it.\n"
        'require ["vacation", "include"];\n'
        f"vacation :days {days} :subject {quoted(subject)} {_multiline(body)};\n" + _next_line(then)
    )


def forward_script(target: str, keep: bool, then: str | None) -> str:
    head = (
        "# Written by `surat user forward`: every message goes on to another address.\n"
        "# Edit it freely; `surat user forward ADDRESS off` removes it.\n"
    )
    if keep:
        return (
            head + 'require ["copy", "include"];\n' + f"redirect :copy {quoted(target)};\n" + _next_line(then)
        )
    rest = ""
    if then is not None:
        # Never reached; kept so that `forward off` knows which script to make active again.
        rest = "# Without --keep no copy stays here, so nothing runs after `stop`.\n" + _next_line(then)
    return head + 'require ["include"];\n' + f"redirect {quoted(target)};\nstop;\n" + rest


def next_script(text: str) -> str | None:
    """The script a generated one hands on to (its last `include :personal :optional` line), or None."""
    found = _NEXT_LINE.findall(text)
    return _unquoted(found[-1]) if found else None


def relink(text: str, then: str | None) -> str:
    """`text` (a generated script, maybe edited by its user) handing on to `then` instead."""
    matches = list(_NEXT_LINE.finditer(text))
    if matches:
        last = matches[-1]
        start = text.rfind("# Then the script that was active before:\n", 0, last.start())
        start = start if start >= 0 and text[start : last.start()].count("\n") == 1 else last.start()
        end = last.end() + (1 if text[last.end() : last.end() + 1] == "\n" else 0)
        text = text[:start] + text[end:]
    if then is None:
        return text
    if not text.endswith("\n"):
        text += "\n"
    return text + _next_line(then)
