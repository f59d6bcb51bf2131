"""`seqlab evaluate`: translate a source file with any model (checkpoint, seqlab folder,
CTranslate2 folder) and score it against references with sacrebleu (BLEU, chrF, tok-lc BLEU).

Imports neither torch nor a task module, so that scoring a CTranslate2 export stays as cheap to
start as translating with it.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from seqlab.errors import ConfigError
from seqlab.inference.engines import open_translator

logger = logging.getLogger(__name__)


def evaluate_translation(
    checkpoint: Path,
    sources: list[str],
    references: list[str],
    *,
    beam_size: int | None = None,
    out_dir: Path | None = None,
    prefix: str = "test",
    show: int = 5,
    device: str = "cpu",
    optimize: bool = True,
    engine: str | None = None,
    threads: int | None = None,
) -> dict:
    """Translate `sources` with `checkpoint` (a checkpoint file or an exported folder, opened by
    `open_translator` with `engine`); score against `references` (BLEU, chrF, tok-lc).

    With `out_dir`, writes `<prefix>_scores.json` and `<prefix>_translations.txt` there; logs
    the first `show` sentences.
    """
    if len(sources) != len(references):
        raise ConfigError(f"{len(sources)} source lines but {len(references)} references")
    translator = open_translator(
        checkpoint, engine=engine, device=device, threads=threads, optimize=optimize
    )
    beam = beam_size or translator.decode.beam_size
    started = time.perf_counter()
    hyps = [h[0].text if h else "" for h in translator.translate(list(sources), beam_size=beam)]
    seconds = time.perf_counter() - started
    from seqlab.evaluation.bleu import corpus_scores  # sacrebleu (0.1 s): not for `translate`

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
