"""Dynamic batching: single items submitted from many threads or coroutines, run in batches.

A model is far cheaper per image in a batch of 32 than in 32 calls of one (one pass of the
weights through the cache, one dispatch of each kernel), but an HTTP server receives one image per
request.  :class:`DynamicBatcher` bridges the two: requests put their item in a queue; one worker
thread takes the first waiting item, then keeps collecting until ``max_batch`` items are there or
``wait_ms`` has passed since that first item, and calls ``fn`` once on the whole list.  Items that
arrive while a batch runs are waiting for the next one, so under load the batches fill up without
any wait; a lone request waits at most ``wait_ms``.  ``max_batch=1`` turns batching off (each item
is its own call, no wait).

With ``wait_for="announced"`` the wait is only for items known to be on their way: a caller wraps
the work before its :meth:`submit` (an HTTP request's upload and decode) in :meth:`incoming`, and a
batch being collected stops waiting as soon as the queue is empty and nothing is announced.  A lone
client then pays no wait at all, while under concurrent load the batch still waits (up to
``wait_ms``) for the requests being decoded.

``workers`` threads (default 1) take batches from the one queue, so that many model calls can run
at once: with one compute thread each, two workers run two batches side by side (inter-op
parallelism) where one worker runs one batch on two threads (intra-op).  ``fn`` must then be safe
to call from several threads (ONNX Runtime's and torch's inference are).  Anything that must see
the model alone (Grad-CAM in :mod:`vistrain.server.app` adds a forward hook) takes
:class:`ModelLock`'s exclusive side, while ``fn`` takes its shared side.

Example:
    >>> import numpy as np
    >>> b = DynamicBatcher(lambda items: np.array(items) * 2, max_batch=8, wait_ms=5)
    >>> futures = [b.submit(i) for i in range(3)]
    >>> [int(f.result()) for f in futures]
    [0, 2, 4]
    >>> b.close()
"""
from __future__ import annotations

import asyncio
import queue
import threading
import time
from concurrent.futures import Future
from contextlib import contextmanager
from typing import Any, Callable, Sequence

_STOP = object()


class DynamicBatcher:
    """Run ``fn(list_of_items) -> rows`` (``len(rows) == len(items)``, e.g. an ``(N, K)`` array)
    on batches of up to ``max_batch`` items collected for up to ``wait_ms`` milliseconds.

    ``calls`` counts the calls of ``fn`` and ``items`` the items passed to it; ``batch_sizes``
    keeps the size of each call (for tests and benchmarks).  An exception of ``fn`` is given to
    every item of that batch; the worker keeps running.
    """

    def __init__(self, fn: Callable[[list], Sequence[Any]], *, max_batch: int = 32,
                 wait_ms: float = 5.0, wait_for: str = "any", workers: int = 1,
                 name: str = "vistrain-batcher"):
        for what, value in (("max_batch", max_batch), ("workers", workers)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{what} must be a whole number >= 1, got {value!r}")
        if not wait_ms >= 0:
            raise ValueError(f"wait_ms must be >= 0, got {wait_ms!r}")
        if wait_for not in ("any", "announced"):
            raise ValueError(f"wait_for must be 'any' or 'announced', got {wait_for!r}")
        self.fn, self.max_batch, self.wait_s = fn, max_batch, wait_ms / 1000.0
        self.wait_for, self._incoming, self._lock = wait_for, 0, threading.Lock()
        self.calls = self.items = 0
        self.batch_sizes: list[int] = []
        self._counts = threading.Lock()  # the counters above, updated by every worker
        self._queue: queue.Queue = queue.Queue()
        self._closed = False
        self._threads = [threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True)
                         for i in range(workers)]
        for thread in self._threads:
            thread.start()

    def submit(self, item) -> Future:
        """Queue one item; the future holds its row of ``fn``'s result (or ``fn``'s exception)."""
        if self._closed:
            raise RuntimeError("the batcher is closed")
        future: Future = Future()
        self._queue.put((item, future))
        return future

    @contextmanager
    def incoming(self):
        """Announce an item on its way for the duration of the block (e.g. its decode): a batch
        being collected waits for it, up to ``wait_ms`` (``wait_for="announced"``)."""
        with self._lock:
            self._incoming += 1
        try:
            yield
        finally:
            with self._lock:
                self._incoming -= 1

    async def run(self, item):
        """``submit`` for coroutines: await the item's row without blocking the event loop."""
        return await asyncio.wrap_future(self.submit(item))

    def alive(self) -> bool:
        """True while every worker thread runs (they stop only when closed)."""
        return all(thread.is_alive() for thread in self._threads)

    def close(self, timeout: float | None = 10.0) -> None:
        """Finish the queued items, then stop the worker threads."""
        if not self._closed:
            self._closed = True
            for _ in self._threads:  # each worker takes one stop and ends
                self._queue.put(_STOP)
            for thread in self._threads:
                thread.join(timeout)

    def _collect(self) -> tuple[list, bool]:
        """One batch of ``(item, future)`` pairs (blocks for the first); True when told to stop."""
        first = self._queue.get()
        if first is _STOP:
            return [], True
        batch = [first]
        deadline = time.monotonic() + self.wait_s
        announced = self.wait_for == "announced"
        while len(batch) < self.max_batch:
            left = deadline - time.monotonic()
            if announced and self._incoming == 0:
                left = 0.0  # nothing on its way: what is queued now, then run
            elif announced:
                left = min(left, 0.0005)  # look again soon: the announced items may all be queued
            try:  # items already queued are taken at once, even when the window has passed
                pair = self._queue.get_nowait() if left <= 0 else self._queue.get(timeout=left)
            except queue.Empty:
                if announced and self._incoming and time.monotonic() < deadline:
                    continue
                break
            if pair is _STOP:
                return batch, True
            batch.append(pair)
        return batch, False

    def _work(self) -> None:
        stop = False
        while not stop:
            batch, stop = self._collect()
            if batch:
                self._run_batch(batch)

    def _run_batch(self, batch: list) -> None:
        pending = [(item, f) for item, f in batch if f.set_running_or_notify_cancel()]
        if not pending:
            return
        with self._counts:
            self.calls += 1
            self.items += len(pending)
            self.batch_sizes.append(len(pending))
        try:
            rows = self.fn([item for item, _ in pending])
            if len(rows) != len(pending):
                raise RuntimeError(f"batch function returned {len(rows)} rows for {len(pending)} items")
        except BaseException as err:  # every waiting request gets the error; the worker lives on
            for _, f in pending:
                f.set_exception(err)
            return
        for (_, f), row in zip(pending, rows):
            f.set_result(row)


class ModelLock:
    """Model calls side by side (:meth:`shared`), or one user alone (:meth:`exclusive`): Grad-CAM
    hooks the model's layers, and no batch may run through a hooked model.  A waiting exclusive
    user goes before new shared ones, so a busy server cannot starve ``/explain``.

    Example:
        >>> lock = ModelLock()
        >>> with lock.shared(), lock.shared():   # two model calls at once
        ...     pass
        >>> with lock.exclusive():
        ...     pass
    """

    def __init__(self):
        self._cond = threading.Condition()
        self._shared = 0        # model calls running
        self._exclusive = False
        self._waiting = 0       # exclusive users waiting: new shared users wait behind them

    @contextmanager
    def shared(self):
        with self._cond:
            self._cond.wait_for(lambda: not self._exclusive and not self._waiting)
            self._shared += 1
        try:
            yield
        finally:
            with self._cond:
                self._shared -= 1
                self._cond.notify_all()

    @contextmanager
    def exclusive(self):
        with self._cond:
            self._waiting += 1
            self._cond.wait_for(lambda: not self._exclusive and not self._shared)
            self._waiting -= 1
            self._exclusive = True
        try:
            yield
        finally:
            with self._cond:
                self._exclusive = False
                self._cond.notify_all()
