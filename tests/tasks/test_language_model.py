"""Language modelling: the data stage, TBPTT partitions, carried state, training end to end."""

from __future__ import annotations

import random

import pytest
import torch

from seqlab.checkpoint import load_checkpoint
from seqlab.config import load_recipe, recipe_from_dict
from seqlab.errors import ConfigError, DataError
from seqlab.run import train_recipe
from seqlab.tasks.language_model import (
    LanguageModelTask,
    evaluate_stream,
    random_batches,
    sequential_batches,
)
from seqlab.tasks.language_model_data import prepare
from tests.conftest import REPO

TEXT = "the quick brown fox jumps over the lazy dog .\n\nand the dog sleeps .\n"


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def lm_recipe(
    tmp_path, data: dict | None = None, model: dict | None = None, train: dict | None = None
):
    """A `language_model` recipe reading TEXT from files (train = valid unless `data` says)."""
    path = tmp_path / "text.txt"
    path.write_text(TEXT)
    raw = {
        "name": "tiny-lm",
        "task": "language_model",
        "data": {"corpus": "files", "train_path": str(path), "valid_path": str(path)}
        | (data or {}),
        "model": {"kind": "rnn_lm", "cell": "gru", "embed_dim": 8, "hidden_size": 8}
        | (model or {}),
        "train": {"batch_size": 2, "device": "cpu", "label_smoothing": 0.0} | (train or {}),
    }
    return recipe_from_dict(raw, "tiny.toml")


# -- data ------------------------------------------------------------------------------------


def test_eos_lines_and_running_text(tmp_path):
    words = prepare(lm_recipe(tmp_path, {"bptt": 3}))
    vocab = words.side.vocab
    tokens = vocab.decode(words.splits["train"].tolist(), strip_special=False)
    line1, line3 = "the quick brown fox jumps over the lazy dog .", "and the dog sleeps ."
    assert " ".join(tokens) == f"{line1} <eos> <eos> {line3} <eos>"  # blank lines give <eos>
    chars = prepare(lm_recipe(tmp_path, {"tokenizer": "char", "line_break": "space"}))
    text = chars.side.tokenizer.detokenize(chars.side.vocab.decode(chars.splits["train"].tolist()))
    assert text == " ".join(TEXT.split())
    letters = prepare(
        lm_recipe(tmp_path, {"tokenizer": "char", "line_break": "space", "letters_only": True})
    )
    assert (
        "." not in letters.side.vocab and len(letters.side.vocab) == 7 + 26 + 1
    )  # a pangram, and ▁


def test_fractions_are_carved_off_the_end_and_the_vocabulary_sees_train_only(tmp_path):
    data = {"valid_path": None, "valid_fraction": 0.25, "test_fraction": 0.25}
    carved = prepare(lm_recipe(tmp_path, data))
    whole = prepare(lm_recipe(tmp_path)).splits["train"]
    n = len(whole)
    sizes = {k: len(v) for k, v in carved.splits.items()}
    assert sizes == {"train": n - 2 * int(n * 0.25), "valid": int(n * 0.25), "test": int(n * 0.25)}
    decode = carved.side.vocab.decode
    assert decode(carved.splits["test"].tolist(), strip_special=False)[-2:] == [".", "<eos>"]
    assert "sleeps" not in carved.side.vocab  # only in the held-out end
    short = prepare(lm_recipe(tmp_path, {"max_train_tokens": 5, "max_eval_tokens": 3}))
    assert [len(short.splits[k]) for k in ("train", "valid")] == [5, 3]


NO_PATHS = {"train_path": None, "valid_path": None}


@pytest.mark.parametrize(
    ("data", "error", "message"),
    [
        ({"train_path": None}, ConfigError, "train_path"),
        ({"valid_path": None}, ConfigError, "no validation text"),
        ({"valid_fraction": 0.1}, ConfigError, "valid_fraction needs"),
        ({"train_path": "/nonexistent/text.txt"}, DataError, "/nonexistent/text.txt"),
        ({"valid_path": None, "valid_fraction": 0.01}, DataError, "valid_fraction"),
        ({"corpus": "multi30k", "valid_split": "val"} | NO_PATHS, ConfigError, "'parallel' corpus"),
        ({"corpus": "timemachine", "valid_split": "valid"} | NO_PATHS, DataError, "no split"),
        ({"corpus": "timemachine"}, ConfigError, "data.train_path is read only with"),
    ],
)
def test_bad_data_settings_name_the_key(tmp_path, data, error, message):
    with pytest.raises(error, match=message):
        prepare(lm_recipe(tmp_path, data))


def test_bad_recipe_values_name_the_key(tmp_path):
    for data, key in [({"bptt": 0}, "data.bptt"), ({"valid_fraction": 1.0}, "data.valid_fraction")]:
        with pytest.raises(ConfigError, match=key):
            lm_recipe(tmp_path, data)
    recipe = recipe_from_dict(
        {"task": "language_model", "data": {"corpus": "files"}, "model": {"kind": "transformer"}}
    )
    with pytest.raises(ConfigError, match="kind = 'rnn_lm'"):
        LanguageModelTask(recipe, None)  # type: ignore[arg-type]
    with pytest.raises(DataError, match="fewer than one batch"):
        recipe = lm_recipe(tmp_path, {"bptt": 20}, train={"batch_size": 8})
        LanguageModelTask(recipe, prepare(recipe))


# -- partitions ------------------------------------------------------------------------------


def test_sequential_rows_continue_from_batch_to_batch():
    stream = torch.arange(103)
    batches = list(sequential_batches(stream, batch_size=4, bptt=5, offset=2))
    assert [b.carry for b in batches] == [False] + [True] * (len(batches) - 1)
    rows = torch.cat([b.inputs for b in batches], dim=1)  # (4, C): each row contiguous
    assert rows.shape == (4, 25)
    assert torch.equal(rows, torch.arange(2, 102).view(4, 25))
    targets = torch.cat([b.targets for b in batches], dim=1)
    assert torch.equal(targets, rows + 1)
    assert [b.inputs.size(1) for b in batches] == [5] * 5


def test_random_partition_covers_the_offsets_as_d2l():
    stream, bptt, rows = torch.arange(200), 5, 3
    offsets = set()
    for seed in range(60):
        batches = list(random_batches(stream, rows, bptt, random.Random(seed)))
        starts = torch.cat([b.inputs[:, 0] for b in batches]).tolist()
        offset = starts[0] % bptt
        offsets.add(offset)
        count = (200 - offset - 1) // bptt
        assert len(batches) == count // rows and all(not b.carry for b in batches)
        assert all(s % bptt == offset for s in starts) and len(set(starts)) == len(starts)
        for b in batches:  # each row is a contiguous piece with its next-token targets
            assert torch.equal(b.inputs, b.inputs[:, :1] + torch.arange(bptt))
            assert torch.equal(b.targets, b.inputs + 1)
    assert offsets == set(range(bptt))
    kept = sorted(
        torch.cat(
            [b.inputs[:, 0] for b in random_batches(stream, 1, bptt, random.Random(0))]
        ).tolist()
    )
    assert kept == list(range(kept[0], kept[0] + bptt * len(kept), bptt))  # every subsequence


def test_sequential_training_carries_the_state_between_batches(tmp_path):
    """The loss of a continuing batch is computed from the state the previous batch left;
    resetting the state there would give another loss (this test would then fail)."""
    recipe = lm_recipe(tmp_path, {"bptt": 4, "partition": "sequential"})
    task = LanguageModelTask(recipe, prepare(recipe))
    model = task.model.eval()
    first, second = list(task.batches(0, 0))[:2]
    assert second.carry
    task.loss(model, first)
    got, n = task.loss(model, second)
    with torch.no_grad():
        _, state = model.run(first.inputs)
        features, _ = model.run(second.inputs, state)
        want = model.nll(features, second.targets).sum()
        fresh = model.nll(model.run(second.inputs)[0], second.targets).sum()
    assert n == second.num_tokens
    torch.testing.assert_close(got, want)
    assert abs(got.item() - fresh.item()) > 1e-4
    random_recipe = lm_recipe(tmp_path, {"bptt": 4, "partition": "random"})
    random_task = LanguageModelTask(random_recipe, prepare(random_recipe))
    random_task.loss(model, first)
    assert random_task.carry is None


def test_the_training_loss_adds_ar_and_tar_once_per_token(tmp_path):
    """With AWD's AR / TAR on, the summed loss is the NLL plus the penalty times the tokens
    (the trainer divides by the tokens, so the penalty enters the mean loss once)."""
    model = {"cell": "lstm", "variational": True, "ar_alpha": 2.0, "tar_beta": 1.0}
    recipe = lm_recipe(tmp_path, {"bptt": 4}, model)
    task = LanguageModelTask(recipe, prepare(recipe))
    lm = task.model.eval()  # no dropout: the penalty is deterministic
    batch = next(iter(task.batches(0, 0)))
    got, n = task.loss(lm, batch)
    with torch.no_grad():
        features, _, penalty = lm.run_with_penalty(batch.inputs)
        nll = lm.nll(features, batch.targets).sum()
    assert penalty.item() > 0.0 and n == batch.num_tokens
    torch.testing.assert_close(got, nll + penalty * n)


# -- training end to end ---------------------------------------------------------------------

OVERFIT = {"max_steps": 150, "valid_every": 150, "lr": 0.03, "schedule": "constant"}


def test_a_tiny_lm_overfits_a_short_text(tmp_path):
    recipe = lm_recipe(
        tmp_path,
        {"tokenizer": "char", "line_break": "space", "bptt": 8, "eval_batch_size": 1},
        {"hidden_size": 32, "dropout": 0.0, "tie_embeddings": False},
        {**OVERFIT, "weight_decay": 0.0, "warmup_steps": 0},
    )
    summary = train_recipe(recipe, tmp_path / "run")
    assert summary["valid"]["ppl"] < 1.5  # the vocabulary has 25 tokens: chance is 25
    assert (tmp_path / "run" / "samples.txt").read_text().count("\n") == 3
    scores = load_checkpoint(tmp_path / "run" / "best.pt")
    assert scores["lm"]["vocab"][:4] == ["<pad>", "<unk>", "<bos>", "<eos>"]


def test_resume_continues_exactly_with_the_carried_state(tmp_path):
    settings = {"schedule": "constant", "warmup_steps": 0, "valid_every": 3, "max_steps": 6}
    recipe = lm_recipe(tmp_path, {"bptt": 3}, {"dropout": 0.2}, settings)
    train_recipe(recipe, tmp_path / "straight")
    half = lm_recipe(tmp_path, {"bptt": 3}, {"dropout": 0.2}, {**settings, "max_steps": 3})
    train_recipe(half, tmp_path / "resumed")
    assert load_checkpoint(tmp_path / "resumed" / "last.pt")["task_state"]["carry"] is not None
    train_recipe(recipe, tmp_path / "resumed", resume=True)
    straight = load_checkpoint(tmp_path / "straight" / "last.pt")["model"]
    resumed = load_checkpoint(tmp_path / "resumed" / "last.pt")["model"]
    for key, value in straight.items():
        torch.testing.assert_close(resumed[key], value, atol=1e-6, rtol=0, msg=key)


def test_evaluation_reads_the_stream_left_to_right_with_the_state(tmp_path):
    recipe = lm_recipe(tmp_path, {"bptt": 4, "eval_batch_size": 50})
    task = LanguageModelTask(recipe, prepare(recipe))
    stream = task.data.splits["valid"]
    result = evaluate_stream(task.model, stream, 1, 4)
    assert result["tokens"] == len(stream) - 1
    whole = evaluate_stream(task.model, stream, 1, 10_000)  # one segment: no TBPTT at all
    assert result["loss"] == pytest.approx(whole["loss"], abs=1e-5)
    rows = evaluate_stream(task.model, stream, 50, 4)  # more rows than tokens: capped
    assert rows["tokens"] == len(stream) - 1  # N - 1 rows of one token


@pytest.mark.corpus
def test_wikitext2_streams_match_the_published_counts():
    recipe = load_recipe(REPO / "recipes" / "wikitext2-lstm.toml")
    data = prepare(recipe)
    # one <eos> per line (pytorch/examples); the 36 U+FEFF of the train file are removed
    assert {k: len(v) for k, v in data.splits.items()} == {
        "train": 2_088_628 - 36,
        "valid": 217_646,
        "test": 245_569,
    }
    assert len(data.side.vocab) == 33_278 - 1 - 2 + 7  # no U+FEFF; <eos>/<unk> among 7 specials
