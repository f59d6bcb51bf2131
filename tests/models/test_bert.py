"""BERT: tied MLM head, padding invariance of `encode`, heads' shapes, registry, config errors."""

import pytest
import torch

from seqlab.config import load_recipe
from seqlab.models import MODELS
from seqlab.models.bert import BertConfig, build_bert, build_bert_classifier

torch.set_num_threads(1)
V = 50
SMALL = BertConfig(d_model=16, num_heads=2, num_layers=2, d_ff=32, dropout=0.1, max_len=32)


@pytest.mark.parametrize("norm_first", [True, False])
def test_mlm_head_shares_the_token_embedding(norm_first):
    cfg = BertConfig(d_model=16, num_heads=2, num_layers=1, d_ff=32, norm_first=norm_first)
    model = build_bert(cfg, V)
    assert model.mlm_head.weight is model.embeddings.token.weight
    with torch.no_grad():
        model.embeddings.token.weight[9].fill_(0.5)  # one write changes both
    assert torch.equal(model.mlm_head.weight[9], torch.full((16,), 0.5))
    names = [n for n, _ in model.named_parameters()]
    assert "mlm_head.weight" not in names  # listed once: under the embedding
    tokens = torch.randint(7, V, (2, 6))
    mlm_logits, _ = model(
        tokens,
        torch.zeros_like(tokens),
        torch.ones(2, 6, dtype=torch.bool),
        torch.ones(2, 6, dtype=torch.bool),
    )
    mlm_logits.sum().backward()
    assert model.embeddings.token.weight.grad is not None


def test_encode_is_the_same_alone_and_padded_in_a_batch():
    torch.manual_seed(0)
    model = build_bert(SMALL, V).eval()
    short = torch.tensor([5, 11, 12, 13, 6])  # <cls> a b c <sep>
    long = torch.tensor([5, 20, 21, 22, 23, 24, 6, 30, 31, 6])
    alone = model.encode(short[None], torch.zeros(1, 5, dtype=torch.long), torch.ones(1, 5).bool())
    tokens = torch.zeros(2, 10, dtype=torch.long)
    tokens[0, :5], tokens[1] = short, long
    segments = torch.zeros(2, 10, dtype=torch.long)
    segments[1, 7:] = 1
    mask = tokens != 0
    segments[0, 5:] = 1  # whatever sits at padding must not matter
    tokens[0, 5:] = 17
    batched = model.encode(tokens, segments, mask)
    assert torch.allclose(batched[0, :5], alone[0], atol=1e-5)


def test_segments_and_positions_change_the_vectors():
    torch.manual_seed(0)
    model = build_bert(SMALL, V).eval()
    tokens = torch.tensor([[5, 11, 11, 6]])
    mask = torch.ones(1, 4, dtype=torch.bool)
    a = model.encode(tokens, torch.zeros_like(tokens), mask)
    b = model.encode(tokens, torch.tensor([[0, 0, 1, 1]]), mask)
    assert not torch.allclose(a[0, 2:], b[0, 2:])
    assert not torch.allclose(a[0, 1], a[0, 2])  # same token, different position


def test_forward_scores_only_the_chosen_positions():
    model = build_bert(SMALL, V).eval()
    tokens = torch.randint(7, V, (3, 8))
    mlm_mask = torch.zeros(3, 8, dtype=torch.bool)
    mlm_mask[0, 2] = mlm_mask[2, 5] = mlm_mask[2, 6] = True
    mlm, nsp = model(tokens, torch.zeros_like(tokens), torch.ones(3, 8).bool(), mlm_mask)
    assert mlm.shape == (3, V) and nsp.shape == (3, 2)
    hidden = model.encode(tokens, torch.zeros_like(tokens), torch.ones(3, 8).bool())
    assert torch.allclose(mlm[1], model.mlm_head(hidden[2, 5]), atol=1e-6)


def test_classifier_reads_the_pooled_cls_vector():
    model = build_bert_classifier(SMALL, V, num_classes=3).eval()
    tokens = torch.randint(7, V, (4, 7))
    logits = model(tokens, torch.zeros_like(tokens), torch.ones(4, 7).bool())
    assert logits.shape == (4, 3)
    other = tokens.clone()
    other[:, 1:] = torch.randint(7, V, (4, 6))
    assert not torch.allclose(
        logits, model(other, torch.zeros_like(other), torch.ones(4, 7).bool())
    )


def test_registered_and_built_from_a_recipe(tmp_path):
    assert "bert" in MODELS
    path = tmp_path / "r.toml"
    path.write_text('task = "masked_lm"\n[model]\nkind = "bert"\nd_model = 32\nnum_heads = 4\n')
    recipe = load_recipe(path)
    model = MODELS["bert"].build(recipe.model.config, 40, 40)
    assert model.embeddings.token.weight.shape == (40, 32)
    with pytest.raises(ValueError, match="one vocabulary"):
        build_bert(recipe.model.config, 40, 41)


def test_bad_config_names_the_key(tmp_path):
    from seqlab.errors import ConfigError

    path = tmp_path / "r.toml"
    path.write_text('task = "masked_lm"\n[model]\nkind = "bert"\nd_model = 30\nnum_heads = 4\n')
    with pytest.raises(ConfigError, match="not divisible"):
        load_recipe(path)
    path.write_text('task = "masked_lm"\n[model]\nkind = "bert"\nnum_layer = 2\n')
    with pytest.raises(ConfigError, match="did you mean 'num_layers'"):
        load_recipe(path)
