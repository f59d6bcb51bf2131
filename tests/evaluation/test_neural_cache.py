"""Tests for seqlab/evaluation/neural_cache.py: the continuous cache against a direct reading of
Grave et al.'s formula, its window, the mixture, tuning, and the model's own perplexity."""

from __future__ import annotations

import math

import pytest
import torch

from seqlab.errors import ConfigError
from seqlab.evaluation.neural_cache import (
    CacheSettings,
    StreamOutputs,
    cache_probability,
    mix,
    perplexity_of,
    score,
    stream_outputs,
    tune,
)
from seqlab.models.language_model import LMConfig, build_language_model
from seqlab.tasks.language_model import stream_nll


def _direct(features, targets, window, theta):
    """p_cache(targets[b, t]) position by position, straight from the paper's formula."""
    rows, length, _ = features.shape
    out = torch.zeros(rows, length)
    for b in range(rows):
        for t in range(1, length):
            past = range(max(0, t - window), t)
            scores = torch.stack([theta * features[b, t] @ features[b, j] for j in past])
            weights = torch.softmax(scores, 0)
            out[b, t] = sum(w for w, j in zip(weights, past) if targets[b, j] == targets[b, t])
    return out


@pytest.mark.parametrize("window, block", [(4, 3), (100, 5), (1, 7)])
def test_cache_probability_follows_the_formula(window, block):
    torch.manual_seed(0)
    features, targets = torch.randn(2, 23, 8), torch.randint(0, 4, (2, 23))
    got = cache_probability(features, targets, window, 0.7, block=block)
    torch.testing.assert_close(got, _direct(features, targets, window, 0.7))
    assert (got[:, 0] == 0).all()


def test_a_word_outside_the_window_is_not_predicted():
    features = torch.ones(1, 6, 4)
    targets = torch.tensor([[7, 1, 2, 3, 4, 7]])
    assert cache_probability(features, targets, 4, 1.0)[0, 5] == 0.0
    assert cache_probability(features, targets, 5, 1.0)[0, 5] == pytest.approx(0.2)


def test_mix_is_the_interpolation_and_keeps_the_first_position():
    log_prob = torch.log(torch.tensor([[0.5, 0.1, 0.2]]))
    cache = torch.tensor([[0.9, 0.0, 1.0]])
    mixed = mix(log_prob, cache, 0.25)
    expected = torch.log(torch.tensor([[0.5, 0.75 * 0.1, 0.75 * 0.2 + 0.25]]))
    torch.testing.assert_close(mixed, expected)
    assert mix(log_prob, cache, 0.0) is log_prob


def test_tuning_finds_the_cache_useful_on_repeated_rare_words_and_useless_on_noise():
    torch.manual_seed(0)
    length, vocab = 400, 50
    targets = torch.randint(0, vocab, (1, length))
    targets[0, 200:] = targets[0, :200]  # the text repeats: a cache should find it
    features = 3.0 * torch.randn(1, length, 16)
    features[0, 200:] = features[0, :200]  # and the model's state recognises where it is
    uniform = torch.full((1, length), -math.log(vocab))
    repeated = StreamOutputs(features, targets, uniform)
    best, grid = tune(repeated, window=300)
    assert best.lam >= 0.3
    assert score(repeated, best)["ppl"] < 0.5 * vocab
    assert len(grid) == len({(g["theta"], g["lambda"]) for g in grid})
    # a model that already knows every word: the cache can only hurt, so lambda 0
    certain = StreamOutputs(features, targets, torch.zeros(1, length))
    assert tune(certain, window=300)[0].lam == 0.0


def test_stream_outputs_give_the_models_own_perplexity():
    torch.manual_seed(0)
    config = LMConfig(embed_dim=16, hidden_size=16, adaptive_cutoffs=(10, 20), tie_embeddings=False)
    model = build_language_model(config, 30)
    model.train()
    stream = torch.randint(1, 30, (101,))
    outputs = stream_outputs(model, stream, batch_size=3, bptt=7)
    assert model.training  # restored
    nll, tokens = stream_nll(model.eval(), stream, 3, 7)
    assert outputs.num_tokens == tokens == 99
    assert outputs.features.shape == (3, 33, 16)
    assert perplexity_of(outputs.log_prob)["loss"] == pytest.approx(nll / tokens, rel=1e-5)
    # one row read in segments of 7, the state carried, equals one pass over the whole text
    one_row = stream_outputs(model, stream, batch_size=1, bptt=7)
    with torch.no_grad():
        features, _ = model.eval().run(stream[None, :-1])  # (1, 100, H)
        whole = -model.nll(features, stream[None, 1:])  # (1, 100)
    torch.testing.assert_close(one_row.log_prob, whole)
    torch.testing.assert_close(one_row.features, features)
    with_cache = score(outputs, CacheSettings(window=10, theta=0.3, lam=0.0))
    assert with_cache["ppl"] == pytest.approx(with_cache["model_ppl"])


@pytest.mark.parametrize(
    "kwargs, message",
    [({"window": 0}, "window"), ({"lam": 1.0}, "lambda"), ({"theta": -1.0}, "theta")],
)
def test_bad_settings_are_named(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        CacheSettings(**kwargs)
