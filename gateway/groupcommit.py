"""Group commit: batches that arrive while a commit is under way wait for
the next one and share it, one SQLite transaction and one fsync for all of
them (PES.ingest_group). Nothing waits for a timer: a lone batch is stored
at once, and under load the groups grow by themselves. Each meter's future
resolves only after the commit that holds its readings, so its ACK never
precedes the data on disk.

Bounded by time, not only by count: a batch is refused (Saturated) when
the ones already waiting would take longer than `max_wait_s` to commit at
the rate measured so far, well inside the 30 s a meter waits for its
answer; and past `max_waiting` batches in any case, which bounds memory.
The server answers Saturated with 5.03 and a Max-Age inside the time the
backlog needs to drain, each meter at a random point of its second half,
so the refused meters come back while there is still work queued (the
gateway never idles waiting for them) and not all at once.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable

from .pes import Batch, BatchResult

# Stores a group in one commit: PES.ingest_group's contract, awaited
# (gateway/pesprocess.py runs it in the PES's own process).
Commit = Callable[[list[Batch]], Awaitable[list[BatchResult | Exception]]]


class Saturated(Exception):
    """Too many batches waiting; retry after `retry_s` seconds."""

    def __init__(self, retry_s: int):
        super().__init__(f"gateway busy; retry in {retry_s} s")
        self.retry_s = retry_s


class GroupCommit:
    def __init__(self, commit: Commit, max_group: int = 64, max_waiting: int = 4096,
                 max_wait_s: float = 15.0, batches_per_s: float = 100.0):
        self.commit = commit
        self.max_group = max_group
        self.max_waiting = max_waiting
        self.max_wait_s = max_wait_s
        # What the gateway drains, roughly, to size Max-Age; updated from
        # each commit's measured rate.
        self.batches_per_s = batches_per_s
        self._waiting: list[tuple[Batch, asyncio.Future]] = []
        self._running = False
        self._task: asyncio.Task | None = None
        self.groups = 0
        self.grouped = 0  # batches that shared a commit with another

    def drain_s(self) -> float:
        """How long the batches waiting now will take, at the measured rate."""
        return len(self._waiting) / max(self.batches_per_s, 1.0)

    def retry_after(self) -> int:
        """A random point in the second half of the backlog's drain time."""
        return max(1, min(600, round(self.drain_s() * random.uniform(0.5, 1.0))))

    def saturated(self) -> bool:
        return len(self._waiting) >= self.max_waiting or self.drain_s() > self.max_wait_s

    async def ingest(self, batch: Batch) -> BatchResult:
        if self.saturated():
            raise Saturated(self.retry_after())
        fut = asyncio.get_running_loop().create_future()
        self._waiting.append((batch, fut))
        if not self._running:
            self._running = True
            # Held here: the event loop keeps only a weak reference to a task.
            self._task = asyncio.get_running_loop().create_task(self._drain())
        return await fut

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._waiting:
                group = self._waiting[:self.max_group]
                del self._waiting[:self.max_group]
                t0 = loop.time()
                try:
                    results = await self.commit([b for b, _ in group])
                except Exception as e:  # noqa: BLE001 -- the commit failed: each request hears it
                    results = [e] * len(group)
                took = loop.time() - t0
                if took > 0:
                    self.batches_per_s = 0.8 * self.batches_per_s + 0.2 * (len(group) / took)
                self.groups += 1
                if len(group) > 1:
                    self.grouped += len(group)
                for (_, fut), res in zip(group, results, strict=True):
                    if fut.done():
                        continue  # the request was cancelled meanwhile
                    if isinstance(res, BaseException):
                        fut.set_exception(res)
                    else:
                        fut.set_result(res)
        finally:
            self._running = False
