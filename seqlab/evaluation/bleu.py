"""Corpus BLEU and chrF through sacrebleu, with the signatures that make scores comparable.

BLEU is never computed by hand here: sacrebleu (Post 2018) tokenizes, counts and smooths, and its
signature (e.g. `nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0`) says exactly how.
Hypotheses and references are detokenized text, one sentence per entry.
"""

from __future__ import annotations

from collections.abc import Sequence

from sacrebleu.metrics import BLEU, CHRF

from seqlab.errors import DataError

TOK_LC_NOTE = (
    "sacreBLEU on detokenized text with its 13a tokenizer and lowercase=True (case:lc); this "
    "approximates the 'tokenized, lowercased BLEU' (multi-bleu.perl on Moses-tokenized, "
    "lowercased text) that Multi30k papers report, but is not byte-identical to it"
)


def _reference_streams(
    references: Sequence[str] | Sequence[Sequence[str]], n_hyps: int
) -> list[list[str]]:
    """References as sacrebleu's streams: streams[k][i] is reference k of sentence i."""
    if len(references) > 0 and isinstance(references[0], str):
        streams = [list(references)]
    else:
        streams = [list(stream) for stream in references]
    if not streams:
        raise DataError(f"no references for {n_hyps} hypotheses")
    for k, stream in enumerate(streams):
        if len(stream) != n_hyps:
            raise DataError(
                f"{n_hyps} hypotheses but {len(stream)} references"
                + (f" in reference stream {k + 1}" if len(streams) > 1 else "")
            )
    return streams


def corpus_scores(
    hypotheses: Sequence[str],
    references: Sequence[str] | Sequence[Sequence[str]],
    *,
    tok_lc: bool = False,
) -> dict:
    """Corpus BLEU and chrF of `hypotheses` against one or more reference streams.

    Args:
        hypotheses: one detokenized output per sentence.
        references: one reference per sentence (a sequence of strings), or several streams
            (a sequence of such sequences, each as long as `hypotheses`).
        tok_lc: also report "bleu_tok_lc": BLEU with lowercase=True and the default 13a tokenizer
            on the same text (see TOK_LC_NOTE, stored under its "note").

    Returns:
        {"bleu": {"score", "signature", "verbose"}, "chrf": {"score", "signature"}} plus
        "bleu_tok_lc": {"score", "signature", "verbose", "note"} when `tok_lc`. Scores are floats on
        sacrebleu's 0-100 scale, unrounded.

    Raises:
        DataError: no hypotheses, or a reference stream whose length differs from theirs (the
            message names both counts).
    """
    hyps = list(hypotheses)
    if not hyps:
        raise DataError("no hypotheses to score")
    streams = _reference_streams(references, len(hyps))
    scores = {"bleu": _bleu(BLEU(), hyps, streams)}
    chrf = CHRF()
    result = chrf.corpus_score(hyps, streams)
    scores["chrf"] = {"score": float(result.score), "signature": str(chrf.get_signature())}
    if tok_lc:
        scores["bleu_tok_lc"] = {**_bleu(BLEU(lowercase=True), hyps, streams), "note": TOK_LC_NOTE}
    return scores


def _bleu(metric: BLEU, hyps: list[str], streams: list[list[str]]) -> dict:
    result = metric.corpus_score(hyps, streams)
    return {
        "score": float(result.score),
        "signature": str(metric.get_signature()),
        "verbose": str(result),
    }
