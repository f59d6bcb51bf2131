"""Data-parallel training: 2 CPU processes (gloo) against 1 process with the same global batch.

`test_spawned_ranks` starts 2 ranks with torch.multiprocessing (once: importing torch dominates on
a loaded machine) and checks, in one process group: the `reverse` recipe's weights after 3 steps
equal one process's with the same global batch; ranks with unequal numbers of batches stay in
step; a stop requested on one rank (what SIGINT/SIGTERM do under torchrun) stops both at the same
step. The slow tests run the real `torchrun -m seqlab train`, Ctrl-C and `--resume` included.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from seqlab import distributed
from seqlab.checkpoint import load_checkpoint
from seqlab.config import load_recipe
from seqlab.distributed import DistContext, ShardResult, env_context, session
from seqlab.errors import ConfigError
from seqlab.run import train_recipe
from seqlab.train import Trainer
from tests.test_train import FakeTask, fake_batches

REPO = Path(__file__).resolve().parents[1]
TINY = [
    "data.synthetic_size=400",
    "model.embed_dim=8",
    "model.hidden_size=16",
    "model.dropout=0.0",
    "train.max_tokens=200",
    "train.log_every=1",
    "train.warmup_steps=1",
    "train.lr=0.01",
    "train.valid_max_sentences=2",
    "train.device='cpu'",
]


def agent_store(world: int) -> torch.distributed.TCPStore:
    """The rendezvous store, hosted here as torchrun's agent hosts it (the ranks then connect as
    clients: TORCHELASTIC_USE_AGENT_STORE). It binds port 0 and keeps it, so no other socket can
    take the port between its choice and the ranks' start, as one could with a port found free
    and then closed again."""
    return torch.distributed.TCPStore(
        "127.0.0.1", 0, world_size=world, is_master=True, wait_for_workers=False
    )


def torchrun(args: list[str], env: dict | None = None, **kwargs) -> subprocess.Popen:
    """`torchrun --nproc_per_node=2 -m seqlab ARGS` in its own session (so it can be signalled)."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    return subprocess.Popen(
        [*command, "-m", "seqlab", *map(str, args)],
        cwd=REPO,
        env={**os.environ, **(env or {}), "OMP_NUM_THREADS": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        **kwargs,
    )


def finish(proc: subprocess.Popen, timeout: float) -> str:
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"torchrun did not finish in {timeout} s:\n{out[-3000:]}")
    return out


def params(run_dir: Path, name: str = "last.pt") -> dict[str, torch.Tensor]:
    return load_checkpoint(run_dir / name)["model"]


def logged(run_dir: Path) -> list[dict]:
    """The records of log.jsonl; a line still being written (no newline yet) is left out."""
    lines = (run_dir / "log.jsonl").read_text().splitlines(keepends=True)
    return [json.loads(x) for x in lines if x.endswith("\n")]


def logged_losses(run_dir: Path) -> dict[int, float]:
    """Step -> logged training loss."""
    return {r["step"]: r["loss"] for r in logged(run_dir) if "loss" in r}


def logged_validations(run_dir: Path) -> dict[int, dict[str, float]]:
    """Step -> the logged validation metrics."""
    records = (r for r in logged(run_dir) if "valid_loss" in r)
    return {r["step"]: {k: v for k, v in r.items() if k.startswith("valid_")} for r in records}


def assert_same_params(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-5, rtol=1e-4, msg=key)


def one_process(tmp_path: Path, overrides: list[str]) -> Path:
    run_dir = tmp_path / "one"
    train_recipe(load_recipe(REPO / "recipes" / "reverse.toml", overrides), run_dir)
    return run_dir


@pytest.mark.slow
def test_torchrun_equals_one_process(tmp_path):
    """2 ranks x 2 accumulated batches (DDP, no_sync on the first) = 1 process x 4 batches."""
    steps = ["train.max_steps=3", "train.valid_every=3"]
    proc = torchrun(
        ["train", REPO / "recipes" / "reverse.toml", *TINY, *steps, "train.accumulate=2",
         "--run-dir", tmp_path / "ddp"]
    )  # fmt: skip
    reference = one_process(tmp_path, [*TINY, *steps, "train.accumulate=4"])
    out = finish(proc, timeout=240)
    assert proc.returncode == 0, out[-3000:]
    assert out.count('"stopped_early"') == 1  # the summary is printed by rank 0 only
    assert_same_params(params(tmp_path / "ddp"), params(reference))
    ddp, one = logged_losses(tmp_path / "ddp"), logged_losses(reference)
    assert sorted(ddp) == [1, 2, 3]
    assert ddp == pytest.approx(one, rel=1e-5)  # logged loss: all ranks' tokens, as 1 process


@pytest.mark.slow
def test_torchrun_sigint_saves_stops_every_worker_and_resumes(tmp_path):
    """Ctrl-C on torchrun: all ranks stop at one step, rank 0 saves, no worker is left behind;
    `--resume` then continues exactly (constant schedule, so max_steps may grow)."""
    run_dir = tmp_path / "ddp"
    common = [*TINY, "train.schedule='constant'", "train.valid_every=1000"]
    proc = torchrun(["train", REPO / "recipes" / "reverse.toml", *common,
                     "train.max_steps=1000", "--run-dir", run_dir])  # fmt: skip
    deadline = time.monotonic() + 180
    while not (run_dir / "log.jsonl").exists() or len(logged_losses(run_dir)) < 3:
        assert proc.poll() is None and time.monotonic() < deadline, "no training steps logged"
        time.sleep(0.5)
    os.kill(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does to torchrun
    out = finish(proc, timeout=90)
    assert proc.returncode != 0
    assert "interrupted at step" in out
    leftovers = [
        pid for pid in os.listdir("/proc") if pid.isdigit() and str(run_dir) in _cmdline(pid)
    ]
    assert leftovers == [], f"workers left running: {leftovers}"
    stopped = load_checkpoint(run_dir / "last.pt")
    step = stopped["progress"]["step"]
    assert len(stopped["rng_ranks"]) == 2  # every rank's RNG state: the stop was collective
    more = f"train.max_steps={step + 2}"
    resumed = torchrun(["train", REPO / "recipes" / "reverse.toml", *common, more,
                        "--run-dir", run_dir, "--resume"])  # fmt: skip
    reference = one_process(tmp_path, [*common, more, "train.accumulate=2"])
    out = finish(resumed, timeout=240)
    assert resumed.returncode == 0, out[-3000:]
    assert_same_params(params(run_dir), params(reference))


def test_sigterm_saves_a_single_process_run_like_ctrl_c(tmp_path):
    """`kill PID` on a plain `seqlab train`: the step in flight is dropped, last.pt is saved,
    and the run resumes from it."""
    run_dir = tmp_path / "one"
    recipe = REPO / "recipes" / "reverse.toml"
    settings = [*TINY, "train.schedule='constant'", "train.max_steps=100000"]
    command = [sys.executable, "-m", "seqlab", "train", recipe, *settings, "--run-dir", run_dir]
    proc = subprocess.Popen(
        list(map(str, command)),
        cwd=REPO,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not (run_dir / "log.jsonl").exists() or len(logged_losses(run_dir)) < 2:
        assert proc.poll() is None and time.monotonic() < deadline, "no training steps logged"
        time.sleep(0.2)
    proc.terminate()  # SIGTERM
    out = finish(proc, timeout=60)
    assert proc.returncode == 130, out[-3000:]
    assert "interrupted at step" in out and "Traceback" not in out
    step = load_checkpoint(run_dir / "last.pt")["progress"]["step"]
    # last.pt holds the last completed step; the signal may land between that step's update and
    # its log line (or mid-line, which `logged_losses` leaves out), so that one line may be missing
    assert step >= 2 and step - 1 <= max(logged_losses(run_dir)) <= step


def _cmdline(pid: str) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


# -- 2 spawned ranks driving Trainer directly -------------------------------------------------


def _reverse_trainer(run_dir: Path, dist: DistContext, overrides: list[str]) -> Trainer:
    """What `train_recipe` runs, without the test-set scoring that follows training."""
    from seqlab.tasks.translation import TranslationTask
    from seqlab.tasks.translation_data import prepare
    from seqlab.train import seed_everything

    recipe = load_recipe(REPO / "recipes" / "reverse.toml", overrides)
    seed_everything(recipe.seed)
    with dist.main_first():  # rank 0 fills the data cache
        data = prepare(recipe)
    task = TranslationTask(recipe, data, rank=dist.rank, world=dist.world)
    return Trainer(task, recipe, run_dir, metric_key="loss", higher_is_better=False, dist=dist)


PARITY_STEPS = ["train.max_steps=3", "train.valid_every=3"]


def _fake_trainer(run_dir: Path, task: FakeTask, dist: DistContext, *overrides) -> Trainer:
    recipe = load_recipe(
        REPO / "recipes" / "reverse.toml",
        ["train.schedule='constant'", "train.warmup_steps=0", "train.lr=0.1",
         "train.weight_decay=0.0", "train.device='cpu'", "train.valid_every=1000", *overrides],
    )  # fmt: skip
    return Trainer(task, recipe, run_dir, metric_key="loss", higher_is_better=False, dist=dist)


def _worker(rank: int, world: int, port: int, out: Path) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
        WORLD_SIZE=str(world), LOCAL_RANK=str(rank), TORCHELASTIC_USE_AGENT_STORE="True",
    )  # fmt: skip
    torch.set_num_threads(1)
    with session("cpu") as dist:
        # Parity: 2 ranks x 2 accumulated batches (no_sync on the first) vs 1 process x 4.
        _reverse_trainer(out / "ddp", dist, [*TINY, *PARITY_STEPS, "train.accumulate=2"]).fit()
        # Uneven shards: rank 0 has 5 batches per epoch, rank 1 has 3. Epochs give 3 steps each.
        uneven = _fake_trainer(out / "uneven", FakeTask(fake_batches(5 - 2 * rank)), dist,
                               "train.max_steps=7")  # fmt: skip
        summary = uneven.fit()
        weights = [p.detach().clone() for p in uneven.model.parameters()]
        # A stop requested on rank 1 only, after step 2: every rank stops before step 3.
        stop = _fake_trainer(out / "stop", FakeTask(fake_batches(9)), dist, "train.max_steps=9")
        stop.on_step = lambda step: step == 2 and rank == 1 and distributed._STOP.set()
        try:
            stop.fit()
            stopped = None
        except KeyboardInterrupt:
            stopped = stop.progress.step
    torch.save(
        {"step": summary["step"], "epoch": uneven.progress.epoch, "weights": weights,
         "stopped": stopped},
        out / f"rank{rank}.pt",
    )  # fmt: skip


# Two spawned ranks take about 30 s here (2 cores, most of it process start and gloo setup).
@pytest.mark.slow
def test_spawned_ranks(tmp_path):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:  # first, so that the ranks find the data cache filled
        one = _reverse_trainer(tmp_path / "one", DistContext(), [*TINY, *PARITY_STEPS,
                                                                 "train.accumulate=4"])  # fmt: skip
        one.fit()
    finally:
        torch.set_num_threads(threads)
    world = 2
    store = agent_store(world)
    context = mp.start_processes(
        _worker, args=(world, store.port, tmp_path), nprocs=world, join=False, start_method="spawn"
    )
    deadline = time.monotonic() + 240
    while not context.join(timeout=1):
        if time.monotonic() > deadline:
            for p in context.processes:
                p.kill()
            pytest.fail("spawned ranks did not finish (deadlock?)")
    # parity: the same weights and the same logged (all-rank) losses as one process
    assert_same_params(params(tmp_path / "ddp"), params(tmp_path / "one"))
    ddp, single = logged_losses(tmp_path / "ddp"), logged_losses(tmp_path / "one")
    assert sorted(ddp) == [1, 2, 3] and ddp == pytest.approx(single, rel=1e-5)
    # validation: each rank its shard (1 of the 2 BLEU sentences each), combined
    ddp_valid = logged_validations(tmp_path / "ddp")
    single_valid = logged_validations(tmp_path / "one")
    assert sorted(ddp_valid) == [3] and ddp_valid[3].keys() == single_valid[3].keys()
    assert ddp_valid[3] == pytest.approx(single_valid[3], rel=1e-5)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    # uneven shards: both ranks take 7 steps (3 + 3 + 1, rank 0's extra batches dropped)
    assert r0["step"] == r1["step"] == 7 and r0["epoch"] == r1["epoch"] == 2
    for a, b in zip(r0["weights"], r1["weights"]):
        torch.testing.assert_close(a, b)
    # the stop: both ranks at step 2, rank 0 saved with both ranks' RNG states
    assert r0["stopped"] == r1["stopped"] == 2
    saved = load_checkpoint(tmp_path / "stop" / "last.pt")
    assert saved["progress"]["step"] == 2 and len(saved["rng_ranks"]) == 2
    assert saved["progress"]["batches_in_epoch"] == 2  # the step not taken is redone on resume
    # resumed by one process: 2 batches on each of 2 ranks = 4 of the single process's
    alone = _fake_trainer(tmp_path / "stop", FakeTask(fake_batches(9)), DistContext(),
                          "train.max_steps=9")  # fmt: skip
    alone.resume()
    assert alone.progress.step == 2 and alone.progress.batches_in_epoch == 4


# -- the environment ---------------------------------------------------------------------------


def test_env_context(monkeypatch):
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
    assert env_context() == DistContext(0, 1, 0) and not env_context().enabled
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert env_context() == DistContext(3, 4, 1)
    monkeypatch.setenv("RANK", "4")
    with pytest.raises(ConfigError, match="RANK=4, WORLD_SIZE=4"):
        env_context()
    monkeypatch.setenv("RANK", "x")
    with pytest.raises(ConfigError, match="RANK='x'"):
        env_context()


def test_device_per_rank():
    ctx = DistContext(rank=1, world=2, local_rank=1)
    assert ctx.device("cpu") == torch.device("cpu")
    with pytest.raises(ConfigError, match="LOCAL_RANK"):
        ctx.device("cuda:0")
    if torch.cuda.is_available():
        assert ctx.device("auto") == torch.device("cuda", 1)
    assert DistContext().device("cpu") == torch.device("cpu")


def test_single_process_helpers_are_identities():
    ctx = DistContext()
    assert ctx.all_reduce_sum([1.0, 2.0]) == [1.0, 2.0]
    assert ctx.broadcast({"a": 1}) == {"a": 1} and ctx.gather(5) == [5]
    ctx.barrier()
    with ctx.main_first():
        pass


def test_language_model_refused_under_torchrun(monkeypatch, tmp_path):
    """A task that cannot shard its batches is refused before any process group is opened."""
    from seqlab.config import Recipe
    from seqlab.run import train_recipe

    recipe = load_recipe(REPO / "recipes" / "reverse.toml", TINY)
    lm = Recipe(**{**recipe.__dict__, "task": "language_model"})
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setattr(distributed, "session", _fake_session)
    with pytest.raises(ConfigError, match="does not shard"):
        train_recipe(lm, tmp_path / "lm")


def _fake_session(device_name):
    import contextlib

    @contextlib.contextmanager
    def fake():
        yield DistContext(rank=0, world=2)

    return fake()


def test_shard_results_merge_in_any_order():
    a = ShardResult({"nll": 1.5, "n": 2.0}, ((3, "c"), (0, "a")))
    b = ShardResult({"n": 1.0, "nll": 0.25}, ((1, "b"),))
    for parts in ([a, b], [b, a]):
        merged = ShardResult.merge(parts)
        assert merged.sums == {"n": 3.0, "nll": 1.75}
        assert merged.outputs == ((0, "a"), (1, "b"), (3, "c"))
    assert DistContext().combine(a) == ShardResult.merge([a])
    with pytest.raises(ValueError, match="disagree"):
        ShardResult.merge([a, ShardResult({"nll": 1.0})])
    with pytest.raises(ValueError, match="same example"):
        ShardResult.merge([a, ShardResult({"nll": 0.0, "n": 0.0}, ((3, "again"),))])
