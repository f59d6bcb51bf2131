"""The batches the benchmarks feed every model: Multi30k through seqlab's pipeline, or synthetic.

Real batches come from the recipe's prepared corpus (its tokenizer and vocabularies, cached by
`seqlab prepare`), cut by seqlab's `BucketBatchSampler` with the benchmark's token budget and
collated by `collate`: exactly what training sees. Synthetic batches (tiny scale, and BERT, whose
WikiText-2 preparation is too slow for a benchmark) draw ids uniformly and lengths from a stated
range; they are built with the same `collate`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from benchmarks.common import RECIPES, Scale
from seqlab.config import load_recipe
from seqlab.data.batch import Batch, collate
from seqlab.data.bert_batch import MLMBatch

SPECIALS = 7  # <pad> <unk> <bos> <eos> <mask> <cls> <sep>: ids below this are never drawn


@dataclass(frozen=True)
class TranslationData:
    """Training batches plus what a model needs to be built for them.

    Attributes:
        batches: the batches, on the benchmark device.
        src_vocab, tgt_vocab: vocabulary sizes.
        source: how the batches were made (for the report).
    """

    batches: list[Batch]
    src_vocab: int
    tgt_vocab: int
    source: str

    @property
    def target_tokens(self) -> int:
        """Real target tokens over all batches (tgt_out positions, EOS included)."""
        return sum(b.num_tokens for b in self.batches)


def _synthetic_pairs(n: int, lengths: tuple[int, int], vocab: int, seed: int) -> list:
    rng = random.Random(seed)

    def sentence() -> list[int]:
        return [rng.randrange(SPECIALS, vocab) for _ in range(rng.randint(*lengths))]

    return [(sentence(), sentence()) for _ in range(n)]


def translation_data(recipe_name: str, scale: Scale, device: torch.device) -> TranslationData:
    """`scale.batches` batches of the recipe's corpus (or synthetic ones at tiny scale)."""
    if not scale.real_data:
        vocab = 50
        pairs = _synthetic_pairs(scale.batches * 8, (3, 12), vocab, seed=0)
        batches = [collate(pairs[i : i + 8]).to(device) for i in range(0, len(pairs), 8)]
        return TranslationData(batches, vocab, vocab, "synthetic: 8 pairs of 3-12 ids per batch")
    from seqlab.data.sampler import BucketBatchSampler
    from seqlab.tasks.translation import PairTable, pair_lengths
    from seqlab.tasks.translation_data import prepare

    recipe = load_recipe(RECIPES / f"{recipe_name}.toml")
    prepared = prepare(recipe)
    train = prepared.splits["train"]
    sampler = BucketBatchSampler(
        pair_lengths(train), max_tokens=scale.max_tokens, shuffle=True, seed=recipe.seed
    )
    rows = PairTable(train)
    vocab = prepared.tgt.vocab
    batches = [
        collate(
            rows.__getitems__(indices),
            pad_id=vocab.pad_id,
            bos_id=vocab.bos_id,
            eos_id=vocab.eos_id,
        ).to(device)
        for indices in list(sampler)[: scale.batches]
    ]
    source = (
        f"Multi30k train, {recipe_name} tokenization, first {len(batches)} batches of seqlab's "
        f"BucketBatchSampler (max_tokens={scale.max_tokens}, seed {recipe.seed})"
    )
    return TranslationData(batches, len(prepared.src.vocab), len(vocab), source)


def decode_sources(
    recipe_name: str, scale: Scale, count: int, device: torch.device
) -> tuple[list[list[int]], int, str]:
    """`count` source id sequences (EOS appended later by collate), the vocab size, and where
    they come from: Multi30k test2016 (else valid) in corpus order, or synthetic at tiny scale."""
    if not scale.real_data:
        pairs = _synthetic_pairs(count, (3, 12), 50, seed=1)
        return [src for src, _ in pairs], 50, "synthetic: 3-12 ids"
    from seqlab.tasks.translation_data import prepare

    prepared = prepare(load_recipe(RECIPES / f"{recipe_name}.toml"))
    split = "test" if "test" in prepared.splits else "valid"
    table = prepared.splits[split]
    ids = table[: min(count, len(table))]["src_ids"]
    while len(ids) < count:  # small splits: cycle
        ids = ids + ids[: count - len(ids)]
    name = f"Multi30k {split} sources in corpus order, {recipe_name} tokenization"
    return ids, len(prepared.src.vocab), name


def mlm_batches(scale: Scale, vocab: int, device: torch.device) -> tuple[list[MLMBatch], str]:
    """Synthetic BERT pretraining batches: [cls] A [sep] B [sep] pairs, 15% of tokens predicted.

    Full/quick: 128 pairs of 32-64 tokens (the bert-wikitext2 recipe packs pairs up to 64);
    tiny: 4 pairs of 8-16 tokens.
    """
    generator = torch.Generator().manual_seed(0)
    size, (low, high) = (4, (8, 16)) if scale.tiny_models else (128, (32, 64))
    batches = []
    for _ in range(scale.batches):
        lengths = torch.randint(low, high + 1, (size,), generator=generator)  # (B,)
        width = int(lengths.max())
        mask = torch.arange(width) < lengths[:, None]  # (B, T)
        targets = torch.randint(SPECIALS, vocab, (size, width), generator=generator) * mask
        segments = (torch.arange(width) >= (lengths[:, None] // 2)) & mask  # (B, T)
        chosen = (torch.rand(size, width, generator=generator) < 0.15) & mask
        chosen[:, 1] = True  # at least one prediction per row
        tokens = targets.masked_fill(chosen, 4)  # <mask>
        nsp = torch.randint(0, 2, (size,), generator=generator)
        batch = MLMBatch(tokens, segments.long(), mask, targets, chosen, nsp)
        batches.append(batch.to(device))
    note = f"synthetic: {size} pairs of {low}-{high} ids per batch, 15% predicted"
    return batches, note
