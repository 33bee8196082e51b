"""When to order a certificate, and what follows: the new files installed and every process told
to reload them; failures retried with exponential backoff while the old certificate stays served.

Exactly one process per data_dir runs this (the single server, or worker 0 of `workers = N`); the
http listener of every worker answers the CA from the files it writes (surat.acme.files).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

from cryptography import x509

from surat import metrics
from surat.acme.files import AcmeFiles
from surat.acme.issue import issue
from surat.config import AcmeConfig, Config
from surat.log import fields
from surat.net.tls import dns_names
from surat.store.base import Store

log = logging.getLogger(__name__)

T = TypeVar("T")

# Checked at start and every 12 hours (sooner when a short-lived certificate is due before that).
CHECK_INTERVAL = 12 * 3600.0
# Renewed 30 days before expiry (Let's Encrypt's 90-day certificates: at 60 days), or when a third of
# the lifetime is left if that is sooner (certificates of a few days, e.g. Pebble's or short-lived
# profiles), so there is time to retry before the old one expires.
RENEW_BEFORE = timedelta(days=30)
# Backoff after the n-th consecutive failure: FIRST_RETRY * 2**(n-1), at most MAX_RETRY (well within
# Let's Encrypt's failed-validation limit of 5 an hour per account and name).
FIRST_RETRY = 300.0
MAX_RETRY = CHECK_INTERVAL
BACKOFF_SLACK = 1.0
# The shortest wait between two checks, so that a clock or certificate oddity cannot spin the loop.
MIN_WAIT = 10.0
# What the web layer adds for each local domain when the https listener is on (docs/web.md).
WEB_PREFIXES = ("mta-sts", "autoconfig", "autodiscover")


def renewal_reason(
    cert_file: Path, hostnames: Sequence[str], now: datetime, revoked_serial: int | None = None
) -> str | None:
    """Why a certificate should be ordered now, or None while the one in `cert_file` is good.
    `revoked_serial`: the certificate `surat acme revoke` revoked (RFC 8555 §7.6)."""
    try:
        leaf = x509.load_pem_x509_certificate(cert_file.read_bytes())
    except (OSError, ValueError):
        return "no usable certificate"
    if leaf.serial_number == revoked_serial:
        return "revoked"
    if leaf.issuer == leaf.subject:
        return "placeholder certificate (self-signed)"
    if {name.lower() for name in dns_names(leaf)} != set(hostnames):
        return "host names changed"
    if now >= renewal_time(leaf):
        return "expires soon"
    return None


def renewal_time(leaf: x509.Certificate) -> datetime:
    lifetime = leaf.not_valid_after_utc - leaf.not_valid_before_utc
    return leaf.not_valid_after_utc - min(RENEW_BEFORE, lifetime / 3)


def retry_delay(consecutive_failures: int) -> float:
    return min(MAX_RETRY, FIRST_RETRY * 2.0 ** min(consecutive_failures - 1, 32))


async def certificate_names(config: Config, store: Store) -> list[str]:
    """[acme] hostnames, else the hostname plus the web layer's names of every local domain when the
    https listener serves them. Sorted, lower-case, without duplicates."""
    assert config.acme is not None
    if config.acme.hostnames:
        return sorted(set(config.acme.hostnames))
    names = {config.hostname}
    if config.listen.https:
        for domain in await store.list_domains():
            names.update(f"{prefix}.{domain}" for prefix in WEB_PREFIXES)
    return sorted(names)


async def _in_daemon_thread(work: Callable[[], T]) -> T:
    """`work()` in a daemon thread of its own. Not the loop's default executor: asyncio.run waits for
    that at shutdown, and an order polling a slow CA may take up to ORDER_TIMEOUT; a stopping server
    abandons the order instead (the CA keeps it pending; the next start orders anew)."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[T] = loop.create_future()

    def hand_over(settle: Callable[[], None]) -> None:
        def unless_cancelled() -> None:
            if not done.cancelled():  # the server stopped: nobody waits for the result
                settle()

        with contextlib.suppress(RuntimeError):  # the loop has closed
            loop.call_soon_threadsafe(unless_cancelled)

    def run() -> None:
        try:
            outcome = work()
        except BaseException as exc:  # handed to the awaiting task, which logs it
            hand_over(functools.partial(done.set_exception, exc))  # bound now: `exc` ends with the block
            return
        hand_over(functools.partial(done.set_result, outcome))

    threading.Thread(target=run, name="acme-order", daemon=True).start()
    return await done


class AcmeRenewal:
    def __init__(
        self,
        config: Config,
        store: Store,
        reload: Callable[[], object],
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """`reload`: make every process serve the new files (SuratServer.reload_certificates, or a
        SIGHUP to the supervisor, which forwards it to every worker)."""
        assert config.acme is not None
        self.acme: AcmeConfig = config.acme
        self.config = config
        self.store = store
        self.files = AcmeFiles(config.data_dir)
        self._reload = reload
        self._clock = clock
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()  # one check at a time
        self._wakeup = asyncio.Event()  # set by wake()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="acme-renewal")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    def wake(self) -> None:
        """Check now rather than at the next timer (SIGHUP, `surat reload`, `surat acme revoke`): a
        new local domain or a revocation is acted on at once. Within a failure's backoff nothing is
        ordered before the backoff ends."""
        self._wakeup.set()

    async def _run(self) -> None:
        while True:
            self._wakeup.clear()
            try:
                wait = await self.check()
            except asyncio.CancelledError:
                raise
            except Exception:
                # Not an order failure (those are handled in _order): the store unreachable, the
                # data dir unwritable. Logged with its traceback; the renewal keeps running.
                log.exception("acme.check_failed")
                wait = FIRST_RETRY
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), wait)

    async def check(self) -> float:
        """Order a certificate if one is due; the seconds until the next check."""
        async with self._lock:
            now = self._clock()
            status = self.files.read_status()
            # A check earlier than the backoff allows (a wake-up) orders nothing; the timer's own
            # check comes at next_attempt (asyncio may wake it a little early, hence the slack).
            if status.consecutive_failures and status.next_attempt is not None:
                backoff_left = status.next_attempt - now
                if backoff_left > BACKOFF_SLACK:
                    return backoff_left
            hostnames = await certificate_names(self.config, self.store)
            reason = renewal_reason(
                self.files.cert, hostnames, datetime.fromtimestamp(now, UTC), status.revoked_serial
            )
            if reason is None:
                wait = min(CHECK_INTERVAL, max(MIN_WAIT, self._due_in(now)))
                # Good as it is (also after failures that a config change made moot): no warning left.
                self.files.write_status(
                    replace(status, next_attempt=now + wait, consecutive_failures=0, last_error=None)
                )
                return wait
            return await self._order(hostnames, reason, now)

    def _due_in(self, now: float) -> float:
        leaf = x509.load_pem_x509_certificate(self.files.cert.read_bytes())
        return renewal_time(leaf).timestamp() - now

    async def _order(self, hostnames: list[str], reason: str, now: float) -> float:
        log.info("acme.ordering", extra=fields(names=",".join(hostnames), reason=reason))
        try:
            # The library is blocking (HTTP requests, polling): a thread, never the event loop.
            issued = await _in_daemon_thread(lambda: issue(self.acme, hostnames, self.files))
            await asyncio.to_thread(self.files.install, issued.fullchain_pem, issued.key_pem)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            status = self.files.read_status()
            failures = status.consecutive_failures + 1
            wait = retry_delay(failures)
            error = f"{type(exc).__name__}: {exc}".replace("\n", " ")[:500]
            self.files.write_status(
                replace(
                    status,
                    last_failure=now,
                    last_error=error,
                    consecutive_failures=failures,
                    next_attempt=now + wait,
                )
            )
            metrics.acme_order("failed")
            log.error(
                "acme.order_failed",
                extra=fields(
                    names=",".join(hostnames), failures=failures, retry_in=round(wait), reason=error
                ),
            )
            return wait
        metrics.acme_order("issued")
        self._reload()
        wait = min(CHECK_INTERVAL, max(MIN_WAIT, self._due_in(now)))
        self.files.write_status(
            replace(
                self.files.read_status(),
                last_success=now,
                last_error=None,
                consecutive_failures=0,
                next_attempt=now + wait,
            )
        )
        log.info("acme.issued", extra=fields(names=",".join(hostnames), next_check_in=round(wait)))
        return wait
