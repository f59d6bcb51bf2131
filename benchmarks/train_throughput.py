"""Training throughput (target tokens/s) and peak memory, seqlab against same-size references.

Families, each timed on the same batches, in the same process, with interleaved repetitions:
- transformer: seqlab's Transformer (multi30k-transformer recipe sizes) vs `torch.nn.Transformer`
  with the same embeddings/positions/output (pre-LN both) vs Hugging Face `MarianMTModel` built
  from a `MarianConfig` of the same size (post-LN, its only layout); skipped without transformers.
- rnn: seqlab's GRU + Bahdanau seq2seq (multi30k-gru-attention sizes) vs the d2l formulation.
- bert: seqlab's BERT (bert-wikitext2 sizes) vs Hugging Face `BertForPreTraining` (post-LN),
  on synthetic MLM batches; tokens/s counts real input tokens.

A step is what training does: forward, the loss (label-smoothed 0.1 cross-entropy over real
target tokens for every translation model; MLM + NSP cross-entropy for BERT), backward, gradient
clipping at 1.0 and an AdamW update, all cases alike. seqlab's models compute logits at the real
target (or masked) positions only, as `seqlab train` does; the references score every position
and the loss picks the real ones (`seqlab.losses.masked_cross_entropy`), as they would be used.
Dropout is 0.1 everywhere, attention dropout included (nn.Transformer has one dropout rate).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from benchmarks import baselines
from benchmarks.common import (
    RECIPES,
    Scale,
    clock,
    count_parameters,
    device,
    get_scale,
    interleaved,
    paired_ratio,
    peak_in_child,
    rate,
    set_threads,
    transformers_or_none,
)
from benchmarks.data import mlm_batches, translation_data
from seqlab.config import load_recipe
from seqlab.losses import masked_cross_entropy, real_positions, token_cross_entropy
from seqlab.models.bert import BertConfig, build_bert
from seqlab.models.rnn import RNNSeq2SeqConfig, build_rnn_seq2seq
from seqlab.models.transformer import TransformerConfig, build_transformer

FAMILIES = {
    "transformer": ("seqlab", "torch.nn.Transformer", "hf MarianMTModel"),
    "rnn": ("seqlab", "d2l formulation"),
    "bert": ("seqlab", "hf BertForPreTraining"),
}
HF_CASES = {"hf MarianMTModel", "hf BertForPreTraining"}
RECIPE_OF = {
    "transformer": "multi30k-transformer",
    "rnn": "multi30k-gru-attention",
    "bert": "bert-wikitext2",
}
TINY = {
    "transformer": TransformerConfig(16, 2, 1, 1, 32, max_len=64, share_embeddings=True),
    "rnn": RNNSeq2SeqConfig(embed_dim=8, hidden_size=16, num_layers=1),
    "bert": BertConfig(16, 2, 1, 32, max_len=32),
}


@dataclass
class Workload:
    """One case ready to time: `run()` trains one step on every batch of the family.

    Attributes:
        run: one repetition.
        tokens: tokens per repetition (target tokens; BERT: real input tokens).
        params: trainable parameters.
        note: anything the report should say about this case.
    """

    run: Callable[[], None]
    tokens: int
    params: int
    note: str = ""


@functools.cache
def model_config(family: str, scale: Scale):
    """The recipe's model config with dropout 0.1 everywhere (TINY configs at tiny scale).

    Read once per process, so that every case of a family has the same size even if the recipe
    is edited while the benchmark runs.
    """
    if scale.tiny_models:
        config = TINY[family]
    else:
        config = load_recipe(RECIPES / f"{RECIPE_OF[family]}.toml").model.config
    changes = {"dropout": 0.1}
    if family != "rnn":
        changes["attention_dropout"] = 0.1
    return dataclasses.replace(config, **changes)


@functools.cache
def _data(family: str, scale: Scale):
    if family == "bert":
        vocab = 50 if scale.tiny_models else 10000
        batches, note = mlm_batches(scale, vocab, device())
        return batches, vocab, note
    return translation_data(RECIPE_OF[family], scale, device())


def _train_step(model: nn.Module, loss_of: Callable, batches: list) -> Callable[[], None]:
    """A repetition: for each batch, forward + loss + backward + clip + AdamW step."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    model.train()

    def run() -> None:
        for batch in batches:
            optimizer.zero_grad(set_to_none=True)
            loss_of(model, batch).backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()

    return run


def _seq2seq_loss(logits: Tensor, batch) -> Tensor:
    loss = masked_cross_entropy(
        logits.float(), batch.tgt_out, batch.tgt_mask, label_smoothing=0.1, reduction="sum"
    )
    return loss / batch.num_tokens


def _translation_model(family: str, case: str, config, data) -> tuple[nn.Module, Callable, str]:
    if case == "seqlab":
        build = build_transformer if family == "transformer" else build_rnn_seq2seq
        model = build(config, data.src_vocab, data.tgt_vocab)
    elif case == "torch.nn.Transformer":
        model = baselines.TorchTransformerSeq2Seq(config, data.tgt_vocab)
    elif case == "d2l formulation":
        model = baselines.D2LBahdanauSeq2Seq(config, data.src_vocab, data.tgt_vocab)
    else:
        model = baselines.marian(transformers_or_none(), config, data.tgt_vocab)

        def marian_loss(m, b):
            out = m(input_ids=b.src, attention_mask=b.src_mask.long(), decoder_input_ids=b.tgt_in)
            return _seq2seq_loss(out.logits, b)

        return model, marian_loss, f"attention: {model.config._attn_implementation}"
    if case == "seqlab":
        return model, _seqlab_seq2seq_loss, ""
    return model, lambda m, b: _seq2seq_loss(m(b.src, b.src_mask, b.tgt_in), b), ""


def _seqlab_seq2seq_loss(model: nn.Module, b) -> Tensor:
    """What `seqlab train` runs: logits at the real target positions only, then the same loss."""
    rows = real_positions(b.tgt_mask)  # (N,)
    logits = model(b.src, b.src_mask, b.tgt_in, rows)  # (N, V)
    targets = b.tgt_out.flatten().index_select(0, rows)  # (N,)
    return token_cross_entropy(logits, targets, label_smoothing=0.1).sum() / b.num_tokens


def _bert_loss_seqlab(model: nn.Module, b) -> Tensor:
    mlm, nsp = model(b.tokens, b.segments, b.mask, b.mlm_mask)  # (N, V), (B, 2)
    return F.cross_entropy(mlm.float(), b.mlm_targets[b.mlm_mask]) + F.cross_entropy(
        nsp.float(), b.nsp_labels
    )


def _bert_loss_hf(model: nn.Module, b) -> Tensor:
    out = model(input_ids=b.tokens, attention_mask=b.mask.long(), token_type_ids=b.segments)
    mlm = out.prediction_logits[b.mlm_mask]  # (N, V): HF scores every position, then we pick
    return F.cross_entropy(mlm.float(), b.mlm_targets[b.mlm_mask]) + F.cross_entropy(
        out.seq_relationship_logits.float(), b.nsp_labels
    )


def workload(family: str, case: str, scale: Scale) -> Workload:
    """Build `case` of `family` on the family's batches (also the memory child's entry point)."""
    config = model_config(family, scale)
    if family == "bert":
        batches, vocab, _ = _data(family, scale)
        if case == "seqlab":
            model, loss_of, note = build_bert(config, vocab), _bert_loss_seqlab, ""
        else:
            model = baselines.hf_bert(transformers_or_none(), config, vocab)
            loss_of, note = _bert_loss_hf, f"attention: {model.config._attn_implementation}"
        tokens = sum(int(b.mask.sum()) for b in batches)
    else:
        data = _data(family, scale)
        batches, tokens = data.batches, data.target_tokens
        model, loss_of, note = _translation_model(family, case, config, data)
    model.to(device())
    return Workload(_train_step(model, loss_of, batches), tokens, count_parameters(model), note)


def _family(family: str, scale: Scale, memory: bool) -> dict:
    torch.manual_seed(0)
    has_hf = transformers_or_none() is not None
    cases = [c for c in FAMILIES[family] if has_hf or c not in HF_CASES]
    works = {case: workload(family, case, scale) for case in cases}
    timings = interleaved({c: w.run for c, w in works.items()}, scale.repeats, family)
    times = timings.times
    data = _data(family, scale)
    result = {
        "clock": timings.clock,
        "data": data[2] if family == "bert" else data.source,
        "config": dataclasses.asdict(model_config(family, scale)),
        "cases": {},
        "skipped": [] if has_hf else [f"{c}: transformers not installed" for c in HF_CASES],
    }
    for case, work in works.items():
        entry = {"params": work.params, "tokens": work.tokens, "times_s": times[case]}
        entry["wall_s"] = timings.wall[case]
        entry["tokens_per_s"] = rate(work.tokens, times[case])
        entry["seqlab_speedup"] = paired_ratio(times["seqlab"], times[case])
        if memory:
            entry.update(peak_in_child("train_throughput", family, case, scale))
        if work.note:
            entry["note"] = work.note
        result["cases"][case] = entry
    return result


def run(scale: str | None = None, memory: bool = True) -> dict:
    """Every family at `scale` (see `benchmarks.common.SCALES`); `memory`: child processes."""
    chosen, threads = get_scale(scale), set_threads()
    families = {name: _family(name, chosen, memory) for name in FAMILIES}
    step = " ".join(__doc__.split("\n\n")[2].split())
    return {
        "scale": chosen.name,
        "threads": threads,
        "clock": clock(),
        "step": step,
        "families": families,
    }


def markdown(result: dict) -> str:
    rows = [
        f"| family | model | params | tokens/s | {result['clock']} seconds per repetition | "
        "peak MiB | seqlab speed-up |",
        "|---|---|---|---|---|---|---|",
    ]
    for family, res in result["families"].items():
        for case, e in res["cases"].items():
            times = ", ".join(f"{t:.2f}" for t in e["times_s"])
            peak = "-" if e.get("peak_mib") is None else f"{e['peak_mib']:.0f}"
            rows.append(
                f"| {family} | {case} | {e['params']:,} | {e['tokens_per_s']:,.0f} | {times} | "
                f"{peak} | {e['seqlab_speedup']:.2f}x |"
            )
    return "\n".join(rows)
