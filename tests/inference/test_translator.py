"""The Translator: over-long lines truncated with a warning, --max-tokens batches within budget."""

from __future__ import annotations

import logging

import pytest
import torch

from seqlab.config import DecodeConfig
from seqlab.data.tokenize import WhitespaceTokenizer
from seqlab.data.vocab import Side, Vocab
from seqlab.inference import Translator
from seqlab.models.transformer import TransformerConfig, build_transformer

WORDS = [f"w{i}" for i in range(30)]
MAX_LEN = 8  # positions: 7 source tokens + EOS


@pytest.fixture(scope="module")
def translator() -> Translator:
    torch.manual_seed(0)
    vocab = Vocab.build({w: 1 for w in WORDS})
    config = TransformerConfig(
        d_model=16, num_heads=2, num_encoder_layers=1, num_decoder_layers=1, d_ff=32,
        dropout=0.0, max_len=MAX_LEN,
    )  # fmt: skip
    model = build_transformer(config, len(vocab), len(vocab)).eval()
    side = Side(WhitespaceTokenizer(), vocab)
    return Translator(model, side, side, DecodeConfig(beam_size=1, max_len_a=0.0, max_len_b=6))


def texts(results) -> list[str]:
    return [r[0].text if r else "" for r in results]


def test_a_line_longer_than_the_model_accepts_is_truncated_with_a_warning(translator, caplog):
    long = " ".join(WORDS[:20])
    with caplog.at_level(logging.WARNING, logger="seqlab"):
        results = translator.translate(["w1 w2", long, ""])
    assert len(results) == 3 and results[0] and results[1] and results[2] == []
    assert "input line 2 has 20 tokens; truncated to 7" in caplog.text
    assert len(caplog.records) == 1
    # what was translated is the line's first 7 tokens
    assert texts(translator.translate([" ".join(WORDS[:7])])) == texts(results[1:2])


def test_max_tokens_batches_respect_the_budget_and_change_no_output(translator):
    g = torch.Generator().manual_seed(1)
    lines = [
        " ".join(WORDS[i] for i in torch.randint(0, 30, (int(n),), generator=g).tolist())
        for n in torch.randint(1, 8, (25,), generator=g)
    ]
    lines[3] = ""
    ids = [translator.encode_line(line, n) if line else [] for n, line in enumerate(lines, 1)]
    batches = list(translator.batches(ids, batch_size=100, max_tokens=20))
    assert sorted(i for b in batches for i in b) == [i for i, x in enumerate(ids) if x]
    for batch in batches:  # padded source tokens (longest + EOS) x rows within the budget
        assert max(len(ids[i]) + 1 for i in batch) * len(batch) <= 20
    assert len(batches) > 25 // 20 + 1  # the budget, not batch_size, cut them
    one_by_one = texts(translator.translate(lines, batch_size=1))
    assert texts(translator.translate(lines, max_tokens=20)) == one_by_one
    assert texts(translator.translate(lines)) == one_by_one  # batch_size 64: one padded batch
