"""corpus_scores: parity with the sacrebleu command line, multiple references, input errors."""

from __future__ import annotations

import gzip
import random
import subprocess
import sys
from pathlib import Path

import pytest

from seqlab.errors import DataError
from seqlab.evaluation.bleu import corpus_scores
from tests.conftest import corpus_mirror

SACREBLEU = Path(sys.executable).parent / "sacrebleu"


def perturb(line: str, rng: random.Random) -> str:
    """A plausible system output: drop, swap, duplicate words, change case."""
    words = line.split()
    op = rng.randrange(5)
    if op == 0 and len(words) > 2:
        del words[rng.randrange(len(words))]
    elif op == 1 and len(words) > 2:
        i = rng.randrange(len(words) - 1)
        words[i], words[i + 1] = words[i + 1], words[i]
    elif op == 2:
        words.insert(rng.randrange(len(words) + 1), rng.choice(words or ["a"]))
    elif op == 3:
        words = [w.upper() if rng.random() < 0.3 else w for w in words]
    return " ".join(words)


@pytest.fixture(scope="module")
def multi30k():
    """40 Multi30k test references and perturbed hypotheses (plus a second reference stream)."""
    mirror = corpus_mirror()
    path = mirror / "multi30k" / "test_2016_flickr.en.gz"
    with gzip.open(path, "rt", encoding="utf-8") as f:
        refs = [next(f).strip() for _ in range(40)]
    rng = random.Random(0)
    hyps = [perturb(r, rng) for r in refs]
    refs2 = [perturb(r, rng) for r in refs]
    return hyps, refs, refs2


def cli(tmp_path: Path, hyps, *ref_streams, args=()) -> float:
    hyp_file = tmp_path / "hyp.txt"
    hyp_file.write_text("\n".join(hyps) + "\n", encoding="utf-8")
    ref_files = []
    for k, refs in enumerate(ref_streams):
        ref_files.append(tmp_path / f"ref{k}.txt")
        ref_files[-1].write_text("\n".join(refs) + "\n", encoding="utf-8")
    out = subprocess.run(
        [str(SACREBLEU), *map(str, ref_files), "-i", str(hyp_file), "-b", "-w", "4", *args],
        check=True,
        capture_output=True,
        text=True,
    )
    return float(out.stdout.strip())


@pytest.mark.corpus
def test_bleu_chrf_and_lowercased_bleu_match_the_cli(multi30k, tmp_path):
    hyps, refs, _ = multi30k
    scores = corpus_scores(hyps, refs, tok_lc=True)
    assert 10 < scores["bleu"]["score"] < 95  # the perturbation leaves a non-trivial score
    assert scores["bleu"]["score"] == pytest.approx(cli(tmp_path, hyps, refs), abs=1e-4)
    assert scores["chrf"]["score"] == pytest.approx(
        cli(tmp_path, hyps, refs, args=["-m", "chrf"]), abs=1e-4
    )
    lowercased = cli(tmp_path, hyps, refs, args=["-lc"])
    assert scores["bleu_tok_lc"]["score"] == pytest.approx(lowercased, abs=1e-4)
    assert scores["bleu_tok_lc"]["score"] > scores["bleu"]["score"]  # upper-cased words now match


@pytest.mark.corpus
def test_two_reference_streams_match_the_cli(multi30k, tmp_path):
    hyps, refs, refs2 = multi30k
    scores = corpus_scores(hyps, [refs, refs2])
    assert scores["bleu"]["score"] == pytest.approx(cli(tmp_path, hyps, refs, refs2), abs=1e-4)
    assert scores["bleu"]["signature"].startswith("nrefs:2|")
    assert scores["bleu"]["score"] >= corpus_scores(hyps, refs)["bleu"]["score"]


def test_result_structure_and_signatures():
    hyps = ["The cat sat on the mat .", "A dog runs ."]
    refs = ["the cat sat on the mat .", "A dog is running ."]
    scores = corpus_scores(hyps, refs)
    assert set(scores) == {"bleu", "chrf"}
    assert scores["bleu"]["signature"].startswith("nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp")
    assert scores["bleu"]["verbose"].startswith("BLEU = ")
    assert "nc:6" in scores["chrf"]["signature"]
    tok_lc = corpus_scores(hyps, refs, tok_lc=True)["bleu_tok_lc"]
    assert "case:lc" in tok_lc["signature"] and "tok:13a" in tok_lc["signature"]
    assert "lowercase" in tok_lc["note"]
    assert corpus_scores(refs, refs)["bleu"]["score"] == pytest.approx(100.0)


def test_length_mismatch_names_both_counts():
    with pytest.raises(DataError, match="2 hypotheses but 3 references"):
        corpus_scores(["a", "b"], ["a", "b", "c"])
    with pytest.raises(DataError, match="2 hypotheses but 1 references in reference stream 2"):
        corpus_scores(["a", "b"], [["a", "b"], ["a"]])
    with pytest.raises(DataError, match="no hypotheses"):
        corpus_scores([], [])
