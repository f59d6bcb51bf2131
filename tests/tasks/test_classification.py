"""Classification: a tiny fine-tune learns a toy set; pretrained checkpoints load strictly."""

import dataclasses
import random

import datasets
import pytest
import torch

from seqlab.checkpoint import save_checkpoint
from seqlab.config import load_recipe
from seqlab.data.tokenize import WhitespaceTokenizer
from seqlab.data.vocab import Side, Vocab
from seqlab.distributed import ShardResult
from seqlab.errors import CheckpointError, ConfigError
from seqlab.models.bert import build_bert
from seqlab.tasks.classification import ClassificationTask, PreparedClassification, load_pretrained
from seqlab.train import Trainer, validate

torch.set_num_threads(1)
MODEL = """
[model]
kind = "bert"
d_model = 32
num_heads = 2
num_layers = 1
d_ff = 64
dropout = 0.0
max_len = 16
"""


def _recipe(tmp_path, data: str = "", train: str = "", task: str = "classification"):
    path = tmp_path / f"{task}.toml"
    path.write_text(f'task = "{task}"\nseed = 3\n[data]\n{data}\n{MODEL}\n[train]\n{train}\n')
    return load_recipe(path)


def _toy(n: int, seed: int, vocab: Vocab) -> datasets.Dataset:
    """Label 1 iff the sentence holds "good": filler words around one cue word."""
    rng, rows = random.Random(seed), {"ids": [], "label": []}
    filler = [vocab.token_to_id(f"w{i}") for i in range(20)]
    for _ in range(n):
        label = rng.randrange(2)
        words = rng.sample(filler, rng.randrange(2, 8))
        words.insert(rng.randrange(len(words) + 1), vocab.token_to_id("good" if label else "bad"))
        rows["ids"].append(words)
        rows["label"].append(label)
    return datasets.Dataset.from_dict(rows)


def test_a_tiny_fine_tune_learns_a_separable_toy_set(tmp_path):
    vocab = Vocab.build({w: 1 for w in ["good", "bad", *(f"w{i}" for i in range(20))]})
    side = Side(WhitespaceTokenizer(), vocab)
    splits = {"train": _toy(400, 0, vocab), "valid": _toy(100, 1, vocab)}
    recipe = _recipe(
        tmp_path,
        train="max_steps = 60\nbatch_size = 32\nlr = 3e-3\nwarmup_steps = 5\n"
        "valid_every = 30\ndevice = 'cpu'\nschedule = 'constant'",
    )
    task = ClassificationTask(recipe, PreparedClassification(side, splits, None))
    before = validate(task, task.model)["accuracy"]
    trainer = Trainer(task, recipe, tmp_path / "run", metric_key="accuracy", higher_is_better=True)
    trainer.fit()
    after = validate(task, task.model)
    assert before < 0.8 and after["accuracy"] >= 0.95, (before, after)
    assert (tmp_path / "run" / "best.pt").exists()


def _masked_lm_checkpoint(tmp_path, vocab: Vocab, **model_changes) -> tuple:
    recipe = _recipe(tmp_path, task="masked_lm")
    config = dataclasses.replace(recipe.model.config, **model_changes)
    model = build_bert(config, len(vocab))
    payload = {
        "recipe": {**recipe.to_dict(), "model": {**recipe.to_dict()["model"], **model_changes}},
        "model": model.state_dict(),
        "src": Side(WhitespaceTokenizer(lowercase=True), vocab).to_payload(),
    }
    path = tmp_path / "pretrained.pt"
    save_checkpoint(payload, path)
    return path, model


def test_pretrained_weights_and_vocabulary_are_loaded(tmp_path):
    vocab = Vocab.build({"good": 2, "bad": 2, "film": 1})
    path, model = _masked_lm_checkpoint(tmp_path, vocab)
    recipe = _recipe(tmp_path, data=f'pretrained = "{path}"')
    side, weights = load_pretrained(recipe)
    assert side.vocab == vocab and side.tokenizer.config()["kind"] == "whitespace"
    splits = {"train": _toy_ids(vocab), "valid": _toy_ids(vocab)}
    task = ClassificationTask(recipe, PreparedClassification(side, splits, weights))
    for name, tensor in model.state_dict().items():
        assert torch.equal(task.model.bert.state_dict()[name], tensor), name
    fresh = ClassificationTask(recipe, PreparedClassification(side, splits, None))
    assert not torch.equal(fresh.model.bert.embeddings.token.weight, model.embeddings.token.weight)


def _toy_ids(vocab: Vocab) -> datasets.Dataset:
    return datasets.Dataset.from_dict({"ids": [[7, 8], [9]], "label": [0, 1]})


def test_architecture_mismatch_names_the_key(tmp_path):
    vocab = Vocab.build({"good": 2})
    path, _ = _masked_lm_checkpoint(tmp_path, vocab, d_ff=128)
    recipe = _recipe(tmp_path, data=f'pretrained = "{path}"')
    with pytest.raises(ConfigError, match=r"model.d_ff = 64, but the pretrained checkpoint"):
        load_pretrained(recipe)


def test_a_checkpoint_of_another_task_is_refused(tmp_path):
    path = tmp_path / "other.pt"
    save_checkpoint({"model": {}}, path)
    recipe = _recipe(tmp_path, data=f'pretrained = "{path}"')
    with pytest.raises(CheckpointError, match=r"other\.pt: holds no trained model"):
        load_pretrained(recipe)


def test_validation_sharded_three_ways_equals_one_process(tmp_path):
    vocab = Vocab.build({w: 1 for w in ["good", "bad", *(f"w{i}" for i in range(20))]})
    side = Side(WhitespaceTokenizer(), vocab)
    splits = {"train": _toy(40, 0, vocab), "valid": _toy(50, 1, vocab)}
    recipe = _recipe(tmp_path, train="batch_size = 8\ndevice = 'cpu'")
    task = ClassificationTask(recipe, PreparedClassification(side, splits, None))
    model = task.model.eval()
    with torch.no_grad():
        whole = task.validation_part(model, 0, 1)
        parts = [task.validation_part(model, rank, 3) for rank in range(3)]
    assert [p.sums["count"] for p in parts] != [whole.sums["count"]] * 3  # really split
    sharded = task.validation_metrics(ShardResult.merge(parts))
    assert sharded == pytest.approx(task.validation_metrics(whole), rel=1e-12)
