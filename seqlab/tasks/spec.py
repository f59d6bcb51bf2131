"""A task as one object: what `seqlab train` must know to prepare, train, select and score it.

`seqlab.run.train_recipe` reads nothing about a task but its `TaskSpec`; the training loop drives
the `TrainingTask` (`seqlab.train`) that `spec.build` returns. Adding a task is writing these two
and calling `seqlab.tasks.register_task(spec)` (fairseq's `register_task`; see
docs/architecture.md).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from seqlab.config import Recipe
from seqlab.data.vocab import Side
from seqlab.errors import ConfigError
from seqlab.train import TrainingTask


@dataclass(frozen=True)
class TaskSpec:
    """One task as `seqlab train` sees it.

    Attributes:
        name: the recipe's `task` value.
        data_config: the frozen dataclass of the recipe's `[data]` section.
        prepare: recipe -> prepared data (with `.summary()`): reads, tokenizes, caches.
        build: (recipe, prepared data, *, rank, world) -> the `TrainingTask` to train; builds
            the model.
        metrics: validation metrics that may select `best.pt` (the recipe's `train.metric`),
            each mapped to True when higher is better; the first is the default.
        score: (recipe, prepared data, run folder) -> test scores of the run's `best.pt`
            (files written into the run folder), or None for a task without a test stage.
        shardable: whether torchrun may shard its batches across processes.
        ignores: recipe keys this task never reads ("train.label_smoothing", or a whole section
            such as "decode"); a recipe file that sets one is refused, naming it.
        sides: the checkpoint keys holding its `Side`s (tokenizer + vocabulary), in the order
            `model` takes them.
        extras: checkpoint keys beyond the sides that describe the model, written by the
            task's `checkpoint_extras` (classification: "labels", its label names). A
            checkpoint's values under them are `LoadedModel.extras`; a key a checkpoint lacks
            (an older one) is left out.
        model: (recipe, sides, extras) -> the task's model, untrained: how
            `seqlab.checkpoint.load_model` rebuilds it before loading the weights. Default:
            `seqlab.models.build_model` with the vocabulary sizes of the first and last side.
    """

    name: str
    data_config: type
    prepare: Callable[[Recipe], Any]
    build: Callable[..., TrainingTask]
    metrics: Mapping[str, bool]
    score: Callable[[Recipe, Any, Path], dict] | None = None
    shardable: bool = True
    ignores: tuple[str, ...] = field(default=())
    sides: tuple[str, ...] = ("src", "tgt")
    extras: tuple[str, ...] = ()
    model: Callable[[Recipe, list[Side], dict[str, Any]], nn.Module] | None = None

    def build_model(
        self, recipe: Recipe, sides: list[Side], extras: dict[str, Any] | None = None
    ) -> nn.Module:
        """The untrained model of `recipe` for vocabularies `sides` and the checkpoint's
        `extras` (see `model`)."""
        if self.model is not None:
            return self.model(recipe, sides, extras or {})
        from seqlab.models import build_model

        return build_model(recipe.model, len(sides[0].vocab), len(sides[-1].vocab))

    def metric(self, recipe: Recipe) -> tuple[str, bool]:
        """(validation metric selecting best.pt, whether higher is better) for `recipe`."""
        key = recipe.train.metric or next(iter(self.metrics))
        self._check_metric(key, str(recipe.path))
        return key, self.metrics[key]

    def _check_metric(self, key: str, source: str) -> None:
        if key not in self.metrics:
            raise ConfigError(
                f"{source}: train.metric = {key!r}: task '{self.name}' selects its best "
                f"checkpoint by {' or '.join(map(repr, self.metrics))}"
            )

    def check_keys(self, raw: Mapping[str, Any], source: str) -> None:
        """Refuse a recipe (as read from its file, overrides applied) that sets a key this task
        ignores, or names a selection metric it does not report."""
        for ignored in self.ignores:
            section, _, key = ignored.partition(".")
            given = raw.get(section)
            if isinstance(given, Mapping) and (key in given if key else given):
                name = ignored if key else f"[{section}]"
                raise ConfigError(f"{source}: {name} is not used by task '{self.name}'; remove it")
        metric = (raw.get("train") or {}).get("metric")
        if metric is not None:
            self._check_metric(metric, source)
