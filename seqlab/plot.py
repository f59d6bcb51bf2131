"""Attention heatmaps: which cross-attention weights to show, and drawing them to a PNG.

`cross_attention` runs one teacher-forced pass of a translation model over a source and its
output (as produced by search) and returns where each output position looked in the source: the
Bahdanau weights of an attention RNN (Bahdanau et al. 2015, eq. 6), or one Transformer decoder
layer's cross-attention (Vaswani et al. 2017, eq. 1), one head or the mean over heads.
`plot_attention` draws such a matrix with matplotlib, which is the optional `plot` extra: it is
imported only here, only when drawing, and its absence is a one-line `PlotError`.
`seqlab translate --attention-plot` is the caller.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from seqlab.data.atomic import atomic_file
from seqlab.data.vocab import Vocab
from seqlab.errors import SeqlabError

BOS_ID, EOS_ID = 2, 3  # fixed by seqlab vocabularies (see seqlab/data/vocab.py)


class PlotError(SeqlabError):
    """An attention plot cannot be made (no attention, bad layer/head, no matplotlib)."""


def _weights_function(model: nn.Module, layer: int | None, head: int | None):
    """The decoder's `attention_weights`, checked against the requested layer/head."""
    decoder = getattr(model, "decoder", None)
    function = getattr(decoder, "attention_weights", None)
    if function is None:
        raise PlotError(
            f"the model's decoder ({type(decoder).__name__}) has no attention to plot "
            "(an RNN needs [model] attention = true)"
        )
    selects = {"layer", "head"} <= set(inspect.signature(function).parameters)
    if not selects and (layer is not None or head is not None):
        raise PlotError(
            f"the model's decoder ({type(decoder).__name__}) has a single attention: "
            "an attention layer or head can only be chosen for a Transformer"
        )
    return function, selects


@torch.no_grad()
def cross_attention(
    model: nn.Module,
    src_ids: Sequence[int],
    out_ids: Sequence[int],
    layer: int | None = None,
    head: int | None = None,
) -> Tensor:
    """Cross-attention weights of one teacher-forced pass over BOS + `out_ids`.

    Args:
        model: a `Seq2Seq`-style model (`.encode`, `.decoder`) whose decoder has
            `attention_weights` (attention RNN, Transformer); run in eval mode, then restored.
        src_ids: source ids without EOS (EOS is appended, as `collate` does for search).
        out_ids: output ids without BOS/EOS, e.g. a search hypothesis' `tokens`.
        layer: Transformer decoder layer, 0-based, negative from the end; None = the last.
        head: Transformer head; None = the mean over heads.

    Returns:
        (T, S) weights, T = len(out_ids) + 1 (the outputs, then EOS), S = len(src_ids) + 1
        (the source, then EOS); row t says where output t looked and sums to 1.

    Raises:
        PlotError: the decoder has no attention, or layer/head are given for a single-attention
            decoder or are out of range.
    """
    function, selects = _weights_function(model, layer, head)
    device = next(model.parameters()).device
    src = torch.tensor([[*src_ids, EOS_ID]], device=device)  # (1, S)
    tgt_in = torch.tensor([[BOS_ID, *out_ids]], device=device)  # (1, T)
    was_training = model.training
    model.eval()
    try:
        encoded = model.encode(src, torch.ones_like(src, dtype=torch.bool))
        if not selects:
            return function(tgt_in, encoded)[0]  # (T, S)
        try:
            return function(tgt_in, encoded, layer=-1 if layer is None else layer, head=head)[0]
        except IndexError as error:
            raise PlotError(
                f"attention layer {layer} / head {head} is out of range for this model "
                f"({_layers_and_heads(model)})"
            ) from error
    finally:
        model.train(was_training)


def _layers_and_heads(model: nn.Module) -> str:
    """'L decoder layers, h heads' when the decoder exposes a layer stack, else ''."""
    layers = getattr(getattr(model.decoder, "stack", None), "layers", None)
    if not layers:
        return "layers and heads count from 0"
    heads = getattr(getattr(layers[0], "cross_attn", None), "num_heads", "?")
    return f"{len(layers)} decoder layers, {heads} heads; layers and heads count from 0"


def token_labels(vocab: Vocab, ids: Sequence[int]) -> list[str]:
    """Tick labels for `ids` plus the EOS every plotted sequence ends with."""
    return [vocab.tokens[i] for i in ids] + [vocab.tokens[EOS_ID]]


def _figure(weights: Tensor, src_tokens: list[str], out_tokens: list[str], title: str | None):
    """A matplotlib `Figure` (no pyplot, no global backend) drawing `weights` (T, S)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as error:
        raise PlotError("attention plots need matplotlib: pip install 'seqlab[plot]'") from error
    num_out, num_src = weights.shape
    figure = Figure(figsize=(max(4.0, 0.45 * num_src + 2.0), max(3.0, 0.4 * num_out + 1.5)))
    FigureCanvasAgg(figure)
    ax = figure.add_subplot(1, 1, 1)
    image = ax.imshow(weights.numpy(), cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
    ax.set_xticks(range(num_src), src_tokens, rotation=90)
    ax.set_yticks(range(num_out), out_tokens)
    ax.set_xlabel("source")
    ax.set_ylabel("output")
    if title:
        ax.set_title(title, fontsize=9)
    figure.colorbar(image, ax=ax)
    figure.tight_layout()
    return figure


def plot_attention(
    weights: Tensor,
    src_tokens: Sequence[str],
    out_tokens: Sequence[str],
    path: str | Path,
    title: str | None = None,
) -> Path:
    """Draw `weights` (T, S) as a heatmap, source on x, output on y; write a PNG atomically.

    Args:
        weights: (T, S), or (1, T, S), e.g. from `cross_attention`.
        src_tokens: S tick labels for the x axis (the source tokens and EOS).
        out_tokens: T tick labels for the y axis (the output tokens and EOS).
        path: the PNG to write (a temp file beside it is renamed into place when complete).
        title: optional title (e.g. the source line).

    Raises:
        PlotError: matplotlib is missing, or the labels do not match the weights' shape.
        OSError: `path`'s folder does not exist or is not writable.
    """
    weights = weights.detach().float().cpu()
    weights = weights.squeeze(0) if weights.dim() == 3 else weights  # (T, S)
    if tuple(weights.shape) != (len(out_tokens), len(src_tokens)):
        raise PlotError(
            f"attention weights of shape {tuple(weights.shape)} do not match "
            f"{len(out_tokens)} output and {len(src_tokens)} source labels"
        )
    figure = _figure(weights, list(src_tokens), list(out_tokens), title)
    target = Path(path)
    with atomic_file(target, "wb") as f:
        figure.savefig(f, format="png", dpi=100)
    return target
