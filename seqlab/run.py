"""A whole experiment from a recipe: prepare data, train, then score the best checkpoint on test.

This is what `seqlab train` runs, the same for every task: everything task-specific comes from
the recipe's `TaskSpec` (`seqlab.tasks.TASKS`). The run folder (`runs/<recipe name>/` by default)
receives the resolved recipe (`recipe.json`), checkpoints (`best.pt`, `last.pt`,
`checkpoint_<step>.pt`), `log.jsonl`, `curves.png`, `summary.json` and whatever the task's test
stage writes (translation: `test_scores.json`, `test_translations.txt`).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path

from seqlab import distributed
from seqlab.config import Recipe
from seqlab.curves import plot_curves
from seqlab.errors import ConfigError
from seqlab.tasks import get_task
from seqlab.train import Trainer, TrainingError, seed_everything

logger = logging.getLogger(__name__)


def _check_run_dir(run_dir: Path, resume: bool) -> None:
    existing = run_dir / "last.pt"
    if existing.exists() and not resume:
        raise TrainingError(
            f"{run_dir} already holds a run ({existing}); pass --resume to continue it "
            "or --run-dir to start a new one"
        )


def train_recipe(
    recipe: Recipe,
    run_dir: Path,
    *,
    resume: bool = False,
    on_step: Callable[[int], None] | None = None,
) -> dict:
    """Prepare, train and score `recipe` in `run_dir`; returns the run's summary.

    Under torchrun (WORLD_SIZE > 1) this opens the process group for the run and closes it
    however the run ends; rank 0 prepares the data first, the others then read its cache, and
    rank 0 alone scores and writes the results. `on_step(step)` is called after every step.
    """
    spec = get_task(recipe.task, str(recipe.path))
    metric, higher_is_better = spec.metric(recipe)
    with distributed.session(recipe.train.device) as dist:
        dist.device(recipe.train.device)  # a device this machine lacks: say so before any work
        if dist.enabled and not spec.shardable:
            raise ConfigError(
                f"{recipe.path}: task '{recipe.task}' does not shard its batches across "
                "processes; train it in one process"
            )
        _check_run_dir(run_dir, resume)
        seed_everything(recipe.seed)
        with dist.main_first():  # the others read rank 0's cache
            data = spec.prepare(recipe)
        run_dir.mkdir(parents=True, exist_ok=True)  # after prepare: bad data leaves no folder
        if dist.is_main:
            logger.info("%s", data.summary())
        task = spec.build(recipe, data, rank=dist.rank, world=dist.world)
        trainer = Trainer(
            task, recipe, run_dir, metric_key=metric, higher_is_better=higher_is_better,
            on_step=on_step, dist=dist,
        )  # fmt: skip
        if resume:
            trainer.resume()
        if dist.is_main:
            (run_dir / "recipe.json").write_text(json.dumps(recipe.to_dict(), indent=2))
        started = time.perf_counter()
        summary = trainer.fit()
        summary["train_seconds"] = round(time.perf_counter() - started, 1)
        validations = [
            r for r in trainer.progress.history if any(k.startswith("valid_") for k in r)
        ]
        if validations:
            summary["last_validation"] = validations[-1]
        if not dist.is_main:
            return summary
        plot_curves(run_dir / "log.jsonl", run_dir / "curves.png")
        if spec.score is not None:
            summary.update(spec.score(recipe, data, run_dir))
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
        return summary
