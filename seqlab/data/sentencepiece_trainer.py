"""Train a SentencePiece model in a short-lived child process.

SentencePiece's trainer holds its whole input plus large working tables on the heap (about 440 MB
for a million 20-word sentences), and glibc keeps that heap after training, so a process that
goes on to train a network would carry it to the end. `train_in_child` therefore runs the
trainer in a child Python, whose memory goes back to the OS when it exits; the long-lived
process stays small. The child (`main`, run as `python -m seqlab.data.sentencepiece_trainer`)
imports only the standard library and `sentencepiece`, so it starts in a fraction of a second.

Protocol: `python -m seqlab.data.sentencepiece_trainer SENTENCES OPTIONS MODEL ERROR`, where
SENTENCES is a UTF-8 file of one sentence a line, OPTIONS the trainer's keyword arguments as a
JSON object, MODEL the file the model is written to, and ERROR the file a trainer error's message
is written to (the exit status is then 1). The child prints nothing on stdout.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from seqlab.errors import SeqlabError

_STDERR_TAIL = 2000  # characters of a crashed child's stderr kept in the error message


class TrainerError(RuntimeError):
    """The trainer rejected its input or options; the message is SentencePiece's own."""


def train_in_child(sentences: Iterable[str], options: dict) -> bytes:
    """The serialized model that `SentencePieceTrainer.train(sentence_iterator=sentences,
    model_writer=..., **options)` writes, trained in a child process.

    `sentences` are streamed to a temporary file, one a line (a `\\n` or `\\r` inside a sentence
    becomes a space); the temporary directory is removed however this returns.

    Raises:
        TrainerError: the trainer raised (what it raises in-process, with the same message).
        SeqlabError: the child died otherwise (killed, crashed); says how, with its stderr, so
            the CLI prints one line (an out-of-memory kill names the sample-size key).
    """
    with tempfile.TemporaryDirectory(prefix="seqlab-sentencepiece-") as temp:
        paths = [Path(temp) / name for name in ("sentences.txt", "options.json", "model", "error")]
        sentence_file, options_file, model_file, error_file = paths
        _write_sentences(sentences, sentence_file)
        options_file.write_text(json.dumps(options), encoding="utf-8")
        done = subprocess.run(
            _command(paths),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            check=False,
        )
        if done.returncode == 0:
            return model_file.read_bytes()
        if error_file.exists():
            raise TrainerError(error_file.read_text(encoding="utf-8"))
        raise _crash(done.returncode, done.stderr)


def _command(paths: list[Path]) -> list[str]:
    """The child's command line: this module run by this Python, with the protocol's files."""
    return [sys.executable, "-m", "seqlab.data.sentencepiece_trainer", *map(str, paths)]


def _write_sentences(sentences: Iterable[str], path: Path) -> None:
    """Stream `sentences` to `path` in UTF-8, one a line, inner line breaks turned into spaces."""
    one_line = str.maketrans("\n\r", "  ")
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for sentence in sentences:
            f.write(sentence.translate(one_line))
            f.write("\n")


def _crash(returncode: int, stderr: bytes) -> SeqlabError:
    """The error for a child that exited without a model or a trainer error."""
    if returncode < 0:
        try:
            how = f"was killed by {signal.Signals(-returncode).name}"
        except ValueError:
            how = f"was killed by signal {-returncode}"
        if returncode == -signal.SIGKILL:
            how += " (out of memory? lower data.sp_input_sentence_size)"
    else:
        how = f"exited with status {returncode}"
    tail = stderr.decode("utf-8", errors="replace").strip()[-_STDERR_TAIL:]
    said = f"; its stderr ends with:\n{tail}" if tail else " and wrote nothing on stderr"
    return SeqlabError(f"the SentencePiece trainer process {how}{said}")


def _read_sentences(path: str) -> Iterator[str]:
    """The lines of `path`, newline stripped, read lazily (the trainer keeps its own copy)."""
    with open(path, encoding="utf-8", newline="\n") as f:
        for line in f:
            yield line[:-1] if line.endswith("\n") else line


def main(argv: list[str]) -> int:
    """The child: train on SENTENCES with OPTIONS, write MODEL (status 0) or ERROR (status 1)."""
    import sentencepiece as spm

    sentences, options, model, error = argv
    with open(options, encoding="utf-8") as f:
        kwargs = json.load(f)
    try:
        with open(model, "wb") as writer:
            spm.SentencePieceTrainer.train(
                sentence_iterator=_read_sentences(sentences), model_writer=writer, **kwargs
            )
    except RuntimeError as e:
        Path(model).unlink(missing_ok=True)
        Path(error).write_text(str(e), encoding="utf-8")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
