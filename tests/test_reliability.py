"""What a careful user tries: full disks, killed runs, hostile recipe values and flags. Each ends in
one clear line (exit 2) that names the file, key or flag, and loses nothing."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
import torch

from seqlab.config import load_recipe
from seqlab.errors import ConfigError
from tests.conftest import REPO, TINY_REVERSE, run_cli

RECIPE = REPO / "recipes" / "reverse.toml"

# Run `seqlab train` with a file-size limit: the checkpoint cannot be written whole.
_LIMITED = """
import resource, signal, sys
from seqlab.cli import main
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a short write fails with EFBIG instead
limit = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
sys.exit(main(sys.argv[2:]))
"""


def test_a_checkpoint_that_cannot_be_written_is_one_line_naming_it(tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    overrides = [*TINY_REVERSE, "train.max_steps=2"]
    run_cli(["prepare", RECIPE, *overrides], capsys, monkeypatch)  # the data cache, unlimited
    args = ["train", str(RECIPE), *overrides, "--run-dir", str(run)]
    done = subprocess.run(
        [sys.executable, "-c", _LIMITED, "50000", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert done.returncode == 2, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("seqlab: error: ") and "checkpoint_2.pt: could not be written" in last
    assert "Traceback" not in done.stderr
    assert not list(run.glob(".*.tmp"))  # the half-written temp file is gone


def test_a_fresh_run_starts_a_new_log_and_clears_stale_temp_files(tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    run.mkdir()
    (run / "log.jsonl").write_text('{"step": 99, "loss": 1.0}\n')  # a run killed before saving
    (run / ".checkpoint_7.pt.abc.tmp").write_bytes(b"\0" * 1000)  # a save killed midway
    code, _, err = run_cli(
        ["train", RECIPE, *TINY_REVERSE, "train.max_steps=2", "--run-dir", run],
        capsys,
        monkeypatch,
    )
    assert code == 0, err
    steps = [json.loads(line)["step"] for line in (run / "log.jsonl").read_text().splitlines()]
    assert 99 not in steps and max(steps) == 2
    assert not list(run.glob(".*.tmp"))


@pytest.mark.parametrize(
    "override, named",
    [
        ("train.lr=-0.001", "train.lr"),
        ("train.lr=0", "train.lr"),
        ("train.weight_decay=-1", "train.weight_decay"),
        ("train.clip_norm=-1.0", "train.clip_norm"),
        ("train.warmup_steps=-5", "train.warmup_steps"),
        ("train.batch_size=0", "train.batch_size"),
        ("train.max_tokens=0", "train.max_tokens"),
        ("train.label_smoothing=1.0", "train.label_smoothing"),
        ("train.label_smoothing=-0.1", "train.label_smoothing"),
        ("train.max_epochs=0", "train.max_epochs"),
        ("train.patience=0", "train.patience"),
        ("train.betas=[0.9, 1.5]", "train.betas"),
        ("decode.beam_size=0", "decode.beam_size"),
        ("decode.batch_size=0", "decode.batch_size"),
        ("decode.max_len_a=-1.0", "decode.max_len_a"),
        ("train.lr=inf", "train.lr"),
        ("train.lr=nan", "train.lr"),
        ("decode.length_penalty=nan", "decode.length_penalty"),
        ("model.dropout=inf", "model.dropout"),
        ("data.synthetic_size=0", "data.synthetic_size"),
        ("data.synthetic_symbols=0", "data.synthetic_symbols"),
    ],
)
def test_a_bad_recipe_value_is_refused_when_the_recipe_loads(override, named):
    with pytest.raises(ConfigError, match=re.escape(named)):
        load_recipe(RECIPE, [override])


@pytest.mark.parametrize("unset", ["none", "None", "''"])
def test_an_optional_key_is_unset_by_none_or_an_empty_string(unset):
    """TOML has no null: `data.test_split = "none"` (or "") means no test split."""
    recipe = load_recipe(REPO / "recipes" / "multi30k-gru.toml", [f"data.test_split={unset}"])
    assert recipe.data.test_split is None
    assert load_recipe(RECIPE, ["data.max_len=none"]).data.max_len is None


def test_a_path_key_that_a_named_corpus_ignores_is_refused():
    with pytest.raises(ConfigError, match=r"data\.train_path .*corpus = 'files'"):
        load_recipe(REPO / "recipes" / "wikitext2-lstm.toml", ["data.train_path=my.txt"])


def test_a_missing_device_is_named_as_such(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    code, _, err = run_cli(
        ["train", RECIPE, *TINY_REVERSE, "train.device='cuda'", "--run-dir", tmp_path / "r"],
        capsys,
        monkeypatch,
    )
    assert code == 2 and "train.device = 'cuda', but this machine has no CUDA device" in err
    code, _, err = run_cli(
        ["train", RECIPE, *TINY_REVERSE, "train.device='gpu0'", "--run-dir", tmp_path / "r"],
        capsys,
        monkeypatch,
    )
    assert code == 2 and "train.device = 'gpu0' is not a device" in err


@pytest.mark.parametrize(
    "flags, named",
    [
        (["--beam-size", "0"], "--beam-size"),
        (["--beam-size", "-3"], "--beam-size"),
        (["--nbest", "0"], "--nbest"),
        (["--batch-size", "0"], "--batch-size"),
        (["--batch-size", "-1"], "--batch-size"),
        (["--max-tokens", "0"], "--max-tokens"),
        (["--length-penalty", "nan"], "--length-penalty"),
    ],
)
def test_bad_translate_flags_are_refused_naming_the_flag(
    reverse_run_dir, flags, named, capsys, monkeypatch
):
    code, _, err = run_cli(["translate", reverse_run_dir / "best.pt", *flags], capsys, monkeypatch)
    assert code == 2 and err.startswith(f"seqlab: error: argument {named}: ")
    assert err.count("\n") == 1


@pytest.mark.parametrize("value", ["nan", "inf", "-1"])
def test_bad_temperature_is_refused_naming_the_flag(tmp_path, value, capsys, monkeypatch):
    code, _, err = run_cli(
        ["generate", tmp_path / "x.pt", "--temperature", value], capsys, monkeypatch
    )
    assert code == 2 and err.startswith("seqlab: error: argument --temperature: ")


def test_device_missing_and_foreign_files_are_named(reverse_run_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    best = reverse_run_dir / "best.pt"
    code, _, err = run_cli(["translate", best, "--device", "cuda"], capsys, monkeypatch, "a\n")
    assert code == 2 and "--device = 'cuda', but this machine has no CUDA device" in err
    noise = tmp_path / "noise.pt"
    noise.write_bytes(bytes(range(256)) * 8)
    code, _, err = run_cli(["translate", noise], capsys, monkeypatch, "a\n")
    assert code == 2 and "noise.pt: not a seqlab checkpoint" in err
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    code, _, err = run_cli(["translate", empty], capsys, monkeypatch, "a\n")
    assert code == 2 and "empty.pt: empty file" in err


def test_nbest_gives_every_line_k_rows_even_an_empty_one(reverse_run_dir, capsys, monkeypatch):
    best = reverse_run_dir / "best.pt"
    code, out, _ = run_cli(["translate", best, "--nbest", "3"], capsys, monkeypatch, "a b\n\nc\n")
    rows = [line.split("\t") for line in out.splitlines()]
    assert code == 0 and [(r[0], r[1]) for r in rows] == [
        (str(n), str(k)) for n in (1, 2, 3) for k in (1, 2, 3)
    ]
    assert all(r[3] == "" for r in rows if r[0] == "2")


def test_a_pair_longer_than_the_models_positions_is_refused_before_training(
    tmp_path, capsys, monkeypatch
):
    """A Transformer with 12 positions and reversed sequences of up to 12 symbols (+ EOS): one line
    naming the split and model.max_len, before any step (no run folder left half-trained)."""
    args = [
        "train", str(REPO / "recipes" / "multi30k-transformer.toml"), "data.corpus='synthetic'",
        "data.synthetic_size=200", "data.tokenizer='word'", "data.max_len=30", "model.max_len=12",
        "model.d_model=16",
        "model.num_heads=2", "model.d_ff=16", "train.max_steps=2", "train.device='cpu'",
        "--run-dir", str(tmp_path / "run"),
    ]  # fmt: skip
    code, _, err = run_cli(args, capsys, monkeypatch)
    assert code == 2 and "Traceback" not in err, err
    assert re.search(
        r"the train split holds a sentence of \d+ tokens, but model\.max_len = 12", err
    )
    assert not (tmp_path / "run" / "log.jsonl").exists()
