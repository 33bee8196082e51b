"""Differential: Surat's Sieve actions equal Dovecot Pigeonhole's (`sieve-test`, Debian dovecot-sieve)
for a corpus of scripts x messages, hand-written and generated.

Skipped when `sieve-test` is missing, failed instead under CI=true (the CI image installs it).
Known, deliberate differences are kept out of the corpus and listed in docs/sieve.md: Pigeonhole
clamps `:seconds` to its configured one-day minimum (RFC 6131 lets a site do so; Surat keeps 0), and
refuses `ereject` unless configured.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from surat.sieve import (
    Discard,
    FileInto,
    Keep,
    MessageContext,
    Redirect,
    Reject,
    SieveSyntaxError,
    Vacation,
    evaluate,
    parse_script,
)

SIEVE_TEST = shutil.which("sieve-test")
if SIEVE_TEST is None:
    if os.environ.get("CI") == "true":
        pytest.fail("sieve-test (Debian dovecot-sieve) is required under CI", pytrace=False)
    pytestmark = pytest.mark.skip(reason="sieve-test (Debian dovecot-sieve) is not installed")

SENDER = "coyote@desert.example.org"
RECIPIENT = "roadrunner+birdseed@acme.example"

MESSAGES = {
    "plain": (
        b'From: "Wile E. Coyote" <coyote@desert.example.org>\r\n'
        b"To: roadrunner+birdseed@acme.example, Bugs <bugs@acme.example>\r\n"
        b"Cc: elmer@acme.example\r\n"
        b"Date: Mon, 07 Dec 2026 22:15:00 -0800\r\n"
        b"Subject: [acme-users] [fwd] version 1.0 is out\r\n"
        b"X-Priority: 2\r\n"
        b"\r\n"
        b"Launch the missile at these coordinates.\r\n"
    ),
    "list": (
        b"From: list-bounces@lists.example\r\n"
        b"To: acme-users@lists.example\r\n"
        b"List-ID: Acme users <acme-users.lists.example>\r\n"
        b"Subject: =?utf-8?q?caf=C3=A9?= time\r\n"
        b"Subject: second subject\r\n"
        b"X-Priority: 10\r\n"
        b"\r\n"
        b"MAKE MONEY FAST\r\n"
    ),
    "mime": (
        b"From: bugs@acme.example\r\n"
        b"To: Roadrunner <roadrunner@acme.example>\r\n"
        b"Subject: parts\r\n"
        b"MIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="b1"\r\n'
        b"\r\n"
        b"--b1\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n"
        b"Content-Transfer-Encoding: quoted-printable\r\n"
        b"\r\n"
        b"secret caf=C3=A9 coordinates\r\n"
        b"--b1\r\n"
        b"Content-Type: application/octet-stream\r\n"
        b"Content-Transfer-Encoding: base64\r\n"
        b"\r\n"
        b"U0VDUkVUIGJpbmFyeQ==\r\n"
        b"--b1--\r\n"
    ),
}

REQUIRE = (
    'require ["fileinto", "reject", "envelope", "encoded-character", "vacation", "subaddress", '
    '"comparator-i;ascii-numeric", "relational", "imap4flags", "copy", "body", "variables", "mailbox", '
    '"date", "index"];\n'
)

HAND_WRITTEN = [
    "",
    "keep;",
    "discard;",
    "keep; discard;",
    'fileinto "A"; fileinto "B"; fileinto "A";',
    'fileinto :copy "A";',
    'redirect "a@example.com"; redirect "a@example.com";',
    'redirect :copy "a@example.com";',
    'redirect "a@example.com"; redirect "b@example.com"; redirect "c@example.com"; redirect "d@example.com"; redirect "e@example.com";',
    'reject "go away";',
    'if header :contains "subject" "acme" { fileinto "Acme"; } elsif header :is "subject" "parts" { discard; } else { keep; }',
    'if header :matches "List-ID" "*<*.lists.*>" { fileinto "lists.${2}"; stop; } fileinto "other";',
    'if header :matches "Subject" "[*] *" { fileinto "${1}/${2}"; }',
    'if header :is "subject" "café time" { fileinto "decoded"; }',
    'if header :index 2 :is "subject" "second subject" { fileinto "second"; }',
    'if header :index 1 :last :contains "subject" "caf" { fileinto "last"; }',
    'if address :domain :is "from" "acme.example" { fileinto "acme"; }',
    'if address :localpart :matches ["to", "cc"] "e*" { fileinto "elmer"; }',
    'if address :all :is "to" "bugs@acme.example" { fileinto "bugs"; }',
    'if envelope :detail "to" "birdseed" { fileinto "detail"; }',
    'if envelope :user "to" "roadrunner" { fileinto "user"; }',
    'if envelope :domain :is "from" "desert.example.org" { fileinto "env"; }',
    'if exists ["From", "X-Priority"] { fileinto "both"; }',
    'if not exists "Date" { fileinto "nodate"; }',
    'if size :over 300 { fileinto "big"; } if size :under 300 { fileinto "small"; }',
    'if header :value "lt" :comparator "i;ascii-numeric" "x-priority" "3" { fileinto "urgent"; }',
    'if header :count "ge" :comparator "i;ascii-numeric" "subject" "2" { fileinto "two"; }',
    'if address :count "eq" :comparator "i;ascii-numeric" ["to", "cc"] "3" { fileinto "three"; }',
    'if body :contains "missile" { fileinto "body"; }',
    'if body :raw :contains "caf=C3=A9" { fileinto "raw"; }',
    'if body :text :contains "café" { fileinto "text"; }',
    'if body :content "application" :contains "SECRET" { fileinto "app"; }',
    'if body :content "text" :contains "SECRET" { fileinto "none"; }',
    'addflag "\\\\Seen"; addflag ["\\\\Flagged", "Work"]; removeflag "\\\\flagged"; fileinto "F";',
    'setflag "\\\\Answered"; keep :flags "\\\\Deleted";',
    'addflag "\\\\Seen";',
    'if allof (header :contains "from" "coyote", not header :contains "to" "nobody") { redirect "x@example.com"; }',
    'if anyof (false, header :matches "subject" "*1.?*") { discard; }',
    'vacation :days 3 :subject "away" "I am away";',
    'vacation :handle "h" :addresses ["a@acme.example"] "back soon";',
    'set "a" "INBOX"; set :upper "b" "${a}"; set :length "n" "${a}"; fileinto "${b}.${n}";',
    'set "v" "x"; if string :is "${v}" "x" { fileinto "string"; }',
    'set :quotewildcard "q" "a*b"; fileinto "${q}";',
    'if date :is "date" "year" "2026" { fileinto "y2026"; }',
    'if date :originalzone :is "date" "zone" "-0800" { fileinto "zone"; }',
    'if date :zone "+0000" :is "date" "hour" "06" { fileinto "utc-hour"; }',
    'if header :contains "subject" "${hex:61 63 6d 65}" { fileinto "encoded"; }',
    'if header :is :comparator "i;octet" "subject" "PARTS" { fileinto "octet"; } else { fileinto "no-octet"; }',
    'if mailboxexists "INBOX" { fileinto :create "New"; }',
]

_KEYS = ['"a"', '"*"', '"*e*"', '"?*"', '""', '["acme", "*parts*"]', '"${1}"', '"2"']
_HEADERS = ['"subject"', '"to"', '["from", "to"]', '"list-id"', '"x-priority"']
_MATCH = ["", ":is", ":contains", ":matches", ':count "ge" :comparator "i;ascii-numeric"', ':value "lt"']
_ADDRESS_HEADERS = ['"to"', '"from"', '["from", "cc"]', '"cc"']
_ENVELOPE = ['"to"', '"from"']
_ACTIONS = [
    'fileinto "${1}x";',
    "keep;",
    "discard;",
    'redirect "u@example.com";',
    'fileinto :copy "C";',
    'addflag "\\\\Seen";',
    "stop;",
]


def _generated(count: int) -> list[str]:
    """Scripts built from the grammar with a fixed seed (the corpus is the same on every run)."""
    rng = random.Random(14)

    def test() -> str:
        kind = rng.randrange(5)
        if kind == 0:
            return f"header {rng.choice(_MATCH)} {rng.choice(_HEADERS)} {rng.choice(_KEYS)}"
        if kind == 1:
            part = rng.choice([":all", ":domain", ":localpart"])
            return f"address {rng.choice(_MATCH)} {part} {rng.choice(_ADDRESS_HEADERS)} {rng.choice(_KEYS)}"
        if kind == 2:
            part = rng.choice([":user", ":detail", ":all"])
            return f"envelope {rng.choice(_MATCH)} {part} {rng.choice(_ENVELOPE)} {rng.choice(_KEYS)}"
        if kind == 3:
            return f"anyof ({test()}, {test()})"
        return f"not {test()}"

    scripts = []
    for _ in range(count):
        lines = [
            f"if {test()} {{ {rng.choice(_ACTIONS)} }} else {{ {rng.choice(_ACTIONS)} }}"
            for _ in range(rng.randrange(1, 4))
        ]
        scripts.append("\n".join(lines))
    return scripts


CORPUS = HAND_WRITTEN + _generated(60)


def _flags(flags: tuple[str, ...] | list[str]) -> str:
    return " ".join(sorted(flag.lower() for flag in flags))


def surat_outcome(script_text: str, message: bytes) -> list[str]:
    try:
        script = parse_script(script_text)
    except SieveSyntaxError:
        return ["syntax error"]
    context = MessageContext(message, SENDER, RECIPIENT, datetime(2026, 12, 8, 12, 0, tzinfo=UTC))
    result = evaluate(script, context, mailbox_exists=lambda name: name == "INBOX")
    if result.errors:
        return ["failed"]
    out = []
    for action in result.actions:
        if isinstance(action, Keep):
            out.append(f"{'implicit ' if action.implicit else ''}store INBOX [{_flags(action.flags)}]")
        elif isinstance(action, FileInto):
            out.append(f"store {action.mailbox} [{_flags(action.flags)}]")
        elif isinstance(action, Redirect):
            out.append(f"redirect {action.address}")
        elif isinstance(action, Discard):
            out.append("discard")
        elif isinstance(action, Reject):
            out.append(f"reject {action.reason}")
        elif isinstance(action, Vacation):
            out.append(f"vacation {action.seconds}")
    return sorted(out)


def pigeonhole_outcome(script_text: str, message: bytes, work: Path) -> list[str]:
    assert SIEVE_TEST is not None
    (work / "dovecot.conf").write_text(
        f"mail_uid = 65534\nmail_gid = 65534\nfirst_valid_uid = 0\nmail_location = maildir:{work}/mail\n"
    )
    (work / "script.sieve").write_text(script_text)
    (work / "message.eml").write_bytes(message)
    for name in ("script.sieve", "message.eml"):
        (work / name).chmod(0o644)
    completed = subprocess.run(
        [
            SIEVE_TEST,
            "-C",
            "-c",
            str(work / "dovecot.conf"),
            "-f",
            SENDER,
            "-r",
            RECIPIENT,
            str(work / "script.sieve"),
            str(work / "message.eml"),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
        env={"TZ": "UTC", "PATH": os.environ.get("PATH", "")},
    )
    output = completed.stdout + completed.stderr
    if "failed to compile" in output:
        return ["syntax error"]
    if "final result: failed" in output:
        return ["failed"]
    out: list[str] = []
    implicit = False
    entries: list[tuple[str, str | None]] = []  # (action, its flags for a store, else None)
    for line in output.splitlines():
        stripped = line.strip()
        if line.startswith("Implicit keep:"):
            implicit = True
        elif stripped.startswith("* store message in folder: "):
            folder = stripped.removeprefix("* store message in folder: ")
            entries.append((f"{'implicit ' if implicit else ''}store {folder}", ""))
        elif stripped.startswith("+ add IMAP flags: ") and entries:
            entries[-1] = (entries[-1][0], _flags(stripped.removeprefix("+ add IMAP flags: ").split()))
        elif stripped.startswith("* redirect message to: "):
            entries.append((f"redirect {stripped.removeprefix('* redirect message to: ').strip('<>')}", None))
        elif stripped == "* discard":
            entries.append(("discard", None))
        elif stripped.startswith("* reject message with reason: "):
            entries.append((f"reject {stripped.removeprefix('* reject message with reason: ')}", None))
        elif stripped.startswith("=> seconds : "):
            entries.append((f"vacation {stripped.removeprefix('=> seconds : ')}", None))
    for text, flags in entries:
        out.append(text if flags is None else f"{text} [{flags}]")
    return sorted(out)


@pytest.fixture
def work() -> Iterator[Path]:
    """A directory the unprivileged user sieve-test switches to can read (pytest's tmp_path is 0700)."""
    path = Path(tempfile.mkdtemp(prefix="surat-sieve-"))
    path.chmod(0o777)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.mark.parametrize("message_name", sorted(MESSAGES))
@pytest.mark.parametrize("script", CORPUS)
def test_actions_equal_pigeonholes(script: str, message_name: str, work: Path) -> None:
    text = REQUIRE + script
    message = MESSAGES[message_name]
    assert surat_outcome(text, message) == pigeonhole_outcome(text, message, work)
