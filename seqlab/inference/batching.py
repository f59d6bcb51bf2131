"""Dynamic batching for `seqlab serve`: lines of concurrent requests translated together.

A `Batcher` lives in the server's event loop. `await batcher.translate(lines, beam_size)` queues a
request and returns its translations, in order, once all its lines are done. One background task
forms batches: the oldest queued request first, then the lines of later requests with the same
beam size, in arrival order, up to a token budget; a request too large for one batch is split
across several. It waits for batch mates at most `max_wait` seconds after the oldest queued
request arrived (not after each batch: requests that queued while the model was busy go at once).
The model runs in one worker thread, one batch at a time, so the event loop keeps accepting and
answering requests meanwhile. With `batching=False` each request is translated alone, in arrival
order (the comparison point of benchmarks/serve_load.py).

A line's translation does not depend on its batch mates: the engines search each sentence exactly
as if it were alone (padding changes nothing), which tests/inference/test_serve.py checks on a real
model. `close()` stops taking requests and returns once every queued one is answered, which is what
a SIGTERM needs after uvicorn has stopped accepting connections.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

logger = logging.getLogger(__name__)

# translate(lines, beam_size) -> one text per line, run in the worker thread
TranslateFn = Callable[[list[str], int], list[str]]


class ShuttingDown(RuntimeError):
    """A request arrived after `close()`: the server is stopping."""


def estimate_tokens(line: str) -> int:
    """Source tokens of `line` as the queue counts them against the budget: its words plus EOS.
    Subword models split words further; the engine cuts its exact batches itself."""
    return len(line.split()) + 1


@dataclass(eq=False)
class _Request:
    lines: list[str]
    beam_size: int
    arrived: float  # event-loop time
    future: asyncio.Future
    tokens: list[int] = field(default_factory=list)  # estimate_tokens of each line
    results: list[str | None] = field(default_factory=list)
    taken: int = 0  # lines handed to a batch so far
    done: int = 0  # lines translated so far

    def __post_init__(self):
        self.tokens = [estimate_tokens(line) for line in self.lines]
        self.results = [None] * len(self.lines)
        self.untaken_tokens = sum(self.tokens)


class Batcher:
    """Queue of translation requests and the task that batches them (see the module docstring).

    Args:
        translate: `translate(lines, beam_size) -> texts`, called in the worker thread.
        max_tokens: token budget of a batch (`estimate_tokens` summed over its lines); one line
            over it still goes, alone.
        max_wait: seconds a request may wait for batch mates; 0 batches only what already queued.
        batching: False: each request alone, whole, in arrival order.
    """

    def __init__(
        self, translate: TranslateFn, *, max_tokens: int, max_wait: float, batching: bool = True
    ):
        self._translate = translate
        self.max_tokens, self.max_wait, self.batching = max_tokens, max_wait, batching
        self._queue: list[_Request] = []
        self._wakeup = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task | None = None
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="translate")
        self.batches = 0  # batches translated, for logs and tests

    def start(self) -> None:
        """Start the batching task (in the running event loop)."""
        self._task = asyncio.get_running_loop().create_task(self._work(), name="batcher")

    async def close(self) -> None:
        """Take no more requests; return when every queued request is answered."""
        self._closing = True
        self._wakeup.set()
        if self._task is not None:
            await self._task
        self._executor.shutdown(wait=True)

    async def translate(self, lines: list[str], beam_size: int) -> list[str]:
        """Translations of `lines` with `beam_size`, one per line, in order."""
        if self._closing:
            raise ShuttingDown("the server is shutting down")
        if not lines:
            return []
        loop = asyncio.get_running_loop()
        request = _Request(list(lines), beam_size, loop.time(), loop.create_future())
        self._queue.append(request)
        self._wakeup.set()
        logger.debug("queued %d lines, beam %d", len(lines), beam_size)
        return await request.future

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self._queue = [r for r in self._queue if not r.future.done()]  # cancelled: dropped
            if not self._queue:
                if self._closing:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            await self._gather(loop)
            batch = self._take()
            if batch:
                await self._run(loop, batch)

    async def _gather(self, loop: asyncio.AbstractEventLoop) -> None:
        """Wait until the head's beam size has a full budget queued, or the head waited enough."""
        head = self._queue[0]
        deadline = head.arrived + self.max_wait
        while self.batching and not self._closing and self._pending(head) < self.max_tokens:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), remaining)
            except TimeoutError:
                return

    def _pending(self, head: _Request) -> int:
        return sum(r.untaken_tokens for r in self._queue if r.beam_size == head.beam_size)

    def _take(self) -> list[tuple[_Request, int]]:
        """(request, line index) pairs of the next batch; fully taken requests leave the queue."""
        head = self._queue[0]
        if not self.batching:
            self._queue.pop(0)
            head.taken, head.untaken_tokens = len(head.lines), 0
            return [(head, i) for i in range(len(head.lines))]
        batch: list[tuple[_Request, int]] = []
        used = 0
        for request in [r for r in self._queue if r.beam_size == head.beam_size]:
            while request.taken < len(request.lines):
                cost = request.tokens[request.taken]
                if batch and used + cost > self.max_tokens:
                    return batch
                batch.append((request, request.taken))
                used += cost
                request.taken += 1
                request.untaken_tokens -= cost
                if request.taken == len(request.lines):
                    self._queue.remove(request)
        return batch

    async def _run(self, loop: asyncio.AbstractEventLoop, batch: list[tuple[_Request, int]]):
        """Translate `batch` in the worker thread and hand each line's text to its request."""
        requests = list(dict.fromkeys(r for r, _ in batch))
        lines = [r.lines[i] for r, i in batch]
        beam = batch[0][0].beam_size
        start = time.perf_counter()
        try:
            texts = await loop.run_in_executor(self._executor, self._translate, lines, beam)
            if len(texts) != len(lines):
                raise RuntimeError(f"the engine returned {len(texts)} texts for {len(lines)} lines")
        except Exception as error:  # the engine failed: so do these requests, the server goes on
            logger.exception("translating a batch of %d lines failed", len(lines))
            for request in requests:
                if request in self._queue:
                    self._queue.remove(request)
                if not request.future.done():
                    request.future.set_exception(error)
            return
        self.batches += 1
        logger.debug(
            "batch: %d lines from %d requests, beam %d, %.1f ms",
            len(lines), len(requests), beam, 1000 * (time.perf_counter() - start),
        )  # fmt: skip
        for (request, i), text in zip(batch, texts):
            request.results[i] = text
            request.done += 1
            if request.done == len(request.lines) and not request.future.done():
                request.future.set_result(request.results)
