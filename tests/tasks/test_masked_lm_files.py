"""Masked-LM pretraining from the user's own text files (`data.corpus = "files"`)."""

import random

import numpy as np
import pytest
import torch

from seqlab.checkpoint import load_model
from seqlab.config import load_recipe
from seqlab.data.sentence_pairs import split_sentences
from seqlab.errors import ConfigError, DataError
from seqlab.run import train_recipe
from seqlab.tasks.masked_lm_data import prepare, sentence_tables

torch.set_num_threads(1)
MODEL = """
[model]
kind = "bert"
d_model = 32
num_heads = 2
num_layers = 1
d_ff = 64
dropout = 0.0
max_len = 32
"""
TRAIN = """
[train]
max_steps = 12
batch_size = 16
lr = 3e-3
warmup_steps = 2
valid_every = 6
log_every = 6
device = "cpu"
"""
WORDS = ["the", "cat", "dog", "sat", "ran", "on", "a", "mat", "home", "fast", "slow", "red"]


def write_paragraphs(path, lines: int, seed: int = 0, *, crlf: bool = False, bom: bool = False):
    """`lines` paragraphs of 2-4 plain sentences each ("The cat sat. A dog ran!")."""
    rng = random.Random(seed)
    out = []
    for _ in range(lines):
        sentences = [
            " ".join(rng.choices(WORDS, k=rng.randrange(3, 7))).capitalize() + rng.choice(".!?")
            for _ in range(rng.randrange(2, 5))
        ]
        out.append(" ".join(sentences))
    newline = "\r\n" if crlf else "\n"
    path.write_bytes((("\ufeff" if bom else "") + newline.join(out) + newline).encode("utf-8"))
    return path


def mlm_recipe(tmp_path, data: str, train: str = TRAIN):
    path = tmp_path / "mlm.toml"
    path.write_text(
        f'name = "mlm-files"\ntask = "masked_lm"\nseed = 4\n[data]\n{data}\n{MODEL}\n{train}'
    )
    return load_recipe(path)


FILES = 'corpus = "files"\ntokenizer = "whitespace"\nmin_freq = 1\nmax_len = 32\n'


def test_pretraining_on_text_files_trains_and_saves_a_loadable_checkpoint(tmp_path):
    train = write_paragraphs(tmp_path / "train.txt", 80, crlf=True, bom=True)
    valid = write_paragraphs(tmp_path / "valid.txt", 10, seed=1)
    recipe = mlm_recipe(tmp_path, FILES + f'train_path = "{train}"\nvalid_path = "{valid}"')
    summary = train_recipe(recipe, tmp_path / "run")
    assert summary["step"] == 12
    loaded = load_model(tmp_path / "run" / "best.pt", task="masked_lm")
    tokens = set(loaded.sides["src"].vocab.tokens)
    assert {"the", "cat", "sat."} <= tokens  # sentence-final punctuation stays with its word
    assert not any("\r" in t or "\ufeff" in t for t in tokens)  # CRLF and BOM are not text


def test_without_valid_path_whole_paragraphs_are_held_out_with_the_seed(tmp_path):
    train = write_paragraphs(tmp_path / "train.txt", 40)
    data = FILES + f'train_path = "{train}"\nvalid_size = 8\n'
    first = prepare(mlm_recipe(tmp_path, data), cache=tmp_path / "cache")
    again = prepare(mlm_recipe(tmp_path, data), cache=tmp_path / "cache2")
    assert first.splits["valid"]["ids"] == again.splits["valid"]["ids"]  # seeded, reproducible
    sentences = sum(len(split_sentences(line)) for line in train.read_text().splitlines())
    assert len(first.splits["train"]) + len(first.splits["valid"]) == sentences - 40  # A, B pairs
    tables = sentence_tables(mlm_recipe(tmp_path, data).data, tmp_path / "cache", seed=4)
    held, kept = (set(tables[name]["paragraph"]) for name in ("valid", "train"))
    assert len(held) == 8 and len(kept) == 32 and not held & kept  # whole paragraphs


def test_a_valid_size_taking_every_paragraph_is_refused(tmp_path):
    train = write_paragraphs(tmp_path / "train.txt", 5)
    recipe = mlm_recipe(tmp_path, FILES + f'train_path = "{train}"\nvalid_size = 4\n')
    with pytest.raises(DataError, match=r"valid_size = 4 holds out 4 of the 5 paragraphs"):
        prepare(recipe, cache=tmp_path / "cache")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ('train_path = "x.txt"', r"data.train_path is read only with data.corpus = 'files'"),
        ("valid_size = 5", r"data.valid_size is read only with data.corpus = 'files'"),
        ('corpus = "files"', r"data.corpus = 'files' needs data.train_path"),
        (
            'corpus = "files"\ntrain_path = "a"\nvalid_path = "b"\nvalid_size = 3',
            r"with data.valid_path set it is not used",
        ),
    ],
)
def test_keys_the_corpus_ignores_are_refused(tmp_path, data, message):
    with pytest.raises(ConfigError, match=message):
        mlm_recipe(tmp_path, data)


def test_hostile_text_files_name_file_and_line(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"One. Two.\nThree. Fo\xffur.\n")
    recipe = mlm_recipe(tmp_path, FILES + f'train_path = "{bad}"\nvalid_size = 2\n')
    with pytest.raises(DataError, match=r"bad\.txt:2: invalid UTF-8"):
        prepare(recipe, cache=tmp_path / "cache")
    flat = tmp_path / "flat.txt"
    flat.write_text("no sentence end here\n\nstill one sentence.\n")
    recipe = mlm_recipe(tmp_path, FILES + f'train_path = "{flat}"\nvalid_size = 2\n')
    with pytest.raises(DataError, match=r"flat\.txt: no line has two sentences or more"):
        prepare(recipe, cache=tmp_path / "cache")
    missing = mlm_recipe(tmp_path, FILES + f'train_path = "{tmp_path / "nope.txt"}"\n')
    with pytest.raises(DataError, match=r"nope\.txt: no such file"):
        prepare(missing, cache=tmp_path / "cache")


@pytest.mark.parametrize("tokenizer", ["whitespace", "sentencepiece"])
def test_streamed_pairs_equal_the_pairs_drawn_in_memory(tokenizer, tmp_path, monkeypatch):
    """The pairs written a batch at a time from row numbers are exactly those `nsp_pairs` and
    `packed_pairs` give on the sentences' ids in memory (same draws), across batch boundaries,
    for held-out paragraphs (a table of selected rows), with a limit, encoded in 2 processes;
    a second prepare reads them from the cache without drawing."""
    import seqlab.tasks.masked_lm_data as stage
    from seqlab.data.sentence_pairs import nsp_pairs, packed_pairs
    from seqlab.data.tokenize import encode_text
    from seqlab.data.vocab import Vocab

    lines = write_paragraphs(tmp_path / "train.txt", 60).read_text().splitlines()
    lines[3] = "A cat <unk> sat. The <unk> ran!"  # the literal <unk> is the <unk> id
    (tmp_path / "train.txt").write_text("\n".join(lines) + "\n")
    data = FILES.replace("whitespace", tokenizer) + "sp_vocab_size = 40\n"
    data += f'train_path = "{tmp_path / "train.txt"}"\nvalid_size = 6\nnum_proc = 2\n'
    recipe = mlm_recipe(tmp_path, data + "max_train_pairs = 90\nnext_prob = 0.4\n")
    monkeypatch.setattr(stage, "WRITER_BATCH_SIZE", 7)
    prepared = prepare(recipe, cache=tmp_path / "cache")

    side, vocab = prepared.side, Vocab.build({})
    tables = sentence_tables(recipe.data, tmp_path / "cache", recipe.seed)
    for i, name in enumerate(("train", "valid")):
        paragraphs: list[list[list[int]]] = []
        for number, text in zip(tables[name]["paragraph"], tables[name]["text"], strict=True):
            while len(paragraphs) <= number:
                paragraphs.append([])
            ids = encode_text(side.tokenizer, side.vocab, text)
            if ids:
                paragraphs[number].append(ids)
        pairs = nsp_pairs(paragraphs, 0.4, random.Random(recipe.seed * 1000 + i))
        pairs = pairs[:90] if name == "train" else pairs
        expected = packed_pairs(pairs, max_len=32, cls_id=vocab.cls_id, sep_id=vocab.sep_id)
        got = prepared.splits[name]
        assert len(got) == len(expected["ids"]) and (name == "valid" or len(got) == 90)
        for column in ("ids", "segments", "is_next"):
            assert list(got[column]) == expected[column], (name, column)
    assert any(side.vocab.unk_id in ids for ids in prepared.splits["train"]["ids"])

    def no_drawing(*args, **kwargs):
        raise AssertionError("drew the pairs again")

    monkeypatch.setattr(stage, "iter_nsp_pairs", no_drawing)
    again = prepare(recipe, cache=tmp_path / "cache")
    assert again.splits["train"]["ids"] == prepared.splits["train"]["ids"]


def test_paragraphs_as_row_numbers_keep_table_order_and_skip_empty_sentences():
    from seqlab.tasks.masked_lm_data import _Paragraphs

    paragraph = np.array([0, 0, 1, 3, 3, 1, 0])  # (rows,): rows of a paragraph need not touch
    keep = np.array([True, True, True, True, False, True, True])  # row 4 encoded to no token
    paragraphs = _Paragraphs(paragraph, keep)
    assert [list(p) for p in paragraphs] == [[0, 1, 6], [2, 5], [], [3]]
    assert len(_Paragraphs(np.array([], dtype=np.int64), np.array([], dtype=bool))) == 0


def test_sentencepiece_trains_on_a_seeded_sample_of_sp_input_sentence_size(tmp_path, monkeypatch):
    """Masked LM and translation alike: the trainer sees at most `sp_input_sentence_size`
    sentences, drawn with the recipe's seed (all of them, in order, when there are fewer)."""
    import seqlab.data.tokenize as tokenize
    from seqlab.tasks.translation_data import prepare as prepare_translation
    from tests.tasks.test_own_data import files_recipe, make_pairs, write_split

    seen, real = [], tokenize.train_in_child

    def recording(sentences, options):
        seen.append(list(sentences))
        return real(iter(seen[-1]), options)

    monkeypatch.setattr(tokenize, "train_in_child", recording)
    write_paragraphs(tmp_path / "train.txt", 60)
    data = FILES.replace("whitespace", "sentencepiece") + "sp_vocab_size = 40\n"
    data += f'train_path = "{tmp_path / "train.txt"}"\nvalid_size = 6\n'
    everything = sentence_tables(mlm_recipe(tmp_path, data).data, tmp_path / "cache", 4)["train"]
    for size in (50, 10_000):
        prepare(
            mlm_recipe(tmp_path, data + f"sp_input_sentence_size = {size}\n"), cache=tmp_path / "c"
        )
        texts = list(everything["text"])
        assert len(seen[-1]) == min(size, len(texts))
        assert seen[-1] == [t for t in texts if t in set(seen[-1])]  # a subset, in table order
    assert seen[0] != texts[:50]  # drawn, not the first 50

    train = write_split(tmp_path, "pairs", make_pairs(300, 1), "tsv")
    sp = {"tokenizer": "sentencepiece", "sp_vocab_size": 40, "joint_vocab": True}
    prepare_translation(
        files_recipe(tmp_path, train, valid_size=5, sp_input_sentence_size=100, **sp),
        cache=tmp_path / "t",
    )
    assert len(seen[-1]) == 100  # 50 pairs, both sides
