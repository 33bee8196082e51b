"""The sandbox: every bound a script or a message can reach, in one place (Stalwart-like limits).

Each constant is enforced where its name appears; exceeding a parse limit refuses the script
(SieveSyntaxError), exceeding a run limit ends the run with an error and the implicit keep.
"""

from __future__ import annotations

# --- checking a script (parser)
MAX_SCRIPT_SIZE = 1024 * 1024  # characters of one script; the lexer and parser are linear in it
MAX_NESTING = 32  # depth of blocks and tests inside tests (Pigeonhole's default max nesting is 32)
MAX_COMMANDS = 10_000  # commands and tests in one script
MAX_STRING_LIST = 1024  # strings in one string list
MAX_NUMBER = 2**63 - 1  # a number with its K/M/G quantifier applied; beyond is refused

# --- running a script for one message (evaluator)
MAX_STEPS = 50_000  # commands, tests and value-key comparisons per message (~0.1 s at worst)
MAX_MATCH_WORK = 10_000_000  # character steps of comparisons per message, :matches at its worst (C: ~20 ms)
MAX_REDIRECTS = 4  # redirect actions per message (Pigeonhole's default)
MAX_VACATIONS = (
    1  # vacation replies per message: one auto-reply per message (Pigeonhole refuses a second too)
)
MAX_INCLUDE_DEPTH = 10  # nested include (RFC 6609 §3.2 asks for a limit; Pigeonhole uses 10)
MAX_INCLUDED_SCRIPTS = 32  # distinct scripts included in one run
MAX_VARIABLES = 256  # variables per script scope (RFC 5229 §6 lets an implementation bound them)
MAX_VARIABLE_SIZE = 4000  # characters of a variable's value; longer is cut (RFC 5229 §6: at least 4000)
MAX_VARIABLE_NAME = 64  # characters of a name inside ${...}: what the expander looks ahead for "}"
MAX_MATCH_VARIABLES = 10  # ${0}..${9} kept from a :matches (RFC 5229 §3.2: at least 0 to 9)
MAX_BODY_TEXT = 1024 * 1024  # characters of one body part the body test compares (RFC 5173 §6)
