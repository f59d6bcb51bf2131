"""Translation as a training task: batches, loss and validation for `seqlab.train.Trainer`.

The data stage lives in `translation_data.py`; decoding and detokenizing in `seqlab.inference`.
Loss is label-smoothed cross-entropy over real target tokens (summed here; the trainer divides by
the tokens of the accumulated group). Validation reports teacher-forced loss and perplexity (no
smoothing) and BLEU of greedy or beam output, detokenized, scored by sacrebleu.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from seqlab.config import Recipe, TranslationData
from seqlab.data.batch import Batch, collate
from seqlab.distributed import ShardResult
from seqlab.errors import ConfigError
from seqlab.evaluation.metrics import perplexity
from seqlab.inference import Translator
from seqlab.inference.evaluate import evaluate_translation
from seqlab.losses import real_positions, token_cross_entropy
from seqlab.models import build_model
from seqlab.tasks.batching import training_sampler, validation_batches
from seqlab.tasks.spec import TaskSpec, TrainingTask

if TYPE_CHECKING:  # the data stage (datasets, pyarrow) loads only when a run prepares data
    import datasets

    from seqlab.tasks.translation_data import PreparedTranslation


class PairTable(torch.utils.data.Dataset):
    """(src_ids, tgt_ids) rows of an Arrow table, fetched a whole batch at a time."""

    def __init__(self, table: datasets.Dataset):
        self.table = table.select_columns(["src_ids", "tgt_ids"])

    def __len__(self) -> int:
        return len(self.table)

    def __getitem__(self, index: int) -> tuple[list[int], list[int]]:
        row = self.table[index]
        return row["src_ids"], row["tgt_ids"]

    def __getitems__(self, indices: list[int]) -> list[tuple[list[int], list[int]]]:
        rows = self.table[indices]
        return list(zip(rows["src_ids"], rows["tgt_ids"]))


def pair_lengths(table: datasets.Dataset) -> np.ndarray:
    """(N, 2) padded (source, target) sizes per row: +1 for the EOS / BOS that `collate` adds.

    An array read from the memory-mapped id columns, not a list of tuples: training holds
    16 bytes per pair whatever the corpus size."""
    from seqlab.data.dataset import list_lengths

    src = list_lengths(table, "src_ids") + 1  # (N,)
    tgt = list_lengths(table, "tgt_ids") + 1  # (N,)
    return np.stack([src, tgt], axis=1)  # (N, 2)


class TranslationTask(TrainingTask):
    """Binds a prepared corpus, a model and a recipe for the training loop."""

    def __init__(self, recipe: Recipe, data: PreparedTranslation, *, rank: int = 0, world: int = 1):
        self.recipe, self.data = recipe, data
        self.model: nn.Module = build_model(recipe.model, len(data.src.vocab), len(data.tgt.vocab))
        lengths = pair_lengths(data.splits["train"])  # (N, 2)
        self._check_positions(lengths, "train")
        self._check_positions(pair_lengths(data.splits["valid"]), "valid")
        self.sampler = training_sampler(lengths, recipe, rank=rank, world=world)
        self.train_rows = PairTable(data.splits["train"])
        self.samples: list[tuple[str, str, str]] = []  # of the last validation
        self.collate = partial(
            collate,
            pad_id=data.src.vocab.pad_id,
            bos_id=data.tgt.vocab.bos_id,
            eos_id=data.tgt.vocab.eos_id,
        )

    def _check_positions(self, lengths: np.ndarray, split: str) -> None:
        """Refuse, before any step, a training or validation pair longer than the positions the
        model has (a Transformer's `model.max_len`), which would otherwise stop the run at its
        first batch or validation holding that pair. (Translation truncates instead, warning.)"""
        limit = getattr(self.model, "max_source_len", None)
        if limit is None or not len(lengths):
            return
        longest = int(lengths.max())
        if longest > limit:
            hint = "set data.max_len below it" if split == "train" else "drop it from the file"
            raise ConfigError(
                f"{self.recipe.path}: the {split} split holds a sentence of {longest - 1} tokens, "
                f"but model.max_len = {limit} positions hold at most {limit - 1} (with EOS/BOS): "
                f"raise model.max_len or {hint}"
            )

    def batches(self, epoch: int, skip: int) -> Iterator[Batch]:
        self.sampler.set_epoch(epoch)
        order = self.sampler.batches_from(skip)  # lazily: no list of every index
        # A DataLoader draws its base seed from the global generator unless given one; its own
        # generator keeps the global stream (dropout) identical across a resume.
        generator = torch.Generator().manual_seed(self.recipe.seed * 100003 + epoch)
        loader = DataLoader(
            self.train_rows,
            batch_sampler=order,
            collate_fn=self.collate,
            num_workers=self.recipe.train.num_workers,
            generator=generator,
        )
        yield from loader

    def loss(self, model: nn.Module, batch: Batch) -> tuple[Tensor, int]:
        """Label-smoothed cross-entropy summed over real target tokens; the model computes
        logits at those positions only (`real_positions`), none at padding."""
        return self._nll(model, batch, self.recipe.train.label_smoothing).sum(), batch.num_tokens

    @staticmethod
    def _nll(model: nn.Module, batch: Batch, label_smoothing: float = 0.0) -> Tensor:
        """(N,) per-token loss of the N real target tokens of `batch`."""
        rows = real_positions(batch.tgt_mask)  # (N,)
        logits = model(batch.src, batch.src_mask, batch.tgt_in, rows)  # (N, V)
        targets = batch.tgt_out.flatten().index_select(0, rows)  # (N,)
        return token_cross_entropy(logits, targets, label_smoothing)

    def translator(self, model: nn.Module) -> Translator:
        return Translator(model, self.data.src, self.data.tgt, self.recipe.decode)

    def validation_part(self, model: nn.Module, rank: int = 0, world: int = 1) -> ShardResult:
        """Shard `rank` of `world`: teacher-forced NLL over every `world`-th validation batch,
        and the translations of every `world`-th of the first `valid_max_sentences` sentences."""
        device = next(model.parameters()).device
        valid = self.data.splits["valid"]
        nll, tokens = 0.0, 0
        order = validation_batches(pair_lengths(valid), self.recipe.train)[rank::world]
        loader = DataLoader(
            PairTable(valid),
            batch_sampler=order,
            collate_fn=self.collate,
            generator=torch.Generator().manual_seed(0),
        )
        for batch in loader:
            batch = batch.to(device)
            nll += self._nll(model, batch).sum().item()
            tokens += batch.num_tokens
        mine = list(range(self._bleu_sentences()))[rank::world]
        hyps = self.translator(model).translate(
            valid.select(mine)["src"], beam_size=self.recipe.decode.valid_beam_size
        )
        outputs = tuple(zip(mine, (h[0].text for h in hyps), strict=True))
        return ShardResult({"nll": nll, "tokens": float(tokens)}, outputs)

    def validation_metrics(self, whole: ShardResult) -> dict[str, float]:
        """Loss and perplexity over the validation set, BLEU of the translated sentences."""
        nll, tokens = whole.sums["nll"], whole.sums["tokens"]
        metrics = {"loss": nll / max(tokens, 1.0), "ppl": perplexity(nll, int(tokens))}
        expected = self._bleu_sentences()
        if [index for index, _ in whole.outputs] != list(range(expected)):
            raise ValueError(f"validation translated {len(whole.outputs)} of {expected} sentences")
        references = self.data.splits["valid"].select(range(expected))["tgt"]
        from seqlab.evaluation.bleu import corpus_scores  # sacrebleu: not for `translate`

        scores = corpus_scores([text for _, text in whole.outputs], references, tok_lc=True)
        metrics["bleu"] = scores["bleu"]["score"]
        metrics["bleu_tok_lc"] = scores["bleu_tok_lc"]["score"]
        sources = self.data.splits["valid"].select(range(min(expected, 3)))["src"]
        self.samples = [(s, h, r) for s, (_, h), r in zip(sources, whole.outputs, references)]
        return metrics

    def validation_samples(self) -> list[tuple[str, str, str]]:
        """(source, hypothesis, reference) of the last validation's first sentences, for the
        trainer's TensorBoard text."""
        return self.samples

    def _bleu_sentences(self) -> int:
        """How many validation sentences (the first ones) are translated for BLEU."""
        valid = self.data.splits["valid"]
        return min(self.recipe.train.valid_max_sentences or len(valid), len(valid))

    def checkpoint_extras(self) -> dict:
        return {"src": self.data.src.to_payload(), "tgt": self.data.tgt.to_payload()}


def score_translation(recipe: Recipe, data: PreparedTranslation, run_dir: Path) -> dict:
    """Test scores of the run's best.pt with the recipe's beam, and greedily as well when the
    beam is wider (published recurrent baselines decode greedily)."""
    if "test" not in data.splits:
        return {}
    test, best = data.splits["test"], run_dir / "best.pt"
    scores = {"test": evaluate_translation(best, test["src"], test["tgt"], out_dir=run_dir)}
    if recipe.decode.beam_size > 1:
        scores["test_greedy"] = evaluate_translation(
            best, test["src"], test["tgt"], beam_size=1, out_dir=run_dir,
            prefix="test_greedy", show=0,
        )  # fmt: skip
    return scores


def _prepare(recipe: Recipe) -> PreparedTranslation:
    from seqlab.tasks.translation_data import prepare

    return prepare(recipe)


SPEC = TaskSpec(
    name="translation",
    data_config=TranslationData,
    prepare=_prepare,
    build=TranslationTask,
    metrics={"bleu": True, "loss": False},
    score=score_translation,
)
