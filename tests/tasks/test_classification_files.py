"""Classification from the user's TSV / CSV / JSONL files, then `seqlab classify` on the result."""

import csv
import io
import json
import logging
import random
import sys

import pytest
import torch

from seqlab.checkpoint import load_model, save_checkpoint
from seqlab.cli import main
from seqlab.config import load_recipe
from seqlab.data.tokenize import WhitespaceTokenizer
from seqlab.data.vocab import Side, Vocab
from seqlab.errors import ConfigError, DataError
from seqlab.inference import Classifier
from seqlab.models.bert import build_bert, build_bert_classifier
from seqlab.run import train_recipe
from seqlab.tasks.classification import prepare
from tests.tasks.test_masked_lm_files import FILES as MLM_FILES
from tests.tasks.test_masked_lm_files import MODEL, WORDS, mlm_recipe, write_paragraphs

torch.set_num_threads(1)
CUES = {"good": "positive", "bad": "negative", "meh": "neutral"}
TRAIN = """
[train]
max_steps = 50
batch_size = 32
lr = 3e-3
warmup_steps = 5
schedule = "constant"
valid_every = 25
log_every = 25
device = "cpu"
"""


def toy_rows(n: int, seed: int) -> list[tuple[str, str]]:
    """(sentence, label): the label says which cue word the filler words surround."""
    rng, rows = random.Random(seed), []
    for _ in range(n):
        cue = rng.choice(sorted(CUES))
        words = rng.choices(WORDS, k=rng.randrange(2, 7))
        words.insert(rng.randrange(len(words) + 1), cue)
        rows.append((" ".join(words), CUES[cue]))
    return rows


def write_rows(path, rows, *, header=("sentence", "label"), crlf=False, bom=False):
    """`rows` as TSV, CSV or JSONL (by the suffix), with the column names of `header`."""
    text, label = header
    if path.suffix == ".jsonl":
        lines = [json.dumps({text: t, label: y, "id": i}) for i, (t, y) in enumerate(rows)]
    elif path.suffix == ".csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerows([("id", text, label), *((i, t, y) for i, (t, y) in enumerate(rows))])
        lines = out.getvalue().splitlines()
    else:
        lines = [f"{text}\t{label}", *(f"{t}\t{y}" for t, y in rows)]
    newline = "\r\n" if crlf else "\n"
    path.write_bytes((("\ufeff" if bom else "") + newline.join(lines) + newline).encode())
    return path


def cls_recipe(tmp_path, data: str, train: str = TRAIN):
    path = tmp_path / "cls.toml"
    path.write_text(
        f'name = "cls-files"\ntask = "classification"\nseed = 2\n[data]\n{data}\n{MODEL}\n{train}'
    )
    return load_recipe(path)


def files_data(train, valid=None, test=None, extra="") -> str:
    data = f'corpus = "files"\ntrain_path = "{train}"\ntext_column = "sentence"\nmax_len = 32\n'
    data += f'valid_path = "{valid}"\n' if valid else "valid_size = 40\n"
    data += f'test_path = "{test}"\n' if test else ""
    return data + extra


@pytest.mark.parametrize("suffix", [".tsv", ".csv", ".jsonl"])
def test_trains_on_labelled_files_and_classify_labels_each_line(tmp_path, suffix, capsys, caplog):
    train = write_rows(tmp_path / f"train{suffix}", toy_rows(300, 0), crlf=True, bom=True)
    test = write_rows(tmp_path / f"test{suffix}", toy_rows(60, 1))
    summary = train_recipe(cls_recipe(tmp_path, files_data(train, test=test)), tmp_path / "run")
    assert summary["test"]["accuracy"] >= 0.9, summary
    assert json.loads((tmp_path / "run" / "test_scores.json").read_text())["sentences"] == 60
    loaded = load_model(tmp_path / "run" / "best.pt", task="classification")
    assert loaded.extras["labels"] == ["negative", "neutral", "positive"]  # sorted, from train
    classifier = Classifier.from_checkpoint(tmp_path / "run" / "best.pt")
    long_line = " ".join([toy_rows(1, 4)[0][0]] * 40)  # beyond the recipe's max_len tokens
    with caplog.at_level(logging.WARNING, logger="seqlab"):
        short, truncated = classifier.classify([toy_rows(1, 4)[0][0], long_line])
    assert short is not None and truncated is not None
    assert "input line 2 has" in caplog.text and "input line 1" not in caplog.text

    rows = toy_rows(30, 2)
    lines = [text for text, _ in rows]
    lines.insert(7, "")  # an empty line keeps its place: an empty output line
    (tmp_path / "in.txt").write_text("\n".join(lines) + "\n")
    ckpt = str(tmp_path / "run" / "best.pt")
    assert main(["classify", ckpt, str(tmp_path / "in.txt"), "-o", str(tmp_path / "out")]) == 0
    labels = (tmp_path / "out").read_text().split("\n")[:-1]
    assert len(labels) == len(lines) and labels[7] == ""
    del labels[7]
    assert sum(got == want for got, (_, want) in zip(labels, rows)) >= 27

    sys.stdin = io.StringIO("\n".join(lines) + "\n")  # stdin -> stdout, with probabilities
    try:
        assert main(["classify", ckpt, "--probs", "--batch-size", "4"]) == 0
    finally:
        sys.stdin = sys.__stdin__
    printed = capsys.readouterr().out.split("\n")[:-1]
    assert len(printed) == len(lines) and printed[7] == ""
    del printed[7]
    for line, label in zip(printed, labels):
        record = json.loads(line)
        probs = record["probs"]
        assert list(probs) == ["negative", "neutral", "positive"]
        assert sum(probs.values()) == pytest.approx(1.0, abs=1e-5)
        assert record["label"] == max(probs, key=probs.get) == label


def test_fine_tunes_a_bert_pretrained_on_text_files(tmp_path):
    text = write_paragraphs(tmp_path / "text.txt", 60)
    mlm = mlm_recipe(tmp_path, MLM_FILES + f'train_path = "{text}"\nvalid_size = 5\n')
    train_recipe(mlm, tmp_path / "mlm")
    pretrained = tmp_path / "mlm" / "best.pt"
    train = write_rows(tmp_path / "train.tsv", toy_rows(200, 0))
    valid = write_rows(tmp_path / "valid.tsv", toy_rows(40, 3))
    recipe = cls_recipe(tmp_path, files_data(train, valid, extra=f'pretrained = "{pretrained}"'))
    data = prepare(recipe, cache=tmp_path / "cache")
    side = load_model(pretrained, task="masked_lm").sides["src"]
    assert data.side.vocab == side.vocab  # the pretrained tokenizer and vocabulary
    assert data.weights is not None
    train_recipe(recipe, tmp_path / "cls")
    classifier = Classifier.from_checkpoint(tmp_path / "cls" / "best.pt")
    assert classifier.labels == ("negative", "neutral", "positive")
    assert classifier.model.training is False


def test_an_sst2_checkpoint_without_label_names_labels_0_and_1(tmp_path):
    recipe = cls_recipe(tmp_path, 'corpus = "sst2"\nnum_classes = 2\nmax_len = 32')
    vocab = Vocab.build({w: 1 for w in WORDS})
    model = build_bert_classifier(recipe.model.config, len(vocab), 2)
    payload = {
        "recipe": recipe.to_dict(),
        "model": model.state_dict(),
        "src": Side(WhitespaceTokenizer(lowercase=True), vocab).to_payload(),
    }
    save_checkpoint(payload, tmp_path / "sst2.pt")
    classifier = Classifier.from_checkpoint(tmp_path / "sst2.pt")
    assert classifier.labels == ("0", "1")
    model.train()
    classifier.model = model
    got = classifier.classify(["the cat sat", "", "a dog"])
    assert got[1] is None and {got[0].label, got[2].label} <= {"0", "1"}
    assert model.training  # left as found


def test_a_valid_label_missing_from_training_is_named_with_its_line(tmp_path):
    train = write_rows(tmp_path / "train.jsonl", [("a good one", "pos"), ("a bad one", "neg")])
    valid = write_rows(tmp_path / "valid.jsonl", [("fine", "pos"), ("so so", "meh")])
    recipe = cls_recipe(tmp_path, files_data(train, valid))
    with pytest.raises(DataError, match=r"valid\.jsonl:2: label 'meh' does not occur in the"):
        prepare(recipe, cache=tmp_path / "cache")


def test_a_file_failing_mid_way_leaves_no_cache_a_rerun_trusts(tmp_path):
    rows = [f"{text}\t{label}" for text, label in toy_rows(3000, 0)]
    rows.insert(2500, "one\ttoo\tmany")
    train = tmp_path / "train.tsv"
    train.write_text("sentence\tlabel\n" + "\n".join(rows) + "\n")
    recipe = cls_recipe(tmp_path, files_data(train))
    for _ in range(2):
        with pytest.raises(DataError, match=r"train\.tsv:2502: expected 2 tab-separated fields"):
            prepare(recipe, cache=tmp_path / "cache")


def test_num_classes_must_count_the_training_labels(tmp_path):
    train = write_rows(tmp_path / "train.tsv", toy_rows(50, 0))
    valid = write_rows(tmp_path / "valid.tsv", toy_rows(10, 1))
    recipe = cls_recipe(tmp_path, files_data(train, valid, extra="num_classes = 2"))
    with pytest.raises(ConfigError, match=r"num_classes = 2, but .*train\.tsv has 3 labels"):
        prepare(recipe, cache=tmp_path / "cache")


def test_the_hold_out_is_seeded_and_disjoint(tmp_path):
    train = write_rows(tmp_path / "train.tsv", toy_rows(100, 0))
    recipe = cls_recipe(tmp_path, files_data(train))
    first = prepare(recipe, cache=tmp_path / "cache")
    again = prepare(recipe, cache=tmp_path / "cache2")
    assert first.splits["valid"]["line"] == again.splits["valid"]["line"]
    held, kept = set(first.splits["valid"]["line"]), set(first.splits["train"]["line"])
    assert len(held) == 40 and len(kept) == 60 and not held & kept


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ('test_path = "t.tsv"', r"data.test_path is read only with data.corpus = 'files'"),
        ('text_column = "s"', r"data.text_column is read only with data.corpus = 'files'"),
        ('corpus = "files"', r"data.corpus = 'files' needs data.train_path"),
    ],
)
def test_keys_the_corpus_ignores_are_refused(tmp_path, data, message):
    with pytest.raises(ConfigError, match=message):
        cls_recipe(tmp_path, data)


def test_classify_errors_are_one_line_with_exit_status_2(tmp_path, capsys):
    recipe = mlm_recipe(tmp_path, "")
    vocab = Vocab.build({w: 1 for w in WORDS})
    payload = {
        "recipe": recipe.to_dict(),
        "model": build_bert(recipe.model.config, len(vocab)).state_dict(),
        "src": Side(WhitespaceTokenizer(lowercase=True), vocab).to_payload(),
    }
    save_checkpoint(payload, tmp_path / "mlm.pt")
    assert main(["classify", str(tmp_path / "mlm.pt")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "a 'masked_lm' checkpoint, not a 'classification' one" in err
    assert main(["classify"]) == 2
    assert "the following arguments are required: checkpoint" in capsys.readouterr().err
    assert main(["classify", str(tmp_path / "mlm.pt"), "--batch-size", "0"]) == 2
    assert "--batch-size: must be at least 1" in capsys.readouterr().err
