"""A whole experiment from a recipe: prepare data, train, then score the best checkpoint on test.

This is what `seqlab train` runs. The run folder (`runs/<recipe name>/` by default) receives the
resolved recipe, checkpoints (`best.pt`, `last.pt`, `checkpoint_<step>.pt`), `log.jsonl`,
`curves.png`, `test_scores.json` and `test_translations.txt` (with the recipe's beam), and
`test_greedy_*` when that beam is wider than 1.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

from seqlab.config import Recipe
from seqlab.errors import ConfigError
from seqlab.evaluation.bleu import corpus_scores
from seqlab.inference import Translator, load_translation_checkpoint
from seqlab.train import Trainer, TrainingError, plot_curves, seed_everything


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

    _check_run_dir(run_dir, resume)
    seed_everything(recipe.seed)
    data = prepare(recipe)
    print(data.summary(), file=sys.stderr)
    task = TranslationTask(recipe, data)
    metric_key = "bleu" if recipe.train.metric == "bleu" else "loss"
    trainer = Trainer(
        task,
        recipe,
        run_dir,
        metric_key=metric_key,
        higher_is_better=metric_key == "bleu",
        on_step=on_step,
    )
    if resume:
        trainer.resume()
    (run_dir / "recipe.json").write_text(json.dumps(recipe.to_dict(), indent=2))
    started = time.perf_counter()
    summary = trainer.fit()
    summary["train_seconds"] = round(time.perf_counter() - started, 1)
    plot_curves(run_dir / "log.jsonl", run_dir / "curves.png")
    if "test" in data.splits:
        test = data.splits["test"]
        summary["test"] = evaluate_translation(
            run_dir / "best.pt", test["src"], test["tgt"], out_dir=run_dir, prefix="test"
        )
        if recipe.decode.beam_size > 1:  # published recurrent baselines decode greedily
            summary["test_greedy"] = evaluate_translation(
                run_dir / "best.pt",
                test["src"],
                test["tgt"],
                beam_size=1,
                out_dir=run_dir,
                prefix="test_greedy",
                show=0,
            )
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


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
        print(f"SRC  {source}\nHYP  {hyp}\nREF  {ref}\n", file=sys.stderr)
    return scores
