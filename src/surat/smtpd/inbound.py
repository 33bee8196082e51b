"""Inbound message authentication on the MX: SPF, DKIM, ARC and DMARC, and what to do with the verdict.

The order follows the checks' dependencies: SPF needs only the envelope, so it starts at MAIL FROM and
runs while the client sends the message; DKIM and ARC need the message and run concurrently at the end
of DATA; DMARC needs SPF and DKIM. The verdict carries the one Authentication-Results header field
(RFC 8601) to prepend and the DMARC disposition: `p=reject` refuses the message with 550 5.7.1 (RFC 7489
§6.6.4, §10.3 — at SMTP time, so no backscatter), `p=quarantine` delivers it to the Junk mailbox.

ARC (RFC 8617 §7.2): a DMARC reject is overridden when the message carries a valid ARC chain whose
latest set from a sealer we trust (`trusted_sealers`, e.g. the mailing lists our users read) recorded
dmarc=pass on arrival there: the list changed the message and broke DKIM, not a forger.

A failure of the checks themselves (our bug, not the sender's fault) never loses mail: the message is
accepted with whatever was established and the error is logged.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import re
from collections.abc import Awaitable, Iterable
from dataclasses import dataclass
from typing import TypeVar

from surat import metrics
from surat.dns.base import Resolver
from surat.log import fields
from surat.mailauth.dkim_canon import MessageFormatError, ParsedMessage, parse_message
from surat.mailauth.dkim_verify import (
    ARCResult,
    ARCStatus,
    DKIMResult,
    verify_arc,
    verify_dkim,
)
from surat.mailauth.dmarc import (
    DMARCResult,
    DMARCStatus,
    Policy,
    check_dmarc,
    from_domains,
    organizational_domain,
)
from surat.mailauth.results import authentication_results, remove_forged_results
from surat.mailauth.spf import SPFResult, check_spf, timed_out
from surat.message.headers import Header, read_header, unfold

log = logging.getLogger(__name__)
_T = TypeVar("_T")

SPF_TIMEOUT = 20.0  # RFC 7208 §4.6.4


class Disposition(enum.Enum):
    ACCEPT = "accept"
    QUARANTINE = "quarantine"  # deliver to Junk
    REJECT = "reject"


@dataclass(frozen=True, slots=True)
class Verdict:
    header: bytes  # the Authentication-Results field, CRLF-terminated
    disposition: Disposition
    log_fields: dict[str, str]  # spf=, dkim=, dmarc=, arc= with reasons, for the transaction log line
    spf: SPFResult | None = None
    dkim: tuple[DKIMResult, ...] = ()
    dmarc: DMARCResult | None = None
    arc: ARCResult | None = None


class PendingSPF:
    """An SPF check started at MAIL FROM, and when its time is up (RFC 7208 §4.6.4)."""

    __slots__ = ("deadline", "domain", "helo", "sender", "task", "timeout")

    def __init__(
        self, task: asyncio.Task[SPFResult], timeout: float, domain: str, helo: str, sender: str
    ) -> None:
        self.task = task
        # One deadline checked at the end of DATA, not a timer inside the check: by then the check has
        # nearly always finished from cached DNS answers, and a timer per message costs more than that.
        self.deadline = asyncio.get_running_loop().time() + timeout
        self.timeout = timeout
        self.domain = domain
        self.helo = helo
        self.sender = sender

    def cancel(self) -> None:
        self.task.cancel()

    async def result(self) -> SPFResult:
        task = self.task
        if not task.done():
            remaining = self.deadline - asyncio.get_running_loop().time()
            await asyncio.wait((task,), timeout=max(remaining, 0.0))
            if not task.done():
                task.cancel()
                return timed_out(self.domain, self.helo, sender=self.sender, timeout=self.timeout)
        return task.result()


def _summary(result: str, reason: str) -> str:
    return f"{result} ({reason})" if reason else result


class InboundChecks:
    """Shared by every MX session of a server: the resolver and our authserv-id."""

    def __init__(
        self,
        resolver: Resolver,
        authserv_id: str,
        *,
        spf_timeout: float = SPF_TIMEOUT,
        trusted_sealers: Iterable[str] = (),
    ) -> None:
        self.resolver = resolver
        self.authserv_id = authserv_id
        self.spf_timeout = spf_timeout
        self.trusted_sealers = frozenset(d.lower().removesuffix(".") for d in trusted_sealers)
        # Loads the public suffix list now (~0.2 s, once per process), not during the first message.
        organizational_domain("example.com")

    def start_spf(self, ip: str, helo: str, sender: str) -> PendingSPF:
        """Begin the SPF check at MAIL FROM; it runs while the message arrives."""
        domain = sender.rpartition("@")[2] if sender else ""
        task = asyncio.create_task(
            check_spf(
                self.resolver, ip, domain, helo, sender=sender, receiver=self.authserv_id, timeout=None
            ),
            name="spf",
        )
        return PendingSPF(task, self.spf_timeout, domain, helo, sender)

    async def evaluate(
        self, spf_task: PendingSPF | None, message: bytes, message_header: Header | None = None
    ) -> Verdict:
        """Finish the checks for `message` (as received, without our trace header fields).

        `message` comes from our SMTP engine, so its lines end in CRLF and nothing else. `message_header` is its
        header section as the end of DATA read it, or None to read it here.
        """

        # The header section is split once and shared by DKIM, ARC and DMARC.
        try:
            # RFC 5321 §2.3.8: the SMTP engine has turned every bare CR and LF into CRLF
            parsed: ParsedMessage | None = parse_message(message, crlf_only=True, header=message_header)
        except MessageFormatError:
            parsed = None  # verify_dkim and verify_arc report it; DMARC reads From its own way

        async def finish_spf() -> SPFResult | None:
            return await spf_task.result() if spf_task is not None else None

        arc_out: ARCResult | BaseException
        if parsed is None or parsed.has(b"arc-seal") or parsed.has(b"arc-message-signature"):
            spf_out, dkim_out, arc_out = await asyncio.gather(
                finish_spf(),
                verify_dkim(self.resolver, message, parsed=parsed),
                verify_arc(self.resolver, message, parsed=parsed),
                return_exceptions=True,
            )
        else:
            # Nearly every message: no ARC work, and no extra tasks. SPF has been running since MAIL
            # FROM, concurrently with DATA and with the DKIM key lookups; by now it has usually finished.
            arc_out = ARCResult(ARCStatus.NONE, "message is not ARC signed")
            dkim_out = await _outcome(verify_dkim(self.resolver, message, parsed=parsed))
            spf_out = await _outcome(spf_task.result()) if spf_task is not None else None
        spf = _ok(spf_out, "spf")
        dkim = tuple(_ok(dkim_out, "dkim") or ())
        arc = _ok(arc_out, "arc")
        dmarc: DMARCResult | None = None
        try:
            dmarc = await check_dmarc(self.resolver, from_domains(message, parsed), spf, dkim)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("smtp.mailauth_error", extra=fields(check="dmarc"))
        header = authentication_results(self.authserv_id, spf=spf, dkim=dkim, dmarc=dmarc, arc=arc)
        disposition = Disposition.ACCEPT
        if dmarc is not None and dmarc.status is DMARCStatus.FAIL:
            if dmarc.policy is Policy.REJECT:
                disposition = Disposition.REJECT
                if self._trusted_arc_pass(arc, message, parsed):
                    disposition = Disposition.ACCEPT
            elif dmarc.policy is Policy.QUARANTINE:
                disposition = Disposition.QUARANTINE
        summary = {
            "spf": _summary(spf.result.value, spf.reason) if spf else "none",
            "dkim": ",".join(_summary(r.status.value, f"d={r.domain} {r.reason}".strip()) for r in dkim)
            or "none",
            "dmarc": _summary(dmarc.status.value, dmarc.reason) if dmarc else "none",
            "arc": arc.status.value if arc is not None else "none",
            "disposition": disposition.value,
        }
        if arc is not None and arc.status is ARCStatus.PASS:
            summary["arc"] += f" (sealers {','.join(arc.sealers)})"
        # Enum values only (bounded label sets); "none": the check could not run.
        metrics.mail_auth("spf", spf.result.value if spf else "none")
        for result in dkim or ():
            metrics.mail_auth("dkim", result.status.value)
        if not dkim:
            metrics.mail_auth("dkim", "none")
        metrics.mail_auth("dmarc", dmarc.status.value if dmarc else "none")
        return Verdict(header, disposition, summary, spf, dkim, dmarc, arc)

    def _trusted_arc_pass(self, arc: ARCResult | None, message: bytes, parsed: ParsedMessage | None) -> bool:
        """A valid chain whose latest set by a trusted sealer recorded dmarc=pass (RFC 8617 §7.2)."""
        if arc is None or arc.status is not ARCStatus.PASS or not self.trusted_sealers:
            return False
        trusted = [i + 1 for i, sealer in enumerate(arc.sealers) if sealer in self.trusted_sealers]
        if not trusted:
            return False
        instance = max(trusted)
        for value in _header_values(message, parsed, b"arc-authentication-results"):
            match = _INSTANCE.match(value)
            if match and int(match.group(1)) == instance:
                return _DMARC_PASS.search(value) is not None
        return False

    def strip_forged(self, message: bytes) -> bytes:
        """The message without Authentication-Results fields claiming our authserv-id (RFC 8601 §5)."""
        end = message.find(b"\r\n\r\n")
        head = message[: end if end >= 0 else len(message)].lower()  # the header only, not the body
        if b"authentication-results" not in head:
            return message  # the common case, without copying the message
        stripped = remove_forged_results(message, self.authserv_id)
        if stripped != message:
            log.info("smtp.forged_results_removed", extra=fields(authserv_id=self.authserv_id))
        return stripped


_INSTANCE = re.compile(r"\s*i\s*=\s*(\d+)\s*;")
_DMARC_PASS = re.compile(r"(?:^|[;\s])dmarc\s*=\s*pass\b", re.IGNORECASE)


def _header_values(message: bytes, parsed: ParsedMessage | None, name: bytes) -> list[str]:
    """The unfolded values of every header field called `name` (lower case), as surat.message reads them
    (from `parsed`, the message's fields read once, when there is one)."""
    values = (
        [unfold(value) for value in parsed.values(name)]
        if parsed is not None
        else read_header(message, crlf_only=True).values(name)
    )
    return [value.decode("utf-8", "replace") for value in values]


async def _outcome(check: Awaitable[_T]) -> _T | BaseException:
    """`await check`, or the exception it raised (as asyncio.gather(return_exceptions=True) gives it)."""
    try:
        return await check
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        return exc


def _ok(outcome: _T | BaseException, check: str) -> _T | None:
    """A check's result, or None (logged) when the check itself failed."""
    if isinstance(outcome, BaseException):
        if not isinstance(outcome, asyncio.CancelledError):
            log.error("smtp.mailauth_error", exc_info=outcome, extra=fields(check=check))
        return None
    return outcome
