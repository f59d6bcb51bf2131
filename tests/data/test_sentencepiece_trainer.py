"""Tests of seqlab/data/sentencepiece_trainer.py: the child process that trains SentencePiece."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile

import pytest
import sentencepiece as spm

from seqlab.data import sentencepiece_trainer
from seqlab.data.sentencepiece_trainer import TrainerError, train_in_child
from seqlab.data.tokenize import _trainer_options
from seqlab.errors import SeqlabError

TEXTS = ["the cat sat on the mat", "a dog ran after the cat", "two dogs sat on a mat"] * 10


@pytest.fixture
def temp_root(tmp_path, monkeypatch):
    """A fresh folder that `tempfile` puts its temporary directories in."""
    root = tmp_path / "tmp"
    root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(root))
    return root


def test_sentences_stay_one_a_line(tmp_path):
    """A line break inside a sentence becomes a space; other separators pass through as they are."""
    sentences = ["a\nb", "c\rd", "e\r\nf", "g\u2028h\x85i\x0cj\x1ek", "l  m"]
    path = tmp_path / "sentences.txt"
    sentencepiece_trainer._write_sentences(iter(sentences), path)
    assert list(sentencepiece_trainer._read_sentences(str(path))) == [
        "a b",
        "c d",
        "e  f",
        "g\u2028h\x85i\x0cj\x1ek",
        "l  m",
    ]


def test_child_imports_only_sentencepiece_and_stays_quiet(tmp_path):
    """The child imports neither torch, numpy nor datasets, prints nothing on stdout, and (at
    SentencePiece's minloglevel 2) nothing but the import log on stderr."""
    paths = [tmp_path / name for name in ("sentences.txt", "options.json", "model", "error")]
    paths[0].write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    paths[1].write_text(json.dumps(_trainer_options("bpe", 30, 1.0)), encoding="utf-8")
    command = sentencepiece_trainer._command(paths)
    done = subprocess.run(
        [command[0], "-X", "importtime", *command[1:]], capture_output=True, text=True, check=True
    )
    log = [line for line in done.stderr.splitlines() if line.startswith("import time:")]
    imported = {line.split("|")[-1].strip().split(".")[0] for line in log}
    assert {"sentencepiece", "json"} <= imported  # the log is read right
    assert not imported & {"torch", "numpy", "datasets", "pyarrow", "pandas"}
    assert done.stdout == ""
    assert [line for line in done.stderr.splitlines() if line not in log] == []
    assert paths[2].stat().st_size > 0 and not paths[3].exists()


def test_a_trainer_error_comes_back_with_its_message(temp_root):
    with pytest.raises(TrainerError, match=r"Vocabulary size too high \(5000\)"):
        train_in_child(TEXTS, _trainer_options("bpe", 5000, 1.0))
    assert list(temp_root.iterdir()) == []


def test_a_child_that_fails_otherwise_is_an_error_with_its_stderr(temp_root):
    """An exception other than the trainer's RuntimeError (here a TypeError) is no TrainerError."""
    with pytest.raises(SeqlabError, match=r"(?s)exited with status 1.*\nTypeError: ") as caught:
        train_in_child(TEXTS, {**_trainer_options("bpe", 30, 1.0), "sentence_iterator": 1})
    assert not isinstance(caught.value, TrainerError)
    assert list(temp_root.iterdir()) == []


def test_a_killed_child_is_an_error_naming_the_signal_and_the_key(temp_root, monkeypatch):
    suicide = "import os, signal, sys; sys.stderr.write('dying'); os.kill(os.getpid(), 9)"
    monkeypatch.setattr(
        sentencepiece_trainer, "_command", lambda paths: [sys.executable, "-c", suicide]
    )
    with pytest.raises(
        SeqlabError,
        match=r"killed by SIGKILL \(out of memory\? lower data.sp_input_sentence_size\).*\n.*dying",
    ):
        train_in_child(TEXTS, _trainer_options("bpe", 30, 1.0))
    assert list(temp_root.iterdir()) == []


def test_an_interrupt_removes_the_temporary_directory(temp_root, monkeypatch):
    def interrupt(command, **kwargs):
        assert any(temp_root.iterdir())  # the sentences were written there
        raise KeyboardInterrupt

    monkeypatch.setattr(subprocess, "run", interrupt)
    with pytest.raises(KeyboardInterrupt):
        train_in_child(TEXTS, _trainer_options("bpe", 30, 1.0))
    assert list(temp_root.iterdir()) == []


def test_the_model_is_read_back_and_the_temporary_directory_removed(temp_root):
    model = train_in_child(iter(TEXTS), _trainer_options("bpe", 30, 1.0))
    assert spm.SentencePieceProcessor(model_proto=model).get_piece_size() == 30
    assert list(temp_root.iterdir()) == []
