"""TensorBoard: a tiny training run leaves curves and sample translations in its run folder."""

from __future__ import annotations

import json
import logging

import pytest

from seqlab import tensorboard_log
from seqlab.config import load_recipe
from seqlab.run import train_recipe
from tests.conftest import REPO, TINY_REVERSE

event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")


def test_a_tiny_run_writes_scalars_and_samples(tmp_path):
    recipe = load_recipe(REPO / "recipes" / "reverse.toml", [*TINY_REVERSE, "train.log_every=1"])
    train_recipe(recipe, tmp_path / "run")
    events = event_accumulator.EventAccumulator(
        str(tmp_path / "run"), size_guidance={event_accumulator.TENSORS: 0}
    )
    events.Reload()
    scalars = events.Tags()["scalars"]
    for tag in ("train/loss", "train/lr", "train/grad_norm", "train/tokens_per_s"):
        assert [e.step for e in events.Scalars(tag)] == [1, 2, 3, 4, 5, 6], tag
    for tag in ("valid/loss", "valid/ppl", "valid/bleu"):
        assert [e.step for e in events.Scalars(tag)] == [2, 4, 6], tag
    assert "train/step" not in scalars
    first = json.loads((tmp_path / "run" / "log.jsonl").read_text().splitlines()[0])
    for key in ("loss", "lr", "grad_norm", "tokens_per_s"):  # the records of log.jsonl
        assert events.Scalars(f"train/{key}")[0].value == pytest.approx(first[key], rel=1e-6)
    texts = events.Tensors("valid/samples/text_summary")
    assert [t.step for t in texts] == [2, 4, 6]
    table = texts[-1].tensor_proto.string_val[0].decode()
    assert table.startswith("| source | hypothesis | reference |") and table.count("\n") == 4


def test_without_tensorboard_training_says_once_how_to_get_curves(tmp_path, monkeypatch, caplog):
    import builtins

    real_import = builtins.__import__

    def no_tensorboard(name, *args, **kwargs):
        if name == "tensorboard" or name.startswith("tensorboard."):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tensorboard)
    monkeypatch.setattr(tensorboard_log, "_told_missing", False)
    caplog.set_level(logging.INFO, logger="seqlab")
    for name in ("a", "b"):
        assert isinstance(
            tensorboard_log.open_event_log(tmp_path / name), tensorboard_log.NoEventLog
        )
    assert caplog.text.count("seqlab[tensorboard]") == 1
    assert not (tmp_path / "a").exists()


def test_only_finite_numbers_become_curves():
    class Writer:
        def __init__(self):
            self.calls = []

        def add_scalar(self, tag, value, step):
            self.calls.append((tag, value, step))

        def flush(self):
            pass

    log = tensorboard_log.EventLog.__new__(tensorboard_log.EventLog)
    log.writer = Writer()
    record = {"step": 3, "loss": 1.5, "ppl": float("inf"), "valid_bleu": 7, "stop": True, "x": "a"}
    log.scalars(3, record)
    assert log.writer.calls == [("train/loss", 1.5, 3), ("valid/bleu", 7, 3)]
    assert tensorboard_log.samples_markdown([("a|b", "c", "d")]).endswith("| a\\|b | c | d |")
