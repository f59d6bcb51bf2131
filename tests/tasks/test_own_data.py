"""Translation on the user's own data, end to end: files written by the test (prefix, TSV, JSONL,
gzip, a saved Hugging Face dataset) -> `seqlab train recipes/own-data-transformer.toml` -> `seqlab
translate`; held-out validation; filters that cut; the cache; hostile files through the CLI."""

from __future__ import annotations

import gzip
import json
import random
import re
from pathlib import Path

import pytest

from seqlab.config import load_recipe
from seqlab.data.vocab import Side
from seqlab.errors import ConfigError, DataError
from seqlab.tasks.translation_data import prepare
from tests.conftest import REPO, run_cli

RECIPE = REPO / "recipes" / "own-data-transformer.toml"
WORDS_DE = ["haus", "hund", "katze", "baum", "auto", "kind", "frau", "mann", "ball", "buch"]
WORDS_EN = ["house", "dog", "cat", "tree", "car", "child", "woman", "man", "ball", "book"]
TINY = [
    "data.tokenizer='word'",
    "data.min_freq=1",
    "model.d_model=16",
    "model.num_heads=2",
    "model.d_ff=32",
    "model.num_encoder_layers=1",
    "model.num_decoder_layers=1",
    "train.max_steps=3",
    "train.valid_every=3",
    "train.warmup_steps=1",
    "train.max_tokens=200",
    "train.valid_max_sentences=5",
    "train.device='cpu'",
    "decode.beam_size=2",
]


def make_pairs(n: int, seed: int) -> list[tuple[str, str]]:
    """Word-for-word "translations" of random 2-6 word sentences."""
    rng = random.Random(seed)
    pairs = []
    for _ in range(n):
        idx = [rng.randrange(len(WORDS_DE)) for _ in range(rng.randint(2, 6))]
        pairs.append((" ".join(WORDS_DE[i] for i in idx), " ".join(WORDS_EN[i] for i in idx)))
    return pairs


def write(path, text: str) -> None:
    data = text.encode("utf-8")
    path.write_bytes(gzip.compress(data) if path.name.endswith(".gz") else data)


def write_split(folder, name: str, pairs, kind: str) -> str:
    """`pairs` as the user would store them; returns the path to give as data.<split>_path."""
    if kind == "prefix":
        for lang, side in (("de", 0), ("en", 1)):
            write(folder / f"{name}.{lang}", "".join(p[side] + "\n" for p in pairs))
        return str(folder / name)
    if kind.startswith("tsv"):
        path = folder / f"{name}.{kind}"
        write(path, "".join(f"{s}\t{t}\n" for s, t in pairs))
        return str(path)
    path = folder / f"{name}.{kind}"
    write(path, "".join(json.dumps({"translation": {"de": s, "en": t}}) + "\n" for s, t in pairs))
    return str(path)


def save_hf(folder, splits: dict[str, list[tuple[str, str]]]) -> str:
    import datasets

    tables = {
        name: datasets.Dataset.from_list([{"translation": {"de": s, "en": t}} for s, t in pairs])
        for name, pairs in splits.items()
    }
    datasets.DatasetDict(tables).save_to_disk(str(folder / "hf"))
    return str(folder / "hf")


def train_and_translate(data_overrides, run_dir, capsys, monkeypatch, words=True) -> dict:
    """Train 3 steps, then translate three lines (one empty); with `words`, the output is
    made of target-side words only (a word vocabulary cannot produce anything else)."""
    args = ["train", "--run-dir", run_dir, RECIPE, *TINY, *data_overrides]
    code, _, err = run_cli(args, capsys, monkeypatch)
    assert code == 0, err
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["step"] == 3
    code, out, err = run_cli(
        ["translate", run_dir / "best.pt"], capsys, monkeypatch, "haus hund\n\nkatze baum auto\n"
    )
    assert code == 0, err
    lines = out.split("\n")
    assert len(lines) == 4 and lines[1] == ""  # one line out per line in
    if words:
        assert all(w in WORDS_EN for line in (lines[0], lines[2]) for w in line.split())
    return summary


@pytest.mark.parametrize("kind", ["prefix", "tsv", "jsonl", "tsv.gz", "jsonl.gz"])
def test_train_and_translate_on_files(kind, tmp_path, capsys, monkeypatch):
    train = write_split(tmp_path, "train", make_pairs(60, 1), kind)
    valid = write_split(tmp_path, "valid", make_pairs(8, 2), kind)
    test = write_split(tmp_path, "test", make_pairs(6, 3), kind)
    overrides = [f"data.train_path='{train}'", f"data.valid_path='{valid}'"]
    summary = train_and_translate(
        [*overrides, f"data.test_path='{test}'"], tmp_path / "run", capsys, monkeypatch
    )
    assert summary["test"]["sentences"] == 6


def test_train_and_translate_on_a_saved_hf_dataset(tmp_path, capsys, monkeypatch):
    folder = save_hf(tmp_path, {"train": make_pairs(60, 1), "validation": make_pairs(8, 2)})
    overrides = ["data.corpus='hf'", f"data.hf_path='{folder}'", "data.valid_split='validation'"]
    overrides += ["data.train_path=none"]  # the template's, which a named source would ignore
    overrides.append("data.test_split=''")  # this dataset has no test split
    train_and_translate(overrides, tmp_path / "run", capsys, monkeypatch)


def test_sentencepiece_on_a_prefix_without_validation_holds_pairs_out(
    tmp_path, capsys, monkeypatch
):
    """The recipe's own tokenizer (joint SentencePiece); no valid_path: valid_size pairs are held
    out of training."""
    train = write_split(tmp_path, "train", make_pairs(80, 1), "prefix")
    overrides = [
        "data.tokenizer='sentencepiece'",
        "data.sp_vocab_size=40",
        f"data.train_path='{train}'",
        "data.valid_size=10",
    ]
    train_and_translate(overrides, tmp_path / "run", capsys, monkeypatch, words=False)
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert any("valid_bleu" in record for record in log)


def held_out(tmp_path, n: int = 80, **settings):
    raw = {
        "task": "translation",
        "data": {
            "corpus": "files",
            "train_path": write_split(tmp_path, "t", make_pairs(n, 1), "tsv"),
        }
        | settings,
        "model": {"kind": "transformer", "d_model": 16, "num_heads": 2, "d_ff": 32},
    }
    from seqlab.config import recipe_from_dict

    return prepare(recipe_from_dict(raw), cache=tmp_path / "cache")


def test_held_out_splits_are_seeded_disjoint_and_never_trained_on(tmp_path):
    data = held_out(tmp_path, valid_size=10, test_size=5, min_freq=1)
    train, valid, test = (data.splits[k] for k in ("train", "valid", "test"))
    assert (len(train), len(valid), len(test)) == (65, 10, 5)
    rows = [(s, t) for table in data.splits.values() for s, t in zip(table["src"], table["tgt"])]
    assert sorted(rows) == sorted(make_pairs(80, 1))  # every pair exactly once
    again = held_out(tmp_path, valid_size=10, test_size=5, min_freq=1)
    assert again.splits["valid"]["src"] == valid["src"]
    assert again.splits["test"]["src"] == test["src"]
    other = held_out(tmp_path, valid_size=12, test_size=5, min_freq=1)  # the test rows move
    (tmp_path / "fresh").mkdir()
    fresh = held_out(tmp_path / "fresh", valid_size=12, test_size=5, min_freq=1)
    assert other.splits["test"]["src"] == fresh.splits["test"]["src"]  # not a stale cache


def test_too_large_a_hold_out_names_the_keys(tmp_path):
    with pytest.raises(ConfigError, match=r"data.valid_size = 60 \+ data.test_size = 20"):
        held_out(tmp_path, valid_size=60, test_size=20)


def files_recipe(tmp_path, train: str, **data):
    from seqlab.config import recipe_from_dict

    raw = {
        "task": "translation",
        "data": {"corpus": "files", "train_path": train, "min_freq": 1} | data,
        "model": {"kind": "transformer", "d_model": 16, "num_heads": 2, "d_ff": 32},
    }
    return recipe_from_dict(raw)


def test_every_filter_cuts_and_the_summary_counts_each(tmp_path):
    good = make_pairs(20, 1)
    train = [
        *good,
        ("haus", ""),  # empty side
        ("", "house"),
        ("   ", "dog"),  # blanks make no tokens: empty too
        (" ".join(["haus"] * 12), " ".join(["house"] * 12)),  # longer than max_len
        ("haus hund katze baum auto", "house"),  # ratio 5 > 3
    ]
    valid = [*make_pairs(4, 2), ("katze", "")]
    recipe = files_recipe(
        tmp_path,
        write_split(tmp_path, "train", train, "tsv"),
        valid_path=write_split(tmp_path, "valid", valid, "tsv"),
        max_len=10,
        max_len_ratio=3.0,
    )
    data = prepare(recipe, cache=tmp_path / "cache")
    assert data.report.kept == 20
    assert data.report.dropped == {
        "empty side": 3,
        "longer than 10 tokens": 1,
        "length ratio above 3.0": 1,
    }
    assert data.reports["valid"].kept == 4 and data.reports["valid"].dropped == {"empty side": 1}
    summary = data.summary()
    assert "train pairs: kept 20, dropped 5 (3 empty side, 1 longer than 10 tokens" in summary
    assert "valid pairs: kept 4, dropped 1 (1 empty side)" in summary
    assert sorted(zip(data.splits["train"]["src"], data.splits["train"]["tgt"])) == sorted(good)


def test_a_corpus_that_every_filter_empties_is_an_error_not_a_crash(tmp_path, capsys, monkeypatch):
    train = write_split(tmp_path, "train", [("haus", ""), ("a b c d e f", "x")], "tsv")
    valid = write_split(tmp_path, "valid", make_pairs(3, 2), "tsv")
    args = ["prepare", RECIPE, f"data.train_path='{train}'", f"data.valid_path='{valid}'"]
    code, _, err = run_cli([*args, "data.tokenizer='word'"], capsys, monkeypatch)
    assert code == 2 and "Traceback" not in err
    assert "no train pair survived filtering (kept 0, dropped 2 (1 empty side" in err


def test_a_second_prepare_is_served_from_the_cache_until_a_file_changes(tmp_path, monkeypatch):
    import seqlab.tasks.translation_data as stage

    train = write_split(tmp_path, "train", make_pairs(40, 1), "prefix")
    recipe = files_recipe(tmp_path, train, valid_size=5)
    first = prepare(recipe, cache=tmp_path / "cache")

    def no_reading(*args, **kwargs):
        raise DataError("read the files again")
        yield

    monkeypatch.setattr(stage, "read_pairs", no_reading)
    again = prepare(recipe, cache=tmp_path / "cache")
    assert again.splits["train"]._fingerprint == first.splits["train"]._fingerprint
    assert again.splits["valid"]["src"] == first.splits["valid"]["src"]
    write_split(tmp_path, "train", make_pairs(40, 7), "prefix")  # same path, new text
    with pytest.raises(DataError, match="read the files again"):
        prepare(recipe, cache=tmp_path / "cache")


def test_an_interrupted_prepare_leaves_nothing_a_rerun_trusts(tmp_path, monkeypatch):
    """Ctrl-C while the files are read, then while the vocabulary is saved: the rerun reads and
    builds everything again and gets every pair."""
    import seqlab.tasks.translation_data as stage
    from seqlab.data.user_files import read_pairs

    pairs = make_pairs(40, 1)
    recipe = files_recipe(tmp_path, write_split(tmp_path, "train", pairs, "tsv"), valid_size=5)

    def interrupted(*args, **kwargs):
        for number, row in enumerate(read_pairs(*args, **kwargs)):
            if number == 20:
                raise KeyboardInterrupt
            yield row

    monkeypatch.setattr(stage, "read_pairs", interrupted)
    with pytest.raises(KeyboardInterrupt):
        prepare(recipe, cache=tmp_path / "cache")
    monkeypatch.setattr(stage, "read_pairs", read_pairs)

    def interrupted_save(self, folder, name):
        (Path(folder) / f"{name}.tokenizer.json").write_text("{")
        raise KeyboardInterrupt

    monkeypatch.setattr(Side, "save", interrupted_save)
    with pytest.raises(KeyboardInterrupt):
        prepare(recipe, cache=tmp_path / "cache")
    assert not any(p.name.endswith(".tokenizer.json") for p in (tmp_path / "cache").rglob("*"))
    monkeypatch.undo()
    data = prepare(recipe, cache=tmp_path / "cache")
    assert len(data.splits["train"]) + len(data.splits["valid"]) == 40


@pytest.mark.parametrize(
    ("setup", "expected"),
    [
        ("short", r"train\.de has 40 lines, .*train\.en has 39"),
        ("utf8", r"train\.en:3: invalid UTF-8"),
        ("missing", r"train\.en: no such file"),
        ("empty", r"empty corpus: .*train\.de and .*train\.en have no lines"),
    ],
)
def test_hostile_files_are_one_line_errors_from_the_cli(
    setup, expected, tmp_path, capsys, monkeypatch
):
    train = write_split(tmp_path, "train", [] if setup == "empty" else make_pairs(40, 1), "prefix")
    english = tmp_path / "train.en"
    if setup == "short":
        english.write_text("".join(t + "\n" for _, t in make_pairs(39, 1)))
    elif setup == "utf8":
        lines = english.read_bytes().split(b"\n")
        lines[2] = b"\xc3(" + lines[2]  # line 3: a lead byte without its continuation
        english.write_bytes(b"\n".join(lines))
    elif setup == "missing":
        english.unlink()
    code, out, err = run_cli(
        ["prepare", RECIPE, f"data.train_path='{train}'", "data.valid_size=5"], capsys, monkeypatch
    )
    assert code == 2 and out == "" and "Traceback" not in err
    assert re.search(expected, err), err
    assert len(err.strip().splitlines()) == 1
    if setup == "short":  # `train` says the same, and leaves no empty run folder behind
        run_dir = tmp_path / "run"
        args = ["train", RECIPE, f"data.train_path='{train}'", "--run-dir", str(run_dir)]
        code, _, err = run_cli(args, capsys, monkeypatch)
        assert code == 2 and re.search(expected, err) and not run_dir.exists()


def test_sentencepiece_ids_encoded_a_batch_at_a_time_equal_one_at_a_time(tmp_path):
    train = write_split(tmp_path, "train", make_pairs(60, 1), "tsv")
    recipe = files_recipe(
        tmp_path, train, valid_size=5, tokenizer="sentencepiece", joint_vocab=True,
        sp_vocab_size=40, lowercase=True,
    )  # fmt: skip
    data = prepare(recipe, cache=tmp_path / "cache")
    side, table = data.src, data.splits["train"]
    for column in ("src", "tgt"):
        expected = [side.vocab.encode(side.tokenizer.tokenize(t.upper())) for t in table[column]]
        assert table[f"{column}_ids"] == expected


def test_the_walk_through_commands_parse():
    """docs/own-data.md's `seqlab` lines are accepted by the CLI parser and name real recipes."""
    from seqlab.cli import build_parser
    from tests.test_readme import seqlab_commands

    commands = seqlab_commands((REPO / "docs" / "own-data.md").read_text(encoding="utf-8"))
    assert len(commands) >= 3  # prepare, train, evaluate (translate reads a pipe)
    for args in commands:
        parsed = build_parser().parse_args(args)
        recipe = getattr(parsed, "recipe", None)
        if recipe is not None:
            load_recipe(REPO / recipe, getattr(parsed, "overrides", []))


def test_a_saved_single_dataset_is_the_training_split(tmp_path):
    import datasets

    from seqlab.config import recipe_from_dict

    records = [{"source": s, "target": t} for s, t in make_pairs(40, 1)]
    datasets.Dataset.from_list(records).save_to_disk(str(tmp_path / "one"))
    raw = {
        "task": "translation",
        "data": {
            "corpus": "hf",
            "hf_path": str(tmp_path / "one"),
            "src_field": "source",
            "tgt_field": "target",
            "min_freq": 1,
            "test_split": "",
        },
        "model": {"kind": "transformer", "d_model": 16, "num_heads": 2, "d_ff": 32},
    }
    with pytest.raises(DataError, match="one dataset, not a DatasetDict with a 'val' split"):
        prepare(recipe_from_dict(raw), cache=tmp_path / "cache")
    raw["data"]["valid_size"] = 4
    data = prepare(recipe_from_dict(raw), cache=tmp_path / "cache")
    assert (len(data.splits["train"]), len(data.splits["valid"])) == (36, 4)
    assert "test" not in data.splits


@pytest.mark.slow
@pytest.mark.corpus
def test_the_tatoeba_recipe_holds_valid_and_test_out_of_its_one_split():
    """recipes/tatoeba-fra-eng-gru-attention.toml on the real corpus (about 20 s)."""
    data = prepare(load_recipe(REPO / "recipes" / "tatoeba-fra-eng-gru-attention.toml"))
    sizes = {name: len(table) for name, table in data.splits.items()}
    assert (sizes["valid"], sizes["test"]) == (1000, 5000)
    assert sizes["train"] + sum(data.report.dropped.values()) == 167_130 - 6000
    assert data.splits["test"][0]["src"] and data.src.vocab is not data.tgt.vocab


def prepare_with_size_limit(args, env, limit: int | None):
    """`python -m seqlab ARGS` with the file-size limit at `limit` bytes (None: unlimited)."""
    import resource
    import subprocess
    import sys

    def set_limit():
        if limit is not None:  # the child writes short (EFBIG): Python ignores SIGXFSZ
            resource.setrlimit(
                resource.RLIMIT_FSIZE, (limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1])
            )

    return subprocess.run(
        [sys.executable, "-m", "seqlab", *map(str, args)],
        cwd=REPO, env=env, capture_output=True, text=True, preexec_fn=set_limit, timeout=300,
    )  # fmt: skip


def test_a_file_size_limit_in_any_cache_writer_names_the_path_and_a_rerun_completes(tmp_path):
    """A full disk or file-size limit while prepare writes the text table, then the id table:
    one line naming what could not be written and why, no traceback, nothing a rerun trusts."""
    import os

    train = write_split(tmp_path, "train", make_pairs(3000, 1), "tsv")
    args = ["prepare", RECIPE, f"data.train_path='{train}'", "data.valid_size=50", *TINY[:2]]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SEQLAB_CACHE": str(tmp_path / "sized")}
    assert prepare_with_size_limit(args, env, None).returncode == 0
    largest = lambda folder: max(p.stat().st_size for p in folder.rglob("*.arrow"))  # noqa: E731
    text_table = largest(tmp_path / "sized" / "datasets" / "generator")
    id_table = largest(tmp_path / "sized" / "datasets" / "encoded")
    assert id_table > text_table  # the ids beside the text

    env["SEQLAB_CACHE"] = str(tmp_path / "cache")
    cases = [(text_table // 2, "datasets: could not write a table"),
             ((text_table + id_table) // 2, "encoded/")]  # fmt: skip
    for limit, where in cases:
        run = prepare_with_size_limit(args, env, limit)
        assert run.returncode == 2, run.stderr
        assert where in run.stderr and "exceeds the file-size limit" in run.stderr, run.stderr
        assert "Traceback" not in run.stderr and len(run.stderr.strip().splitlines()) == 1
    rerun = prepare_with_size_limit(args, env, None)
    assert rerun.returncode == 0, rerun.stderr
    assert "train: 2950 pairs" in rerun.stdout + rerun.stderr
