"""Server-side request batching: concurrent requests scored together in one model call.

TF Serving's batching, in miniature. Requests that arrive close together for the same signature
and input shape are concatenated along the batch dimension, run through the model once in a
worker thread, and split back. A batch closes when it holds `max_batch_size` rows or
`batch_timeout` has passed since its first request arrived, whichever is first; while every
worker is busy, requests keep collecting into the next batch. The asyncio event loop only
queues and hands out results: model calls never run on it.

Batches are also bounded in padded cost: a model pads every row of a batch to its longest,
so what a call allocates grows with rows times the largest row, in each of a few measures
(bytes, seconds of audio). A few long files therefore cannot be stacked with many others into
one huge tensor. A single request is never split: the server bounds each request's own cost.

With batching off, each request is one model call on the same worker threads.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import dataclasses
import time
from collections.abc import Callable, Hashable, Mapping

import numpy as np

# The model function: (signature name, inputs, each [rows, ...]) -> outputs, each [rows, ...].
ModelCall = Callable[[str, Mapping[str, np.ndarray]], dict[str, np.ndarray]]


class QueueFullError(RuntimeError):
    """More requests are waiting than the server accepts; the caller should retry later."""


@dataclasses.dataclass
class BatchStats:
    """Counters, for monitoring and tests."""

    requests: int = 0
    rows: int = 0
    model_calls: int = 0
    largest_batch: int = 0
    # Rows per model call -> how many calls had that many.
    batch_sizes: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    model_seconds: float = 0.0

    def as_dict(self) -> dict:
        return {"requests": self.requests, "rows": self.rows, "model_calls": self.model_calls,
                "largest_batch": self.largest_batch,
                "batch_sizes": {str(k): v for k, v in sorted(self.batch_sizes.items())},
                "model_seconds": round(self.model_seconds, 4)}


@dataclasses.dataclass
class _Pending:
    inputs: Mapping[str, np.ndarray]
    rows: int
    row_cost: tuple[float, ...]
    arrived: float
    future: asyncio.Future


class Batcher:
    """Groups concurrent model calls into batches.

    Args:
      call: runs the model on a batch (in a worker thread).
      max_batch_size: most rows per model call (a single larger request still runs whole).
      batch_timeout: seconds a batch waits for more requests after its first arrives.
      max_batch_cost: most padded cost per model call, in each measure: rows x the largest
        row's cost in that measure (see `submit`). None: no bound.
      num_threads: model calls in flight at once.
      enabled: False runs every request as its own model call.
      max_queued_rows: rows waiting beyond which `submit` raises QueueFullError.
    """

    def __init__(self, call: ModelCall, max_batch_size: int = 32, batch_timeout: float = 0.0,
                 max_batch_cost: tuple[float, ...] | None = None, num_threads: int = 1,
                 enabled: bool = True,
                 max_queued_rows: int = 4096):
        if max_batch_size < 1 or num_threads < 1:
            raise ValueError("max_batch_size and num_threads must be at least 1")
        self._call = call
        self.max_batch_size = max_batch_size
        self.batch_timeout = max(0.0, batch_timeout)
        self.max_batch_cost = max_batch_cost
        self.enabled = enabled
        self.max_queued_rows = max_queued_rows
        self.num_threads = num_threads
        self.stats = BatchStats()
        self._executor = concurrent.futures.ThreadPoolExecutor(
            num_threads, thread_name_prefix="speakergender-model")
        self._slots: asyncio.Semaphore | None = None
        self._queues: dict[Hashable, collections.deque[_Pending]] = {}
        self._arrivals: dict[Hashable, asyncio.Event] = {}
        self._collectors: dict[Hashable, asyncio.Task] = {}
        self._queued_rows = 0

    def close(self) -> None:
        """Stops the worker threads (after the calls in flight)."""
        for task in self._collectors.values():
            task.cancel()
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def submit(self, signature: str, inputs: Mapping[str, np.ndarray],
                     row_cost: tuple[float, ...] = ()) -> dict[str, np.ndarray]:
        """Scores one request, batched with others for the same signature and row shape.

        Args:
          signature: the signature to run.
          inputs: each input's array, all with the same first (batch) dimension.
          row_cost: the cost of this request's largest row in each of the measures of
            `max_batch_cost` (bytes of its biggest file, seconds of its longest, say).

        Returns:
          The outputs for this request's rows only, as if it had run alone.

        Raises:
          QueueFullError: too many rows are waiting.
          Whatever the model call raised.
        """
        rows = _batch_size(inputs)
        self.stats.requests += 1
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.num_threads)
        if self._queued_rows + rows > self.max_queued_rows:
            raise QueueFullError(f"server busy: {self._queued_rows} rows already waiting")
        loop = asyncio.get_running_loop()
        pending = _Pending(inputs, rows, row_cost, loop.time(), loop.create_future())
        if not self.enabled:
            self._queued_rows += rows
            try:
                async with self._slots:
                    results = await loop.run_in_executor(self._executor, self._run, signature,
                                                         [pending])
            finally:
                self._queued_rows -= rows
            return results[0]
        key = (signature, tuple(sorted((name, value.dtype.str, value.shape[1:])
                                       for name, value in inputs.items())))
        self._queues.setdefault(key, collections.deque()).append(pending)
        self._queued_rows += rows
        self._arrivals.setdefault(key, asyncio.Event()).set()
        if key not in self._collectors:
            self._collectors[key] = asyncio.create_task(self._collect(key, signature))
        try:
            return await pending.future
        finally:
            if not pending.future.done():
                pending.future.cancel()  # the caller gave up: leave it out of any batch

    async def _collect(self, key: Hashable, signature: str) -> None:
        """Forms and dispatches batches for one key until its queue is empty."""
        queue, arrived = self._queues[key], self._arrivals[key]
        loop = asyncio.get_running_loop()
        try:
            while True:
                self._drop_abandoned(queue)
                if not queue:
                    return
                await self._slots.acquire()
                try:
                    deadline = queue[0].arrived + self.batch_timeout if queue else 0.0
                    while (queue and sum(p.rows for p in queue) < self.max_batch_size
                           and (remaining := deadline - loop.time()) > 0):
                        arrived.clear()
                        try:
                            await asyncio.wait_for(arrived.wait(), remaining)
                        except TimeoutError:
                            break
                    batch = self._take(queue)
                except BaseException:
                    self._slots.release()
                    raise
                if not batch:
                    self._slots.release()
                    continue
                work = loop.run_in_executor(self._executor, self._run, signature, batch)
                work.add_done_callback(lambda done, batch=batch: self._deliver(done, batch))
        finally:
            del self._collectors[key]
            if not queue:
                self._queues.pop(key, None)
                self._arrivals.pop(key, None)

    def _drop_abandoned(self, queue: collections.deque[_Pending]) -> None:
        while queue and queue[0].future.done():
            self._queued_rows -= queue.popleft().rows

    def _take(self, queue: collections.deque[_Pending]) -> list[_Pending]:
        """The next batch: requests in arrival order within the size and cost bounds."""
        batch, rows, widest = [], 0, None
        while queue:
            pending = queue[0]
            if pending.future.done():  # abandoned while waiting
                self._queued_rows -= queue.popleft().rows
                continue
            new_rows = rows + pending.rows
            new_widest = pending.row_cost if widest is None else tuple(
                max(a, b) for a, b in zip(widest, pending.row_cost))
            if batch and (new_rows > self.max_batch_size or (
                    self.max_batch_cost is not None
                    and any(new_rows * cost > bound
                            for cost, bound in zip(new_widest, self.max_batch_cost)))):
                break
            batch.append(queue.popleft())
            self._queued_rows -= pending.rows
            rows, widest = new_rows, new_widest
        return batch

    def _deliver(self, done: asyncio.Future, batch: list[_Pending]) -> None:
        self._slots.release()
        error = done.exception() if not done.cancelled() else RuntimeError(
            "model call cancelled (server shutting down)")
        for pending, result in zip(batch, [None] * len(batch) if error else done.result()):
            if pending.future.done():
                continue
            if error:
                pending.future.set_exception(error)
            else:
                pending.future.set_result(result)

    def _run(self, signature: str, batch: list[_Pending]) -> list[dict[str, np.ndarray]]:
        """In a worker thread: one model call for the whole batch, split per request."""
        if len(batch) == 1:
            inputs = batch[0].inputs
        else:
            inputs = {name: np.concatenate([p.inputs[name] for p in batch])
                      for name in batch[0].inputs}
        began = time.perf_counter()
        outputs = self._call(signature, inputs)
        seconds = time.perf_counter() - began
        rows = sum(p.rows for p in batch)
        # Counters are only written here and read for reporting; a lost update between two
        # worker threads would cost a count, not correctness.
        self.stats.model_calls += 1
        self.stats.rows += rows
        self.stats.model_seconds += seconds
        self.stats.largest_batch = max(self.stats.largest_batch, rows)
        self.stats.batch_sizes[rows] += 1
        if len(batch) == 1:
            return [outputs]
        results, start = [], 0
        for pending in batch:
            results.append(split_rows(outputs, start, start + pending.rows))
            start += pending.rows
        return results


def _batch_size(inputs: Mapping[str, np.ndarray]) -> int:
    sizes = {value.shape[0] if value.ndim else None for value in inputs.values()}
    if len(sizes) != 1 or None in sizes:
        raise ValueError("every input needs the same batch (first) dimension")
    return sizes.pop()


def split_rows(outputs: Mapping[str, np.ndarray], start: int, stop: int
               ) -> dict[str, np.ndarray]:
    """Rows [start, stop) of a batch's outputs, as the model gives them for those rows alone.

    A speakergender signature pads its per-window outputs ([batch, windows, ...]) to the
    batch's most windows, repeating each row's last window; the slice is trimmed back to its
    own rows' most windows (`window_count`), so a request's results do not depend on what it
    was batched with.
    """
    part = {name: value[start:stop] for name, value in outputs.items()}
    counts = part.get("window_count")
    full = outputs.get("window_count")
    if counts is None or full is None or counts.ndim != 1 or not len(counts):
        return part
    padded_to = max(int(np.max(full)), 1)
    own = max(int(np.max(counts)), 1)
    if own == padded_to:
        return part
    return {name: value[:, :own] if value.ndim >= 2 and value.shape[1] == padded_to else value
            for name, value in part.items()}
