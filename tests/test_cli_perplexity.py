"""`seqlab perplexity`: a language model's perplexity on files or its corpus, with or without a
continuous cache; and a recipe's `data.cache_window`, which adds cache scores to a run."""

from __future__ import annotations

import json

import pytest

from tests.conftest import run_cli
from tests.test_cli_generate import TEXT, _train


@pytest.fixture(scope="module")
def words(tmp_path_factory):
    """A word-level LM whose validation text is its training text; its run asks for a cache."""
    return _train(tmp_path_factory, "cached", {"cache_window": 50})


def perplexity(args, capsys, monkeypatch, stdin: str = "") -> tuple[int, dict | None, str]:
    code, out, err = run_cli(["perplexity", *args], capsys, monkeypatch, stdin)
    return code, json.loads(out) if code == 0 else None, err


def test_a_file_and_the_corpus_split_give_the_runs_own_perplexity(words, capsys, monkeypatch):
    scores = json.loads((words.parent / "lm_scores.json").read_text())
    code, on_file, _ = perplexity([words, words.parent.parent / "text.txt"], capsys, monkeypatch)
    assert code == 0 and on_file["text"].endswith("text.txt")
    assert on_file["ppl"] == pytest.approx(scores["valid"]["ppl"], rel=1e-5)
    assert on_file["tokens"] == scores["valid"]["tokens"]
    code, on_split, _ = perplexity([words, "--split", "valid"], capsys, monkeypatch)
    assert code == 0 and on_split["ppl"] == pytest.approx(on_file["ppl"], rel=1e-6)
    code, on_stdin, _ = perplexity([words, "-"], capsys, monkeypatch, stdin=TEXT * 3)
    assert code == 0 and on_stdin["ppl"] == pytest.approx(on_file["ppl"], rel=1e-6)


def test_the_cache_is_tuned_on_validation_text_and_never_hurts_there(words, capsys, monkeypatch):
    code, tuned, _ = perplexity([words, "--split", "valid", "--tune-cache"], capsys, monkeypatch)
    assert code == 0
    assert tuned["ppl"] <= tuned["model_ppl"] * (1 + 1e-9)  # lambda 0 is on the grid
    assert set(tuned["cache"]) == {"window", "theta", "lambda"}
    # the run's recipe set data.cache_window = 50, the CLI's default window here too: the run's
    # scores carry the same tuned cache
    scores = json.loads((words.parent / "lm_scores.json").read_text())
    assert scores["valid_cache"]["cache"] == tuned["cache"]
    assert tuned["cache"]["window"] == 50
    assert scores["valid_cache"]["model_ppl"] == pytest.approx(scores["valid"]["ppl"], rel=1e-5)
    # given settings are used as given
    args = [words, "--split", "valid", "--cache-lambda", "0.2", "--cache-theta", "0.5"]
    code, fixed, _ = perplexity(args, capsys, monkeypatch)
    assert code == 0 and fixed["cache"] == {"window": 50, "theta": 0.5, "lambda": 0.2}
    assert fixed["ppl"] != pytest.approx(fixed["model_ppl"])


@pytest.mark.parametrize(
    "extra, message",
    [
        (["missing.txt"], "missing.txt"),
        (["--split", "test"], "no test text"),
        (["--split", "valid", "--cache-lambda", "1.0"], "lambda"),
        (["--split", "valid", "--tune-cache", "--cache-lambda", "0.1"], "not both"),
        (["--batch-size", "0"], "--batch-size"),
        (["-"], "<stdin>:2: invalid UTF-8"),
        (["--split", "valid", "--cache-theta", "0.5"], "needs --cache-lambda"),
        (["--split", "valid", "--tune-cache", "--cache-window", "0"], "window"),
    ],
)
def test_bad_requests_are_one_line_errors(words, extra, message, capsys, monkeypatch):
    code, _, err = perplexity([words, *extra], capsys, monkeypatch, stdin="ok\n\udcff\n")
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("seqlab: error:") and message in err, err


def test_options_may_come_before_or_after_the_files(words, capsys, monkeypatch):
    text = words.parent.parent / "text.txt"
    _, after, _ = perplexity([words, text, "--batch-size", "2"], capsys, monkeypatch)
    code, before, err = perplexity([words, "--batch-size", "2", text], capsys, monkeypatch)
    assert code == 0 and before == after, err
    code, before, err = perplexity([words, "--batch-size", "2", text, text], capsys, monkeypatch)
    assert code == 0 and before["text"] == f"{text} {text}", err
    code, mixed, _ = perplexity([words, text, "--batch-size", "2", text], capsys, monkeypatch)
    assert code == 0 and mixed == before
