"""`seqlab generate`: one line per sample on stdout, reproducible with a seed, one-line errors."""

from __future__ import annotations

import pytest
import torch

from seqlab.config import recipe_from_dict
from seqlab.run import train_recipe
from tests.conftest import run_cli

TEXT = "the cat sat on the mat .\nthe dog sat on the log .\n\nthe cat saw the dog .\n"


def _train(tmp_path_factory, name: str, data: dict):
    folder = tmp_path_factory.mktemp(name)
    (folder / "text.txt").write_text(TEXT * 3)
    path = str(folder / "text.txt")
    recipe = recipe_from_dict(
        {
            "name": name,
            "task": "language_model",
            "data": {"corpus": "files", "train_path": path, "valid_path": path, "bptt": 6} | data,
            "model": {"kind": "rnn_lm", "cell": "lstm", "embed_dim": 16, "hidden_size": 16},
            "train": {
                "batch_size": 2,
                "max_steps": 40,
                "valid_every": 40,
                "lr": 0.02,
                "schedule": "constant",
                "warmup_steps": 0,
                "label_smoothing": 0.0,
                "device": "cpu",
            },
        },
        f"{name}.toml",
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train_recipe(recipe, folder / "run")
    finally:
        torch.set_num_threads(threads)
    return folder / "run" / "best.pt"


@pytest.fixture(scope="module")
def words(tmp_path_factory):
    """A word-level LM with <eos> at line ends (can start from nothing)."""
    return _train(tmp_path_factory, "words", {})


@pytest.fixture(scope="module")
def chars(tmp_path_factory):
    """A character-level LM on running text (needs a prefix)."""
    return _train(tmp_path_factory, "chars", {"tokenizer": "char", "line_break": "space"})


def generate(args, capsys, monkeypatch) -> tuple[int, list[str], str]:
    code, out, err = run_cli(["generate", *args], capsys, monkeypatch)
    return code, out.splitlines(), err


def test_samples_are_reproducible_with_a_seed(words, capsys, monkeypatch):
    args = [words, "--num", "4", "--seed", "7", "--max-len", "12"]
    code, first, _ = generate(args, capsys, monkeypatch)
    assert code == 0 and len(first) == 4 and all(line.strip() for line in first)
    assert generate(args, capsys, monkeypatch)[1] == first
    others = [generate([*args[:4], str(s), *args[5:]], capsys, monkeypatch)[1] for s in (8, 9)]
    assert any(o != first for o in others)
    assert all(len(line.split()) <= 12 for line in first)


def test_prefix_greedy_and_top_k_one_agree(chars, capsys, monkeypatch):
    base = [chars, "--prefix", "the c", "--max-len", "15"]
    code, [greedy], _ = generate([*base, "--temperature", "0"], capsys, monkeypatch)
    assert code == 0 and greedy.startswith("the c") and len(greedy) <= len("the c") + 15
    _, top1, _ = generate([*base, "--top-k", "1", "--num", "3"], capsys, monkeypatch)
    assert top1 == [greedy] * 3
    _, [nucleus], _ = generate([*base, "--top-p", "0.0001", "--seed", "1"], capsys, monkeypatch)
    assert nucleus == greedy


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--max-len", "0"], "--max-len"),
        (["--num", "0"], "--num"),
        (["--top-p", "0"], "--top-p"),
        (["--top-k", "-1"], "--top-k"),
        (["--temperature", "-1"], "--temperature"),
    ],
)
def test_bad_settings_are_one_line_errors(words, extra, message, capsys, monkeypatch):
    code, out, err = generate([words, *extra], capsys, monkeypatch)
    assert code == 2 and out == []
    assert err.count("\n") == 1 and err.startswith("seqlab: error:") and message in err


def test_wrong_checkpoints_and_missing_prefix_are_one_line_errors(
    chars, reverse_run_dir, tmp_path, capsys, monkeypatch
):
    cases = [
        ([chars], "give a --prefix"),
        ([reverse_run_dir / "best.pt"], "a 'translation' checkpoint, not a 'language_model' one"),
        ([tmp_path / "missing.pt"], "missing.pt"),
    ]
    for args, message in cases:
        code, out, err = generate(args, capsys, monkeypatch)
        assert code == 2 and out == [], args
        assert err.count("\n") == 1 and message in err, err
