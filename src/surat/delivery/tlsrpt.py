"""SMTP TLS reporting (RFC 8460): counting sessions, and the daily aggregate reports.

Counting: `StoreTlsReporter` is the queue runner's `TlsReporter`. Every session checked against a
policy (MTA-STS, DANE, require_tls_domains) adds one to its key (UTC day, policy domain, policy,
and for a failure the §4.4 failure-details fields), first in memory, then in the store every
`FLUSH_INTERVAL` seconds (and at stop), so that a busy relay makes one store write per interval, and
every process and node adds to the same counts (ARCHITECTURE decision 10). A crash loses at most one
interval's counts: a report is statistics, not a ledger.

Reporting: `TlsReportSender` wakes once per UTC day, `MAX_JITTER` seconds at most after midnight,
and for each policy domain counted on the previous days (up to `CATCH_UP_DAYS`) claims that day's
report in the store: only the process that claims it goes on (several workers or nodes send one
report). It looks up `_smtp._tls.DOMAIN` (RFC 8460 §3), builds the JSON report (§4.4), gzips it
and sends it to each rua: "mailto:" as a DKIM-signed message (§5.3) through the queue, "https:" as
a POST (§5.4). A domain without a valid record gets nothing; its day stays claimed.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gzip
import json
import logging
import random
import secrets
import ssl
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import aiohttp

from surat.delivery.dkim import DkimError, SigningKeys
from surat.delivery.tlspolicy import LoggingTlsReporter, TlsFailure, TlsPolicy, TlsPolicyKind
from surat.dns.base import DNSError, Resolver, TLSARecord
from surat.log import fields
from surat.mailauth.mtasts import PolicyError, StsPolicy
from surat.mailauth.tlsrpt import TlsRptRecord, parse_record
from surat.store.base import (
    Delivery,
    OutboundMessage,
    OutboundRecipient,
    Store,
    StoreError,
    TlsResultCount,
    TlsResultKey,
)

log = logging.getLogger(__name__)

# Counts wait in memory at most this many seconds before they are added to the store.
FLUSH_INTERVAL = 10.0
# Distinct keys held in memory at most; reaching it starts a flush at once (a relay under attack by
# MX hosts with ever new names or addresses cannot grow the buffer without bound).
MAX_PENDING_KEYS = 10_000
# failure-reason-code text kept per failure (it is part of the aggregation key).
MAX_REASON = 300
# Reports go out SETTLE seconds after 00:00 UTC (every process has flushed yesterday's last counts,
# FLUSH_INTERVAL) plus a random delay of at most MAX_JITTER seconds, so that senders do not all
# send at midnight.
SETTLE = 60.0
MAX_JITTER = 3600.0
# Days before yesterday still reported when their report was not claimed (the server was down).
CATCH_UP_DAYS = 2
# Counts and claims older than this many days are deleted (Store.claim_tls_report).
KEEP_DAYS = 7
# An HTTPS report POST (RFC 8460 §5.4) gives up after this many seconds.
HTTPS_TIMEOUT = 30.0
MEDIA_TYPE = "application/tlsrpt+gzip"  # RFC 8460 §5.3/§6.4

POLICY_TYPES = {
    TlsPolicyKind.MTA_STS: "sts",
    TlsPolicyKind.DANE: "tlsa",
    # A policy of our own (require_tls_domains) is not one the domain published (RFC 8460 §4.4).
    TlsPolicyKind.STATIC: "no-policy-found",
}


def _sts_lines(policy: StsPolicy) -> list[str]:
    """The policy as the lines of its file (RFC 8460 §4.4 policy-string for "sts")."""
    return [
        "version: STSv1",
        f"mode: {policy.mode.value}",
        *(f"mx: {pattern}" for pattern in policy.mx),
        f"max_age: {policy.max_age}",
    ]


def _tlsa_text(record: TLSARecord) -> str:
    """RFC 6698 §2.2 presentation form, as RFC 8460 §4.4 asks for "tlsa" policy strings."""
    return f"{record.usage} {record.selector} {record.matching_type} {record.data.hex()}"


def policy_key(day: str, domain: str, policy: TlsPolicy, host: str) -> TlsResultKey:
    """The key a session to MX `host` under `policy` counts under, before failure details."""
    kind = POLICY_TYPES.get(policy.kind, "no-policy-found")
    policy_string = mx_host = ""
    if policy.kind is TlsPolicyKind.MTA_STS and policy.sts is not None:
        policy_string = "\n".join(_sts_lines(policy.sts))
        mx_host = "\n".join(policy.sts.mx)
    elif policy.kind is TlsPolicyKind.DANE:
        dane = policy.dane.get(host)
        policy_string = "\n".join(_tlsa_text(r) for r in dane.usable) if dane is not None else ""
        mx_host = host
    return TlsResultKey(day, domain.lower(), kind, policy_string, mx_host)


def utc_day(moment: datetime) -> str:
    return moment.astimezone(UTC).date().isoformat()


class StoreTlsReporter:
    """The queue runner's TlsReporter: logs every result (as LoggingTlsReporter) and counts it."""

    def __init__(self, store: Store, clock: Callable[[], datetime]) -> None:
        self.store = store
        self.clock = clock
        self._log = LoggingTlsReporter()
        self._pending: dict[TlsResultKey, int] = {}
        self._task: asyncio.Task[None] | None = None
        self._flushes: set[asyncio.Task[None]] = set()

    def failure(self, domain: str, policy: TlsPolicy, failure: TlsFailure) -> None:
        self._log.failure(domain, policy, failure)
        key = policy_key(utc_day(self.clock()), domain, policy, failure.host)
        self._add(
            replace(
                key,
                result_type=failure.result_type,
                sending_mta_ip=failure.sending_ip,
                receiving_mx_hostname=failure.host.lower(),
                receiving_ip=failure.receiving_ip,
                failure_reason_code=failure.detail[:MAX_REASON],
            )
        )

    def success(self, domain: str, policy: TlsPolicy, host: str) -> None:
        self._log.success(domain, policy, host)
        self._add(policy_key(utc_day(self.clock()), domain, policy, host))

    def _add(self, key: TlsResultKey) -> None:
        self._pending[key] = self._pending.get(key, 0) + 1
        if len(self._pending) >= MAX_PENDING_KEYS:
            task = asyncio.get_running_loop().create_task(self.flush())
            self._flushes.add(task)
            task.add_done_callback(self._flushes.discard)

    async def flush(self) -> None:
        """Add the counts held in memory to the store; kept for the next flush if that fails."""
        pending, self._pending = self._pending, {}
        if not pending:
            return
        try:
            await self.store.add_tls_results([TlsResultCount(k, n) for k, n in pending.items()])
        except StoreError:
            log.exception("tlsrpt.flush_failed", extra=fields(keys=len(pending)))
            for key, count in pending.items():
                self._pending[key] = self._pending.get(key, 0) + count

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="tlsrpt-flush")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_INTERVAL)
            await self.flush()

    async def stop(self) -> None:
        await _cancel(self._task)
        self._task = None
        await asyncio.gather(*self._flushes, return_exceptions=True)
        await self.flush()


async def _cancel(task: asyncio.Task[None] | None) -> None:
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


# ------------------------------------------------------------------------------------ the report


@dataclass(frozen=True, slots=True)
class ReportSettings:
    submitter: str  # the domain reports come from (§5.3 TLS-Report-Submitter, filename "sender")
    sender: str  # the From and envelope sender address
    organization: str
    contact: str


def build_report(
    policy_domain: str, day: str, counts: Sequence[TlsResultCount], settings: ReportSettings, report_id: str
) -> dict[str, Any]:
    """The RFC 8460 §4.4 report of `policy_domain` for `day`, from that day's counts (of any domain:
    the others are left out)."""
    policies: dict[tuple[str, str, str], dict[str, Any]] = {}
    for count in counts:
        key = count.key
        if key.policy_domain != policy_domain or key.day != day:
            continue
        entry = policies.get((key.policy_type, key.policy_string, key.mx_host))
        if entry is None:
            policy: dict[str, Any] = {"policy-type": key.policy_type}
            if key.policy_string:
                policy["policy-string"] = key.policy_string.split("\n")
            policy["policy-domain"] = policy_domain
            if key.mx_host:
                policy["mx-host"] = key.mx_host.split("\n")
            entry = policies[(key.policy_type, key.policy_string, key.mx_host)] = {
                "policy": policy,
                "summary": {"total-successful-session-count": 0, "total-failure-session-count": 0},
                "failure-details": [],
            }
        if not key.result_type:
            entry["summary"]["total-successful-session-count"] += count.sessions
            continue
        entry["summary"]["total-failure-session-count"] += count.sessions
        detail: dict[str, Any] = {"result-type": key.result_type}
        for name, value in (
            ("sending-mta-ip", key.sending_mta_ip),
            ("receiving-mx-hostname", key.receiving_mx_hostname),
            ("receiving-ip", key.receiving_ip),
        ):
            if value:
                detail[name] = value
        detail["failed-session-count"] = count.sessions
        if key.failure_reason_code:
            # §4.4: free text for the failure's cause ("additional-information" is a URI, which we
            # have none of)
            detail["failure-reason-code"] = key.failure_reason_code
        entry["failure-details"].append(detail)
    for entry in policies.values():
        if not entry["failure-details"]:
            del entry["failure-details"]
    return {
        "organization-name": settings.organization,
        "date-range": {"start-datetime": f"{day}T00:00:00Z", "end-datetime": f"{day}T23:59:59Z"},
        "contact-info": settings.contact,
        "report-id": report_id,
        "policies": list(policies.values()),
    }


def report_filename(submitter: str, policy_domain: str, day: str, unique_id: str) -> str:
    """RFC 8460 §5.3: sender!policy-domain!begin-timestamp!end-timestamp!unique-id.json.gz, the
    timestamps in seconds since the epoch."""
    begin = datetime.combine(date.fromisoformat(day), datetime.min.time(), UTC)
    end = begin + timedelta(days=1) - timedelta(seconds=1)
    return f"{submitter}!{policy_domain}!{int(begin.timestamp())}!{int(end.timestamp())}!{unique_id}.json.gz"


def gzip_report(report: Mapping[str, Any]) -> bytes:
    # mtime=0: the same report gives the same bytes (and the date is in the report itself)
    return gzip.compress(json.dumps(report, separators=(",", ":")).encode(), mtime=0)


def compose_message(
    policy_domain: str,
    report_id: str,
    payload: bytes,
    filename: str,
    recipients: Sequence[str],
    settings: ReportSettings,
    now: datetime,
) -> bytes:
    """The report as mail (RFC 8460 §5.3): multipart/report; report-type="tlsrpt", a short text
    part and the gzipped JSON as application/tlsrpt+gzip, with the §5.3 Subject and TLS-Report-*
    header fields. CRLF line endings, ASCII only (the report is base64)."""
    boundary = f"tlsrpt-{secrets.token_hex(12)}"
    encoded = base64.encodebytes(payload).decode().replace("\n", "\r\n")
    lines = [
        f"From: <{settings.sender}>",
        f"To: {', '.join(f'<{r}>' for r in recipients)}",
        f"Date: {format_datetime(now.astimezone(UTC))}",
        f"Subject: Report Domain: {policy_domain} Submitter: {settings.submitter} Report-ID: <{report_id}>",
        f"Message-ID: <{report_id}>",
        f"TLS-Report-Domain: {policy_domain}",
        f"TLS-Report-Submitter: {settings.submitter}",
        "MIME-Version: 1.0",
        f'Content-Type: multipart/report; report-type="tlsrpt"; boundary="{boundary}"',
        "",
        f"--{boundary}",
        "Content-Type: text/plain; charset=us-ascii",
        "",
        f"This is an aggregate TLS report (RFC 8460) from {settings.submitter} for {policy_domain}.",
        "",
        f"--{boundary}",
        f"Content-Type: {MEDIA_TYPE}",
        "Content-Transfer-Encoding: base64",
        f'Content-Disposition: attachment; filename="{filename}"',
        "",
    ]
    return ("\r\n".join(lines) + "\r\n" + encoded + f"--{boundary}--\r\n").encode("ascii")


# ------------------------------------------------------------------------------------ the daily task


class TlsReportSender:
    """Once per UTC day, the previous days' reports (see the module docstring)."""

    def __init__(
        self,
        store: Store,
        resolver: Resolver,
        settings: ReportSettings,
        signing_keys: SigningKeys,
        *,
        clock: Callable[[], datetime],
        https_context: ssl.SSLContext | None = None,
        wake_queue: Callable[[], None] | None = None,
    ) -> None:
        self.store = store
        self.resolver = resolver
        self.settings = settings
        self.signing_keys = signing_keys
        self.clock = clock
        self.https_context = https_context
        self.wake_queue = wake_queue
        self._task: asyncio.Task[None] | None = None
        self._rng = random.Random()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="tlsrpt-daily")

    async def stop(self) -> None:
        await _cancel(self._task)
        self._task = None

    async def _run(self) -> None:
        # At start, the reports still owed (a server down at midnight); not before SETTLE.
        now = self.clock()
        since_midnight = now - datetime.combine(now.astimezone(UTC).date(), datetime.min.time(), UTC)
        await asyncio.sleep(max(0.0, SETTLE - since_midnight.total_seconds()))
        while True:
            try:
                await self.send_due()
            except (StoreError, OSError):
                log.exception("tlsrpt.run_failed")
            now = self.clock()
            midnight = datetime.combine(
                now.astimezone(UTC).date() + timedelta(days=1), datetime.min.time(), UTC
            )
            await asyncio.sleep((midnight - now).total_seconds() + SETTLE + self._rng.uniform(0, MAX_JITTER))

    async def send_due(self) -> int:
        """Claim and send the reports of yesterday and the `CATCH_UP_DAYS` before; returns how many
        reports this call sent."""
        today = self.clock().astimezone(UTC).date()
        forget_before = (today - timedelta(days=KEEP_DAYS)).isoformat()
        sent = 0
        for back in range(CATCH_UP_DAYS + 1, 0, -1):
            day = (today - timedelta(days=back)).isoformat()
            counts = await self.store.tls_results(day)
            for domain in sorted({c.key.policy_domain for c in counts}):
                if not await self.store.claim_tls_report(domain, day, forget_before=forget_before):
                    continue  # another process or node has it
                if await self.send_report(domain, day, counts):
                    sent += 1
        return sent

    async def send_report(self, domain: str, day: str, counts: Sequence[TlsResultCount]) -> bool:
        """Build and send one report (claimed already); whether it went to at least one rua."""
        record = await self._record(domain)
        if record is None:
            return False
        unique_id = secrets.token_hex(8)
        report_id = f"{day}.{unique_id}@{self.settings.submitter}"
        report = build_report(domain, day, counts, self.settings, report_id)
        payload = gzip_report(report)
        filename = report_filename(self.settings.submitter, domain, day, unique_id)
        delivered = False
        if record.mailto:
            delivered = await self._mail(domain, report_id, payload, filename, record.mailto)
        for url in record.https:
            delivered = await self._post(domain, url, payload) or delivered
        log.info(
            "tlsrpt.sent",
            extra=fields(
                domain=domain, day=day, id=report_id, mailto=len(record.mailto), https=len(record.https)
            ),
        )
        return delivered

    async def _record(self, domain: str) -> TlsRptRecord | None:
        try:
            return parse_record(await self.resolver.txt(f"_smtp._tls.{domain}"))
        except DNSError as exc:
            log.info("tlsrpt.no_record", extra=fields(domain=domain, reason=str(exc)))
        except PolicyError as exc:
            log.info("tlsrpt.bad_record", extra=fields(domain=domain, reason=str(exc)))
        return None

    async def _mail(
        self, domain: str, report_id: str, payload: bytes, filename: str, recipients: Sequence[str]
    ) -> bool:
        now = self.clock()
        message = compose_message(domain, report_id, payload, filename, recipients, self.settings, now)
        sender_domain = self.settings.sender.rpartition("@")[2].lower()
        try:
            # RFC 8460 §5.3: the report MUST be DKIM-signed (by the submitter's domain).
            signature = await self.signing_keys.sign(message, sender_domain, now)
        except (DkimError, OSError, StoreError) as exc:
            log.error("tlsrpt.unsigned", extra=fields(domain=domain, signer=sender_domain, reason=str(exc)))
            return False
        if not signature:
            log.error("tlsrpt.unsigned", extra=fields(domain=domain, signer=sender_domain, reason="no key"))
            return False
        outbound = OutboundMessage(
            sender=self.settings.sender,
            # NOTIFY=NEVER: a report that cannot be delivered is not bounced to a no-reply address.
            recipients=tuple(OutboundRecipient(r, notify=("NEVER",)) for r in recipients),
            dkim_signature=signature,
        )
        await self.store.deliver(Delivery(None, len(message), now, remote=outbound, content=message))
        if self.wake_queue is not None:
            self.wake_queue()
        return True

    async def _post(self, domain: str, url: str, payload: bytes) -> bool:
        """RFC 8460 §5.4: POST with the media type; any 2xx is success. Verified TLS, no redirects."""
        context = self.https_context or ssl.create_default_context()
        try:
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=HTTPS_TIMEOUT)) as session,
                session.post(
                    url,
                    data=payload,
                    headers={"Content-Type": MEDIA_TYPE},
                    allow_redirects=False,
                    ssl=context,
                ) as response,
            ):
                ok = 200 <= response.status < 300
                if not ok:
                    log.warning(
                        "tlsrpt.post_refused", extra=fields(domain=domain, url=url, status=response.status)
                    )
                return ok
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            log.warning(
                "tlsrpt.post_failed",
                extra=fields(domain=domain, url=url, reason=str(exc) or type(exc).__name__),
            )
            return False


def report_settings(
    hostname: str, organization: str | None, contact: str | None, sender: str | None
) -> ReportSettings:
    """Defaults: the submitter is the host name's parent domain ("mail.example.com" -> example.com),
    the sender noreply-smtp-tls-reporting@ it, organization the submitter, contact the sender."""
    labels = hostname.rstrip(".").lower().split(".")
    submitter = ".".join(labels[1:]) if len(labels) > 2 else ".".join(labels)
    if sender is not None:
        submitter = sender.rpartition("@")[2].lower()
    address = sender or f"noreply-smtp-tls-reporting@{submitter}"
    return ReportSettings(submitter, address, organization or submitter, contact or address)
