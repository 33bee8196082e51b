"""The parent of `[server] workers = N` (docs/workers.md).

Listening sockets: the supervisor binds them once and every worker inherits the same sockets (rather
than each worker binding its own with SO_REUSEPORT). Why:
- a worker that dies takes nothing with it: connections waiting in the accept queue stay there and
  the other workers take them (with SO_REUSEPORT each socket has its own queue, and the kernel resets
  the connections hashed into the queue of a socket that closes);
- the load spreads by who is free: every worker is woken for a pending connection and the first whose
  event loop gets to `accept` takes it, where SO_REUSEPORT hashes addresses regardless of load;
- one bind: an address in use is one startup error before any worker starts, and port 0 (tests)
  means the same port for all.

Start-up: crash recovery of the store (`SQLiteStore.open()` removes staged files and blobs without
a row; PostgreSQL has nothing to recover) runs here, once, before any worker exists; the workers open the store without it. The
per-installation secret and the domains' DKIM keys are made here too (through the store, which makes
them atomically anyway: store/keyfiles.py), so that no worker waits for a key at its first message.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pickle
import signal
import socket
import sys
from datetime import UTC, datetime

from surat import metrics
from surat.app import StartupError, open_store, stop_on_signals
from surat.config import LISTEN_ROLES, Config
from surat.delivery.dkim import SigningKeys
from surat.log import fields
from surat.net.listener import bind
from surat.store.setup import configured_store
from surat.workers.child import WorkerSpec
from surat.workers.relay import OVERFLOW, READY, RelayLink, RelayProtocolError, decode_line, open_link

log = logging.getLogger(__name__)

ROLES = LISTEN_ROLES  # the web listeners too: every worker serves them on the same sockets
# A worker that dies is restarted after RESTART_DELAY_MIN seconds, doubling up to RESTART_DELAY_MAX
# while it keeps dying; one that ran STABLE_AFTER seconds starts from the minimum again.
RESTART_DELAY_MIN = 0.5
RESTART_DELAY_MAX = 30.0
STABLE_AFTER = 60.0
# SIGTERM, then this long for the workers to finish (their listeners give sessions 5 s), then SIGKILL.
STOP_TIMEOUT = 30.0


def supervise(config: Config) -> int:
    """Run the workers until SIGINT/SIGTERM; the process exit code."""
    try:
        return asyncio.run(Supervisor(config).run())
    except StartupError as exc:
        log.error("startup.failed", extra=fields(reason=str(exc)))
        return 1


class Supervisor:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.count = config.server.workers
        self._listening: dict[str, list[socket.socket]] = {}
        self._links: dict[int, RelayLink] = {}
        self._procs: dict[int, asyncio.subprocess.Process] = {}
        self._stopping = asyncio.Event()
        # SIGHUP (certificate reload) goes to workers that reported ready: they handle it by then. A
        # worker still starting may have read the certificates before they changed, so it gets the
        # signal when it reports ready (before that, SIGHUP's default action would kill it).
        self._ready: set[int] = set()
        self._reload_pending: set[int] = set()
        self._metrics_dir: str | None = None

    async def run(self) -> int:
        await self._prepare()
        self._bind()
        try:
            return await self._supervise()
        finally:
            for sockets in self._listening.values():
                for listening in sockets:
                    listening.close()

    async def _prepare(self) -> None:
        config = self.config
        store = configured_store(config)
        await open_store(store)  # with recovery (SQLite's staged files): no worker exists yet
        try:
            await store.keys.installation_secret()
            keys = SigningKeys(store.keys)
            now = datetime.now(UTC)
            for domain in await store.list_domains():
                await keys.load(domain, now)
        finally:
            await store.close()
        # Any worker answers /metrics: they count in shared files (surat.metrics explains).
        self._metrics_dir = str(metrics.prepare_multiprocess_dir(config.data_dir))

    def _bind(self) -> None:
        try:
            for role in ROLES:
                for address in getattr(self.config.listen, role):
                    self._listening.setdefault(role, []).extend(bind(address))  # the workers log them
        except OSError as exc:
            for sockets in self._listening.values():
                for listening in sockets:
                    listening.close()
            raise StartupError(f"listen: cannot bind: {exc.strerror or exc}") from None

    async def _supervise(self) -> int:
        loop = asyncio.get_running_loop()
        stop = stop_on_signals()
        loop.add_signal_handler(signal.SIGHUP, self.forward_reload)
        ready = [loop.create_future() for _ in range(self.count)]
        slots = [asyncio.create_task(self._slot(i, ready[i]), name=f"worker-{i}") for i in range(self.count)]
        started = asyncio.ensure_future(asyncio.gather(*ready))
        stopped = asyncio.ensure_future(stop.wait())
        await asyncio.wait({started, stopped}, return_when=asyncio.FIRST_COMPLETED)
        code = 0
        if started.done() and not all(started.result()):
            log.error("startup.failed", extra=fields(reason="a worker exited while starting"))
            code = 1
        else:
            if started.done():
                log.info(
                    "started",
                    extra=fields(hostname=self.config.hostname, workers=self.count, pid=os.getpid()),
                )
            await stopped
        started.cancel()
        log.info("stopping")
        await self._stop(slots)
        log.info("stopped")
        return code

    async def _stop(self, slots: list[asyncio.Task[None]]) -> None:
        self._stopping.set()
        for proc in self._procs.values():
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        _, pending = await asyncio.wait(slots, timeout=STOP_TIMEOUT)
        if pending:
            for proc in self._procs.values():
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
            await asyncio.wait(pending, timeout=STOP_TIMEOUT)

    async def _slot(self, index: int, first_ready: asyncio.Future[bool]) -> None:
        """Keep worker `index` running until the supervisor stops."""
        loop = asyncio.get_running_loop()
        delay = RESTART_DELAY_MIN
        while not self._stopping.is_set():
            try:
                proc, link = await self._spawn(index)
            except OSError as exc:  # no processes or descriptors left: as a worker that died at once
                log.error("worker.spawn_failed", extra=fields(index=index, error=str(exc)))
                if not first_ready.done():
                    first_ready.set_result(False)
                    return
                delay = await self._pause(delay)
                continue
            started_at = loop.time()
            relay = asyncio.create_task(self._relay(index, link, first_ready), name=f"relay-{index}")
            code = await proc.wait()
            metrics.worker_exited(proc.pid, self._metrics_dir)
            self._ready.discard(index)
            link.close()
            await relay
            self._procs.pop(index, None)
            if self._stopping.is_set():
                log.info("worker.stopped", extra=fields(index=index, pid=proc.pid, code=code))
                return
            if not first_ready.done():
                first_ready.set_result(False)
                return
            if loop.time() - started_at >= STABLE_AFTER:
                delay = RESTART_DELAY_MIN
            log.warning("worker.died", extra=fields(index=index, pid=proc.pid, code=code, restart_in=delay))
            delay = await self._pause(delay)

    def forward_reload(self) -> None:
        """SIGHUP: every worker re-reads the certificates itself (and logs tls.reloaded or
        tls.reload_failed); the supervisor holds none."""
        log.info("reload.forwarded", extra=fields(workers=len(self._procs)))
        for index in list(self._procs):
            if index in self._ready:
                self._signal_reload(index)
            else:
                self._reload_pending.add(index)

    def _signal_reload(self, index: int) -> None:
        self._reload_pending.discard(index)
        proc = self._procs.get(index)
        if proc is not None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGHUP)

    async def _pause(self, delay: float) -> float:
        """Wait `delay` seconds before a restart (less if the supervisor stops); the next delay."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), delay)
        return min(delay * 2, RESTART_DELAY_MAX)

    async def _spawn(self, index: int) -> tuple[asyncio.subprocess.Process, RelayLink]:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        listening = {role: [s.fileno() for s in sockets] for role, sockets in self._listening.items()}
        spec = WorkerSpec(self.config, index, theirs.fileno(), listening)
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "surat.workers",
                stdin=asyncio.subprocess.PIPE,
                env={**os.environ, metrics.MULTIPROCESS_ENV: self._metrics_dir or ""},
                pass_fds=(theirs.fileno(), *(fd for fds in listening.values() for fd in fds)),
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()  # the child has its copy
        assert proc.stdin is not None
        proc.stdin.write(pickle.dumps(spec))
        with contextlib.suppress(ConnectionError):  # it died at once: _slot sees it exit
            await proc.stdin.drain()
        proc.stdin.close()
        self._procs[index] = proc
        link = await open_link(ours)
        self._links[index] = link
        return proc, link

    async def _relay(self, index: int, link: RelayLink, first_ready: asyncio.Future[bool]) -> None:
        """Forward what worker `index` commits to every other worker, until it goes away."""
        sender = asyncio.create_task(link.run(), name=f"relay-send-{index}")
        try:
            async for line in link.lines():
                message = decode_line(line)  # only well-formed lines are passed on
                if message == READY:
                    if not first_ready.done():
                        first_ready.set_result(True)
                    self._ready.add(index)
                    if index in self._reload_pending:
                        self._signal_reload(index)
                    continue
                for other, other_link in self._links.items():
                    if other != index:
                        if message == OVERFLOW:
                            other_link.send_overflow()
                        else:
                            other_link.send([line])
        except RelayProtocolError as exc:
            log.error("relay.protocol_error", extra=fields(index=index, error=str(exc)))
        finally:
            del self._links[index]
            link.close()
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender
            # What it committed and had not relayed yet is lost with it: the others re-read.
            for other_link in self._links.values():
                other_link.send_overflow()
