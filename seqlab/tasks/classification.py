"""Sentence classification with a BERT encoder: from a pretrained checkpoint or scratch.

The data is a "tsv-labelled" corpus (SST-2, labels "0" / "1") or the user's own TSV / CSV / JSONL
files (`data.corpus = "files"`, `seqlab.tasks.classification_data`), whose label names are kept
in the checkpoint ("labels") for `seqlab classify`.

`data.pretrained` names a `masked_lm` checkpoint. Its tokenizer and vocabulary are always used,
so that the pretrained run and its control differ in one thing only: `data.init = "pretrained"`
loads the checkpoint's BERT weights, `"scratch"` starts the same model from random weights. The
recipe's `[model]` must describe the checkpoint's architecture (a mismatch is an error naming the
key); dropout may differ. Without `data.pretrained` a tokenizer is trained on the training
sentences (whitespace or SentencePiece) and the model starts from scratch.

Input is `<cls> sentence <sep>` (segment 0), truncated to `data.max_len`; the classifier reads
the pooled `<cls>` vector (`seqlab.models.bert.BertClassifier`). Loss: cross-entropy summed over
sentences (the trainer divides by their number). Validation: loss and accuracy on the dev split.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import datasets
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader

from seqlab.checkpoint import load_model
from seqlab.config import ClassificationData, Recipe
from seqlab.data.bert_batch import ClassificationBatch, collate_classification
from seqlab.data.corpus import cache_dir, fetch_corpus, load_manifest
from seqlab.data.dataset import fingerprint, list_lengths, text_dataset
from seqlab.data.readers import read_split
from seqlab.data.sentence_pairs import pack_pair
from seqlab.data.vocab import Side
from seqlab.distributed import ShardResult
from seqlab.errors import CheckpointError, ConfigError, DataError
from seqlab.models.bert import ARCHITECTURE_KEYS, BertClassifier, build_bert_classifier
from seqlab.tasks.batching import training_sampler, validation_batches
from seqlab.tasks.classification_data import file_tables
from seqlab.tasks.masked_lm_data import cached_side, encode_table
from seqlab.tasks.spec import TaskSpec, TrainingTask


@dataclass
class PreparedClassification:
    """Encoded train/valid tables (`ids`, `label`), the side, and pretrained weights if any."""

    side: Side
    splits: dict[str, datasets.Dataset]  # "train", "valid", and "test" when there is one
    weights: dict | None  # the checkpoint's BERT state dict when data.init = "pretrained"
    labels: tuple[str, ...] = ("0", "1")  # label names by index

    def summary(self) -> str:
        lines = []
        for name, ds in self.splits.items():
            tokens = int(list_lengths(ds, "ids").sum())
            counts = sorted(_counts(ds["label"]).items())
            labels = ", ".join(f"{self.labels[k]}: {v}" for k, v in counts)
            lines.append(f"{name}: {len(ds)} sentences ({labels}), {tokens} tokens")
        origin = "pretrained" if self.weights is not None else "scratch"
        lines.append(f"vocabulary: {len(self.side.vocab)}; weights: {origin}")
        return "\n".join(lines)


def _counts(values: list[int]) -> dict[int, int]:
    out: dict[int, int] = {}
    for v in values:
        out[v] = out.get(v, 0) + 1
    return out


def _labelled_rows(corpus: str, folder: str, split: str, limit: int | None):
    manifest = load_manifest(corpus)
    for n, row in enumerate(read_split(manifest, Path(folder), split)):
        if limit is not None and n >= limit:
            return
        if row["label"] is None:
            raise DataError(f"corpus '{corpus}', split '{split}' has no labels")
        yield {"text": row["text"], "label": row["label"]}


def labelled_tables(data: ClassificationData, cache: Path) -> dict[str, datasets.Dataset]:
    """(text, label) tables of the train and valid splits of a "tsv-labelled" corpus."""
    manifest = load_manifest(data.corpus)
    manifest.require_format("tsv-labelled", "classification needs a 'tsv-labelled' one (e.g. sst2)")
    manifest.require_splits(
        {"data.train_split": data.train_split, "data.valid_split": data.valid_split}
    )
    folder = fetch_corpus(manifest, cache=cache)
    tables = {}
    for name, split in (("train", data.train_split), ("valid", data.valid_split)):
        files = [f.sha256 for f in manifest.files_for(split)]
        limit = data.max_train_examples if name == "train" else None
        kwargs = {"corpus": manifest.name, "folder": str(folder), "split": split, "limit": limit}
        fp = fingerprint("labelled", 1, files, split, limit)
        tables[name] = text_dataset(_labelled_rows, kwargs, fp, cache / "datasets")
    return tables


def load_pretrained(recipe: Recipe) -> tuple[Side, dict]:
    """The side and BERT weights of `data.pretrained`, after checking the architecture."""
    path = Path(recipe.data.pretrained)
    pretrained = load_model(path, task="masked_lm")
    source = pretrained.recipe
    if source.model.kind != "bert":
        raise CheckpointError(f"{path}: a '{source.model.kind}' model, not a BERT one")
    if recipe.model.kind != "bert":
        raise ConfigError(f"{recipe.path}: [model] kind must be 'bert' to fine-tune {path}")
    for key in ARCHITECTURE_KEYS:
        mine, theirs = getattr(recipe.model.config, key), getattr(source.model.config, key)
        if mine != theirs:
            raise ConfigError(
                f"{recipe.path}: model.{key} = {mine!r}, but the pretrained checkpoint {path} "
                f"has {theirs!r}"
            )
    return pretrained.sides["src"], pretrained.model.state_dict()


def corpus_labels(data: ClassificationData) -> tuple[str, ...]:
    """Label names of a "tsv-labelled" corpus: its integer labels, as strings."""
    return tuple(str(i) for i in range(data.num_classes or 2))


def prepare(recipe: Recipe, *, cache: Path | None = None) -> PreparedClassification:
    """Read the corpus, get the side (checkpoint's or trained), encode every split."""
    data: ClassificationData = recipe.data
    cache = cache or cache_dir()
    if data.corpus == "files":
        tables, labels = file_tables(data, cache, recipe.seed)
    else:
        tables, labels = labelled_tables(data, cache), corpus_labels(data)
    weights = None
    if data.pretrained:
        side, state = load_pretrained(recipe)
        weights = state if data.init == "pretrained" else None
    else:
        side = cached_side(data, tables["train"], cache, recipe.seed)
    splits = {name: encode_table(ds, side, cache, data.num_proc) for name, ds in tables.items()}
    for name, ds in splits.items():
        bad = [v for v in set(ds["label"]) if not 0 <= v < len(labels)]
        if bad:
            raise DataError(f"{name} split: label {bad[0]} outside [0, data.num_classes)")
    return PreparedClassification(side, splits, weights, tuple(labels))


class Sentences(torch.utils.data.Dataset):
    """(`<cls> sentence <sep>` ids truncated to `max_len`, label) rows of an encoded table."""

    def __init__(self, table: datasets.Dataset, max_len: int, cls_id: int, sep_id: int):
        self.table = table.select_columns(["ids", "label"])
        self.max_len, self.cls_id, self.sep_id = max_len, cls_id, sep_id

    def __len__(self) -> int:
        return len(self.table)

    def __getitem__(self, index: int) -> tuple[list[int], int]:
        return self.__getitems__([index])[0]

    def __getitems__(self, indices: list[int]) -> list[tuple[list[int], int]]:
        rows = self.table[indices]
        out = []
        for ids, label in zip(rows["ids"], rows["label"]):
            packed, _ = pack_pair(
                ids[: self.max_len - 2], None, cls_id=self.cls_id, sep_id=self.sep_id
            )
            out.append((packed, label))
        return out

    def lengths(self) -> list[int]:
        lengths = list_lengths(self.table, "ids") + 2
        return lengths.clip(max=self.max_len).tolist()


class ClassificationTask(TrainingTask):
    """Binds prepared sentences, a `BertClassifier` and a recipe for the training loop."""

    def __init__(
        self, recipe: Recipe, data: PreparedClassification, *, rank: int = 0, world: int = 1
    ):
        self.recipe, self.data = recipe, data
        vocab = data.side.vocab
        self.model: BertClassifier = build_bert_classifier(
            recipe.model.config, len(vocab), len(data.labels)
        )
        if data.weights is not None:
            self.model.bert.load_state_dict(data.weights)
        args = (recipe.data.max_len, vocab.cls_id, vocab.sep_id)
        self.rows = {name: Sentences(ds, *args) for name, ds in data.splits.items()}
        self.sampler = training_sampler(
            self.rows["train"].lengths(), recipe, rank=rank, world=world
        )

    def _loader(self, rows: Sentences, order, seed: int) -> DataLoader:
        return DataLoader(
            rows,
            batch_sampler=order,
            collate_fn=collate_classification,
            num_workers=self.recipe.train.num_workers,
            generator=torch.Generator().manual_seed(seed),
        )

    def batches(self, epoch: int, skip: int) -> Iterator[ClassificationBatch]:
        self.sampler.set_epoch(epoch)
        order = self.sampler.batches_from(skip)  # lazily: no list of every index
        yield from self._loader(self.rows["train"], order, self.recipe.seed * 100003 + epoch)

    def loss(self, model: nn.Module, batch: ClassificationBatch) -> tuple[Tensor, int]:
        logits = model(batch.tokens, batch.segments, batch.mask)  # (B, C)
        return F.cross_entropy(logits.float(), batch.labels, reduction="sum"), batch.size

    def validation_part(
        self, model: nn.Module, rank: int = 0, world: int = 1, split: str = "valid"
    ) -> ShardResult:
        """Summed loss and correct predictions over every `world`-th batch of `split`."""
        device = next(model.parameters()).device
        rows = self.rows[split]
        order = validation_batches(rows.lengths(), self.recipe.train)[rank::world]
        nll = correct = count = 0.0
        for batch in self._loader(rows, order, 0):
            batch = batch.to(device)
            logits = model(batch.tokens, batch.segments, batch.mask).float()  # (B, C)
            nll += F.cross_entropy(logits, batch.labels, reduction="sum").item()
            correct += (logits.argmax(-1) == batch.labels).sum().item()
            count += batch.size
        return ShardResult({"nll": nll, "correct": correct, "count": count})

    def validation_metrics(self, whole: ShardResult) -> dict[str, float]:
        count = whole.sums["count"]
        return {"loss": whole.sums["nll"] / count, "accuracy": whole.sums["correct"] / count}

    def checkpoint_extras(self) -> dict:
        return {"src": self.data.side.to_payload(), "labels": list(self.data.labels)}


def score_classification(recipe: Recipe, data: PreparedClassification, run_dir: Path) -> dict:
    """Loss and accuracy of the run's best.pt on the test split (`data.test_path`), also
    written to `test_scores.json`; {} without a test split."""
    if "test" not in data.splits:
        return {}
    loaded = load_model(run_dir / "best.pt", task="classification")
    task = ClassificationTask(recipe, data)
    with torch.no_grad():
        sums = task.validation_part(loaded.model, split="test")
    scores = {**task.validation_metrics(sums), "sentences": int(sums.sums["count"])}
    (run_dir / "test_scores.json").write_text(json.dumps(scores, indent=2))
    return {"test": scores}


def _model(recipe: Recipe, sides: list[Side], extras: dict) -> BertClassifier:
    """A checkpoint's classifier: one output per saved label name (older checkpoints, without
    names: `data.num_classes`, else 2)."""
    labels = extras.get("labels") or corpus_labels(recipe.data)
    return build_bert_classifier(recipe.model.config, len(sides[0].vocab), len(labels))


SPEC = TaskSpec(
    name="classification",
    data_config=ClassificationData,
    prepare=prepare,
    build=ClassificationTask,
    metrics={"accuracy": True, "loss": False},
    score=score_classification,
    ignores=("train.label_smoothing", "train.valid_max_sentences", "decode"),
    sides=("src",),
    extras=("labels",),
    model=_model,
)
