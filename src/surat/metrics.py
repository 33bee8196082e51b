"""Prometheus metrics: the metric objects, small functions the servers call where events happen, and
the text `/metrics` on the admin listener answers (issue 13).

Labels are bounded sets (listener roles, reply classes, enum values, known IMAP command names), never
users, addresses or client IPs: a label per user would grow without bound and leak who is active.

Everything counted here lives in one CollectorRegistry of our own, not prometheus_client's global one,
so that nothing another library registers shows up, and tests can read it.

Several processes (`[server] workers = N`): each worker counts in its own memory, yet any of them may
answer a scrape (they share the admin listener's socket). So the supervisor gives the workers
prometheus_client's multiprocess mode: it sets PROMETHEUS_MULTIPROC_DIR (data_dir/metrics, emptied
at start) in their environment, each worker's counters and histograms live in memory-mapped files
there, and a scrape adds up every worker's files, dead workers' included, so totals never go down
while the server runs. The values read at scrape time (queue, blocked clients) come from the store,
which all workers share, so any worker reads the same.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from cryptography import x509
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.registry import Collector

from surat.store.base import Store

MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

REGISTRY = CollectorRegistry(auto_describe=True)

CONNECTIONS = Counter(
    "surat_connections",
    "Connections to the mail listeners, by listener role and what became of them",
    ["listener", "result"],  # result: accepted, refused (connection limits), tls_failed, proxy_refused
    registry=REGISTRY,
)
SMTP_TRANSACTIONS = Counter(
    "surat_smtp_transactions",
    "SMTP mail transactions that reached the end of the message, by role and reply class",
    ["role", "reply"],  # reply: 2xx, 4xx, 5xx
    registry=REGISTRY,
)
DELIVERIES = Counter(
    "surat_deliveries",
    "Recipients delivered to local mailboxes or relayed, by result",
    ["kind", "result"],  # kind: local, relay; result: delivered, deferred, failed
    registry=REGISTRY,
)
DSNS = Counter(
    "surat_dsns_sent",
    "Delivery status notifications sent, by type",
    ["type"],  # report (failed, delivered, relayed), delay
    registry=REGISTRY,
)
AUTH_ATTEMPTS = Counter(
    "surat_auth_attempts",
    "Authentication attempts, by protocol and result",
    ["protocol", "result"],  # result: ok, failed, blocked (refused unchecked: too many failures)
    registry=REGISTRY,
)
MAIL_AUTH = Counter(
    "surat_mail_auth_results",
    "SPF, DKIM and DMARC results of messages received on port 25",
    ["method", "result"],
    registry=REGISTRY,
)
# Open now, by listener: with `workers = N` each worker's value is in its own file, and "livesum"
# adds up those of the workers alive (a dead worker's connections are gone with it).
ACTIVE_CONNECTIONS = Gauge(
    "surat_connections_active",
    "Mail connections open now, by listener role",
    ["listener"],
    multiprocess_mode="livesum",
    registry=REGISTRY,
)
IMAP_COMMAND_SECONDS = Histogram(
    "surat_imap_command_duration_seconds",
    "Time to answer IMAP commands, by command (IDLE excluded: it lasts as long as the client wants)",
    ["command"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
    registry=REGISTRY,
)
HTTP_REQUESTS = Counter(
    "surat_http_requests",
    "Requests to the web listeners, by listener role and status class",
    ["listener", "status"],  # status: 2xx, 3xx, 4xx, 5xx
    registry=REGISTRY,
)
ACME_ORDERS = Counter(
    "surat_acme_orders",
    "ACME certificate orders (surat.acme), by result",
    ["result"],  # issued, failed
    registry=REGISTRY,
)


def connection(listener: str, result: str) -> None:
    CONNECTIONS.labels(listener, result).inc()


def connection_opened(listener: str) -> None:
    ACTIVE_CONNECTIONS.labels(listener).inc()


def connection_closed(listener: str) -> None:
    ACTIVE_CONNECTIONS.labels(listener).dec()


def smtp_transaction(role: str, code: int) -> None:
    SMTP_TRANSACTIONS.labels(role, reply_class(code)).inc()


def deliveries(kind: str, result: str, count: int = 1) -> None:
    if count:
        DELIVERIES.labels(kind, result).inc(count)


def dsn_sent(kind: str) -> None:
    DSNS.labels(kind).inc()


def auth_attempt(protocol: str, result: str) -> None:
    AUTH_ATTEMPTS.labels(protocol, result).inc()


def mail_auth(method: str, result: str) -> None:
    MAIL_AUTH.labels(method, result).inc()


def http_request(listener: str, status: int) -> None:
    HTTP_REQUESTS.labels(listener, reply_class(status)).inc()


@contextmanager
def imap_command(command: str) -> Iterator[None]:
    """Time one IMAP command; `command` must come from the dispatch table (a bounded set), which
    the caller guarantees."""
    started = time.perf_counter()
    try:
        yield
    finally:
        IMAP_COMMAND_SECONDS.labels(command).observe(time.perf_counter() - started)


def acme_order(result: str) -> None:
    ACME_ORDERS.labels(result).inc()


def reply_class(code: int) -> str:
    return f"{code // 100}xx" if 100 <= code <= 599 else "other"


def prepare_multiprocess_dir(data_dir: Path) -> Path:
    """The supervisor's part: a fresh directory for the workers' metric files (counters start at
    zero with the server, as Prometheus expects after a restart)."""
    directory = data_dir / "metrics"
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    for stale in directory.glob("*.db"):
        stale.unlink()
    return directory


def worker_exited(pid: int, directory: str | None) -> None:
    """The supervisor's part when a worker ends: its live gauges (open connections) stop counting;
    its counters stay, so totals never go down."""
    if directory:
        mark_process_dead(pid, directory)  # type: ignore[no-untyped-call]


class _StoreCollector(Collector):
    """Values read from the store when scraped (shared by every process and node)."""

    def __init__(self, queue_entries: int, oldest_age: float, blocked: int) -> None:
        self._values = (queue_entries, oldest_age, blocked)

    def collect(self) -> Iterable[GaugeMetricFamily]:
        queue_entries, oldest_age, blocked = self._values
        yield GaugeMetricFamily("surat_queue_messages", "Messages in the outbound queue", value=queue_entries)
        yield GaugeMetricFamily(
            "surat_queue_oldest_age_seconds",
            "Age of the oldest message in the outbound queue (0 when empty)",
            value=oldest_age,
        )
        yield GaugeMetricFamily(
            "surat_blocked_clients",
            "Client addresses (IPv6: /64 networks) blocked after failed logins",
            value=blocked,
        )


class _AcmeCollector(Collector):
    """The ACME renewal's state, from its status file and the served certificate (data_dir/acme/,
    written by the one process that renews, read by whichever worker is scraped)."""

    def __init__(self, failures: int, not_after: float) -> None:
        self._values = (failures, not_after)

    def collect(self) -> Iterable[GaugeMetricFamily]:
        failures, not_after = self._values
        yield GaugeMetricFamily(
            "surat_acme_consecutive_failures",
            "ACME orders failed in a row since the last success (0: the last one worked)",
            value=failures,
        )
        yield GaugeMetricFamily(
            "surat_acme_certificate_not_after_timestamp_seconds",
            "Expiry of the certificate ACME obtained (0: none yet, a placeholder is served)",
            value=not_after,
        )


def _acme_collector(data_dir: Path) -> _AcmeCollector:
    from surat.acme.files import AcmeFiles  # noqa: PLC0415 (only with [acme])

    files = AcmeFiles(data_dir)
    not_after = 0.0
    try:
        leaf = x509.load_pem_x509_certificate(files.cert.read_bytes())
        if leaf.issuer != leaf.subject:  # not the self-signed placeholder
            not_after = leaf.not_valid_after_utc.timestamp()
    except (OSError, ValueError):
        pass
    return _AcmeCollector(files.read_status().consecutive_failures, not_after)


async def render(store: Store, acme_data_dir: Path | None = None) -> bytes:
    """The text exposition of every metric, for one scrape. `acme_data_dir`: with [acme], the
    data_dir whose ACME state to report."""
    now = time.time()
    summary = await store.queue_summary()
    blocked = await store.list_auth_clients(blocked_after=now)
    oldest_age = max(0.0, now - summary.oldest.timestamp()) if summary.oldest is not None else 0.0
    scraped = CollectorRegistry()
    scraped.register(_StoreCollector(summary.entries, oldest_age, len(blocked)))
    if acme_data_dir is not None:
        scraped.register(_acme_collector(acme_data_dir))  # two small files
    return generate_latest(counted_registry()) + generate_latest(scraped)


def counted_registry() -> CollectorRegistry:
    """The counters of every worker of this machine (multiprocess mode), or of this process."""
    if os.environ.get(MULTIPROCESS_ENV):
        counted = CollectorRegistry()
        MultiProcessCollector(counted)  # type: ignore[no-untyped-call]  # reads every worker's files (not a blocking amount: a few)
        return counted
    return REGISTRY


def sample_values(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of `registry` by name and sorted labels, for pages that show a few of them."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in registry.collect()
        for sample in family.samples
    }
