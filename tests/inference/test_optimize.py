"""Tests for seqlab/inference/optimize.py: the optimized copy of a model searches to the same tokens
with the same logits (Transformer and RNN-attention seq2seq, on oneDNN's packed path and on the
transposed fallback), shares the model's parameters and leaves the model as it was, follows
weight changes, drops its packed copies on moves and casts, and its grouped beam state steps as
the plain per-row state does."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from seqlab.decoding.search import beam_search, greedy_search
from seqlab.inference import optimize
from seqlab.inference.optimize import (
    GroupedTransformerDecoder,
    GroupedTransformerState,
    PackedLinear,
    optimize_for_inference,
)
from seqlab.models.interfaces import lengths_to_mask
from seqlab.models.rnn import RNNSeq2SeqConfig, build_rnn_seq2seq
from seqlab.models.transformer import TransformerConfig, build_transformer

SRC_V, TGT_V, BOS, EOS = 11, 13, 2, 3
TRANSFORMER = TransformerConfig(
    d_model=32, num_heads=4, num_encoder_layers=2, num_decoder_layers=2, d_ff=64, max_len=40
)
RNN = RNNSeq2SeqConfig(embed_dim=8, hidden_size=12, num_layers=2, dropout=0.1)


@pytest.fixture(params=["onednn", "transpose"])
def use_onednn(request) -> bool:
    """Run on oneDNN's packed weights, and again on the (in, out) transposed fallback."""
    if request.param == "onednn" and not optimize.onednn_packing_available():
        pytest.skip("this PyTorch build has no oneDNN packed linear")
    return request.param == "onednn"


def build(kind: str) -> nn.Module:
    torch.manual_seed(0)
    if kind == "transformer":
        return build_transformer(TRANSFORMER, SRC_V, TGT_V).eval()
    return build_rnn_seq2seq(RNN, SRC_V, TGT_V).eval()


def sources(lengths: list[int], seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Random source ids (B, S), pad 0 beyond each length, and their mask (B, S)."""
    gen = torch.Generator().manual_seed(seed)
    mask = lengths_to_mask(torch.tensor(lengths))  # (B, S)
    return torch.randint(4, SRC_V, mask.shape, generator=gen).masked_fill(~mask, 0), mask


def stacked(fast: nn.Module) -> list[optimize.StackedProjection]:
    """The decoder steps' stacked q/k/v projections of an optimized Transformer."""
    return [p for m in fast.modules() for p in getattr(m, "_qkv", [])]


def packed_copies_built(fast: nn.Module) -> bool:
    """Whether every `PackedLinear` ran packed, on its own or stacked with its self-attention's
    other two projections (so the packed path was the one tested)."""
    in_stacks = {id(linear) for p in stacked(fast) if p._packed is not None for linear in p.linears}
    return all(
        m._packed is not None or id(m) in in_stacks
        for m in fast.modules()
        if isinstance(m, PackedLinear)
    )


def search(model: nn.Module, beam: int) -> list:
    src, mask = sources([5, 3, 1, 6])
    with torch.inference_mode():
        encoded = model.encode(src, mask)
        common = dict(bos_id=BOS, eos_id=EOS, max_len_b=8)
        if beam == 1:
            return greedy_search(model.decoder, encoded, **common)
        return beam_search(model.decoder, encoded, beam_size=beam, nbest=beam, **common)


@pytest.mark.parametrize("kind", ["transformer", "rnn"])
@pytest.mark.parametrize("beam", [1, 4])
def test_optimized_model_searches_to_the_same_tokens(kind, beam, use_onednn):
    model = build(kind)
    fast = optimize_for_inference(model, min_packed_size=0, use_onednn=use_onednn)
    assert any(isinstance(m, PackedLinear) for m in fast.modules())
    assert isinstance(fast.decoder, GroupedTransformerDecoder) == (kind == "transformer")
    want, got = search(model, beam), search(fast, beam)
    for hyps_want, hyps_got in zip(want, got, strict=True):
        assert [h.tokens for h in hyps_got] == [h.tokens for h in hyps_want]
        scores = torch.tensor([h.score for h in hyps_got])
        torch.testing.assert_close(scores, torch.tensor([h.score for h in hyps_want]))
    assert packed_copies_built(fast)
    packed = [m for m in fast.modules() if isinstance(m, PackedLinear) and m._packed is not None]
    assert packed and all(m._packed[1].is_mkldnn == use_onednn for m in packed)


@pytest.mark.parametrize("kind", ["transformer", "rnn"])
def test_optimized_model_gives_the_same_logits_stepping_and_teacher_forced(kind, use_onednn):
    model = build(kind)
    fast = optimize_for_inference(model, min_packed_size=0, use_onednn=use_onednn)
    src, mask = sources([5, 3, 1])
    tgt_in = torch.randint(4, TGT_V, (3, 6), generator=torch.Generator().manual_seed(2))
    tgt_in[:, 0] = BOS
    with torch.no_grad():
        torch.testing.assert_close(fast(src, mask, tgt_in), model(src, mask, tgt_in))
        states = [m.decoder.init_state(m.encode(src, mask)) for m in (model, fast)]
        for t in range(tgt_in.size(1)):
            (want, states[0]), (got, states[1]) = (
                m.decoder.step(tgt_in[:, t], s) for m, s in zip((model, fast), states)
            )
            torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", ["transformer", "rnn"])
def test_the_model_is_left_as_it_was_and_shares_its_tensors(kind):
    model = build(kind).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    types = [type(m) for m in model.modules()]
    fast = optimize_for_inference(model)
    assert model.training and fast.training
    assert [type(m) for m in model.modules()] == types
    assert not any(isinstance(m, PackedLinear) for m in model.modules())
    assert fast.state_dict().keys() == model.state_dict().keys()  # checkpoints load into both
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key])
        assert fast.state_dict()[key].data_ptr() == value.data_ptr(), key  # shared, not copied
    fast.eval()
    assert model.training  # the copy's mode is its own


def test_training_through_the_optimized_copy_is_plain_nn_linear():
    """With gradients (or in training mode) a `PackedLinear` is `nn.Linear`: same output, grads."""
    model = build("transformer")
    fast = optimize_for_inference(model, min_packed_size=0)
    src, mask = sources([5, 3])
    tgt_in = torch.full((2, 4), 5)
    fast(src, mask, tgt_in).sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    model(src, mask, tgt_in).sum().backward()
    assert grads.keys() == {n for n, p in model.named_parameters() if p.grad is not None}
    for name, param in model.named_parameters():
        if param.grad is not None:
            torch.testing.assert_close(grads[name], param.grad, msg=name)
    assert all(m._packed is None for m in fast.modules() if isinstance(m, PackedLinear))


def test_packed_copy_follows_in_place_updates_of_the_weight(use_onednn):
    layer = nn.Linear(8, 20).eval()
    packed = PackedLinear(layer, 0, use_onednn)
    x = torch.randn(5, 8)
    with torch.no_grad():
        packed(x)
        first = packed._packed
        layer.weight.mul_(2.0)  # an optimizer step or load_state_dict on the model
        torch.testing.assert_close(packed(x), layer(x))
    assert packed._packed is not first


def test_packing_only_where_it_may_and_pays():
    """Small weights, gradients, training mode and other dtypes run as `nn.Linear`."""
    layer = nn.Linear(8, 20).eval()
    x = torch.randn(3, 8)
    small = PackedLinear(layer, min_size=8 * 20 + 1)
    with torch.no_grad():
        torch.testing.assert_close(small(x), layer(x))
    assert small._packed is None
    packed = PackedLinear(layer, min_size=0)
    torch.testing.assert_close(packed(x), layer(x))  # gradients enabled
    with torch.no_grad():
        packed.train()
        torch.testing.assert_close(packed(x), layer(x))
        packed.eval()
        assert packed._packed is None
        torch.testing.assert_close(packed(x), layer(x))
    assert packed._packed is not None


def test_moves_and_casts_drop_the_packed_copies(use_onednn):
    """A model moved or cast after CPU inference must not keep copies of its old weights."""
    model = build("transformer")
    fast = optimize_for_inference(model, min_packed_size=0, use_onednn=use_onednn)
    search(fast, 2)
    packed = [m for m in fast.modules() if isinstance(m, PackedLinear)]
    assert packed_copies_built(fast)
    assert stacked(fast) and all(p._packed is not None for p in stacked(fast))
    fast.double()  # through the parent: every child's _apply runs
    assert all(m._packed is None for m in packed)
    assert all(p._packed is None for p in stacked(fast))
    src, mask = sources([4, 2])
    tgt_in = torch.full((2, 3), 5)
    with torch.no_grad():  # float64 runs as nn.Linear, on the (shared, now float64) weights
        torch.testing.assert_close(fast(src, mask, tgt_in), model(src, mask, tgt_in))
    assert all(m._packed is None for m in packed)


def test_capability_check_falls_back_when_the_private_op_is_missing(monkeypatch):
    """Without oneDNN's packed linear (`torch.ops.mkldnn` lacking it, or failing), the transform
    uses the transposed BLAS copy and gives the same outputs."""
    optimize.onednn_packing_available.cache_clear()

    def missing(*args, **kwargs):
        raise RuntimeError("no oneDNN in this build")

    monkeypatch.setattr(torch.ops.mkldnn, "_reorder_linear_weight", missing, raising=False)
    try:
        assert optimize.onednn_packing_available() is False
        layer = nn.Linear(8, 20).eval()
        packed = PackedLinear(layer, min_size=0)
        assert packed.use_onednn is False
        x = torch.randn(3, 8)
        with torch.no_grad():
            torch.testing.assert_close(packed(x), layer(x))
        assert not packed._packed[1].is_mkldnn
    finally:
        optimize.onednn_packing_available.cache_clear()


def test_grouped_state_keeps_one_memory_per_source_and_steps_as_per_row_states():
    """`expand(K)` shares each source's cross-attention K/V among its K rows. Stepped side by
    side with plain per-row states through a beam-style reorder (rows stay with their source), a
    source dropped as a whole, and an index mixing sources (which falls back to one memory row
    per decoder row), every step's logits agree."""
    model = build("transformer")
    fast = optimize_for_inference(model, min_packed_size=0)
    src, mask = sources([5, 2, 4])
    tokens = torch.randint(4, TGT_V, (6, 5), generator=torch.Generator().manual_seed(3))
    k = 2
    with torch.no_grad():
        grouped = fast.decoder.init_state(fast.encode(src, mask)).expand(k)
        per_row = model.decoder.init_state(model.encode(src, mask)).expand(k)
        assert isinstance(grouped, GroupedTransformerState) and grouped.group == k
        assert all(m.size(0) == 3 for m, _ in grouped.memory_kv)
        indices = [
            torch.tensor([1, 0, 2, 2, 5, 4]),  # beams swap and copy within their source
            torch.tensor([0, 1, 4, 5]),  # source 1 leaves
            torch.tensor([3, 0, 2, 1]),  # rows of different sources mixed: no longer grouped
        ]
        for t in range(4):
            logits_g, grouped = fast.decoder.step(tokens[: grouped.batch_size, t], grouped)
            logits_r, per_row = model.decoder.step(tokens[: grouped.batch_size, t], per_row)
            torch.testing.assert_close(logits_g, logits_r, atol=1e-5, rtol=1e-5)
            if t == 0:  # within-source reorder: the memory tensors are kept, not copied
                kept = grouped.reorder(indices[0])
                assert all(a[0] is b[0] for a, b in zip(kept.memory_kv, grouped.memory_kv))
            if t < len(indices):
                grouped, per_row = grouped.reorder(indices[t]), per_row.reorder(indices[t])
    assert grouped.group == 1 and grouped.memory_mask.mask.size(0) == 4


def test_fully_padded_source_gives_a_zero_context_not_nan():
    model = build("transformer")
    fast = optimize_for_inference(model, min_packed_size=0)
    src, mask = sources([3, 1])
    mask = mask.clone()
    mask[1] = False  # no real source token at all
    with torch.no_grad():
        want, _ = model.decoder.step(
            torch.full((2,), BOS),
            model.decoder.init_state(dataclasses.replace(model.encode(src, mask), mask=mask)),
        )
        got, _ = fast.decoder.step(
            torch.full((2,), BOS),
            fast.decoder.init_state(dataclasses.replace(fast.encode(src, mask), mask=mask)),
        )
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_translate_gives_the_same_lines_with_and_without_optimizing(
    reverse_run_dir, capsys, monkeypatch
):
    """`seqlab translate` optimizes on CPU by default; `--no-optimize` searches the plain model."""
    from tests.conftest import run_cli

    checkpoint, text = reverse_run_dir / "best.pt", "a b c\n\nd e f g h\nb a\n"
    outputs = []
    for extra in ([], ["--no-optimize"]):
        for beam in ("1", "3"):
            args = ["translate", checkpoint, "--beam-size", beam, "--nbest", beam, *extra]
            code, out, _ = run_cli(args, capsys, monkeypatch, text)
            assert code == 0
            outputs.append(out)
    assert outputs[:2] == outputs[2:]


def test_translator_searches_the_optimized_copy_and_leaves_the_model_as_it_was(reverse_run_dir):
    from seqlab.inference import Translator

    fast = Translator.from_checkpoint(reverse_run_dir / "best.pt")
    plain = Translator.from_checkpoint(reverse_run_dir / "best.pt", optimize=False)
    fast.model.train()
    lines = ["a b c", "d e f g h"]
    assert fast.translate(lines, beam_size=3) == plain.translate(lines, beam_size=3)
    assert fast.model.training and fast._optimized is not None and plain._optimized is None
    assert not any(isinstance(m, PackedLinear) for m in fast.model.modules())


@pytest.mark.parametrize("name", ["gru", "lstm-projected", "lstm-adaptive", "lstm-awd"])
def test_language_models_optimize_to_the_same_greedy_text(name):
    """The transform applies to any model (here: packed linears only): an LM's greedy
    continuation and step logits are the plain model's."""
    from seqlab.models.language_model import build_language_model
    from tests.models.test_language_model import CONFIGS, V

    torch.manual_seed(0)
    lm = build_language_model(CONFIGS[name], V).eval()
    fast = optimize_for_inference(lm, min_packed_size=0)
    prompt = torch.randint(7, V, (2, 4), generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        hyps = [greedy_search(m, m.prime(prompt), bos_id=BOS, eos_id=EOS, max_len_b=6)
                for m in (lm, fast)]  # fmt: skip
        logits = [m.step(prompt[:, 0], m.init_state(m.prime(prompt)))[0] for m in (lm, fast)]
    assert [h[0].tokens for h in hyps[0]] == [h[0].tokens for h in hyps[1]]
    torch.testing.assert_close(logits[1], logits[0], atol=1e-5, rtol=1e-5)
