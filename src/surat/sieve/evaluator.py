"""The sans-IO Sieve evaluator: a checked script and one message in, the actions to take out.

`evaluate` never touches a mailbox, a queue or a clock: the delivery hands it the message and the time,
and two callbacks (an include resolver, a mailbox-exists check); it returns a SieveResult. Semantics:
- implicit keep (RFC 5228 §2.10.2): kept unless keep, fileinto, redirect (without :copy, RFC 3894),
  discard or reject cancelled it; it is the last action, with the imap4flags flags of the end of run;
- duplicate actions are done once (§2.10.3): keep, fileinto of one mailbox, redirect to one address;
- a runtime error (§2.10.6) or an exceeded limit ends the run: the result holds the error and only the
  implicit keep, so nothing is lost.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from email.utils import parsedate_to_datetime
from typing import TypeVar

from surat.message.address import mailboxes
from surat.sieve.actions import Action, Discard, FileInto, Keep, Redirect, Reject, Vacation
from surat.sieve.errors import SieveRuntimeError, SieveSyntaxError
from surat.sieve.limits import (
    MAX_INCLUDE_DEPTH,
    MAX_INCLUDED_SCRIPTS,
    MAX_MATCH_VARIABLES,
    MAX_REDIRECTS,
    MAX_STEPS,
    MAX_VACATIONS,
    MAX_VARIABLE_NAME,
    MAX_VARIABLE_SIZE,
    MAX_VARIABLES,
)
from surat.sieve.matching import Budget, Comparator, equals, glob_match, relational
from surat.sieve.message_view import MessageContext, MessageView
from surat.sieve.nodes import Command, Number, Script, StringList, Test
from surat.sieve.parser import ADDRESS_HEADERS

__all__ = ["IncludeResolver", "MailboxExists", "MessageContext", "SieveResult", "evaluate"]

# (script name, location "personal" or "global") -> the parsed script, or None when there is none.
# A script that does not parse raises SieveSyntaxError from the resolver.
IncludeResolver = Callable[[str, str], Script | None]
MailboxExists = Callable[[str], bool]

_Value = TypeVar("_Value", str, bytes)

DAY = 86_400
DEFAULT_VACATION_DAYS = 7  # RFC 5230 §4.1
MAX_VACATION_SECONDS = 365 * DAY  # a period beyond a year is cut to a year


@dataclass(frozen=True, slots=True)
class SieveResult:
    """What one run decided. `errors` non-empty means the run failed and `actions` is the implicit
    keep alone; `log` has one line per action taken (for the delivery's log line)."""

    actions: tuple[Action, ...]
    errors: tuple[str, ...] = ()
    log: tuple[str, ...] = ()

    @property
    def failed(self) -> bool:
        return bool(self.errors)


class _Stop(Exception):
    """`stop` (RFC 5228 §3.3): ends the whole run, included scripts and all."""


class _Return(Exception):
    """`return` (RFC 6609 §3.4): ends the current included script."""


@dataclass(slots=True)
class _Scope:
    """One script's variables (RFC 6609 §3.5: each included script has its own, but for globals)."""

    script: Script
    variables: dict[str, str] = field(default_factory=dict)
    match: list[str] = field(default_factory=list)
    global_names: set[str] = field(default_factory=set)

    @property
    def has_variables(self) -> bool:
        return "variables" in self.script.capabilities


def _is_name(text: str) -> bool:
    return (
        bool(text)
        and (text[0].isascii() and (text[0].isalpha() or text[0] == "_"))
        and all(c.isascii() and (c.isalnum() or c == "_") for c in text)
    )


class _Run:
    def __init__(
        self,
        message: MessageContext,
        include_resolver: IncludeResolver | None,
        mailbox_exists: MailboxExists | None,
    ) -> None:
        self.view = MessageView(message)
        self.now = message.now
        self.include_resolver = include_resolver
        self.mailbox_exists = mailbox_exists
        self.actions: list[Action] = []
        self.log: list[str] = []
        self.implicit_keep = True
        self.flags: list[str] = []  # the imap4flags internal variable (RFC 5232 §3)
        self.steps = 0
        self.budget = Budget()
        self.redirects = 0
        self.vacations = 0
        self.globals: dict[str, str] = {}
        self.include_stack: list[tuple[str, str]] = []
        self.included: set[tuple[str, str]] = set()

    # ------------------------------------------------------------------ control
    def step(self, line: int) -> None:
        self.steps += 1
        if self.steps > MAX_STEPS:
            raise SieveRuntimeError(f"script ran more than {MAX_STEPS} steps", line)

    def run_script(self, script: Script) -> None:
        scope = _Scope(script)
        with contextlib.suppress(_Return):
            self.block(script.commands, scope)

    def block(self, commands: tuple[Command, ...], scope: _Scope) -> None:
        chain_taken = False  # an if/elsif of the current chain already ran its block
        for command in commands:
            self.step(command.line)
            name = command.name
            if name == "if":
                chain_taken = False
            if name in ("if", "elsif", "else"):
                if chain_taken:
                    continue
                if command.test is None or self.test(command.test, scope):
                    chain_taken = True
                    assert command.block is not None
                    self.block(command.block, scope)
                continue
            _COMMAND_HANDLERS[name](self, command, scope)

    # ------------------------------------------------------------------ strings
    def expand(self, text: str, scope: _Scope) -> str:
        """RFC 5229 §3: "${name}" and "${N}" replaced by their values, once (no re-expansion); text
        that is not a reference is kept. Looks ahead at most MAX_VARIABLE_NAME characters for "}", so
        the work is linear in the text."""
        if not scope.has_variables or "${" not in text:
            return text
        out: list[str] = []
        pos = 0
        while True:
            start = text.find("${", pos)
            if start < 0:
                out.append(text[pos:])
                break
            end = text.find("}", start + 2, start + 3 + MAX_VARIABLE_NAME + len("global."))
            name = text[start + 2 : end] if end >= 0 else ""
            value = self.lookup(name, scope) if end >= 0 else None
            if value is None:
                out.append(text[pos : start + 1])
                pos = start + 1
            else:
                out.append(text[pos:start])
                out.append(value)
                pos = end + 1
        return "".join(out)

    def lookup(self, name: str, scope: _Scope) -> str | None:
        """The value of a reference, "" for an unset variable, None when `name` is not a reference."""
        if name.isascii() and name.isdigit():
            index = int(name)
            return scope.match[index] if index < len(scope.match) else ""
        lowered = name.lower()
        if lowered.startswith("global.") and _is_name(lowered[7:]):
            return self.globals.get(lowered[7:], "")
        if not _is_name(lowered):
            return None
        if lowered in scope.global_names:
            return self.globals.get(lowered, "")
        return scope.variables.get(lowered, "")

    def assign(self, name: str, value: str, scope: _Scope, line: int) -> None:
        lowered = name.lower()
        store = self.globals if lowered in scope.global_names else scope.variables
        if lowered not in store and len(store) >= MAX_VARIABLES:
            raise SieveRuntimeError(f"more than {MAX_VARIABLES} variables", line)
        store[lowered] = value[:MAX_VARIABLE_SIZE]  # RFC 5229 §6: values may be cut at a bound

    def string(self, command: Command | Test, index: int, scope: _Scope) -> str:
        return self.expand(command.string_list(index)[0], scope)

    def strings(self, values: tuple[str, ...], scope: _Scope) -> list[str]:
        return [self.expand(value, scope) for value in values]

    def tag_string(self, node: Command | Test, tag: str, scope: _Scope) -> str | None:
        argument = node.tags.get(tag)
        if isinstance(argument, StringList):
            return self.expand(argument.values[0], scope)
        return None

    # ------------------------------------------------------------------ matching
    def match(self, test: Test, values: list[str], keys: list[str], scope: _Scope) -> bool:
        """RFC 5228 §2.7: true when any value meets any key under the match type and comparator."""
        comparator_name = test.tags.get("comparator")
        comparator = (
            Comparator(comparator_name.values[0])
            if isinstance(comparator_name, StringList)
            else Comparator.ASCII_CASEMAP  # §2.7.3 default
        )
        count = test.tags.get("count")
        if isinstance(count, StringList):  # RFC 5231 §4.2: the number of values against each key
            number = str(len(values))
            return any(relational(comparator, count.values[0], number, key) for key in keys)
        try:
            return self.compare(test, comparator, values, keys, scope)
        except SieveRuntimeError as error:
            raise SieveRuntimeError(error.message, error.line or test.line) from None

    def compare(
        self, test: Test, comparator: Comparator, values: list[str], keys: list[str], scope: _Scope
    ) -> bool:
        """Each value against each key: one step per pair, and the characters read charged to the
        matching budget (a 1 MiB body against 1024 keys would otherwise read a gigabyte)."""
        value_op = test.tags.get("value")
        contains = "contains" in test.tags
        matches = "matches" in test.tags
        folded_keys = [comparator.fold(key) for key in keys] if contains else keys
        for value in values:
            folded = comparator.fold(value) if contains else value
            for key, folded_key in zip(keys, folded_keys, strict=True):
                self.step(test.line)
                if isinstance(value_op, StringList):
                    if relational(comparator, value_op.values[0], value, key):
                        return True
                elif matches:
                    captures = glob_match(comparator, value, key, self.budget)
                    if captures is not None:
                        if scope.has_variables:  # RFC 5229 §3.2: set only by a successful :matches
                            scope.match = [value, *captures][:MAX_MATCH_VARIABLES]
                        return True
                elif contains:
                    self.budget.charge(len(value) + len(key))
                    if folded_key in folded:
                        return True
                elif equals(comparator, value, key):
                    return True
        return False

    # ------------------------------------------------------------------ tests
    def test(self, test: Test, scope: _Scope) -> bool:
        self.step(test.line)
        return _TEST_HANDLERS[test.name](self, test, scope)

    def indexed(self, test: Test, values: list[_Value]) -> list[_Value]:
        """RFC 5260 §6 :index N [:last]: only the Nth field of a name (counted from the bottom)."""
        index = test.tags.get("index")
        if not isinstance(index, Number):
            return values
        position = index.value - 1
        ordered = values[::-1] if "last" in test.tags else values
        return [ordered[position]] if position < len(ordered) else []

    def address_part(self, test: Test, local: str, domain: str) -> str | None:
        """RFC 5228 §2.7.4 and RFC 5233 §4: the part of an address a test compares (None: no part)."""
        if "localpart" in test.tags:
            return local
        if "domain" in test.tags:
            return domain
        if "user" in test.tags or "detail" in test.tags:
            # RFC 5233 §4 with Surat's "+" separator: "user+detail"; no separator -> :detail is absent
            user, separator, detail = local.partition("+")
            if "user" in test.tags:
                return user
            return detail if separator else None
        return f"{local}@{domain}" if domain else local

    def address_parts(self, test: Test, addresses: list[tuple[str, str]]) -> list[str]:
        parts = (self.address_part(test, local, domain) for local, domain in addresses)
        return [part for part in parts if part is not None]

    def test_address(self, test: Test, scope: _Scope) -> bool:
        values: list[str] = []
        for name in self.strings(test.string_list(0), scope):
            if name.lower() not in ADDRESS_HEADERS:
                continue  # a name from a variable that is no address header: RFC 5228 §5.1
            for value in self.indexed(test, self.view.raw_values(name)):
                values += self.address_parts(test, self.view.addresses(value))
        return self.match(test, values, self.strings(test.string_list(1), scope), scope)

    def test_envelope(self, test: Test, scope: _Scope) -> bool:
        values: list[str] = []
        for part_name in self.strings(test.string_list(0), scope):
            lowered = part_name.lower()
            if lowered not in ("from", "to"):
                raise SieveRuntimeError(f'unknown envelope part "{part_name}"', test.line)
            address = self.view.context.envelope_from if lowered == "from" else self.view.context.envelope_to
            if not address:
                values.append("")  # RFC 5228 §5.4: <> is the empty string whatever the address part
                continue
            local, _at, domain = address.rpartition("@") if "@" in address else (address, "", "")
            values += self.address_parts(test, [(local, domain)])
        return self.match(test, values, self.strings(test.string_list(1), scope), scope)

    def test_header(self, test: Test, scope: _Scope) -> bool:
        values: list[str] = []
        for name in self.strings(test.string_list(0), scope):
            values += self.indexed(test, self.view.decoded_values(name))
        return self.match(test, values, self.strings(test.string_list(1), scope), scope)

    def test_exists(self, test: Test, scope: _Scope) -> bool:
        return all(self.view.has_field(name) for name in self.strings(test.string_list(0), scope))

    def test_size(self, test: Test, scope: _Scope) -> bool:
        limit = test.positional[0]
        assert isinstance(limit, Number)
        # RFC 5228 §5.9: :over is strictly greater, :under strictly less
        return self.view.size > limit.value if "over" in test.tags else self.view.size < limit.value

    def test_string(self, test: Test, scope: _Scope) -> bool:
        values = self.strings(test.string_list(0), scope)
        if "count" in test.tags:
            values = [v for v in values if v]  # RFC 5229 §5: :count counts non-empty strings
        return self.match(test, values, self.strings(test.string_list(1), scope), scope)

    def test_body(self, test: Test, scope: _Scope) -> bool:
        keys = self.strings(test.string_list(0), scope)
        if "raw" in test.tags:
            return self.match(test, [self.view.body_raw()], keys, scope)
        content = test.tags.get("content")
        types = self.strings(content.values, scope) if isinstance(content, StringList) else ["text"]
        values: list[str] = []
        for main, sub, text in self.view.body_parts():
            for wanted in types:
                # RFC 5173 §5.2: "type" matches any subtype, "type/subtype" exactly, "" everything
                want_main, slash, want_sub = wanted.lower().partition("/")
                if not wanted or (want_main == main and (not slash or want_sub == sub)):
                    values.append(text)
                    break
        return self.match(test, values, keys, scope)

    def zone_of(self, test: Test, scope: _Scope) -> timezone | None:
        """RFC 5260 §4.1: the zone to show a date in; None for :originalzone."""
        if "originalzone" in test.tags:
            return None
        zone = self.tag_string(test, "zone", scope)
        if zone is None or len(zone) != 5 or zone[0] not in "+-" or not zone[1:].isdigit():
            offset = self.now.utcoffset() or timedelta(0)
            return timezone(offset)
        minutes = int(zone[1:3]) * 60 + int(zone[3:5])
        return timezone(timedelta(minutes=-minutes if zone[0] == "-" else minutes))

    def test_date(self, test: Test, scope: _Scope) -> bool:
        name = self.string(test, 0, scope)
        part = self.string(test, 1, scope).lower()
        keys = self.strings(test.string_list(2), scope)
        values: list[str] = []
        for raw in self.indexed(test, self.view.raw_values(name)):
            moment = _parse_date(raw.decode("utf-8", "replace"))
            if moment is None:
                continue  # RFC 5260 §4: a field that is not a date does not match
            zone = self.zone_of(test, scope)
            values.append(_date_part(moment if zone is None else moment.astimezone(zone), part, test.line))
        return self.match(test, values, keys, scope)

    def test_currentdate(self, test: Test, scope: _Scope) -> bool:
        part = self.string(test, 0, scope).lower()
        keys = self.strings(test.string_list(1), scope)
        zone = self.zone_of(test, scope)
        moment = self.now if zone is None else self.now.astimezone(zone)
        return self.match(test, [_date_part(moment, part, test.line)], keys, scope)

    def test_mailboxexists(self, test: Test, scope: _Scope) -> bool:
        names = self.strings(test.string_list(0), scope)
        return self.mailbox_exists is not None and all(self.mailbox_exists(name) for name in names)

    def test_hasflag(self, test: Test, scope: _Scope) -> bool:
        if len(test.positional) == 2:
            flags: list[str] = []
            for name in self.strings(test.string_list(0), scope):
                flags = _add_flags(flags, [self.lookup(name, scope) or ""])
        else:
            flags = self.flags
        keys = self.strings(test.string_list(len(test.positional) - 1), scope)
        if "count" in test.tags:
            return self.match(test, flags, keys, scope)
        # RFC 5232 §4: each flag of the keys against each flag of the variables
        return self.match(test, flags, _add_flags([], keys), scope)

    # ------------------------------------------------------------------ actions
    def add(self, action: Action, line: int, note: str) -> None:
        self.actions.append(action)
        self.log.append(f"line {line}: {note}")

    def reject_conflict(self, what: str, line: int) -> None:
        """RFC 5429 §2.4: reject MUST NOT meet a second reject or vacation, and meeting keep, fileinto or
        redirect is NOT RECOMMENDED (a message is either refused or delivered): all are errors here."""
        if any(isinstance(a, Reject) for a in self.actions):
            raise SieveRuntimeError(f"{what} cannot be combined with reject", line)

    def do_keep(self, command: Command, scope: _Scope) -> None:
        self.reject_conflict("keep", command.line)
        self.implicit_keep = False
        if not any(isinstance(a, Keep) for a in self.actions):  # RFC 5228 §2.10.3: once
            self.add(Keep(self.action_flags(command, scope)), command.line, "keep")

    def action_flags(self, command: Command, scope: _Scope) -> tuple[str, ...]:
        """RFC 5232 §5: :flags overrides the internal variable for this action only."""
        explicit = command.tags.get("flags")
        if isinstance(explicit, StringList):
            return tuple(_add_flags([], self.strings(explicit.values, scope)))
        return tuple(self.flags)

    def do_discard(self, command: Command, scope: _Scope) -> None:
        self.implicit_keep = False  # RFC 5228 §4.4: discard cancels the implicit keep, nothing else
        if not any(isinstance(a, Discard) for a in self.actions):
            self.add(Discard(), command.line, "discard")

    def do_fileinto(self, command: Command, scope: _Scope) -> None:
        self.reject_conflict("fileinto", command.line)
        mailbox = self.string(command, 0, scope)
        copy = "copy" in command.tags
        if not copy:
            self.implicit_keep = False
        if any(isinstance(a, FileInto) and a.mailbox == mailbox for a in self.actions):
            return  # RFC 5228 §2.10.3
        action = FileInto(mailbox, self.action_flags(command, scope), copy, "create" in command.tags)
        self.add(action, command.line, f"fileinto {mailbox!r}")

    def do_redirect(self, command: Command, scope: _Scope) -> None:
        self.reject_conflict("redirect", command.line)
        address = self.string(command, 0, scope)
        # RFC 5228 §4.2: the address must be a valid RFC 5322 address (variables may make it bad)
        parsed = mailboxes(address)
        if not parsed.clean or len(parsed.addr_specs) != 1:
            raise SieveRuntimeError(f"redirect to an invalid address {address!r}", command.line)
        target = parsed.addr_specs[0]
        copy = "copy" in command.tags
        if not copy:
            self.implicit_keep = False
        if any(isinstance(a, Redirect) and a.address.lower() == target.lower() for a in self.actions):
            return  # RFC 5228 §2.10.3
        self.redirects += 1
        if self.redirects > MAX_REDIRECTS:
            raise SieveRuntimeError(f"more than {MAX_REDIRECTS} redirects", command.line)
        self.add(Redirect(target, copy), command.line, f"redirect {target!r}")

    def do_reject(self, command: Command, scope: _Scope) -> None:
        reason = self.string(command, 0, scope)
        if any(isinstance(a, Reject | Keep | FileInto | Vacation | Redirect) for a in self.actions):
            raise SieveRuntimeError(f"{command.name} cannot be combined with earlier actions", command.line)
        self.implicit_keep = False  # RFC 5429 §2.4: reject cancels the implicit keep
        self.add(Reject(reason, command.name == "ereject"), command.line, command.name)

    def do_vacation(self, command: Command, scope: _Scope) -> None:
        self.reject_conflict("vacation", command.line)
        self.vacations += 1
        if self.vacations > MAX_VACATIONS:
            raise SieveRuntimeError(f"more than {MAX_VACATIONS} vacation per message", command.line)
        reason = self.string(command, 0, scope)
        days, seconds = command.tags.get("days"), command.tags.get("seconds")
        if isinstance(seconds, Number):
            period = seconds.value  # RFC 6131 §2: 0 means reply every time
        elif isinstance(days, Number):
            period = max(days.value, 1) * DAY  # RFC 5230 §4.1: the minimum is one day
        else:
            period = DEFAULT_VACATION_DAYS * DAY
        subject = self.tag_string(command, "subject", scope)
        from_address = self.tag_string(command, "from", scope)
        addresses_argument = command.tags.get("addresses")
        addresses = (
            tuple(self.strings(addresses_argument.values, scope))
            if isinstance(addresses_argument, StringList)
            else ()
        )
        mime = "mime" in command.tags
        handle = self.tag_string(command, "handle", scope)
        if handle is None:
            # RFC 5230 §4.2: without :handle, replies that differ in reason, subject, from or mime are
            # different replies; a digest of them stands for the handle.
            material = "\0".join([reason, subject or "", from_address or "", "mime" if mime else ""])
            handle = hashlib.sha256(material.encode("utf-8", "surrogatepass")).hexdigest()[:32]
        action = Vacation(
            reason, handle, min(period, MAX_VACATION_SECONDS), subject, from_address, addresses, mime
        )
        self.add(action, command.line, "vacation")

    def do_set(self, command: Command, scope: _Scope) -> None:
        name = command.string_list(0)[0]
        value = self.string(command, 1, scope)
        tags = command.tags
        # RFC 5229 §4.1: modifiers apply from the highest precedence down (40, 30, 20, 10)
        if "lower" in tags:
            value = value.lower()
        elif "upper" in tags:
            value = value.upper()
        if value and "lowerfirst" in tags:
            value = value[0].lower() + value[1:]
        elif value and "upperfirst" in tags:
            value = value[0].upper() + value[1:]
        if "quotewildcard" in tags:
            value = value.replace("\\", "\\\\").replace("*", "\\*").replace("?", "\\?")
        if "length" in tags:
            value = str(len(value))
        self.assign(name, value, scope, command.line)

    def do_flags(self, command: Command, scope: _Scope) -> None:
        """RFC 5232 §3 setflag/addflag/removeflag, on the internal variable or a named one."""
        given = self.strings(command.string_list(len(command.positional) - 1), scope)
        if len(command.positional) == 2:
            name = self.string(command, 0, scope)
            current = _add_flags([], [self.lookup(name, scope) or ""])
        else:
            current = self.flags
        if command.name == "setflag":
            updated = _add_flags([], given)
        elif command.name == "addflag":
            updated = _add_flags(current, given)
        else:
            removed = {flag.lower() for flag in _add_flags([], given)}
            updated = [flag for flag in current if flag.lower() not in removed]
        if len(command.positional) == 2:
            self.assign(self.string(command, 0, scope), " ".join(updated), scope, command.line)
        else:
            self.flags = updated

    def do_include(self, command: Command, scope: _Scope) -> None:
        """RFC 6609 §3.2: run another script of the user's; loops and depth are errors."""
        name = self.string(command, 0, scope)
        location = "global" if "global" in command.tags else "personal"
        key = (name, location)
        if "once" in command.tags and key in self.included:
            return
        if key in self.include_stack:
            raise SieveRuntimeError(f"include loop: {location} script {name!r} includes itself", command.line)
        if len(self.include_stack) >= MAX_INCLUDE_DEPTH:
            raise SieveRuntimeError(f"includes nest deeper than {MAX_INCLUDE_DEPTH}", command.line)
        try:
            script = self.include_resolver(name, location) if self.include_resolver is not None else None
        except SieveSyntaxError as error:
            raise SieveRuntimeError(f"included {location} script {name!r}: {error}", command.line) from None
        if script is None:
            if "optional" in command.tags:  # RFC 6609 §3.2: a missing :optional script is skipped
                return
            raise SieveRuntimeError(f"included {location} script {name!r} does not exist", command.line)
        self.included.add(key)
        if len(self.included) > MAX_INCLUDED_SCRIPTS:
            raise SieveRuntimeError(f"more than {MAX_INCLUDED_SCRIPTS} included scripts", command.line)
        self.include_stack.append(key)
        try:
            self.run_script(script)
        finally:
            self.include_stack.pop()

    def do_return(self, command: Command, scope: _Scope) -> None:
        raise _Return

    def do_stop(self, command: Command, scope: _Scope) -> None:
        raise _Stop

    def do_global(self, command: Command, scope: _Scope) -> None:
        scope.global_names.update(name.lower() for name in command.string_list(0))

    def do_nothing(self, command: Command, scope: _Scope) -> None:
        """`require` is done when the script is parsed."""

    def finish(self) -> SieveResult:
        actions = list(self.actions)
        log = list(self.log)
        if self.implicit_keep:
            actions.append(Keep(tuple(self.flags), implicit=True))
            log.append("implicit keep")
        return SieveResult(tuple(actions), (), tuple(log))


def _add_flags(current: list[str], strings: list[str]) -> list[str]:
    """RFC 5232 §3: flags are space-separated words, compared case-insensitively; each kept once."""
    out = list(current)
    seen = {flag.lower() for flag in out}
    for text in strings:
        for flag in text.split():
            if flag.lower() not in seen:
                seen.add(flag.lower())
                out.append(flag)
    return out


def _parse_date(value: str) -> datetime | None:
    """An RFC 5322 §3.3 date-time; for fields such as Received, the one after the last ";"
    (RFC 5260 §4 names Received among the fields whose date the test reads)."""
    for text in (value, value.rpartition(";")[2]):
        try:
            moment = parsedate_to_datetime(text.strip())
        except (TypeError, ValueError, IndexError):
            continue
        return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)  # "-0000": UTC
    return None


_WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_MJD_EPOCH = datetime(1858, 11, 17).date()  # RFC 5260 §4.2 "julian" is the Modified Julian Day


def _date_part(moment: datetime, part: str, line: int) -> str:
    """RFC 5260 §4.2: one part of a date, as text."""
    offset = moment.utcoffset() or timedelta(0)
    minutes = int(offset.total_seconds()) // 60
    sign = "-" if minutes < 0 else "+"
    zone = f"{sign}{abs(minutes) // 60:02d}{abs(minutes) % 60:02d}"
    parts = {
        "year": f"{moment.year:04d}",
        "month": f"{moment.month:02d}",
        "day": f"{moment.day:02d}",
        "date": f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}",
        "julian": str((moment.date() - _MJD_EPOCH).days),
        "hour": f"{moment.hour:02d}",
        "minute": f"{moment.minute:02d}",
        "second": f"{moment.second:02d}",
        "time": f"{moment.hour:02d}:{moment.minute:02d}:{moment.second:02d}",
        "iso8601": moment.replace(microsecond=0).isoformat(),
        "std11": (
            f"{_WEEKDAYS[moment.weekday()]}, {moment.day:02d} {_MONTHS[moment.month - 1]} {moment.year:04d} "
            f"{moment.hour:02d}:{moment.minute:02d}:{moment.second:02d} {zone}"
        ),
        "zone": zone,
        "weekday": str((moment.weekday() + 1) % 7),  # 0 is Sunday
    }
    if part not in parts:
        raise SieveRuntimeError(f'unknown date part "{part}"', line)
    return parts[part]


_COMMAND_HANDLERS: dict[str, Callable[[_Run, Command, _Scope], None]] = {
    "require": _Run.do_nothing,
    "stop": _Run.do_stop,
    "keep": _Run.do_keep,
    "discard": _Run.do_discard,
    "fileinto": _Run.do_fileinto,
    "redirect": _Run.do_redirect,
    "reject": _Run.do_reject,
    "ereject": _Run.do_reject,
    "vacation": _Run.do_vacation,
    "set": _Run.do_set,
    "setflag": _Run.do_flags,
    "addflag": _Run.do_flags,
    "removeflag": _Run.do_flags,
    "include": _Run.do_include,
    "return": _Run.do_return,
    "global": _Run.do_global,
}


def _test_true(run: _Run, test: Test, scope: _Scope) -> bool:
    return True


def _test_false(run: _Run, test: Test, scope: _Scope) -> bool:
    return False


def _test_not(run: _Run, test: Test, scope: _Scope) -> bool:
    return not run.test(test.tests[0], scope)


def _test_allof(run: _Run, test: Test, scope: _Scope) -> bool:
    return all(run.test(inner, scope) for inner in test.tests)  # §5.2: short-circuits


def _test_anyof(run: _Run, test: Test, scope: _Scope) -> bool:
    return any(run.test(inner, scope) for inner in test.tests)


_TEST_HANDLERS: dict[str, Callable[[_Run, Test, _Scope], bool]] = {
    "true": _test_true,
    "false": _test_false,
    "not": _test_not,
    "allof": _test_allof,
    "anyof": _test_anyof,
    "address": _Run.test_address,
    "envelope": _Run.test_envelope,
    "header": _Run.test_header,
    "exists": _Run.test_exists,
    "size": _Run.test_size,
    "string": _Run.test_string,
    "body": _Run.test_body,
    "date": _Run.test_date,
    "currentdate": _Run.test_currentdate,
    "mailboxexists": _Run.test_mailboxexists,
    "hasflag": _Run.test_hasflag,
}


def evaluate(
    script: Script,
    message: MessageContext,
    *,
    include_resolver: IncludeResolver | None = None,
    mailbox_exists: MailboxExists | None = None,
) -> SieveResult:
    """Run `script` for one message: the actions to take, or (on a runtime error or an exceeded limit)
    the implicit keep alone with the error (RFC 5228 §2.10.6)."""
    run = _Run(message, include_resolver, mailbox_exists)
    try:
        run.run_script(script)
    except _Stop:
        pass
    except SieveRuntimeError as error:
        return SieveResult(
            (Keep(implicit=True),), (str(error),), (*run.log, f"error: {error}", "implicit keep")
        )
    return run.finish()
