"""Dynamic batching: concurrent requests for one key (model uid + options) become one call.

    batcher = Batcher(run_batch, max_items=256)
    result = await batcher.submit(key, items)     # items: this request's inputs (a list)

One worker task per key takes every request already queued, up to ``max_items`` inputs, and starts
at once: no fixed wait, so a lone call on an idle model pays nothing. While a batch runs, the
requests that arrive queue up and become the next batch (as text-embeddings-inference does), so
under load batches grow by themselves. ``max_wait_s`` > 0 (off by default) adds a collection window
when several requests arrived together. It calls ``run_batch(key, all_items)`` once in a worker
thread and hands each request the slice of the results that belongs to it. A batch that fails is retried request by request, so one bad request fails
alone. Workers of idle keys exit. Generic: knows nothing about models.

Memory: after a batch (once its callers have their results), at most every ``housekeeping_s`` seconds,
and once the queue has been quiet for ``housekeeping_s`` after work (so a server at rest is tidy),
``housekeeping()`` runs in a worker thread; by default it hands the C heap's free pages back to the OS
(``memory.trim_heap``). Without it, the freed buffers of batches of varying shapes stay resident and a
server's RSS grows with every few thousand requests (bench/server_memory.py measures it).
"""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable, Optional, Sequence

from starlette.concurrency import run_in_threadpool

from ..memory import trim_heap


@dataclass
class _Pending:
    items: list[Any]
    future: asyncio.Future


@dataclass
class BatchStats:
    calls: int = 0          # run_batch calls
    requests: int = 0       # requests served
    items: int = 0          # inputs served
    largest: int = 0        # most requests in one call
    history: list[int] = field(default_factory=list)  # requests per call, last 1000
    housekeeping: int = 0   # housekeeping() runs


class Batcher:
    """``run_batch(key, items) -> results`` with ``len(results) == len(items)``, run off the loop."""

    def __init__(self, run_batch: Callable[[Hashable, list[Any]], Sequence[Any]], *, max_wait_s: float = 0.0,
                 max_items: int = 256, idle_s: float = 30.0,
                 housekeeping: Optional[Callable[[], Any]] = trim_heap, housekeeping_s: float = 1.0):
        self.run_batch = run_batch
        self.housekeeping = housekeeping
        self.housekeeping_s = housekeeping_s
        self._last_housekeeping = float("-inf")
        self._dirty = False  # batches ran since the last housekeeping
        self.max_wait_s = max_wait_s
        self.max_items = max_items
        self.idle_s = idle_s
        self._queues: dict[Hashable, asyncio.Queue] = {}
        self._workers: dict[Hashable, asyncio.Task] = {}
        self.stats = BatchStats()

    async def submit(self, key: Hashable, items: Sequence[Any]) -> list[Any]:
        items = list(items)
        if not items:
            return []
        loop = asyncio.get_running_loop()
        pending = _Pending(items, loop.create_future())
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = asyncio.Queue()
        queue.put_nowait(pending)
        worker = self._workers.get(key)
        if worker is None or worker.done():
            self._workers[key] = loop.create_task(self._work(key, queue))
        return await pending.future

    async def _work(self, key: Hashable, queue: asyncio.Queue) -> None:
        carry: Optional[_Pending] = None
        while True:
            if carry is not None:
                first, carry = carry, None
            else:
                # after work, tidy up once the queue has been quiet for housekeeping_s (load is over)
                tidy = self._dirty and self.housekeeping is not None
                try:
                    first = await asyncio.wait_for(queue.get(), min(self.housekeeping_s, self.idle_s)
                                                   if tidy else self.idle_s)
                except asyncio.TimeoutError:
                    if tidy:
                        await self._housekeep(force=True)
                        continue
                    if queue.empty():  # nothing can slip in between: one event-loop thread
                        self._queues.pop(key, None)
                        self._workers.pop(key, None)
                        return
                    continue
            batch, carry = await self._gather(first, queue)
            batch = [p for p in batch if not p.future.done()]  # callers that went away
            if batch:
                await self._run(key, batch)
            # the results are the callers' now: hold no reference to them while waiting for more work
            batch = first = None  # type: ignore[assignment]
            self._dirty = True
            await self._housekeep()

    async def _gather(self, first: _Pending, queue: asyncio.Queue) -> tuple[list[_Pending], Optional[_Pending]]:
        """(the batch that starts with ``first``, the request that did not fit in it): what is queued
        now and after one loop turn, and under load what arrives within max_wait_s, up to max_items."""
        loop = asyncio.get_running_loop()
        carry: Optional[_Pending] = None
        batch = [first]
        count = len(first.items)

        def add(nxt: _Pending) -> bool:
            """Put ``nxt`` in the batch; False (it is the carry) when it does not fit."""
            nonlocal count, carry
            if count + len(nxt.items) > self.max_items:
                carry = nxt
                return False
            batch.append(nxt)
            count += len(nxt.items)
            return True

        def take_queued() -> None:
            while carry is None and count < self.max_items and not queue.empty():
                if not add(queue.get_nowait()):
                    return

        take_queued()
        await asyncio.sleep(0)  # let requests already on the wire reach the queue
        take_queued()
        if len(batch) > 1 and self.max_wait_s > 0:
            # under load: collect a little longer, the next call is worth filling
            deadline = loop.time() + self.max_wait_s
            while carry is None and count < self.max_items:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    nxt = await asyncio.wait_for(queue.get(), remaining)
                except asyncio.TimeoutError:
                    break
                if not add(nxt):
                    break
                take_queued()
        return batch, carry

    async def _housekeep(self, force: bool = False) -> None:
        if self.housekeeping is None:
            return
        if not force and time.monotonic() - self._last_housekeeping < self.housekeeping_s:
            return
        self._last_housekeeping = time.monotonic()
        self._dirty = False
        try:
            await run_in_threadpool(self.housekeeping)
        except Exception:  # noqa: BLE001 - best effort, never fails a worker
            return
        self.stats.housekeeping += 1

    async def _run(self, key: Hashable, batch: list[_Pending]) -> None:
        flat = [item for p in batch for item in p.items]
        try:
            results = await run_in_threadpool(self.run_batch, key, flat)
            if len(results) != len(flat):
                raise RuntimeError(f"batched call returned {len(results)} results for {len(flat)} inputs")
        except BaseException as exc:  # noqa: BLE001 - handed to the callers
            if isinstance(exc, asyncio.CancelledError):
                for p in batch:
                    if not p.future.done():
                        p.future.cancel()
                raise
            if len(batch) == 1:
                if not batch[0].future.done():
                    batch[0].future.set_exception(exc)
                return
            for p in batch:  # one bad request must not fail the others
                await self._run(key, [p])
            return
        self.stats.calls += 1
        self.stats.requests += len(batch)
        self.stats.items += len(flat)
        self.stats.largest = max(self.stats.largest, len(batch))
        self.stats.history.append(len(batch))
        del self.stats.history[:-1000]
        start = 0
        for p in batch:
            end = start + len(p.items)
            if not p.future.done():
                p.future.set_result(list(results[start:end]))
            start = end

    async def aclose(self) -> None:
        for task in list(self._workers.values()):
            task.cancel()
        self._workers.clear()
        self._queues.clear()
