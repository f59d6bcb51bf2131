"""BERT pretraining as a training task: masked LM + next-sentence prediction (Devlin et al. 2019).

The data stage lives in `masked_lm_data.py`. Batches are length-bucketed packed pairs, corrupted
at collate time with masks drawn afresh each epoch: one numpy generator per example, seeded by
(recipe seed, stream, epoch, row index) (`seqlab.data.masking`). That was chosen over a per-epoch
`datasets.map` because it writes no corpus copy per epoch, and an example's masks then depend
neither on batching nor on where a resumed run restarts. Validation always uses the same masks
(stream 1, epoch 0), so its numbers are comparable from one validation to the next.

Loss, as d2l's `_get_batch_loss_bert`: the mean MLM cross-entropy over the predicted positions
plus the mean NSP cross-entropy over the pairs. `loss` returns it scaled by the number of
predictions N (the batch's `num_tokens`), which the trainer divides out again. Validation reports
MLM loss, perplexity and accuracy, NSP loss and accuracy, and their sum (`loss`); it also reports
the training MLM and NSP losses averaged since the previous validation (`train_mlm_loss`,
`train_nsp_loss`: d2l's reported figures are these averages over its 50 steps).
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial

import datasets
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader

from seqlab.config import MaskedLMData, Recipe
from seqlab.data.bert_batch import MLMBatch, collate_mlm
from seqlab.data.dataset import list_lengths
from seqlab.data.masking import Masker
from seqlab.distributed import ShardResult
from seqlab.evaluation.metrics import perplexity
from seqlab.models import build_model
from seqlab.tasks.batching import training_sampler, validation_batches
from seqlab.tasks.masked_lm_data import PreparedMaskedLM, prepare
from seqlab.tasks.spec import TaskSpec, TrainingTask

TRAIN_STREAM, VALID_STREAM = 0, 1


def _empty_window() -> dict[str, float]:
    """Training sums since the last validation: MLM / NSP losses, predictions, pairs."""
    return {"mlm": 0.0, "nsp": 0.0, "predictions": 0, "pairs": 0}


class PackedPairs(torch.utils.data.Dataset):
    """(row index, ids, segments, is_next) rows of a pair table, fetched a batch at a time."""

    def __init__(self, table: datasets.Dataset):
        self.table = table.select_columns(["ids", "segments", "is_next"])

    def __len__(self) -> int:
        return len(self.table)

    def __getitem__(self, index: int) -> tuple[int, list[int], list[int], int]:
        return self.__getitems__([index])[0]

    def __getitems__(self, indices: list[int]) -> list[tuple[int, list[int], list[int], int]]:
        rows = self.table[indices]
        return list(zip(indices, rows["ids"], rows["segments"], rows["is_next"]))


def pair_lengths(table: datasets.Dataset) -> list[int]:
    """Packed length of every row (what padding costs)."""
    return list_lengths(table, "ids").tolist()


def mlm_nsp_sums(model: nn.Module, batch: MLMBatch) -> dict[str, Tensor]:
    """Summed MLM and NSP cross-entropies of a batch, and their numbers of correct predictions."""
    mlm_logits, nsp_logits = model(batch.tokens, batch.segments, batch.mask, batch.mlm_mask)
    targets = batch.mlm_targets[batch.mlm_mask]  # (N,)
    return {
        "mlm": F.cross_entropy(mlm_logits.float(), targets, reduction="sum"),
        "nsp": F.cross_entropy(nsp_logits.float(), batch.nsp_labels, reduction="sum"),
        "mlm_correct": (mlm_logits.argmax(-1) == targets).sum(),
        "nsp_correct": (nsp_logits.argmax(-1) == batch.nsp_labels).sum(),
    }


class MaskedLMTask(TrainingTask):
    """Binds prepared pairs, a BERT model and a recipe for the training loop."""

    def __init__(
        self, recipe: Recipe, data: PreparedMaskedLM, *, rank: int = 0, world: int = 1
    ) -> None:
        self.recipe, self.data = recipe, data
        vocab_size = len(data.side.vocab)
        self.model: nn.Module = build_model(recipe.model, vocab_size, vocab_size)
        d = recipe.data
        self.masker = Masker(vocab_size, d.mask_prob, d.mask_token_prob, d.random_token_prob)
        self.sampler = training_sampler(
            pair_lengths(data.splits["train"]), recipe, rank=rank, world=world
        )
        self.train_rows = PackedPairs(data.splits["train"])
        self._window = _empty_window()

    def _loader(self, rows: PackedPairs, order, stream: int, epoch: int) -> DataLoader:
        collate = partial(
            collate_mlm, masker=self.masker, seed=self.recipe.seed, stream=stream, epoch=epoch
        )
        return DataLoader(
            rows,
            batch_sampler=order,
            collate_fn=collate,
            num_workers=self.recipe.train.num_workers,
            generator=torch.Generator().manual_seed(self.recipe.seed * 100003 + epoch),
        )

    def batches(self, epoch: int, skip: int) -> Iterator[MLMBatch]:
        self.sampler.set_epoch(epoch)
        order = self.sampler.batches_from(skip)  # lazily: no list of every index
        yield from self._loader(self.train_rows, order, TRAIN_STREAM, epoch)

    def loss(self, model: nn.Module, batch: MLMBatch) -> tuple[Tensor, int]:
        sums = mlm_nsp_sums(model, batch)
        n = batch.num_tokens
        w = self._window
        w["mlm"], w["nsp"] = w["mlm"] + sums["mlm"].item(), w["nsp"] + sums["nsp"].item()
        w["predictions"], w["pairs"] = w["predictions"] + n, w["pairs"] + batch.size
        return sums["mlm"] + sums["nsp"] * (n / batch.size), n

    def validation_part(self, model: nn.Module, rank: int = 0, world: int = 1) -> ShardResult:
        """Summed MLM / NSP losses and hits over every `world`-th validation batch, plus this
        rank's training losses since the last validation (reported as `train_*`)."""
        device = next(model.parameters()).device
        valid = self.data.splits["valid"]
        order = validation_batches(pair_lengths(valid), self.recipe.train)[rank::world]
        sums = dict.fromkeys(("mlm", "nsp", "mlm_correct", "nsp_correct"), 0.0)
        predictions = pairs = 0
        for batch in self._loader(PackedPairs(valid), order, VALID_STREAM, 0):
            batch = batch.to(device)
            for key, value in mlm_nsp_sums(model, batch).items():
                sums[key] += value.item()
            predictions, pairs = predictions + batch.num_tokens, pairs + batch.size
        sums.update(predictions=float(predictions), pairs=float(pairs))
        window, self._window = self._window, _empty_window()
        sums.update({f"train_{key}": float(value) for key, value in window.items()})
        return ShardResult(sums)

    def validation_metrics(self, whole: ShardResult) -> dict[str, float]:
        s = whole.sums
        metrics = {
            "mlm_loss": s["mlm"] / s["predictions"],
            "mlm_ppl": perplexity(s["mlm"], int(s["predictions"])),
            "mlm_accuracy": s["mlm_correct"] / s["predictions"],
            "nsp_loss": s["nsp"] / s["pairs"],
            "nsp_accuracy": s["nsp_correct"] / s["pairs"],
        }
        metrics["loss"] = metrics["mlm_loss"] + metrics["nsp_loss"]
        if s["train_pairs"]:  # the training window of every rank, none before the first step
            metrics["train_mlm_loss"] = s["train_mlm"] / s["train_predictions"]
            metrics["train_nsp_loss"] = s["train_nsp"] / s["train_pairs"]
        return metrics

    def checkpoint_extras(self) -> dict:
        return {"src": self.data.side.to_payload()}


SPEC = TaskSpec(
    name="masked_lm",
    data_config=MaskedLMData,
    prepare=prepare,
    build=MaskedLMTask,
    metrics={"mlm_loss": False},
    ignores=("train.label_smoothing", "train.valid_max_sentences", "decode"),
    sides=("src",),
)
