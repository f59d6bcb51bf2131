"""The `seqlab` command on a tiny synthetic run: file in, file out, errors as one line."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import REPO, run_cli


@pytest.fixture(scope="module")
def checkpoint(reverse_run_dir):
    return reverse_run_dir / "best.pt"


def test_translate_keeps_one_line_per_input_line(checkpoint, capsys, monkeypatch):
    code, out, _ = run_cli(["translate", checkpoint], capsys, monkeypatch, "a b c\n\nd e\n")
    assert code == 0
    lines = out.split("\n")
    assert len(lines) == 4 and lines[3] == ""  # three lines, each ended by a newline
    assert lines[1] == ""  # empty in, empty out


def test_translate_files_and_nbest(checkpoint, tmp_path, capsys, monkeypatch):
    source = tmp_path / "in.txt"
    source.write_text("a b c\nd e f g\n")
    target = tmp_path / "out.txt"
    code, out, _ = run_cli(
        ["translate", checkpoint, "-i", source, "-o", target, "--nbest", "3"], capsys, monkeypatch
    )
    assert code == 0 and out == ""
    rows = [line.split("\t") for line in target.read_text().splitlines()]
    assert [(r[0], r[1]) for r in rows] == [(str(n), str(k)) for n in (1, 2) for k in (1, 2, 3)]
    for n in ("1", "2"):
        scores = [float(r[2]) for r in rows if r[0] == n]
        assert scores == sorted(scores, reverse=True)


def test_beam_one_and_greedy_agree_through_the_cli(checkpoint, capsys, monkeypatch):
    """`translate --beam-size 1` (the CLI's batched greedy search) against `beam_search` with a
    beam of 1, called directly on one unpadded sentence at a time."""
    from seqlab.checkpoint import load_model
    from seqlab.data.batch import collate
    from seqlab.decoding import beam_search

    lines = ["a b c", "d e f g h", "b", "h g f e d c b a"]
    code, out, _ = run_cli(
        ["translate", checkpoint, "--beam-size", "1"], capsys, monkeypatch, "\n".join(lines) + "\n"
    )
    assert code == 0
    loaded = load_model(checkpoint)
    model, recipe, (src, tgt) = loaded.model, loaded.recipe, loaded.sides.values()
    d = recipe.decode
    expected = []
    for line in lines:
        batch = collate([(src.vocab.encode(src.tokenizer.tokenize(line)), [])])
        encoded = model.encode(batch.src, batch.src_mask)
        (best,) = beam_search(
            model.decoder, encoded, beam_size=1, bos_id=tgt.vocab.bos_id, eos_id=tgt.vocab.eos_id,
            max_len_a=d.max_len_a, max_len_b=d.max_len_b, length_penalty=d.length_penalty,
        )[0]  # fmt: skip
        expected.append(tgt.tokenizer.detokenize(tgt.vocab.decode(list(best.tokens))))
    assert out.splitlines() == expected
    assert len(set(expected)) > 1  # the model says different things for different inputs


def test_max_tokens_changes_batches_not_translations(checkpoint, capsys, monkeypatch):
    text = "a b c\nd e f g h\n\nb\nh g f e d c b a\nc c\n"
    _, default, _ = run_cli(["translate", checkpoint], capsys, monkeypatch, text)
    code, budget, _ = run_cli(
        ["translate", checkpoint, "--max-tokens", "6"], capsys, monkeypatch, text
    )
    assert code == 0 and budget == default and len(default.splitlines()) == 6


def test_evaluate_prints_sacrebleu_signatures(checkpoint, tmp_path, capsys, monkeypatch):
    (tmp_path / "src.txt").write_text("a b c\nd e\n")
    (tmp_path / "ref.txt").write_text("c b a\ne d\n")
    code, out, _ = run_cli(
        [
            "evaluate",
            checkpoint,
            "--src",
            tmp_path / "src.txt",
            "--ref",
            tmp_path / "ref.txt",
            "--tok-lc",
        ],
        capsys,
        monkeypatch,
    )
    assert code == 0
    assert [line.split("\t")[0] for line in out.splitlines()] == ["bleu", "chrf", "bleu_tok_lc"]
    args = ["evaluate", checkpoint, "--src", tmp_path / "src.txt", "--ref", tmp_path / "ref.txt"]
    code, plain, _ = run_cli([*args, "--tok-lc", "--no-optimize"], capsys, monkeypatch)
    assert code == 0 and plain == out  # the optimized search changes no score
    assert "nrefs:1" in out


@pytest.mark.parametrize(
    "args, message",
    [
        (["translate", "missing.pt"], "missing.pt"),
        (["train", REPO / "recipes" / "reverse.toml", "train.max_step=3"], "max_steps"),
        (["train", REPO / "recipes" / "reverse.toml", "train.lr='fast'"], "train.lr"),
        (["train", "nope.toml"], "nope.toml"),
    ],
)
def test_bad_input_is_one_line_naming_the_culprit(args, message, capsys, monkeypatch):
    code, _, err = run_cli(args, capsys, monkeypatch)
    assert code == 2
    assert err.startswith("seqlab: error:") and message in err
    assert "Traceback" not in err


def test_corrupt_checkpoint_and_unwritable_output(checkpoint, tmp_path, capsys, monkeypatch):
    broken = tmp_path / "broken.pt"
    broken.write_bytes(checkpoint.read_bytes()[:1000])
    code, _, err = run_cli(["translate", broken], capsys, monkeypatch, "a b\n")
    assert code == 2 and str(broken) in err
    target = tmp_path / "no" / "such" / "dir.txt"
    code, _, err = run_cli(["translate", checkpoint, "-o", target], capsys, monkeypatch, "a b\n")
    assert code == 2 and "dir.txt" in err and not target.exists()
    assert f"no folder {target.parent}" in err and ".tmp" not in err  # the path the user gave
    folder = tmp_path / "a-folder"
    folder.mkdir()
    code, _, err = run_cli(["translate", checkpoint, "-o", folder], capsys, monkeypatch, "a b\n")
    assert code == 2 and f"{folder}: could not be written" in err and ".tmp" not in err
    assert list(tmp_path.glob(".*.tmp")) == []  # no temp file left beside it


def test_evaluate_rejects_mismatched_files(checkpoint, tmp_path, capsys, monkeypatch):
    (tmp_path / "src.txt").write_text("a b\nc d\n")
    (tmp_path / "ref.txt").write_text("b a\n")
    code, _, err = run_cli(
        ["evaluate", checkpoint, "--src", tmp_path / "src.txt", "--ref", tmp_path / "ref.txt"],
        capsys,
        monkeypatch,
    )
    assert code == 2 and "2 source lines" in err


def test_module_entry_point_runs():
    result = subprocess.run(
        [sys.executable, "-m", "seqlab", "corpora", "list", "--names"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "multi30k" in result.stdout.split()


def test_invalid_utf8_on_stdin_is_named_and_nothing_is_written(checkpoint, capsys, monkeypatch):
    code, out, err = run_cli(["translate", checkpoint], capsys, monkeypatch, "a b\n\udcff c\n")
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "<stdin>:2: invalid UTF-8" in err, err
