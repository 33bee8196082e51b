"""What a typical 20-rule Sieve script costs per delivered message (parse once, evaluate per message),
and the worst single run a hostile script can force within the limits (MAX_STEPS, MAX_MATCH_WORK).

    PYTHONPATH=src .venv/bin/python bench/sieve_eval.py
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

from surat.sieve import MessageContext, evaluate, parse_script

TYPICAL = (
    'require ["fileinto", "envelope", "subaddress", "variables", "imap4flags", "body", "vacation", "copy"];\n'
    + "".join(
        f'if header :contains "subject" "topic{i}" {{ fileinto "Topics/{i}"; stop; }}\n' for i in range(8)
    )
    + "".join(
        f'if address :domain :is "from" "vendor{i}.example" {{ fileinto "Vendors"; }}\n' for i in range(5)
    )
    + 'if header :matches "List-ID" "*<*.*>" { fileinto "Lists/${2}"; stop; }\n'
    + 'if envelope :detail "to" "shop" { fileinto :copy "Shopping"; }\n'
    + 'if exists "X-Spam-Flag" { addflag "$Junk"; fileinto "Junk"; stop; }\n'
    + 'if size :over 5M { addflag "\\\\Flagged"; }\n'
    + 'if body :text :contains "unsubscribe" { fileinto "Newsletters"; }\n'
    + 'if anyof (header :is "Precedence" "bulk", header :contains "Auto-Submitted" "auto") { stop; }\n'
    + 'vacation :days 7 :subject "Away" "I am away until Monday.";\n'
)

MESSAGE = (
    b"From: Someone <someone@example.org>\r\nTo: user+shop@example.com\r\nSubject: hello there\r\n"
    b"Date: Mon, 07 Dec 2026 10:00:00 +0000\r\nMessage-ID: <1@example.org>\r\n\r\n"
    + b"Just a normal message body line.\r\n"
    * 100
)

HOSTILE = (
    'require "variables";\nset "v" "'
    + "a" * 3900
    + '";\n'
    + ('if string :matches "${v}" "*' + "a?" * 500 + 'b*" { discard; }\n') * 4
)


def measure(script_text: str, rounds: int) -> tuple[float, float]:
    start = time.perf_counter()
    for _ in range(rounds):
        script = parse_script(script_text)
    parse = (time.perf_counter() - start) / rounds
    context = MessageContext(MESSAGE, "someone@example.org", "user+shop@example.com", datetime.now(UTC))
    start = time.perf_counter()
    for _ in range(rounds):
        result = evaluate(script, context)
    run = (time.perf_counter() - start) / rounds
    assert result.actions
    return parse, run


def main() -> None:
    parse, run = measure(TYPICAL, 2000)
    print(f"typical 20-rule script: parse {parse * 1e6:.0f} us once, evaluate {run * 1e6:.0f} us per message")
    parse, run = measure(HOSTILE, 5)
    print(f"hostile :matches (stopped by MAX_MATCH_WORK): evaluate {run * 1e3:.0f} ms per message")


if __name__ == "__main__":
    main()
