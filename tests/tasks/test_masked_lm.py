"""Masked-LM data and task: masking rates, specials, NSP balance, packing, fresh masks, a run."""

import random

import numpy as np
import pytest
import torch

from seqlab.data.bert_batch import collate_mlm
from seqlab.data.masking import SPECIAL_IDS, Masker, example_rng, maskable
from seqlab.data.sentence_pairs import (
    nsp_pairs,
    pack_pair,
    packed_pairs,
    split_paragraph,
    truncate_pair,
)
from seqlab.data.tokenize import SentencePieceTokenizer, WhitespaceTokenizer, encode_text
from seqlab.data.vocab import Vocab

torch.set_num_threads(1)
CLS, SEP, MASK, V = 5, 6, 4, 1000


def _sequence(rng: random.Random) -> np.ndarray:
    a = [rng.randrange(1, V) if rng.random() > 0.02 else 1 for _ in range(rng.randrange(3, 40))]
    b = [rng.randrange(7, V) for _ in range(rng.randrange(3, 40))]
    return np.array(pack_pair(a, b, cls_id=CLS, sep_id=SEP)[0])


def test_masking_rates_on_a_large_sample():
    masker, rng = Masker(V), random.Random(0)
    candidates = chosen = masked = randomised = kept = 0
    for i in range(4000):
        ids = _sequence(rng)
        inputs, picked = masker(ids, example_rng(0, 0, 0, i))
        candidates += maskable(ids).sum()
        chosen += picked.sum()
        masked += (inputs[picked] == MASK).sum()
        kept += (inputs[picked] == ids[picked]).sum()
        randomised += ((inputs[picked] != MASK) & (inputs[picked] != ids[picked])).sum()
        assert (inputs[~picked] == ids[~picked]).all()  # nothing else changes
    assert abs(chosen / candidates - 0.15) < 0.005
    assert abs(masked / chosen - 0.8) < 0.015
    # a random draw equal to the original counts as "kept": expected 0.1 - 0.1/993 and 0.1 + that
    assert abs(randomised / chosen - 0.1) < 0.01
    assert abs(kept / chosen - 0.1) < 0.01


def test_special_tokens_are_never_chosen_and_never_drawn():
    masker, rng = Masker(V), random.Random(1)
    for i in range(2000):
        ids = _sequence(rng)
        inputs, picked = masker(ids, example_rng(3, 0, 1, i))
        assert not np.isin(ids[picked], SPECIAL_IDS).any()
        replaced = inputs[picked & (inputs != ids) & (inputs != MASK)]
        assert (replaced >= 7).all()
        assert (inputs[ids == CLS] == CLS).all() and (inputs[ids == SEP] == SEP).all()
    only_specials = np.array([CLS, SEP, SEP])
    inputs, picked = masker(only_specials, example_rng(0, 0, 0, 0))
    assert not picked.any() and (inputs == only_specials).all()


def test_masks_are_fresh_each_epoch_and_reproducible():
    masker = Masker(V)
    ids = _sequence(random.Random(2))
    epoch0 = masker(ids, example_rng(7, 0, 0, 42))[1]
    assert (masker(ids, example_rng(7, 0, 0, 42))[1] == epoch0).all()
    later = [masker(ids, example_rng(7, 0, e, 42))[1] for e in range(1, 6)]
    assert any((m != epoch0).any() for m in later)


def test_nsp_labels_are_balanced_and_negatives_come_from_other_paragraphs():
    rng = random.Random(0)
    paragraphs = [[(p, s) for s in range(rng.randrange(2, 8))] for p in range(600)]
    pairs = nsp_pairs(paragraphs, 0.5, random.Random(1))
    assert len(pairs) == sum(len(p) - 1 for p in paragraphs)
    share = sum(is_next for _, _, is_next in pairs) / len(pairs)
    assert abs(share - 0.5) < 0.03
    for a, b, is_next in pairs:
        if is_next:
            assert b == (a[0], a[1] + 1)
        else:
            assert b[0] != a[0]
    with pytest.raises(Exception, match="two paragraphs"):
        nsp_pairs([[1, 2, 3]], 0.5, random.Random(0))


def test_packing_segments_and_truncation_of_the_longer_side():
    ids, segments = pack_pair([10, 11], [20, 21, 22], cls_id=CLS, sep_id=SEP)
    assert ids == [CLS, 10, 11, SEP, 20, 21, 22, SEP]
    assert segments == [0, 0, 0, 0, 1, 1, 1, 1]
    a, b = truncate_pair(list(range(10)), [50, 51, 52], 8)
    assert (a, b) == ([0, 1, 2, 3, 4], [50, 51, 52])
    a, b = truncate_pair([1, 2, 3, 4], [5, 6, 7, 8, 9, 10], 6)
    assert (a, b) == ([1, 2, 3], [5, 6, 7])
    columns = packed_pairs(
        [(list(range(7, 60)), list(range(7, 90)), True)], max_len=20, cls_id=CLS, sep_id=SEP
    )
    assert len(columns["ids"][0]) == 20 and columns["is_next"] == [1]


def test_paragraph_splitting_follows_d2l():
    line = " The Cat sat . It ran @-@ away . Then <unk> slept . "
    assert split_paragraph(line) == ["the cat sat", "it ran @-@ away", "then <unk> slept ."]
    assert split_paragraph(" = Heading = ") == []
    assert split_paragraph(" ") == []


def test_literal_unk_becomes_the_unk_id_whatever_the_tokenizer():
    vocab = Vocab.build({"the": 3, "cat": 3})
    expected = [vocab.token_to_id("the"), 1, vocab.token_to_id("cat")]
    assert encode_text(WhitespaceTokenizer(), vocab, "the <unk> cat") == expected
    sp = SentencePieceTokenizer.train(["the cat sat on the mat"] * 30, vocab_size=30)
    ids = encode_text(sp, sp.vocab(), "the <unk> cat")
    assert ids.count(1) == 1 and ids == [*sp.encode_ids("the"), 1, *sp.encode_ids(" cat")]


def test_collate_builds_masks_targets_and_labels():
    rows = [
        (0, [CLS, 10, 11, SEP, 12, SEP], [0, 0, 0, 0, 1, 1], 1),
        (1, [CLS, 13, SEP, 14, 15, 16, 17, SEP], [0, 0, 0, 1, 1, 1, 1, 1], 0),
    ]
    batch = collate_mlm(rows, masker=Masker(V), seed=0, stream=0, epoch=0)
    assert batch.tokens.shape == (2, 8) and batch.mask.sum() == 14
    assert torch.equal(batch.mlm_targets[0, :6], torch.tensor(rows[0][1]))
    assert not batch.mlm_mask[~batch.mask].any()
    assert batch.num_tokens == int(batch.mlm_mask.sum()) >= 2
    assert batch.nsp_labels.tolist() == [1, 0] and batch.segments[1, 3:].tolist() == [1] * 5


@pytest.mark.corpus
def test_pretraining_on_wikitext2_learns(tmp_path):
    from seqlab.config import load_recipe
    from seqlab.run import train_recipe

    recipe = load_recipe(
        "recipes/bert-d2l-50steps.toml",
        [
            "data.max_train_pairs=256",
            "data.max_valid_pairs=64",
            "model.d_model=32",
            "model.d_ff=64",
            "model.dropout=0.0",
            "train.batch_size=64",
            "train.max_steps=24",
            "train.valid_every=12",
            "train.lr=0.005",
            "train.device='cpu'",
        ],
    )
    summary = train_recipe(recipe, tmp_path / "run")
    first, last = (r for r in _validations(tmp_path / "run"))
    assert summary["step"] == 24 and (tmp_path / "run" / "best.pt").exists()
    assert last["valid_train_mlm_loss"] < first["valid_train_mlm_loss"] - 0.5
    assert set(last) >= {"valid_mlm_accuracy", "valid_mlm_ppl", "valid_nsp_accuracy"}


def _validations(run_dir):
    import json

    records = [json.loads(x) for x in (run_dir / "log.jsonl").read_text().splitlines()]
    return [r for r in records if "valid_mlm_loss" in r]


def test_whitespace_tokenizer_keeps_wikitext_tokens_and_round_trips_its_config():
    from seqlab.data.tokenize import tokenizer_from_config

    tokenizer = WhitespaceTokenizer(lowercase=True)
    assert tokenizer.tokenize(" The 3 @-@ year <unk> ") == ["the", "3", "@-@", "year", "<unk>"]
    rebuilt = tokenizer_from_config(tokenizer.config())
    assert isinstance(rebuilt, WhitespaceTokenizer) and rebuilt.lowercase
