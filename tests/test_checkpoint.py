"""Checkpoint files: atomic save, safe load and its errors, RNG round trip, manager, averaging."""

from __future__ import annotations

import errno
import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from seqlab.checkpoint import (
    CheckpointManager,
    average_checkpoints,
    load_checkpoint,
    remove_stale_temp_files,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from seqlab.errors import CheckpointError


def test_round_trip_of_plain_values_with_format_marker(tmp_path):
    model = nn.Linear(3, 2)
    payload = {
        "model": model.state_dict(),
        "step": 7,
        "name": "x",
        "lr": [0.1, (0.9, 0.98)],
        "nested": {"a": None, "b": torch.arange(3)},
    }
    save_checkpoint(payload, tmp_path / "c.pt")
    state = load_checkpoint(tmp_path / "c.pt")
    assert state["format"] == "seqlab-checkpoint" and state["version"] == 1
    assert state["step"] == 7 and state["lr"] == [0.1, (0.9, 0.98)]
    torch.testing.assert_close(state["model"]["weight"], model.weight.detach())
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]  # no temp file left behind


def test_unsafe_values_are_refused_before_writing(tmp_path):
    with pytest.raises(TypeError, match=r"extras\.fn"):
        save_checkpoint({"extras": {"fn": print}}, tmp_path / "c.pt")
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize(
    "error, why",
    [
        (OSError(errno.ENOSPC, "No space left on device"), "the disk is full"),
        (OSError(errno.EFBIG, "File too large"), "exceeds the file-size limit"),
        (RuntimeError("[enforce fail at inline_container.cc:672] unexpected pos 64"), "short"),
    ],
)
def test_failed_save_names_the_path_and_keeps_the_old_file(tmp_path, monkeypatch, error, why):
    save_checkpoint({"step": 1}, tmp_path / "c.pt")

    def crash(obj, f):
        Path(f).write_bytes(b"half")
        raise error

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(CheckpointError, match=rf"c\.pt: could not be written: .*{why}"):
        save_checkpoint({"step": 2}, tmp_path / "c.pt")
    assert load_checkpoint(tmp_path / "c.pt")["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]


def test_stale_temp_files_are_removed_and_nothing_else(tmp_path):
    for name in (".checkpoint_4.pt.x1.tmp", ".last.pt.x2.tmp", "checkpoint_2.pt", "keep.tmp"):
        (tmp_path / name).write_bytes(b"x")
    removed = remove_stale_temp_files(tmp_path)
    assert sorted(p.name for p in removed) == [".checkpoint_4.pt.x1.tmp", ".last.pt.x2.tmp"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint_2.pt", "keep.tmp"]


def test_load_errors_name_the_path(tmp_path):
    with pytest.raises(CheckpointError, match=r"missing\.pt: no such"):
        load_checkpoint(tmp_path / "missing.pt")
    save_checkpoint({"model": {"w": torch.randn(100, 100)}}, tmp_path / "good.pt")
    data = (tmp_path / "good.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"cut\.pt: unreadable"):
        load_checkpoint(tmp_path / "cut.pt")
    (tmp_path / "text.pt").write_text("hello")
    with pytest.raises(CheckpointError, match=r"text\.pt: not a seqlab checkpoint"):
        load_checkpoint(tmp_path / "text.pt")
    (tmp_path / "random.pt").write_bytes(bytes(random.Random(0).getrandbits(8) for _ in range(999)))
    with pytest.raises(CheckpointError, match=r"random\.pt: not a seqlab checkpoint"):
        load_checkpoint(tmp_path / "random.pt")
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"empty\.pt: empty file"):
        load_checkpoint(tmp_path / "empty.pt")
    torch.save({"model": {}}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match=r"foreign\.pt: not a seqlab checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt")
    torch.save({"format": "seqlab-checkpoint", "version": 2}, tmp_path / "new.pt")
    with pytest.raises(CheckpointError, match=r"new\.pt: checkpoint version 2 is newer"):
        load_checkpoint(tmp_path / "new.pt")


def draw() -> tuple:
    return random.random(), random.gauss(0, 1), np.random.rand(), torch.rand(3).tolist()


def test_rng_state_round_trips_through_a_weights_only_file(tmp_path):
    random.gauss(0, 1)  # leaves a cached gaussian in python's state
    np.random.randn()  # and in numpy's
    save_checkpoint({"rng": rng_state()}, tmp_path / "rng.pt")
    first = draw()
    draw()
    set_rng_state(load_checkpoint(tmp_path / "rng.pt")["rng"])
    assert draw() == first


# -- CheckpointManager ---------------------------------------------------------------------------


def steps_of(manager):
    return [int(p.stem.split("_")[1]) for p in manager.checkpoints()]


def test_manager_keeps_the_newest_numerically_and_tracks_last(tmp_path):
    m = CheckpointManager(tmp_path / "new" / "run", keep_last=3)
    tmp_path = tmp_path / "new" / "run"  # created by the manager (the trainer logs there at once)
    assert tmp_path.is_dir()
    assert m.latest() is None and m.best() is None and m.checkpoints() == []
    for step in (2, 9, 10, 100, 11):
        path = m.save(step, {"step": step})
        assert path == tmp_path / f"checkpoint_{step}.pt"
        assert load_checkpoint(m.latest())["step"] == step
    assert steps_of(m) == [10, 11, 100]  # numeric order, not "10" < "100" < "11" < "9"
    (tmp_path / "last.pt").unlink()
    assert m.latest() == tmp_path / "checkpoint_100.pt"


@pytest.mark.parametrize("higher", [True, False])
def test_best_follows_the_metric_and_survives_pruning_and_restarts(tmp_path, higher):
    sign = 1 if higher else -1
    m = CheckpointManager(tmp_path, keep_last=1)
    m.save(1, {"step": 1}, metric=sign * 5.0, higher_is_better=higher)
    m.save(2, {"step": 2}, metric=sign * 7.0, higher_is_better=higher)
    m.save(3, {"step": 3}, metric=sign * 6.0, higher_is_better=higher)
    m.save(4, {"step": 4})  # an interrupt save: no metric, best unchanged
    assert steps_of(m) == [4]
    assert load_checkpoint(m.best())["step"] == 2  # its numbered file is gone; best.pt is not
    restarted = CheckpointManager(tmp_path, keep_last=1)
    restarted.save(5, {"step": 5}, metric=sign * 6.5, higher_is_better=higher)
    assert load_checkpoint(restarted.best())["step"] == 2
    restarted.save(6, {"step": 6}, metric=sign * 8.0, higher_is_better=higher)
    assert load_checkpoint(restarted.best())["step"] == 6
    index = json.loads((tmp_path / "checkpoints.json").read_text())
    assert index["best"]["step"] == 6 and index["best"]["metric"] == sign * 8.0


def test_nan_metric_never_becomes_best(tmp_path):
    m = CheckpointManager(tmp_path)
    m.save(1, {"step": 1}, metric=float("nan"))
    assert m.best() is None
    m.save(2, {"step": 2}, metric=1.0)
    assert load_checkpoint(m.best())["step"] == 2


def test_last_is_not_changed_by_later_rewrites_of_its_source(tmp_path):
    m = CheckpointManager(tmp_path)
    m.save(1, {"step": 1, "tag": "a"})
    save_checkpoint({"step": 1, "tag": "b"}, tmp_path / "checkpoint_1.pt")
    assert load_checkpoint(m.latest())["tag"] == "a"  # atomic replace made a new file


# -- averaging -----------------------------------------------------------------------------------


def model_payload(seed: int, step: int) -> dict:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3)).half()
    return {"model": model.state_dict(), "step": step}


def test_average_is_the_elementwise_mean_and_keeps_the_last_payload(tmp_path):
    payloads = [model_payload(seed, step) for seed, step in [(0, 10), (1, 20), (2, 30)]]
    paths = []
    for p in payloads:
        paths.append(tmp_path / f"checkpoint_{p['step']}.pt")
        save_checkpoint(p, paths[-1])
    payloads[2]["model"]["1.num_batches_tracked"].fill_(5)
    save_checkpoint(payloads[2], paths[2])
    avg = average_checkpoints(paths)
    assert avg["step"] == 30
    weight = torch.stack([p["model"]["0.weight"].double() for p in payloads]).mean(0)
    assert avg["model"]["0.weight"].dtype == torch.float16
    torch.testing.assert_close(avg["model"]["0.weight"], weight.half())
    assert avg["model"]["1.num_batches_tracked"].item() == 5  # integer buffer from the last


def test_average_refuses_mismatched_models(tmp_path):
    save_checkpoint({"model": {"w": torch.zeros(2, 2)}}, tmp_path / "a.pt")
    save_checkpoint({"model": {"w": torch.zeros(3, 2)}}, tmp_path / "b.pt")
    save_checkpoint({"model": {"v": torch.zeros(2, 2)}}, tmp_path / "c.pt")
    save_checkpoint({"step": 1}, tmp_path / "d.pt")
    with pytest.raises(CheckpointError, match=r"b.pt: model key 'w' has shape"):
        average_checkpoints([tmp_path / "a.pt", tmp_path / "b.pt"])
    with pytest.raises(CheckpointError, match=r"c.pt: model key '(v|w)'"):
        average_checkpoints([tmp_path / "a.pt", tmp_path / "c.pt"])
    with pytest.raises(CheckpointError, match=r"d\.pt: no 'model'"):
        average_checkpoints([tmp_path / "a.pt", tmp_path / "d.pt"])


def test_average_keeps_tied_weights_one_tensor(tmp_path):
    """An embedding tied to the output layer is saved once; its average must be too."""
    paths = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        embedding, output = nn.Embedding(50, 8), nn.Linear(8, 50, bias=False)
        output.weight = embedding.weight
        model = nn.ModuleDict({"embedding": embedding, "output": output})
        paths.append(tmp_path / f"checkpoint_{seed}.pt")
        save_checkpoint({"model": model.state_dict()}, paths[-1])
    avg = average_checkpoints(paths)["model"]
    assert avg["embedding.weight"] is avg["output.weight"]
    save_checkpoint({"model": avg}, tmp_path / "avg.pt")
    assert (tmp_path / "avg.pt").stat().st_size < 1.2 * paths[0].stat().st_size


def test_load_model_is_the_one_loader_for_every_task(reverse_run_dir, tmp_path):
    from seqlab.checkpoint import load_model
    from seqlab.inference import Translator

    loaded = load_model(reverse_run_dir / "best.pt")
    assert loaded.recipe.task == "translation" and list(loaded.sides) == ["src", "tgt"]
    assert not loaded.model.training
    state = load_checkpoint(reverse_run_dir / "best.pt")
    for key, tensor in loaded.model.state_dict().items():
        torch.testing.assert_close(tensor, state["model"][key])
    assert loaded.sides["src"].to_payload()["vocab"] == state["src"]["vocab"]
    with pytest.raises(CheckpointError, match="a 'translation' checkpoint, not a 'language_model'"):
        load_model(reverse_run_dir / "best.pt", task="language_model")
    save_checkpoint({k: v for k, v in state.items() if k != "tgt"}, tmp_path / "no_tgt.pt")
    with pytest.raises(CheckpointError, match=r"no_tgt\.pt: no 'tgt' entry"):
        load_model(tmp_path / "no_tgt.pt")
    model = Translator.from_checkpoint(reverse_run_dir / "best.pt").model
    model.train()
    Translator(model, *loaded.sides.values()).translate(["a b"])
    assert model.training  # inference leaves the model's mode as it found it
