"""One worker of `[server] workers = N`: started by the supervisor as `python -m surat.workers`,
its `WorkerSpec` pickled on standard input (the supervisor is our parent and the only writer)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pickle
import signal
import socket
import sys
from dataclasses import dataclass

from surat.app import StartupError, SuratServer, open_store, stop_on_signals
from surat.config import Config
from surat.log import fields, setup_logging
from surat.store.setup import configured_store
from surat.workers.relay import READY, RelayedChangeFeed, RelayLink, RelayProtocolError, open_link

log = logging.getLogger(__name__)

# The worker that runs the outbound queue on SQLite (docs/workers.md: why only one there). On
# PostgreSQL every worker runs it: each is a queue node with its own leases.
QUEUE_WORKER = 0
# The worker that runs the ACME renewal, on either backend: one client per data_dir.
ACME_WORKER = 0


@dataclass(frozen=True, slots=True)
class WorkerSpec:
    config: Config
    index: int
    relay_fd: int  # our end of a socketpair with the supervisor
    listening: dict[str, list[int]]  # role -> inherited listening socket descriptors


async def serve_worker(spec: WorkerSpec) -> None:
    config = spec.config
    link = await open_link(socket.socket(fileno=spec.relay_fd))
    sender = asyncio.create_task(link.run(), name="relay-send")
    on_postgresql = config.store.backend == "postgresql"
    # SQLite: the relay carries this worker's changes to the others and theirs to it. PostgreSQL:
    # the database does (LISTEN/NOTIFY, one connection per store), so the store keeps a local feed
    # and the relay carries only READY and the supervisor's liveness.
    feed = None if on_postgresql else RelayedChangeFeed(link)
    store = configured_store(config, feed=feed)
    listening = {role: [socket.socket(fileno=fd) for fd in fds] for role, fds in spec.listening.items()}
    run_queue = on_postgresql or spec.index == QUEUE_WORKER
    server = SuratServer(
        config,
        store,
        listening=listening,
        run_queue=run_queue,
        # [acme]: one process renews (its files serve every worker); the supervisor forwards the
        # SIGHUP it then sends to every worker, this one included (docs/acme.md).
        run_acme=spec.index == ACME_WORKER,
        reload_everywhere=lambda: os.kill(os.getppid(), signal.SIGHUP),
    )
    follower: asyncio.Task[None] | None = None
    try:
        # Never recovery here: the supervisor ran it before any worker started, and now the other
        # workers' staged files and uncommitted blobs would look like a crash's leftovers.
        await open_store(store, recover=False)
        # Before start reads the certificates; the supervisor sends SIGHUP only once we are ready.
        asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, server.reload_certificates)
        await server.start()
        stop = stop_on_signals()
        following = feed.follow() if feed is not None else _until_relay_ends(link)
        follower = asyncio.create_task(following, name="relay-follow")
        # The relay ends only when the supervisor is gone: nobody would restart this worker or carry
        # its changes to the others any more, so it stops too.
        follower.add_done_callback(lambda _: stop.set())
        link.send([READY])
        log.info(
            "worker.started",
            extra=fields(index=spec.index, pid=os.getpid(), queue=run_queue),
        )
        await stop.wait()
        log.info("worker.stopping", extra=fields(index=spec.index, pid=os.getpid()))
    finally:
        await server.stop()
        await store.close()
        link.close()
        for task in (sender, follower):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task


async def _until_relay_ends(link: RelayLink) -> None:
    """Return when the supervisor is gone. On PostgreSQL nothing it relays matters: the database
    carries every change, and a worker that dies notifies nothing it did not commit."""
    try:
        async for _ in link.lines():
            pass
    except RelayProtocolError as exc:
        log.error("relay.protocol_error", extra=fields(error=str(exc)))


def main() -> int:
    setup_logging()
    spec = pickle.load(sys.stdin.buffer)  # noqa: S301 - written by our parent, the supervisor
    if not isinstance(spec, WorkerSpec):
        log.error("worker.bad_spec")
        return 2
    try:
        asyncio.run(serve_worker(spec))
    except StartupError as exc:
        log.error("startup.failed", extra=fields(reason=str(exc), index=spec.index))
        return 1
    return 0
