"""What only a GPU can check: the fused attention kernels our layers reach, compile, bf16 training
and search on CUDA. Skipped without CUDA (CI has none); run on a GPU machine with
`pytest tests/test_gpu.py` next to `make bench-gpu`.
"""

from __future__ import annotations

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from seqlab.config import load_recipe
from seqlab.decoding.search import beam_search
from seqlab.layers.attention import MultiHeadAttention
from seqlab.models.transformer import TransformerConfig, build_transformer
from seqlab.run import train_recipe
from tests.conftest import REPO

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

CONFIG = TransformerConfig(
    d_model=64, num_heads=4, num_encoder_layers=2, num_decoder_layers=2, d_ff=128, dropout=0.0
)


def _attention() -> MultiHeadAttention:
    torch.manual_seed(0)
    return MultiHeadAttention(128, 2).cuda().eval()  # head size 64: every fused kernel takes it


def test_causal_self_attention_runs_on_the_flash_kernel():
    mha = _attention()
    x = torch.randn(4, 37, 128, device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        with sdpa_kernel(SDPBackend.FLASH_ATTENTION):  # raises if our call does not qualify
            fused = mha(x, x, x, causal=True)
        with sdpa_kernel(SDPBackend.MATH):
            reference = mha(x, x, x, causal=True)
    torch.testing.assert_close(fused.float(), reference.float(), atol=2e-2, rtol=2e-2)


def test_padded_attention_runs_on_the_memory_efficient_kernel():
    mha = _attention()
    x = torch.randn(4, 21, 128, device="cuda")
    mask = torch.arange(21, device="cuda") < torch.tensor([21, 15, 9, 1], device="cuda")[:, None]
    with torch.autocast("cuda", dtype=torch.bfloat16):
        with sdpa_kernel(SDPBackend.EFFICIENT_ATTENTION):
            fused = mha(x, x, x, key_mask=mask)
        with sdpa_kernel(SDPBackend.MATH):
            reference = mha(x, x, x, key_mask=mask)
    torch.testing.assert_close(fused.float(), reference.float(), atol=2e-2, rtol=2e-2)


def test_beam_search_on_the_gpu_equals_the_cpu():
    torch.manual_seed(0)
    model = build_transformer(CONFIG, 40, 40).eval()
    src = torch.randint(4, 40, (6, 9))
    src_mask = torch.arange(9) < torch.tensor([9, 7, 5, 9, 3, 8])[:, None]
    results = []
    for where in ("cpu", "cuda"):
        model = model.to(where)
        with torch.no_grad():
            encoded = model.encode(src.to(where), src_mask.to(where))
            search = dict(beam_size=5, bos_id=2, eos_id=3, max_len_b=12)
            hyps = beam_search(model.decoder, encoded, **search)
        results.append([(h[0].tokens, h[0].score) for h in hyps])
    cpu, gpu = results
    assert [t for t, _ in gpu] == [t for t, _ in cpu]
    assert [s for _, s in gpu] == pytest.approx([s for _, s in cpu], abs=1e-4)


def test_compiled_bf16_training_follows_eager():
    """A few bf16 steps of the same model and batches, compiled and eager: the same losses."""
    from seqlab.data.batch import collate
    from seqlab.losses import masked_cross_entropy

    g = torch.Generator().manual_seed(0)
    pairs = [
        (torch.randint(4, 40, (n,), generator=g).tolist(), torch.randint(4, 40, (n + 2,)).tolist())
        for n in range(3, 11)
    ]
    batch = collate(pairs).to("cuda")
    losses = {}
    for compiled in (False, True):
        torch.manual_seed(0)
        model = build_transformer(CONFIG, 40, 40).cuda()
        forward = torch.compile(model) if compiled else model
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True)
        losses[compiled] = []
        for _ in range(3):
            optimizer.zero_grad()
            with torch.autocast("cuda", dtype=torch.bfloat16):
                logits = forward(batch.src, batch.src_mask, batch.tgt_in)
            loss = masked_cross_entropy(logits.float(), batch.tgt_out, batch.tgt_mask)
            loss.backward()
            optimizer.step()
            losses[compiled].append(loss.item())
    assert losses[True] == pytest.approx(losses[False], rel=2e-2)


def test_a_recipe_trains_on_the_gpu_in_bf16_compiled_with_fused_adamw(tmp_path):
    pytest.importorskip("datasets")  # a GPU image may lack it: carry its wheel (device README)
    recipe = load_recipe(
        REPO / "recipes" / "reverse.toml",
        ["data.synthetic_size=400", "train.max_steps=30", "train.valid_every=30",
         "train.device='cuda'", "train.precision='bf16'", "train.compile=true",
         "train.fused_adamw=true"],
    )  # fmt: skip
    summary = train_recipe(recipe, tmp_path / "run")
    assert summary["step"] == 30 and (tmp_path / "run" / "best.pt").exists()
