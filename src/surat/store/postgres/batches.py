"""One store's writer of batched transactions, shared by the group commit of deliveries and APPENDs
(deliveries.py) and the shared transactions of flag changes, \\Recent claims and expunges
(shared.py): `submit` queues a write and returns its outcome once its batch committed.

`commit(batch)` runs one batch in one transaction (pool.py: retrying deadlocks, publishing the
changes after COMMIT) and returns each write's outcome: a result, or the exception that refuses
that write alone. The writer task exists while there are writes; a caller that is cancelled does
not cancel its write (it may be committed already, and the others in its batch must not notice).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Generic, Protocol, TypeVar

from surat.store.base import StoreError

log = logging.getLogger(__name__)


class Waiting(Protocol):
    """A write waiting in a batch writer: settled through its future (made on the running loop)."""

    future: asyncio.Future[Any]


W = TypeVar("W", bound=Waiting)


class BatchWriter(Generic[W]):
    """Subclasses say how a batch is taken from the queue (`take`, where its bound is enforced) and may
    do more when a write is settled (`settle`) or a batch committed (`committed`)."""

    def __init__(self, commit: Callable[[list[W]], Awaitable[Sequence[Any]]], *, name: str) -> None:
        self._commit = commit
        self._name = name  # names the writer task and its log events (store.<name>_split, ..._failed)
        self._waiting: deque[W] = deque()
        self._task: asyncio.Task[None] | None = None

    def take(self, waiting: deque[W]) -> list[W]:
        raise NotImplementedError

    def settle(self, item: W, outcome: Any) -> None:
        if item.future.done():
            return
        if isinstance(outcome, BaseException):
            item.future.set_exception(outcome)
        else:
            item.future.set_result(outcome)

    def committed(self, batch: list[W], outcomes: Sequence[Any]) -> None:
        """After a batch's outcomes were handed out (counters)."""

    async def submit(self, item: W) -> Any:
        self._waiting.append(item)
        if self._task is None:
            task_name = f"surat-postgres-{self._name.replace('_', '-')}"
            self._task = asyncio.create_task(self._run(), name=task_name)
        return await asyncio.shield(item.future)

    async def drain(self) -> None:
        """Wait until every write submitted so far is settled (the store's close)."""
        while self._task is not None:
            await asyncio.shield(self._task)

    async def _run(self) -> None:
        batch: list[W] = []
        try:
            while self._waiting:
                batch = self.take(self._waiting)
                try:
                    await self._run_batch(batch)
                except Exception as exc:  # a bug: settled here, and the next batch must still run
                    log.exception("store.%s_failed items=%d", self._name, len(batch))
                    for item in batch:
                        refusal = StoreError(f"commit failed: {type(exc).__name__}")
                        refusal.__cause__ = exc  # one exception each: callers re-raise it
                        self.settle(item, refusal)
        except BaseException:
            # Cancelled (the event loop is shutting down): nobody may wait for ever.
            for item in [*batch, *self._waiting]:
                self.settle(item, StoreError("store closed"))
            self._waiting.clear()
            raise
        finally:
            self._task = None

    async def _run_batch(self, batch: list[W]) -> None:
        try:
            outcomes = await self._commit(batch)
        except Exception as exc:
            if len(batch) == 1:
                self.settle(batch[0], exc)
                return
            # Something only one write may cause aborted the whole batch: each alone, so that only the
            # write at fault fails (each is then its own transaction).
            log.warning("store.%s_split items=%d error=%s", self._name, len(batch), type(exc).__name__)
            for item in batch:
                await self._run_batch([item])
            return
        for item, outcome in zip(batch, outcomes, strict=True):
            self.settle(item, outcome)
        self.committed(batch, outcomes)
