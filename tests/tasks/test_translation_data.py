"""The translation data stage: prepare → tokenizers, vocabularies, filtered and cached id tables."""

from __future__ import annotations

import pytest
import torch

from seqlab.config import ModelSpec, load_recipe
from seqlab.distributed import ShardResult
from seqlab.errors import DataError
from seqlab.losses import masked_cross_entropy
from seqlab.models import build_model
from seqlab.models.transformer import TransformerConfig
from seqlab.tasks.translation import TranslationTask
from seqlab.tasks.translation_data import prepare
from tests.conftest import REPO

REVERSE = REPO / "recipes" / "reverse.toml"


def test_prepare_synthetic_builds_consistent_id_tables(tmp_path):
    recipe = load_recipe(REVERSE, ["data.synthetic_size=300"])
    data = prepare(recipe, cache=tmp_path)
    assert set(data.splits) == {"train", "valid", "test"}
    train = data.splits["train"]
    assert len(train) == 300 and data.report.kept == 300
    row = train[0]
    assert data.src.vocab.encode(row["src"].split()) == row["src_ids"]
    assert data.tgt.vocab.decode(row["tgt_ids"]) == row["tgt"].split()
    assert "train: 300 pairs" in data.summary()


def test_prepare_reuses_its_cache_and_rebuilds_on_new_settings(tmp_path):
    recipe = load_recipe(REVERSE, ["data.synthetic_size=200"])
    first = prepare(recipe, cache=tmp_path)
    again = prepare(recipe, cache=tmp_path)
    assert again.splits["train"]._fingerprint == first.splits["train"]._fingerprint
    assert again.src.vocab == first.src.vocab
    changed = prepare(
        load_recipe(REVERSE, ["data.synthetic_size=200", "data.max_len=5"]), cache=tmp_path
    )
    assert changed.splits["train"]._fingerprint != first.splits["train"]._fingerprint


def test_length_filter_reports_every_dropped_pair(tmp_path):
    recipe = load_recipe(REVERSE, ["data.synthetic_size=300", "data.max_len=6"])
    data = prepare(recipe, cache=tmp_path)
    report = data.report
    dropped = sum(report.dropped.values())
    assert dropped > 0 and report.kept + dropped == 300
    assert set(report.dropped) == {"longer than 6 tokens"}
    assert all(len(ids) <= 6 for ids in data.splits["train"]["src_ids"])
    assert "dropped" in data.summary()


def test_joint_sentencepiece_vocabulary_allows_shared_embeddings(tmp_path):
    overrides = [
        "data.synthetic_size=400",
        "data.tokenizer='sentencepiece'",
        "data.joint_vocab=true",
        "data.sp_vocab_size=28",
        "data.sp_model_type='bpe'",
    ]
    data = prepare(load_recipe(REVERSE, overrides), cache=tmp_path)
    assert data.src.vocab is data.tgt.vocab
    assert data.src.vocab.tokens[:4] == ("<pad>", "<unk>", "<bos>", "<eos>")
    row = data.splits["valid"][0]
    assert data.tgt.tokenizer.detokenize(data.tgt.vocab.decode(row["tgt_ids"])) == row["tgt"]
    config = TransformerConfig(
        d_model=16,
        num_heads=2,
        d_ff=32,
        num_encoder_layers=1,
        num_decoder_layers=1,
        share_embeddings=True,
    )
    model = build_model(ModelSpec("transformer", config), len(data.src.vocab), len(data.tgt.vocab))
    assert model.encoder.embedding is model.decoder.embedding


def test_task_batches_cover_the_epoch_and_skip_exactly(tmp_path):
    recipe = load_recipe(REVERSE, ["data.synthetic_size=300", "train.max_tokens=200"])
    task = TranslationTask(recipe, prepare(recipe, cache=tmp_path))
    batches = list(task.batches(epoch=0, skip=0))
    assert sum(b.src.size(0) for b in batches) == 300
    assert all(b.src.numel() <= 200 and b.tgt_in.numel() <= 200 for b in batches)
    resumed = list(task.batches(epoch=0, skip=3))
    assert [b.src.tolist() for b in resumed] == [b.src.tolist() for b in batches[3:]]
    other = list(task.batches(epoch=1, skip=0))
    assert [b.src.tolist() for b in other] != [b.src.tolist() for b in batches]


def test_unknown_split_names_the_recipe_key(tmp_path):
    recipe = load_recipe(
        REPO / "recipes" / "multi30k-gru-attention.toml", ["data.valid_split='dev'"]
    )
    with pytest.raises(DataError, match="valid_split"):
        prepare(recipe, cache=tmp_path)


@pytest.mark.corpus
def test_prepare_multi30k_slice(tmp_path):
    """The real corpus through the whole data stage (val as a small training split)."""
    recipe = load_recipe(
        REPO / "recipes" / "multi30k-gru-attention.toml",
        ["data.train_split='val'", "data.min_freq=1"],
    )
    data = prepare(recipe, cache=tmp_path)
    assert len(data.splits["valid"]) == 1014 and len(data.splits["test"]) == 1000
    assert data.report.kept + sum(data.report.dropped.values()) == 1014
    first = data.splits["test"][0]
    assert first["src"].startswith("Ein Mann mit einem orangefarbenen Hut")
    assert data.src.vocab.unk_id not in data.splits["valid"][0]["src_ids"]


def test_validation_sharded_three_ways_equals_one_process(tmp_path):
    """Loss sums add up and the translations are gathered in order: the metrics of 3 shards
    merged are one process's, BLEU included."""
    recipe = load_recipe(
        REVERSE,
        ["data.synthetic_size=200", "train.max_tokens=120", "train.valid_max_sentences=11",
         "model.embed_dim=8", "model.hidden_size=16"],
    )  # fmt: skip
    task = TranslationTask(recipe, prepare(recipe, cache=tmp_path))
    model = task.model.eval()
    with torch.no_grad():
        whole = task.validation_part(model, 0, 1)
        parts = [task.validation_part(model, rank, 3) for rank in range(3)]
    assert [len(p.outputs) for p in parts] == [4, 4, 3]
    assert ShardResult.merge(parts).outputs == whole.outputs
    sharded = task.validation_metrics(ShardResult.merge(parts))
    assert sharded == pytest.approx(task.validation_metrics(whole), rel=1e-9)
    with pytest.raises(ValueError, match="translated 8 of 11"):
        task.validation_metrics(ShardResult.merge(parts[:2]))


def test_the_training_loss_is_the_masked_loss_of_the_full_logits(tmp_path):
    """Logits computed at real target positions only give the loss of the full logits."""
    recipe = load_recipe(REVERSE, ["data.synthetic_size=60", "train.max_tokens=120"])
    task = TranslationTask(recipe, prepare(recipe, cache=tmp_path))
    model = task.model.eval()
    batch = next(iter(task.batches(0, 0)))
    assert not batch.tgt_mask.all()  # padding to skip
    with torch.no_grad():
        got, n = task.loss(model, batch)
        full = model(batch.src, batch.src_mask, batch.tgt_in)  # (B, T, V)
        want = masked_cross_entropy(
            full, batch.tgt_out, batch.tgt_mask, label_smoothing=recipe.train.label_smoothing
        )
    assert n == batch.num_tokens
    torch.testing.assert_close(got, want)


def test_a_length_filter_leaves_lengths_and_batches_of_the_kept_pairs_only(tmp_path):
    """Regression: lengths came from the unfiltered Arrow table, so the sampler drew indices of
    dropped rows (IndexError) and the summary counted their tokens."""
    from seqlab.tasks.translation import pair_lengths

    recipe = load_recipe(
        REVERSE, ["data.synthetic_size=300", "data.max_len=6", "train.max_tokens=64"]
    )
    data = prepare(recipe, cache=tmp_path)
    train = data.splits["train"]
    assert data.report.kept < 300
    expected = [(len(s) + 1, len(t) + 1) for s, t in zip(train["src_ids"], train["tgt_ids"])]
    assert pair_lengths(train).tolist() == [list(pair) for pair in expected]
    tokens = sum(len(s) for s in train["src_ids"])
    assert f"train: {len(train)} pairs, {tokens} source tokens" in data.summary()
    task = TranslationTask(recipe, data)
    seen = sum(batch.src.shape[0] for batch in task.batches(epoch=0, skip=0))
    assert seen == len(train)
