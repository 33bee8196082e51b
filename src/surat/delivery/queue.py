"""The outbound queue runner: claims due entries, delivers them per domain, retries, bounces.

One loop wakes on the store's QUEUE_CHANGED (account 0) or every `queue_poll_interval` seconds
(so `surat queue retry/flush` run by another process is seen), and starts a task per due entry.
A task:

1. reads the message (from `body_offset`: the Return-Path is for local copies only) and puts the
   DKIM-Signature fields stored with the entry on top. They were made once, when the message was
   queued (submission, issue 18); an entry queued without them (from before, or from the MX port)
   whose sender's domain is local is signed at its first attempt and the fields are stored with
   the attempt record, so a message deferred N times is signed once;
2. groups the still pending recipients by domain; local domains are never sent out (delivered
   here instead), too many Received fields is a loop (RFC 5321 §6.3, 5.4.6);
3. resolves every domain's route (shared by the entries for that domain within `ROUTE_REUSE`
   seconds), then records the attempt before connecting (mox's order): the record also moves the
   entry's next attempt to a lease, so a crashed runner's claim expires;
4. sends one transaction per domain, domains in parallel, under a global and a per-domain
   connection limit; hosts in route order, a failed STARTTLS retried once in clear. A session
   that delivered goes back to a connection cache (RFC 5321 §3.3, as Postfix's on-demand cache):
   the next entry to that host reuses it within `IDLE_LIMIT` seconds (idle sessions are not
   counted against the connection limits, and never more than were in use at once);
5. stores the per-recipient results with the next attempt time (`RetrySchedule`), or removes the
   entry when nobody is pending; a DSN (from <>) goes to the sender for permanent failures and
   expiry, delivered locally when the sender is local, else queued like any mail; once a message
   has waited `schedule.delay_notice_after`, one delay notice per recipient (RFC 3464 Action:
   delayed, with Will-Retry-Until), marked in the store so it is not repeated.

A `[delivery] smarthost` with credentials gets AUTH only under verified TLS (STARTTLS required,
or implicit TLS on port 465), never retried in clear.

Leases: an entry is claimed for `RunnerSettings.lease` (`[delivery] queue_lease`, 2 minutes), and
a heartbeat renews the claims of the entries in flight every third of it (`Store.renew_leases`), so
an attempt may last as long as the SMTP timeouts allow while a node that dies (kill -9) holds its
entries for at most one lease on PostgreSQL (docs/queue-leases.md).

Crash safety: attempts left in flight (result NULL) are marked interrupted and made due by
`Store.recover_queue` when the runner starts. A connection and its slot carry no further
transaction until the results of the one they carried are committed, so a crash repeats at most
one transaction per connection (`max_connections_per_domain` per domain).

Throughput: a backlog larger than `batch` is refilled as entries finish (not at the next poll),
and the store groups the attempt records of concurrent entries into one commit.

Not yet: a bound on entries in flight beyond `batch` (each holds its message in memory while it
waits for a connection slot); several entries for one domain in one transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import io
import ipaddress
import logging
import random
import ssl
from collections.abc import AsyncIterator, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from dataclasses import fields as dataclass_fields
from datetime import UTC, datetime, timedelta
from pathlib import Path

from surat import metrics
from surat.config import Config, HostPort, ListenConfig
from surat.delivery import dkim
from surat.delivery.dane import DaneHost, certificate_matches, usable_records
from surat.delivery.dsn import (
    Action,
    DsnReport,
    ReportedRecipient,
    Ret,
    build_dsn,
    should_send_dsn,
    status_from_reply,
)
from surat.delivery.local import resolve as resolve_local
from surat.delivery.mx import Route, RouteFailure, RouteKind, Target, refuse_private, resolve_targets
from surat.delivery.notify import submit_dsn
from surat.delivery.schedule import (
    DEFAULT_SCHEDULE,
    RetrySchedule,
    delay_dsn_due,
    expires_at,
    next_attempt,
)
from surat.delivery.smtp_client import Session, SessionOutcome, TlsCheck, send_transaction
from surat.delivery.stspolicies import StsPolicies
from surat.delivery.tlspolicy import (
    DNSSEC_INVALID,
    OPPORTUNISTIC,
    REQUIRE_TLS,
    VALIDATION_FAILURE,
    LoggingTlsReporter,
    TlsFailure,
    TlsPolicy,
    TlsPolicyKind,
    TlsReporter,
    from_sts,
)
from surat.dns.base import DNSError, DnssecResolver, Resolver, TLSARecord
from surat.log import fields
from surat.message.headers import Header, read_header
from surat.net.tls import client_context
from surat.proto.smtp import replies as R
from surat.proto.smtp.address import Address, SMTPSyntaxError, UnsafeText, parse_path
from surat.proto.smtp.client import (
    ClientSettings,
    Credentials,
    Envelope,
    Recipient,
    RecipientResult,
    Timeouts,
)
from surat.proto.smtp.replies import ALIAS_LOOP, Reply
from surat.store.base import (
    ChangeKind,
    Delivery,
    NotFound,
    QueueEntry,
    QuotaExceeded,
    RecipientState,
    RecipientUpdate,
    Store,
    StoreError,
    Subscription,
)

log = logging.getLogger(__name__)

# RFC 5321 §6.3: a message with more Received fields than this is looping (Postfix: 50, the RFC
# suggests at least 100).
MAX_RECEIVED = 100
# How long a claim (a recorded attempt) holds an entry without renewal (`[delivery] queue_lease`).
# The heartbeat renews the leases of the entries in flight every LEASE / HEARTBEATS_PER_LEASE, so an
# attempt may take far longer than the lease (the RFC 5321 §4.5.3.2 timeouts allow 10 minutes after
# the final dot alone); the lease only bounds how long a node killed with kill -9 keeps its entries.
# 2 minutes: a live node renews every 40 s, so a lease survives two failed renewals in a row (a
# database restart, a failover of the usual 30 s); shorter would trade that margin for a faster
# takeover, longer delays mail after a crash for no gain.
LEASE = timedelta(minutes=2)
HEARTBEATS_PER_LEASE = 3

SUBMISSIONS_PORT = 465
# Connection cache (Postfix: smtp_connection_cache_time_limit = 2s, reuse_time_limit = 300s):
# an idle session waits this long for the next entry to its destination, then QUITs; a session
# carries at most REUSE_COUNT transactions and lives at most REUSE_AGE seconds.
IDLE_LIMIT = 2.0
REUSE_COUNT = 100
REUSE_AGE = 300.0
IDLE_QUIT_WAIT = 5.0
# A domain's resolved route serves the entries that follow within this many seconds of the last
# use (REUSE_AGE at most), as Postfix's on-demand connection cache finds a session by destination
# name before any DNS lookup; concurrent entries for one domain share one resolution. Failures
# are not kept.
ROUTE_REUSE = IDLE_LIMIT
# A domain's "is it local?" answer serves the entries that follow for this many seconds: a store
# read per recipient domain and per signing check otherwise. A domain added or removed at run time
# is seen within this delay (`surat domain add` may be another process: no change to listen for).
LOCAL_DOMAIN_TTL = 1.0
# Messages up to this size are read with their run's batch (BlobStore.read_many); larger ones
# by their own task.
INLINE_READ = 128 * 1024


@dataclass(frozen=True, slots=True)
class RunnerSettings:
    hostname: str
    schedule: RetrySchedule = DEFAULT_SCHEDULE
    routes: Mapping[str, HostPort] = field(default_factory=dict)
    smarthost: HostPort | None = None
    smarthost_credentials: Credentials | None = None
    max_connections: int = 100
    max_connections_per_domain: int = 10
    poll_interval: float = 5.0
    connect_timeout: float = 30.0
    timeouts: Timeouts = field(default_factory=Timeouts)
    mx_port: int = 25
    batch: int = 100  # due entries fetched per wake-up
    lease: timedelta = LEASE
    # issue 11 item 11: addresses from DNS or a literal must be public and not ours (mx.refuse_private)
    allow_private_destinations: bool = False
    own_addresses: frozenset[str] = frozenset()
    # Domains whose mail goes only over TLS with a certificate verified against the next hop's name
    # (a static policy, like Postfix's smtp_tls_policy_maps "secure"); see surat.delivery.tlspolicy.
    require_tls_domains: frozenset[str] = frozenset()

    @classmethod
    def from_config(cls, config: Config) -> RunnerSettings:
        delivery = config.delivery
        return cls(
            hostname=config.hostname,
            schedule=RetrySchedule.from_seconds(
                delivery.retry_delays, delivery.expire_after, delivery.delay_notice_after
            ),
            routes=delivery.routes,
            smarthost=delivery.smarthost,
            smarthost_credentials=(
                Credentials(delivery.smarthost_user, delivery.smarthost_password)
                if delivery.smarthost_user is not None and delivery.smarthost_password is not None
                else None
            ),
            max_connections=delivery.max_connections,
            max_connections_per_domain=delivery.max_connections_per_domain,
            poll_interval=delivery.queue_poll_interval,
            lease=timedelta(seconds=delivery.queue_lease),
            connect_timeout=delivery.connect_timeout,
            timeouts=replace(Timeouts(), **delivery.smtp_timeouts),
            allow_private_destinations=delivery.allow_private_destinations,
            own_addresses=_listening_addresses(config.listen),
            require_tls_domains=frozenset(delivery.require_tls_domains),
        )


def _listening_addresses(listen: ListenConfig) -> frozenset[str]:
    """The addresses our listeners are bound to by number. A wildcard (0.0.0.0, ::) is not one of
    them: it is unspecified space, which `is_public_address` refuses anyway; a public address of this
    host behind a wildcard is caught by the MX loop check on the host name."""
    found: set[str] = set()
    for role in dataclass_fields(listen):
        for hop in getattr(listen, role.name):
            try:
                found.add(str(ipaddress.ip_address(hop.host.strip("[]"))))
            except ValueError:
                continue  # a host name: not an address
    return frozenset(found)


# An idle session is reused only for the same target and profile: "" (opportunistic), "smarthost",
# "verified" (STARTTLS with a verified certificate, for MTA-STS and require_tls_domains).
_SessionKey = tuple[Target, str]


@dataclass(slots=True)
class _Outcome:
    """What happened to one recipient in this attempt."""

    state: RecipientState
    reply: Reply
    remote_mta: str | None = None
    dsn_passed: bool = False


def _dane_check(records: Sequence[TLSARecord], certificate: bytes) -> str | None:
    """RFC 7672 §3.1.1: the server's certificate must match one of the host's DANE-EE records."""
    if certificate_matches(records, certificate):
        return None
    return "certificate matches none of the TLSA records"


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _domain_of(address: str) -> str:
    return address.rpartition("@")[2].lower()


@functools.lru_cache(maxsize=4096)  # a relay sees the same senders and domains over and over
def _address(text: str) -> Address:
    try:
        parsed, _ = parse_path(f"<{text}>", sender=False)
    except SMTPSyntaxError:
        parsed = None
    if parsed is None:
        local, _, domain = text.rpartition("@")
        return Address(local, domain.lower())
    return parsed


# The recipient domain's own policies, which a sender may waive with "TLS-Required: No" (RFC 8689 §5).
_RECIPIENT_POLICIES = frozenset({TlsPolicyKind.MTA_STS, TlsPolicyKind.DANE})


def _tls_optional(header: Header) -> bool:
    """RFC 8689 §5: a "TLS-Required: No" field (the value is case-insensitive)."""
    return any(value.strip().lower() == b"no" for value in header.values(b"tls-required"))


class QueueRunner:
    def __init__(
        self,
        store: Store,
        resolver: Resolver,
        settings: RunnerSettings,
        *,
        data_dir: Path,
        tls_context: ssl.SSLContext | None = None,
        smarthost_tls_context: ssl.SSLContext | None = None,
        clock: Callable[[], datetime] = _utc_now,
        local_hostnames: Collection[str] = (),
        signing_keys: dkim.SigningKeys | None = None,
        verify_tls_context: ssl.SSLContext | None = None,
        sts_policies: StsPolicies | None = None,
        tls_reporter: TlsReporter | None = None,
        dane_resolver: DnssecResolver | None = None,
    ) -> None:
        """`signing_keys`: shared with the submission service (one parsed copy of each key).
        `verify_tls_context`: checks certificates for MTA-STS and require_tls_domains (default: the
        system's trust store; tests give their CA); it also fetches MTA-STS policies unless
        `sts_policies` is given. `tls_reporter`: where policy failures go (default: logged).
        `dane_resolver`: a validating resolver whose AD bit is trusted (`[dns] dnssec_trusted`);
        None: no DANE."""
        self.store = store
        self.resolver = resolver
        self.settings = settings
        self.data_dir = data_dir
        self.tls_context = tls_context
        # Credentials go only to a smarthost whose certificate checks out (RFC 8314 §4.2 for 465).
        self.smarthost_tls_context = smarthost_tls_context
        self.clock = clock
        self.local_hostnames = {settings.hostname, *local_hostnames}
        self.verify_tls_context = verify_tls_context or client_context(verify=True)
        self.sts_policies = sts_policies or StsPolicies(
            store,
            resolver,
            self.verify_tls_context,
            allow_private=settings.allow_private_destinations,
            clock=lambda: self.clock().timestamp(),
        )
        self.tls_reporter: TlsReporter = tls_reporter or LoggingTlsReporter()
        self.dane_resolver = dane_resolver
        # DANE sessions authenticate through TLSA, not WebPKI: the handshake itself verifies nothing.
        self._dane_tls_context = client_context(verify=False)
        self._wake = asyncio.Event()
        self._connections = asyncio.Semaphore(settings.max_connections)
        self._per_domain: dict[str, asyncio.Semaphore] = {}
        self._domain_users: dict[str, int] = {}
        self._in_flight: dict[str, asyncio.Task[None]] = {}
        self.signing_keys = signing_keys or dkim.SigningKeys(store.keys)
        self._tasks: list[asyncio.Task[None]] = []
        self._rng = random.Random()
        self._subscription: Subscription | None = None
        # (target, profile) -> idle sessions with the loop time they went idle and were opened; the
        # profile keeps sessions of different security apart (see _SessionKey)
        self._idle: dict[_SessionKey, list[tuple[Session, float, float]]] = {}
        self._reaper: asyncio.Task[None] | None = None
        self._saturated = False  # the last run_once got as many due entries as it asked for
        # domain -> (reuse until, resolved at, lookup): see _route
        self._routes: dict[str, tuple[float, float, asyncio.Task[Route | RouteFailure]]] = {}
        # domain -> (valid until (loop time), local?): see _is_local_domain
        self._local_domains: dict[str, tuple[float, bool]] = {}

    # ------------------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        now = self.clock()
        for domain in await self.store.list_domains():
            await self.signing_keys.get(domain, now)
        recovered = await self.store.recover_queue(now)
        if recovered:
            log.info("queue.recovered", extra=fields(entries=recovered))
        subscription = self._subscription = self.store.changes.subscribe(0)
        self._tasks = [
            asyncio.create_task(self._watch(subscription), name="queue-watch"),
            asyncio.create_task(self._run(), name="queue-run"),
            asyncio.create_task(self._heartbeat(), name="queue-heartbeat"),
        ]

    async def stop(self) -> None:
        """Cancel everything; attempts cut short are recovered by the next start."""
        tasks = [*self._tasks, *self._in_flight.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks = []
        self._in_flight.clear()
        if self._reaper is not None:
            self._reaper.cancel()
        for _until, _resolved, lookup in self._routes.values():
            lookup.cancel()
        self._routes.clear()
        await self._close_idle(None)
        if self._subscription is not None:
            self._subscription.close()
            self._subscription = None

    def wake(self) -> None:
        self._wake.set()

    async def _watch(self, subscription: Subscription) -> None:
        async for change in subscription:
            if change.kind in (ChangeKind.QUEUE_CHANGED, ChangeKind.OVERFLOW):
                self._wake.set()

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            try:
                await self.run_once()
            except Exception:
                # Whatever failed (a store error, a database driver's error when PostgreSQL restarts
                # or fails over), the loop must live on: a dead loop would stop this node's queue for
                # good while the node keeps accepting mail. The next wake-up or poll tries again.
                log.exception("queue.dispatch_failed")
            # asyncio.timeout, not wait_for: on Python 3.11, wait_for loses a cancellation that arrives
            # as the wake-up event is set (gh-86296), and the runner would go round once more and
            # hold up stop() for a whole poll interval (seen when a queue flush preceded a stop).
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.poll_interval):
                    await self._wake.wait()

    async def _heartbeat(self) -> None:
        """Renew the leases of the entries in flight every third of the lease, in one store call.

        An entry that another node holds now was taken over after this node could not renew for a
        whole lease: logged, and its attempt still runs to its end, its result recorded as usual
        (docs/queue-leases.md "Lease lost": the message may go out twice, RFC 5321 §6.1's
        at-least-once, never not at all)."""
        interval = self.settings.lease.total_seconds() / HEARTBEATS_PER_LEASE
        while True:
            await asyncio.sleep(interval)
            in_flight = list(self._in_flight)
            if not in_flight:
                continue
            try:
                lost = await self.store.renew_leases(in_flight, self.clock(), self.settings.lease)
            except Exception as exc:  # the next beat retries; a lease lasts three of them
                log.warning(
                    "queue.lease_renewal_failed", extra=fields(entries=len(in_flight), error=str(exc))
                )
                continue
            for queue_id in lost:
                if queue_id in self._in_flight:
                    log.warning("queue.lease_lost", extra=fields(id=queue_id))

    async def run_once(self) -> int:
        """Start a task for every due entry not already in flight; returns how many were started."""
        limit = self.settings.batch + len(self._in_flight)
        started = 0
        entries = await self.store.due_queue_entries(self.clock(), limit, self.settings.lease)
        self._saturated = len(entries) >= limit
        fresh = [e for e in entries if e.id not in self._in_flight]
        small = [e for e in fresh if e.size <= INLINE_READ]
        # One batch read (the file backend: one thread hop) for the batch's messages: the opens and
        # reads leave the event loop, which is what a relay's throughput is bound by.
        contents: dict[str, bytes] = {}
        if small:
            read = await self.store.blobs.read_many([(e.blob_id, e.body_offset) for e in small])
            contents = {e.id: data for e, data in zip(small, read, strict=True) if data is not None}
        for entry in fresh:
            if entry.id in self._in_flight:  # started meanwhile by a concurrent run_once
                continue
            task = asyncio.create_task(
                self._process_logged(entry, contents.get(entry.id)), name=f"queue-{entry.id}"
            )
            self._in_flight[entry.id] = task
            task.add_done_callback(functools.partial(self._done, entry.id))
            started += 1
        return started

    def _done(self, queue_id: str, _task: asyncio.Task[None]) -> None:
        self._in_flight.pop(queue_id, None)
        # A backlog bigger than one batch: refill as entries finish, not at the next poll.
        if self._saturated and len(self._in_flight) <= self.settings.batch // 2:
            self._saturated = False
            self._wake.set()

    async def idle(self) -> None:
        """Wait until no entry is in flight (for tests and benchmarks)."""
        while self._in_flight:
            await asyncio.gather(*self._in_flight.values(), return_exceptions=True)

    # ------------------------------------------------------------------------------ one entry

    async def _process_logged(self, entry: QueueEntry, original: bytes | None = None) -> None:
        try:
            await self.process(entry, original)
        except NotFound:
            log.info("queue.entry_gone", extra=fields(id=entry.id))  # dropped while in flight
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("queue.process_failed", extra=fields(id=entry.id))
            with contextlib.suppress(StoreError):
                await self.store.reschedule(entry.id, self.clock() + self.settings.schedule.delays[0])

    async def process(self, entry: QueueEntry, original: bytes | None = None) -> None:
        """Attempt `entry`; `original` is its message from `body_offset` on when already read."""
        if original is None:
            # The whole message: the queue holds at most limits.message_size per entry.
            original = await self.store.blobs.read(entry.blob_id, entry.body_offset)
        outcomes: dict[int, _Outcome] = {}
        remote: dict[str, list[int]] = {}
        for index, recipient in enumerate(entry.recipients):
            if recipient.state is RecipientState.PENDING:
                remote.setdefault(_domain_of(recipient.address), []).append(index)

        header = read_header(original) if remote else None
        if header is not None and header.keys.count(b"received") > MAX_RECEIVED:
            for indexes in remote.values():
                for index in indexes:
                    outcomes[index] = _Outcome(RecipientState.FAILED, R.LOCAL_LOOP)
            remote = {}

        # Never sent out: a domain that became local after the message was queued.
        local = [i for d in list(remote) if await self._is_local_domain(d) for i in remote.pop(d)]

        routes: dict[str, Route] = {}
        policies: dict[str, TlsPolicy] = {}
        for domain, indexes in remote.items():
            route = await self._route(domain)
            if isinstance(route, RouteFailure):
                state = RecipientState.FAILED if route.permanent else RecipientState.PENDING
                for index in indexes:
                    outcomes[index] = _Outcome(state, route.reply)
            else:
                policy = await self._tls_policy(domain, route)
                if entry.requiretls:
                    # RFC 8689 §4.1: with REQUIRETLS a TLS-Required header field is ignored.
                    required = await self._requiretls_policy(domain, route, policy)
                    if isinstance(required, Reply):
                        for index in indexes:
                            outcomes[index] = _Outcome(RecipientState.FAILED, required)
                        continue
                    policy = required
                elif header is not None and policy.kind in _RECIPIENT_POLICIES and _tls_optional(header):
                    # RFC 8689 §5: "TLS-Required: No" asks to deliver even when the recipient
                    # domain's policy fails; TLS is still tried and the failure still reported.
                    # Our own require_tls_domains is the operator's rule and stays.
                    policy = replace(policy, enforce=False)
                    if policy.fallback is not None and policy.fallback.kind in _RECIPIENT_POLICIES:
                        policy = replace(policy, fallback=replace(policy.fallback, enforce=False))
                routes[domain] = route
                policies[domain] = policy

        signature = entry.dkim_signature
        made = None  # a signature made now, stored with the attempt record
        if routes and signature is None:
            signature = made = await self._sign(entry, original)
        now = self.clock()
        planned = ", ".join(f"{d}: {r.hosts[0].name}" for d, r in routes.items()) or None
        number = await self.store.record_attempt(
            entry.id, now, planned, now + self.settings.lease, dkim_signature=made
        )

        for index in local:
            outcomes[index] = await self._deliver_locally(entry, index, original)

        # The connections (and their slots) this attempt used carry no other transaction until its
        # results are committed: a crash then repeats at most one transaction per connection.
        held = contextlib.AsyncExitStack()
        async with held:
            if routes:
                message = signature + original if signature else original
                results = await asyncio.gather(
                    *(
                        self._deliver_domain(entry, route, remote[domain], message, held, policies[domain])
                        for domain, route in routes.items()
                    )
                )
                for domain_outcomes in results:
                    outcomes.update(domain_outcomes)

            await self._finish(entry, number, original, outcomes)

    async def _is_local_domain(self, domain: str) -> bool:
        """`Store.is_local_domain`, remembered for `LOCAL_DOMAIN_TTL` seconds."""
        now = asyncio.get_running_loop().time()
        memo = self._local_domains.get(domain)
        if memo is not None and memo[0] > now:
            return memo[1]
        local = await self.store.is_local_domain(domain)
        if len(self._local_domains) >= 4 * self.settings.batch:
            self._local_domains = {d: m for d, m in self._local_domains.items() if m[0] > now}
        self._local_domains[domain] = (now + LOCAL_DOMAIN_TTL, local)
        return local

    async def _sign(self, entry: QueueEntry, message: bytes) -> bytes:
        """DKIM-Signature fields for an entry queued unsigned: b"" unless the sender's domain is
        local. t= is when the message was queued (issue 18), not this attempt."""
        domain = _domain_of(entry.sender) if entry.sender else ""
        if not domain or not await self._is_local_domain(domain):
            return b""
        try:
            return await self.signing_keys.sign(message, domain, entry.created_at)
        except (dkim.DkimError, OSError):
            log.exception("queue.dkim_failed", extra=fields(id=entry.id, domain=domain))
            return b""

    async def _deliver_locally(self, entry: QueueEntry, index: int, message: bytes) -> _Outcome:
        address = entry.recipients[index].address
        resolution = await resolve_local(self.store, address)
        if not resolution.local:
            if resolution.loop:
                # Retried like a remote 4xx: the postmaster can break the cycle before the entry expires.
                log.error(
                    "queue.alias_loop",
                    extra=fields(id=entry.id, rcpt=address, cycle=" -> ".join(resolution.loop)),
                )
                return _Outcome(RecipientState.PENDING, ALIAS_LOOP, self.settings.hostname)
            return _Outcome(RecipientState.FAILED, R.NO_SUCH_LOCAL_USER)
        content = f"Return-Path: <{entry.sender}>\r\n".encode() + message
        try:
            await self.store.deliver(
                Delivery(
                    staged=None,
                    size=len(content),
                    internal_date=self.clock(),
                    local=resolution.local,
                    content=content,
                )
            )
        except QuotaExceeded:
            # A late local failure: retried like a remote 4xx, bounced with a DSN at expiry (issue 5).
            return _Outcome(RecipientState.PENDING, R.LOCAL_MAILBOX_FULL, self.settings.hostname)
        return _Outcome(RecipientState.DELIVERED, R.DELIVERED_LOCALLY, self.settings.hostname)

    # ------------------------------------------------------------------------------ one domain

    @contextlib.asynccontextmanager
    async def _connection_slot(self, domain: str) -> AsyncIterator[None]:
        """A per-domain then a global connection slot; a domain's semaphore lives while in use."""
        semaphore = self._per_domain.get(domain)
        if semaphore is None:
            semaphore = self._per_domain[domain] = asyncio.Semaphore(self.settings.max_connections_per_domain)
        self._domain_users[domain] = self._domain_users.get(domain, 0) + 1
        try:
            async with semaphore, self._connections:
                yield
        finally:
            self._domain_users[domain] -= 1
            if not self._domain_users[domain]:
                del self._domain_users[domain], self._per_domain[domain]

    async def _deliver_domain(
        self,
        entry: QueueEntry,
        route: Route,
        indexes: Sequence[int],
        message: bytes,
        held: contextlib.AsyncExitStack,
        policy: TlsPolicy = OPPORTUNISTIC,
    ) -> dict[int, _Outcome]:
        """One transaction for `indexes` to the first of the route's hosts that takes it.

        Under a `policy` that verifies, each host is first tried with STARTTLS and a verified
        certificate; a host that fails it is skipped when the policy is enforced (the failure is
        what the recipients wait with), or given the mail as without a policy in testing mode.

        The connection slot, and the session when it stays open for reuse, are handed to `held`:
        they are released (the session back into the idle cache first) when the caller unwinds it,
        after the attempt's results are stored."""
        recipients = tuple(
            Recipient(
                _address(entry.recipients[i].address),
                notify=entry.recipients[i].notify,
                orcpt=entry.recipients[i].orcpt,
            )
            for i in indexes
        )
        envelope = Envelope(
            sender=_address(entry.sender) if entry.sender else None,
            recipients=recipients,
            size=len(message),
            eight_bit=entry.eight_bit,
            smtputf8=entry.smtputf8,
            ret=entry.ret,
            envid=entry.envid,
            requiretls=entry.requiretls,
        )
        settings, tls_context, implicit_tls = self._client_settings(route)
        last_failure = R.INTERNAL_ERROR
        last_host: str | None = None
        smarthost = route.kind is RouteKind.SMARTHOST
        await held.enter_async_context(self._connection_slot(route.domain))
        profile = "smarthost" if smarthost else ""
        for target in route.targets:
            outcome: SessionOutcome | None = None
            host_policy = policy.for_host(target.host)
            if host_policy.verifies:
                outcome, unmet = await self._send_verified(
                    route.domain, host_policy, target, envelope, message, held
                )
                if unmet is not None and host_policy.enforce:
                    last_failure, last_host = unmet, target.host
                    continue
            if outcome is None:
                outcome = await self._send_cached(
                    (target, profile), envelope, message, settings, tls_context, implicit_tls, held
                )
            if outcome.results is None and outcome.tls_failed and not settings.require_tls:
                # Opportunistic TLS: a peer whose TLS is broken still gets the mail in clear.
                outcome = await send_transaction(
                    target,
                    envelope,
                    message,
                    replace(settings, starttls=False),
                    tls_context=None,
                    connect_timeout=self.settings.connect_timeout,
                )
            if log.isEnabledFor(logging.INFO):
                log.info(
                    "queue.session",
                    extra=fields(
                        id=entry.id,
                        domain=route.domain,
                        target=outcome.describe,
                        tls=outcome.tls,
                        result=outcome.failure or "transaction",
                    ),
                )
            if outcome.results is not None:
                return self._recipient_outcomes(indexes, outcome, outcome.results)
            assert outcome.failure is not None
            last_failure, last_host = outcome.failure, target.host
        # RFC 5321 §4.5.4.1: no host took the mail. Like the engine's AUTH note says, a session that
        # could not be set up (even with a 5xx greeting) is retried, not bounced.
        return {i: _Outcome(RecipientState.PENDING, last_failure, last_host) for i in indexes}

    async def _send_verified(
        self,
        domain: str,
        policy: TlsPolicy,
        target: Target,
        envelope: Envelope,
        message: bytes,
        held: contextlib.AsyncExitStack,
    ) -> tuple[SessionOutcome | None, Reply | None]:
        """A session to `target` that must meet `policy`: (its outcome, None), or (None, the reply
        saying why the policy was not met), the failure reported either way."""
        where = f"{target.host}[{target.address}]:{target.port}"
        dane = policy.dane.get(target.host)
        if dane is not None and dane.lookup_failed is not None:
            # RFC 7672 §2.2: a TLSA lookup that fails in a signed zone makes the host unusable.
            self.tls_reporter.failure(
                domain, policy, TlsFailure(target.host, DNSSEC_INVALID, dane.lookup_failed, target.address)
            )
            return None, R.tls_policy_unmet(policy.describe(domain), target.host, dane.lookup_failed)
        if not policy.allows_host(target.host):
            # RFC 8461 §4.1: an MX host the policy does not name is not a candidate.
            self.tls_reporter.failure(
                domain,
                policy,
                TlsFailure(
                    target.host, VALIDATION_FAILURE, "MX host not listed in the policy", target.address
                ),
            )
            return None, R.tls_policy_unmet(
                policy.describe(domain), target.host, "MX host not listed in the policy"
            )
        # RFC 8461 §4.2 (and require_tls_domains alike): STARTTLS required, no clear-text fallback,
        # the certificate verified against the MX host name (Session sends it as server_hostname).
        # DANE (RFC 7672 §3.1.1): DANE-EE pins the key; no name or date check, so no WebPKI either.
        settings = ClientSettings(
            hostname=self.settings.hostname, timeouts=self.settings.timeouts, require_tls=True
        )
        context, profile, check = self.verify_tls_context, "verified", None
        if dane is not None:
            context, profile = self._dane_tls_context, "dane" if dane.usable else "tls-required"
            if dane.usable:
                check = functools.partial(_dane_check, dane.usable)
        outcome = await self._send_cached(
            (target, profile), envelope, message, settings, context, False, held, tls_check=check
        )
        if outcome.results is None and outcome.tls_failure is not None:
            assert outcome.failure is not None
            reason = " ".join(outcome.failure.lines)
            self.tls_reporter.failure(
                domain,
                policy,
                TlsFailure(
                    target.host, outcome.tls_failure, reason, target.address, outcome.local_address or ""
                ),
            )
            return None, R.tls_policy_unmet(policy.describe(domain), where, reason)
        if outcome.tls:
            self.tls_reporter.success(domain, policy, target.host)
        return outcome, None

    async def _tls_policy(self, domain: str, route: Route) -> TlsPolicy:
        """The transport security for `route` (surat.delivery.tlspolicy: DANE over MTA-STS over
        require_tls_domains over opportunistic). DANE and MTA-STS apply to MX delivery only: a
        configured route or smarthost is the operator's choice, not the domain's MX (RFC 8461 §4)."""
        fallback = await self._webpki_policy(domain, route)
        if route.kind is RouteKind.MX and self.dane_resolver is not None:
            dane = await self._dane_hosts(domain, route, self.dane_resolver)
            if dane:
                return TlsPolicy(TlsPolicyKind.DANE, enforce=True, dane=dane, fallback=fallback)
        return fallback

    async def _requiretls_policy(self, domain: str, route: Route, policy: TlsPolicy) -> TlsPolicy | Reply:
        """The policy a REQUIRETLS message goes under (RFC 8689 §4.2.1), or the reply it is returned
        with. The MX records must be DNSSEC-validated or an MTA-STS policy must apply; every host
        then needs STARTTLS with a verified certificate (DANE, or the MX host name), enforced even
        in MTA-STS testing mode; the engine then sends REQUIRETLS only to a server offering it.
        A configured route or smarthost is the operator's choice of next hop: verified TLS to it."""
        if route.kind is RouteKind.SMARTHOST and self.settings.smarthost_credentials is not None:
            return policy  # verified TLS already: it gets our credentials (_client_settings)
        if route.kind not in (RouteKind.MX, RouteKind.IMPLICIT_MX):
            return REQUIRE_TLS
        if policy.kind is TlsPolicyKind.DANE:
            # DANE implies an authentic MX RRset. Hosts whose TLSA records are all unusable would get
            # TLS without authentication: they, and the hosts without TLSA, get the fallback, enforced.
            dane = {host: d for host, d in policy.dane.items() if d.usable or d.lookup_failed is not None}
            return replace(policy, dane=dane, fallback=self._enforced(policy.fallback))
        if policy.kind is TlsPolicyKind.MTA_STS:
            return replace(policy, enforce=True)
        if self.dane_resolver is not None:
            with contextlib.suppress(DNSError):
                _records, authentic = await self.dane_resolver.secure_mx(domain)
                if authentic:
                    return REQUIRE_TLS
        return R.requiretls_unmet(domain, "no DNSSEC-validated MX records and no MTA-STS policy")

    @staticmethod
    def _enforced(policy: TlsPolicy | None) -> TlsPolicy:
        """`policy` enforced; opportunistic TLS becomes verified TLS (RFC 8689 §4.2.1)."""
        if policy is None or not policy.verifies:
            return REQUIRE_TLS
        return replace(policy, enforce=True)

    async def _dane_hosts(self, domain: str, route: Route, resolver: DnssecResolver) -> dict[str, DaneHost]:
        """The route's MX hosts with DNSSEC-authenticated TLSA records (RFC 7672 §2.2)."""
        try:
            _records, authentic = await resolver.secure_mx(domain)
        except DNSError:
            return {}  # the route came from the same resolver just now: a flap; no DANE this time
        if not authentic:
            return {}  # RFC 7672 §2.2.1: an insecure MX RRset: no DANE for any of its hosts
        hosts: dict[str, DaneHost] = {}
        for host in route.hosts:
            try:
                # RFC 7672 §3: the TLSA base domain is the MX host name, port 25 over TCP.
                records, secure = await resolver.tlsa(f"_25._tcp.{host.name}")
            except DNSError as exc:
                hosts[host.name] = DaneHost((), lookup_failed=f"TLSA lookup failed: {exc}")
                continue
            if secure and records:
                hosts[host.name] = DaneHost(usable_records(records))
        return hosts

    async def _webpki_policy(self, domain: str, route: Route) -> TlsPolicy:
        if route.kind is RouteKind.SMARTHOST:
            return OPPORTUNISTIC  # the smarthost's own TLS and AUTH rules (_client_settings) apply
        if route.kind in (RouteKind.MX, RouteKind.IMPLICIT_MX):
            policy = from_sts(await self.sts_policies.policy_for(domain))
            if policy is not None:
                return policy
        if domain in self.settings.require_tls_domains:
            return REQUIRE_TLS
        return OPPORTUNISTIC

    async def _resolve(self, domain: str) -> Route | RouteFailure:
        route = await resolve_targets(
            self.resolver,
            domain,
            local_hostnames=self.local_hostnames,
            routes=self.settings.routes,
            smarthost=self.settings.smarthost,
            rng=self._rng,
            port=self.settings.mx_port,
        )
        if isinstance(route, RouteFailure) or self.settings.allow_private_destinations:
            return route
        return refuse_private(route, self.settings.own_addresses)

    async def _route(self, domain: str) -> Route | RouteFailure:
        """`resolve_targets` for `domain`, shared with the entries around it (`ROUTE_REUSE`)."""
        now = asyncio.get_running_loop().time()
        memo = self._routes.get(domain)
        if memo is not None and memo[0] > now:
            # In steady use, like a cached session: kept while used, at most REUSE_AGE in all.
            memo = self._routes[domain] = (min(now + ROUTE_REUSE, memo[1] + REUSE_AGE), *memo[1:])
        else:
            if len(self._routes) >= 4 * self.settings.batch:
                self._routes = {d: m for d, m in self._routes.items() if m[0] > now}
            lookup = asyncio.create_task(self._resolve(domain))
            memo = self._routes[domain] = (now + ROUTE_REUSE, now, lookup)
        lookup = memo[2]
        try:
            route = await asyncio.shield(lookup)  # one waiter cancelled must not cancel the others
        except Exception:
            self._forget_route(domain, lookup)
            raise
        if isinstance(route, RouteFailure):
            self._forget_route(domain, lookup)
        return route

    def _forget_route(self, domain: str, lookup: asyncio.Task[Route | RouteFailure]) -> None:
        memo = self._routes.get(domain)
        if memo is not None and memo[2] is lookup:
            del self._routes[domain]

    # ------------------------------------------------------------------------------ connection cache

    async def _send_cached(
        self,
        key: _SessionKey,
        envelope: Envelope,
        message: bytes,
        settings: ClientSettings,
        tls_context: ssl.SSLContext | None,
        implicit_tls: bool,
        held: contextlib.AsyncExitStack,
        tls_check: TlsCheck | None = None,
    ) -> SessionOutcome:
        """One transaction to `key`'s target over an idle cached session, else a new one.

        RFC 5321 §3.3 allows several transactions per session; the session goes back to the
        cache when the peer left it ready for another. A cached session that turns out to have
        been closed by the peer meanwhile (nothing heard since MAIL) is replaced once by a new one:
        the message cannot have been accepted."""
        loop = asyncio.get_running_loop()
        for fresh in (False, True):
            cached = None if fresh else await self._take_idle(key)
            if cached is None:
                session = Session(
                    key[0],
                    settings,
                    tls_context=tls_context,
                    connect_timeout=self.settings.connect_timeout,
                    implicit_tls=implicit_tls,
                    tls_check=tls_check,
                )
                opened = loop.time()
                failure = await session.open()
                if failure is not None:
                    await session.close()
                    return session.failed(failure)
            else:
                session, opened = cached
            outcome = await session.send(envelope, message)
            if cached is not None and session.idle_drop:
                await session.close()
                continue
            # Kept only when the peer took mail over it: one that refused (greylisting, rate
            # limits) gets a new session at the next attempt, as the retry schedule assumes.
            delivered = outcome.results is not None and any(r.delivered for r in outcome.results)
            young = session.transactions < REUSE_COUNT and loop.time() - opened < REUSE_AGE
            if delivered and young and session.usable:
                # unwound before the slot entered earlier on the same stack: the session is idle
                # in the cache by the time the slot lets the next entry in
                held.callback(self._put_idle, key, session, opened)
            else:
                await session.close()
            return outcome
        raise AssertionError("unreachable: the second pass uses a new session")

    async def _take_idle(self, key: _SessionKey) -> tuple[Session, float] | None:
        sessions = self._idle.get(key)
        while sessions:
            session, _idle_since, opened = sessions.pop()  # the most recently used: least likely stale
            if not sessions:
                del self._idle[key]
            if session.usable:
                return session, opened
            await session.close()  # the peer hung up meanwhile: nothing to QUIT, just the socket
        return None

    def _put_idle(self, key: _SessionKey, session: Session, opened: float) -> None:
        self._idle.setdefault(key, []).append((session, asyncio.get_running_loop().time(), opened))
        if self._reaper is None:
            self._reaper = asyncio.create_task(self._reap(), name="queue-idle-sessions")

    async def _reap(self) -> None:
        try:
            while self._idle:
                await asyncio.sleep(IDLE_LIMIT / 2)
                await self._close_idle(IDLE_LIMIT)
        finally:
            self._reaper = None

    async def _close_idle(self, max_idle: float | None) -> None:
        """QUIT the sessions idle for more than `max_idle` seconds (None: all of them)."""
        now = asyncio.get_running_loop().time()
        closing: list[Session] = []
        for key in list(self._idle):
            keep = []
            for item in self._idle[key]:
                if max_idle is None or now - item[1] > max_idle:
                    closing.append(item[0])
                else:
                    keep.append(item)
            if keep:
                self._idle[key] = keep
            else:
                del self._idle[key]
        # A peer slow to answer QUIT holds neither the reaper nor a shutdown for long.
        await asyncio.gather(*(session.close(IDLE_QUIT_WAIT) for session in closing), return_exceptions=True)

    def _client_settings(self, route: Route) -> tuple[ClientSettings, ssl.SSLContext | None, bool]:
        """(settings, TLS context, implicit TLS) for a session on `route`."""
        settings = ClientSettings(hostname=self.settings.hostname, timeouts=self.settings.timeouts)
        credentials = self.settings.smarthost_credentials
        if route.kind is not RouteKind.SMARTHOST or credentials is None:
            return settings, self.tls_context, False
        context = self.smarthost_tls_context or self.tls_context
        # RFC 8314 §3.3: port 465 is TLS from the first byte; elsewhere STARTTLS, required.
        implicit = route.hosts[0].port == SUBMISSIONS_PORT
        return (
            replace(settings, credentials=credentials, require_tls=True, tls_active=implicit),
            context,
            implicit,
        )

    @staticmethod
    def _recipient_outcomes(
        indexes: Sequence[int], outcome: SessionOutcome, results: Sequence[RecipientResult]
    ) -> dict[int, _Outcome]:
        outcomes: dict[int, _Outcome] = {}
        host = outcome.target.host
        for index, result in zip(indexes, results, strict=True):
            if result.delivered:
                state = RecipientState.RELAYED if outcome.dsn_passed else RecipientState.DELIVERED
            elif result.permanent:
                state = RecipientState.FAILED
            else:
                state = RecipientState.PENDING
            outcomes[index] = _Outcome(
                state, result.reply, host if result.remote else None, outcome.dsn_passed
            )
        return outcomes

    # ------------------------------------------------------------------------------ results

    async def _finish(
        self, entry: QueueEntry, number: int, original: bytes, outcomes: dict[int, _Outcome]
    ) -> None:
        now = self.clock()
        pending = [i for i, r in enumerate(entry.recipients) if r.state is RecipientState.PENDING]
        still = [i for i in pending if i not in outcomes or outcomes[i].state is RecipientState.PENDING]
        when = next_attempt(entry.created_at, number, now, self.settings.schedule) if still else None
        expired = bool(still) and when is None
        if expired:
            for i in still:
                previous = outcomes.get(i, _Outcome(RecipientState.PENDING, R.INTERNAL_ERROR))
                outcomes[i] = _Outcome(RecipientState.FAILED, previous.reply, previous.remote_mta)
        await self._send_dsns(entry, original, outcomes, now, expired)
        delayed = set() if expired else await self._send_delay_dsn(entry, original, outcomes, still, now)
        updates = [
            RecipientUpdate(i, outcome.state, str(outcome.reply), i in delayed)
            for i, outcome in sorted(outcomes.items())
        ]
        updates += [
            RecipientUpdate(i, RecipientState.PENDING, entry.recipients[i].last_reply, delay_notified=True)
            for i in sorted(delayed - outcomes.keys())
        ]
        summary = "; ".join(f"{entry.recipients[i].address}: {o.reply}" for i, o in sorted(outcomes.items()))
        hosts = sorted({o.remote_mta for o in outcomes.values() if o.remote_mta})
        await self.store.finish_attempt(
            entry.id,
            number,
            summary[:2000],
            updates,
            when if not expired else None,
            host=", ".join(hosts) or None,
        )
        states = [o.state for o in outcomes.values()]
        metrics.deliveries(
            "relay", "delivered", sum(s in (RecipientState.DELIVERED, RecipientState.RELAYED) for s in states)
        )
        metrics.deliveries("relay", "failed", states.count(RecipientState.FAILED))
        metrics.deliveries("relay", "deferred", 0 if expired else len(still))
        if log.isEnabledFor(logging.INFO):
            log.info(
                "queue.attempt",
                extra=fields(
                    id=entry.id,
                    number=number,
                    delivered=sum(
                        o.state in (RecipientState.DELIVERED, RecipientState.RELAYED)
                        for o in outcomes.values()
                    ),
                    failed=sum(o.state is RecipientState.FAILED for o in outcomes.values()),
                    pending=0 if expired else len(still),
                    next=when.isoformat() if when and not expired else "-",
                    # Why the recipients not delivered were not: what `surat queue show` lists too.
                    reason="; ".join(
                        f"{entry.recipients[i].address}: {o.reply}"
                        for i, o in sorted(outcomes.items())
                        if o.state not in (RecipientState.DELIVERED, RecipientState.RELAYED)
                    )[:500]
                    or "-",
                ),
            )

    async def _send_dsns(
        self, entry: QueueEntry, original: bytes, outcomes: dict[int, _Outcome], now: datetime, expired: bool
    ) -> None:
        authenticated = entry.authenticated_user is not None
        reported: list[ReportedRecipient] = []
        for index, outcome in sorted(outcomes.items()):
            recipient = entry.recipients[index]
            if outcome.state is RecipientState.FAILED:
                action = Action.FAILED
            elif outcome.state is RecipientState.DELIVERED and outcome.remote_mta == self.settings.hostname:
                action = Action.DELIVERED  # delivered here, to a mailbox
            elif outcome.state is RecipientState.DELIVERED:
                # RFC 3461 §6.2.1: a next hop without DSN support: we report "relayed" ourselves.
                action = Action.RELAYED
            else:
                continue
            if not should_send_dsn(entry.sender, recipient.notify, action, authenticated=authenticated):
                continue
            reply = str(outcome.reply)
            reported.append(
                ReportedRecipient(
                    address=recipient.address,
                    orcpt=recipient.orcpt,
                    action=action,
                    status=status_from_reply(reply, permanent=True if action is Action.FAILED else None),
                    remote_mta=outcome.remote_mta,
                    diagnostic=reply,
                    last_attempt=now,
                )
            )
        if not reported:
            return
        to = await self._report(entry, original, reported, now)
        metrics.dsn_sent("report")
        log.info(
            "queue.dsn",
            extra=fields(id=entry.id, to=to, recipients=len(reported), expired=expired),
        )

    async def _send_delay_dsn(
        self,
        entry: QueueEntry,
        original: bytes,
        outcomes: Mapping[int, _Outcome],
        still: Sequence[int],
        now: datetime,
    ) -> set[int]:
        """One "delayed" DSN for the still-pending recipients now owed one; returns their indexes.

        RFC 3461 §4.1: NOTIFY=DELAY asks for it, NEVER forbids it, and without NOTIFY the MTA
        chooses (our own authenticated users get it); never to <> (`delay_dsn_due`).
        """
        schedule = self.settings.schedule
        authenticated = entry.authenticated_user is not None
        due = [
            i
            for i in still
            if delay_dsn_due(
                entry.created_at,
                now,
                sender=entry.sender,
                notify=entry.recipients[i].notify,
                authenticated=authenticated,
                already_sent=entry.recipients[i].delay_notified,
                schedule=schedule,
            )
        ]
        if not due:
            return set()
        until = expires_at(entry.created_at, schedule)  # RFC 3464 §2.3.9 Will-Retry-Until
        reported = []
        for i in due:
            recipient = entry.recipients[i]
            outcome = outcomes.get(i)
            reply = str(outcome.reply) if outcome else recipient.last_reply or str(R.INTERNAL_ERROR)
            reported.append(
                ReportedRecipient(
                    address=recipient.address,
                    orcpt=recipient.orcpt,
                    action=Action.DELAYED,
                    status=status_from_reply(reply, permanent=False),
                    remote_mta=outcome.remote_mta if outcome else None,
                    diagnostic=reply,
                    last_attempt=now,
                    will_retry_until=until,
                )
            )
        recipient_address = await self._report(entry, original, reported, now)
        metrics.dsn_sent("delay")
        log.info("queue.delay_dsn", extra=fields(id=entry.id, to=recipient_address, recipients=len(due)))
        return set(due)

    async def _report(
        self, entry: QueueEntry, original: bytes, reported: Sequence[ReportedRecipient], now: datetime
    ) -> str:
        """Compose a DSN about `reported` and send it to the entry's sender; returns the recipient."""
        report = DsnReport(
            reporting_mta=self.settings.hostname,
            sender=entry.sender,
            recipients=tuple(reported),
            arrival_date=entry.created_at,
            envid=entry.envid,
            # RFC 8689 §4.3: a report on a REQUIRETLS message quotes its header only, and goes with
            # REQUIRETLS itself (submit_dsn)
            ret=Ret.FULL if (entry.ret or "").upper() == "FULL" and not entry.requiretls else None,
            smtputf8=entry.smtputf8,
        )
        try:
            dsn = build_dsn(report, io.BytesIO(original), now=now)
        except UnsafeText as exc:
            # A sender with a control character cannot be written into To: without injecting a field
            # (issue 11 item 6); such an address was refused at MAIL FROM, so this is old or forged data.
            log.warning("queue.dsn_unaddressable", extra=fields(id=entry.id, reason=str(exc)))
            return "-"
        await submit_dsn(self.store, dsn, self.clock(), requiretls=entry.requiretls)
        return dsn.recipient
