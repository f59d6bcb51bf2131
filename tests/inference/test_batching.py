"""The batching queue of `seqlab serve`, driven by a fake engine that records its batches."""

from __future__ import annotations

import asyncio
import random
import threading

import pytest

from seqlab.inference.batching import Batcher, ShuttingDown, estimate_tokens


class FakeEngine:
    """`translate(lines, beam)` -> "LINE/BEAM" per line (a function of the line alone, as a real
    engine's output must be); records each batch and the thread it ran in."""

    def __init__(self, fail_on: str | None = None):
        self.batches: list[tuple[list[str], int]] = []
        self.threads: set[str] = set()
        self.fail_on = fail_on

    def __call__(self, lines: list[str], beam: int) -> list[str]:
        self.batches.append((list(lines), beam))
        self.threads.add(threading.current_thread().name)
        if self.fail_on in lines:
            raise ValueError(f"cannot translate {self.fail_on!r}")
        return [f"{line}/{beam}" for line in lines]


def run(coroutine_fn, engine, **options):
    """Run `coroutine_fn(batcher)` with a started Batcher over `engine`; close it afterwards."""

    async def main():
        batcher = Batcher(engine, **{"max_tokens": 100, "max_wait": 0.05, **options})
        batcher.start()
        try:
            return await coroutine_fn(batcher)
        finally:
            await batcher.close()

    return asyncio.run(main())


def test_batches_fill_up_to_the_token_budget_in_arrival_order():
    engine = FakeEngine()
    requests = [["a b", "c d", "e f"], ["g h", "i j"], ["k l"]]  # 3 tokens a line (words + EOS)

    async def go(batcher):
        return await asyncio.gather(*(batcher.translate(r, 1) for r in requests))

    results = run(go, engine, max_tokens=7)
    assert results == [[f"{line}/1" for line in r] for r in requests]
    # 2 lines (6 tokens) a batch; the first request is split across the first two batches
    assert [lines for lines, _ in engine.batches] == [
        ["a b", "c d"], ["e f", "g h"], ["i j", "k l"]
    ]  # fmt: skip
    assert engine.threads and "MainThread" not in engine.threads  # the model runs off the loop


def test_a_line_over_the_budget_goes_alone():
    engine = FakeEngine()
    long = " ".join(["w"] * 20)

    async def go(batcher):
        return await asyncio.gather(batcher.translate(["a", long, "b"], 1))

    assert run(go, engine, max_tokens=5) == [["a/1", f"{long}/1", "b/1"]]
    assert [lines for lines, _ in engine.batches] == [["a"], [long], ["b"]]
    assert estimate_tokens(long) == 21 and estimate_tokens("") == 1


def test_only_requests_with_the_same_beam_size_share_a_batch():
    engine = FakeEngine()

    async def go(batcher):
        return await asyncio.gather(
            batcher.translate(["a"], 1), batcher.translate(["b"], 5), batcher.translate(["c"], 1)
        )

    assert run(go, engine) == [["a/1"], ["b/5"], ["c/1"]]
    assert engine.batches == [(["a", "c"], 1), (["b"], 5)]


def test_every_request_gets_its_own_lines_back_whatever_it_was_batched_with():
    """Many concurrent requests of random sizes, beams and arrival times: each gets exactly the
    engine's answer for its lines, in order, however they were cut into batches."""
    rng = random.Random(0)
    words = ["x", "y z", "", "u v w", "t"]
    requests = [
        ([rng.choice(words) + f" {i}.{j}" for j in range(rng.randint(1, 6))], rng.choice([1, 4]))
        for i in range(60)
    ]
    engine = FakeEngine()

    async def one(batcher, lines, beam, delay):
        await asyncio.sleep(delay)
        return await batcher.translate(lines, beam)

    async def go(batcher):
        return await asyncio.gather(
            *(one(batcher, lines, beam, rng.random() * 0.05) for lines, beam in requests)
        )

    results = run(go, engine, max_tokens=16, max_wait=0.01)
    assert results == [[f"{line}/{beam}" for line in lines] for lines, beam in requests]
    assert len(engine.batches) < sum(len(lines) for lines, _ in requests)  # lines were merged
    assert any(len({line.split()[-1].split(".")[0] for line in b}) > 1 for b, _ in engine.batches)


def test_a_request_waits_for_batch_mates_at_most_max_wait():
    engine = FakeEngine()

    async def go(batcher):
        first = asyncio.ensure_future(batcher.translate(["a"], 1))
        await asyncio.sleep(0.05)  # well inside max_wait: joins the first request's batch
        second = await batcher.translate(["b"], 1)
        return await first, second

    assert run(go, engine, max_wait=0.5) == (["a/1"], ["b/1"])
    assert engine.batches == [(["a", "b"], 1)]

    async def alone(batcher):
        start = asyncio.get_running_loop().time()
        await batcher.translate(["c"], 1)
        return asyncio.get_running_loop().time() - start

    assert 0.2 <= run(alone, engine, max_wait=0.2) < 2.0  # waited for company, then went alone


def test_without_waiting_requests_queued_meanwhile_still_go_together():
    engine = FakeEngine()

    async def go(batcher):
        return await asyncio.gather(*(batcher.translate([x], 1) for x in "abc"))

    assert run(go, engine, max_wait=0.0) == [["a/1"], ["b/1"], ["c/1"]]
    assert engine.batches == [(["a", "b", "c"], 1)]


def test_without_batching_each_request_goes_alone_and_whole():
    engine = FakeEngine()
    requests = [["a", "b", "c"], ["d"], ["e", "f"]]

    async def go(batcher):
        return await asyncio.gather(*(batcher.translate(r, 1) for r in requests))

    assert run(go, engine, batching=False, max_tokens=2) == [
        [f"{x}/1" for x in r] for r in requests
    ]
    assert [lines for lines, _ in engine.batches] == requests


def test_a_failed_batch_fails_its_requests_and_the_batcher_goes_on():
    engine = FakeEngine(fail_on="boom")

    async def go(batcher):
        bad, good = await asyncio.gather(
            batcher.translate(["a", "boom"], 1), batcher.translate(["c"], 5), return_exceptions=True
        )
        return bad, good, await batcher.translate(["d"], 1)

    bad, good, later = run(go, engine)
    assert isinstance(bad, ValueError) and good == ["c/5"] and later == ["d/1"]


def test_close_answers_every_queued_request_then_refuses_new_ones():
    engine = FakeEngine()

    async def go(batcher):
        pending = [asyncio.ensure_future(batcher.translate([f"line {i}"], 1)) for i in range(5)]
        await asyncio.sleep(0)  # queued
        await batcher.close()
        assert all(p.done() for p in pending)
        with pytest.raises(ShuttingDown, match="shutting down"):
            await batcher.translate(["late"], 1)
        return [p.result() for p in pending]

    assert run(go, engine, max_wait=10.0) == [[f"line {i}/1"] for i in range(5)]


def test_an_empty_request_is_answered_without_the_engine():
    engine = FakeEngine()

    async def go(batcher):
        return await batcher.translate([], 1)

    assert run(go, engine) == [] and engine.batches == []
