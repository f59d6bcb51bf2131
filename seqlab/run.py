"""A whole experiment from a recipe: prepare data, train, then score the best checkpoint on test.

This is what `seqlab train` runs. The run folder (`runs/<recipe name>/` by default) receives the
resolved recipe, checkpoints (`best.pt`, `last.pt`, `checkpoint_<step>.pt`), `log.jsonl`,
`curves.png`, `test_scores.json` and `test_translations.txt` (with the recipe's beam), and
`test_greedy_*` when that beam is wider than 1.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path

from seqlab import distributed
from seqlab.config import Recipe
from seqlab.errors import ConfigError
from seqlab.evaluation.bleu import corpus_scores
from seqlab.inference import Translator, load_translation_checkpoint
from seqlab.train import Trainer, TrainingError, plot_curves, seed_everything

logger = logging.getLogger(__name__)


def _check_run_dir(run_dir: Path, resume: bool) -> None:
    existing = run_dir / "last.pt"
    if existing.exists() and not resume:
        raise TrainingError(
            f"{run_dir} already holds a run ({existing}); pass --resume to continue it "
            "or --run-dir to start a new one"
        )
    run_dir.mkdir(parents=True, exist_ok=True)


def train_translation(
    recipe: Recipe,
    run_dir: Path,
    *,
    resume: bool = False,
    on_step: Callable[[int], None] | None = None,
) -> dict:
    """Train a translation recipe in `run_dir`; returns a summary with test scores."""
    from seqlab.tasks.translation import TranslationTask
    from seqlab.tasks.translation_data import prepare

    data = _prepared(prepare, recipe, run_dir, resume)
    dist = distributed.current()
    task = TranslationTask(recipe, data, rank=dist.rank, world=dist.world)
    metric_key = "bleu" if recipe.train.metric == "bleu" else "loss"

    def score() -> dict:
        if "test" not in data.splits:
            return {}
        test, best = data.splits["test"], run_dir / "best.pt"
        scores = {"test": evaluate_translation(best, test["src"], test["tgt"], out_dir=run_dir)}
        if recipe.decode.beam_size > 1:  # published recurrent baselines decode greedily
            scores["test_greedy"] = evaluate_translation(
                best,
                test["src"],
                test["tgt"],
                beam_size=1,
                out_dir=run_dir,
                prefix="test_greedy",
                show=0,
            )
        return scores

    return _fit(
        task,
        recipe,
        run_dir,
        resume=resume,
        on_step=on_step,
        metric_key=metric_key,
        higher_is_better=metric_key == "bleu",
        score=score,
    )


def evaluate_translation(
    checkpoint: Path,
    sources: list[str],
    references: list[str],
    *,
    beam_size: int | None = None,
    out_dir: Path | None = None,
    prefix: str = "test",
    show: int = 5,
) -> dict:
    """Translate `sources` with `checkpoint`; score against `references` (BLEU, chrF, tok-lc)."""
    if len(sources) != len(references):
        raise ConfigError(f"{len(sources)} source lines but {len(references)} references")
    model, recipe, src, tgt = load_translation_checkpoint(checkpoint)
    translator = Translator(model, src, tgt, recipe.decode)
    beam = beam_size or recipe.decode.beam_size
    started = time.perf_counter()
    hyps = [h[0].text if h else "" for h in translator.translate(list(sources), beam_size=beam)]
    seconds = time.perf_counter() - started
    scores = corpus_scores(hyps, list(references), tok_lc=True)
    scores.update(
        {
            "checkpoint": str(checkpoint),
            "beam_size": beam,
            "sentences": len(hyps),
            "decode_seconds": round(seconds, 2),
        }
    )
    if out_dir is not None:
        (out_dir / f"{prefix}_scores.json").write_text(json.dumps(scores, indent=2))
        (out_dir / f"{prefix}_translations.txt").write_text("\n".join(hyps) + "\n")
    for source, hyp, ref in list(zip(sources, hyps, references))[:show]:
        logger.info("SRC  %s\nHYP  %s\nREF  %s\n", source, hyp, ref)
    return scores


def _prepared(prepare: Callable, recipe: Recipe, run_dir: Path, resume: bool):
    """Check the run folder, seed, and prepare the recipe's data (printing its summary)."""
    _check_run_dir(run_dir, resume)
    seed_everything(recipe.seed)
    data = prepare(recipe)
    if distributed.current().is_main:
        logger.info("%s", data.summary())
    return data


def _fit(
    task,
    recipe: Recipe,
    run_dir: Path,
    *,
    resume: bool,
    on_step: Callable[[int], None] | None,
    metric_key: str,
    higher_is_better: bool,
    restore: Callable[[Trainer], None] | None = None,
    score: Callable[[], dict] | None = None,
) -> dict:
    """Train `task` in `run_dir`, then (rank 0) plot curves, add `score()`'s results (test
    scores of the best checkpoint) and the last validation to the summary, and write
    `summary.json`. `restore(trainer)` runs after a resume, for task state beyond the trainer's."""
    trainer = Trainer(
        task,
        recipe,
        run_dir,
        metric_key=metric_key,
        higher_is_better=higher_is_better,
        on_step=on_step,
    )
    if resume:
        trainer.resume()
        if restore is not None:
            restore(trainer)
    (run_dir / "recipe.json").write_text(json.dumps(recipe.to_dict(), indent=2))
    started = time.perf_counter()
    summary = trainer.fit()
    summary["train_seconds"] = round(time.perf_counter() - started, 1)
    validations = [r for r in trainer.progress.history if any(k.startswith("valid_") for k in r)]
    if validations:
        summary["last_validation"] = validations[-1]
    if not trainer.dist.is_main:  # under torchrun rank 0 alone writes the results
        return summary
    plot_curves(run_dir / "log.jsonl", run_dir / "curves.png")
    if score is not None:
        summary.update(score())
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def train_masked_lm(
    recipe: Recipe,
    run_dir: Path,
    *,
    resume: bool = False,
    on_step: Callable[[int], None] | None = None,
) -> dict:
    """BERT pretraining (MLM + NSP) of a `masked_lm` recipe; the best checkpoint has the lowest
    validation MLM loss."""
    from seqlab.tasks.masked_lm import MaskedLMTask
    from seqlab.tasks.masked_lm_data import prepare

    data = _prepared(prepare, recipe, run_dir, resume)
    dist = distributed.current()
    task = MaskedLMTask(recipe, data, rank=dist.rank, world=dist.world)
    return _fit(
        task,
        recipe,
        run_dir,
        resume=resume,
        on_step=on_step,
        metric_key="mlm_loss",
        higher_is_better=False,
    )


def train_classification(
    recipe: Recipe,
    run_dir: Path,
    *,
    resume: bool = False,
    on_step: Callable[[int], None] | None = None,
) -> dict:
    """Fine-tune (or train from scratch) a `classification` recipe; the best checkpoint has the
    highest dev accuracy (the lowest dev loss with `train.metric = "loss"`)."""
    from seqlab.tasks.classification import ClassificationTask, prepare

    data = _prepared(prepare, recipe, run_dir, resume)
    dist = distributed.current()
    task = ClassificationTask(recipe, data, rank=dist.rank, world=dist.world)
    by_loss = recipe.train.metric == "loss"
    return _fit(
        task,
        recipe,
        run_dir,
        resume=resume,
        on_step=on_step,
        metric_key="loss" if by_loss else "accuracy",
        higher_is_better=not by_loss,
    )


def train_language_model(
    recipe: Recipe,
    run_dir: Path,
    *,
    resume: bool = False,
    on_step: Callable[[int], None] | None = None,
) -> dict:
    """Train a `language_model` recipe; the best checkpoint (lowest validation loss) is scored
    on valid and test (`lm_scores.json`) and continues three prompts (`samples.txt`)."""
    from seqlab.checkpoint import load_checkpoint
    from seqlab.tasks.language_model import LanguageModelTask
    from seqlab.tasks.language_model_data import prepare

    data = _prepared(prepare, recipe, run_dir, resume)
    task = LanguageModelTask(recipe, data)
    return _fit(
        task,
        recipe,
        run_dir,
        resume=resume,
        on_step=on_step,
        metric_key="loss",
        higher_is_better=False,
        restore=lambda trainer: task.restore(load_checkpoint(trainer.checkpoints.latest())),
        score=lambda: evaluate_language_model(run_dir / "best.pt", task, out_dir=run_dir),
    )


def evaluate_language_model(checkpoint: Path, task, *, out_dir: Path, show: int = 3) -> dict:
    """Perplexity of `checkpoint` on the task's valid/test streams (also with a continuous cache,
    tuned on valid, when `data.cache_window` is set) and `show` samples."""
    from seqlab.generate import GenerationSettings, TextGenerator

    generator = TextGenerator.from_checkpoint(checkpoint, device="cpu")
    device = next(task.model.parameters()).device
    model = generator.model.to(device)
    data = task.recipe.data
    splits = [split for split in ("valid", "test") if split in task.data.splits]
    if data.cache_window:  # one pass over each split gives both perplexities
        from seqlab.evaluation.neural_cache import cache_scores, perplexity_of, stream_outputs

        outputs = {
            split: stream_outputs(model, task.data.splits[split], data.eval_batch_size, data.bptt)
            for split in splits
        }
        scores = {split: perplexity_of(out.log_prob) for split, out in outputs.items()}
        scores.update(cache_scores(outputs, data.cache_window))
    else:
        scores = {split: task.evaluate(model, split) for split in splits}
    scores["checkpoint"] = str(checkpoint)
    (out_dir / "lm_scores.json").write_text(json.dumps(scores, indent=2))
    generator.model.to("cpu")
    prefix = "" if task.recipe.data.line_break == "eos" else "the"
    settings = GenerationSettings(max_len=60, top_p=0.9, num=show, seed=task.recipe.seed)
    samples = generator.generate(prefix, settings)
    (out_dir / "samples.txt").write_text("".join(line + "\n" for line in samples))
    for line in samples:
        logger.info("SAMPLE  %s", line)
    keys = ("valid", "test", "valid_cache", "test_cache")
    return {key: scores[key] for key in keys if key in scores}


# `seqlab train` runs the function of the recipe's task.
TRAINERS: dict[str, Callable[..., dict]] = {
    "translation": train_translation,
    "masked_lm": train_masked_lm,
    "classification": train_classification,
    "language_model": train_language_model,
}


def train_recipe(
    recipe: Recipe,
    run_dir: Path,
    *,
    resume: bool = False,
    on_step: Callable[[int], None] | None = None,
) -> dict:
    """Train `recipe` with the function its `task` names in `TRAINERS`.

    Under torchrun (WORLD_SIZE > 1) this opens the process group for the run and closes it
    however the run ends; rank 0 prepares the data first, the others then read its cache.
    """
    if recipe.task not in TRAINERS:
        raise ConfigError(
            f"{recipe.path}: task '{recipe.task}' cannot be trained by `seqlab train`"
        )
    with distributed.session(recipe.train.device) as dist:
        if dist.enabled and recipe.task not in SHARDED_TASKS:
            raise ConfigError(
                f"{recipe.path}: task '{recipe.task}' does not shard its batches by rank "
                "(its hidden state runs through the stream in order); train it in one process"
            )
        if dist.enabled:
            from seqlab.tasks import prepare_task

            with dist.main_first():
                prepare_task(recipe)
        return TRAINERS[recipe.task](recipe, run_dir, resume=resume, on_step=on_step)


# Tasks whose batches are sharded by rank, so that `torchrun` can train them.
SHARDED_TASKS = ("translation", "masked_lm", "classification")
