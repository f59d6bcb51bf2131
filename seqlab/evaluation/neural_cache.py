"""The continuous cache of Grave et al. 2017 ("Improving Neural Language Models with a Continuous
Cache"): a language model's perplexity, with its recent past as a pointer memory.

At test time the model's last `window` hidden states h_i are kept with the word that followed
each, x_{i+1}. The cache predicts the next word from the current state h_t as

    p_cache(w) = sum over i in [t - window, t) with x_{i+1} = w of softmax_i(theta * h_t . h_i)

and the prediction is (1 - lambda) p_model(w) + lambda p_cache(w). Nothing is trained: theta
and lambda are chosen on validation text (`tune`), and the model's weights never change. Rare
words that recur within a document (names, places) are what the cache predicts well; on
WikiText-2 it took an LSTM from 99.3 to 68.9 test perplexity in the paper, AWD-LSTM from 68.6
to 52.0 (Merity et al. 2018). A first position (no history) keeps the model's probability.

Scoring reads the text as `read_stream` does (`eval_batch_size` contiguous rows, the state
carried from segment to segment), so each row keeps its own cache.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from seqlab.errors import ConfigError
from seqlab.evaluation.lm_stream import read_stream
from seqlab.evaluation.metrics import perplexity

# Grave et al. tune theta and lambda on validation data; these grids cover their WikiText
# settings and AWD-LSTM's (theta 0.6625, lambda 0.1279) for hidden states in (-1, 1).
THETAS = (0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0)
LAMBDAS = tuple(round(0.02 * i, 2) for i in range(26))  # 0 (no cache) .. 0.5


@dataclass(frozen=True)
class CacheSettings:
    """window: positions kept (Grave et al. use 2,000 on WikiText-2, AWD-LSTM 3,785);
    theta: the inverse temperature of the dot products; lam: the cache's weight."""

    window: int = 2000
    theta: float = 0.3
    lam: float = 0.1

    def __post_init__(self):
        if self.window < 1:
            raise ConfigError(f"cache window = {self.window} must be at least 1")
        if self.theta < 0.0:
            raise ConfigError(f"cache theta = {self.theta} must not be negative")
        if not 0.0 <= self.lam < 1.0:
            raise ConfigError(f"cache lambda = {self.lam} must lie in [0, 1)")


@dataclass(frozen=True)
class StreamOutputs:
    """What a model computed reading a stream: features (B, C, H) float32 (the inputs of its
    output layer), targets (B, C) and the model's log p(target) (B, C), for B contiguous rows of
    C tokens each."""

    features: Tensor
    targets: Tensor
    log_prob: Tensor

    @property
    def num_tokens(self) -> int:
        return self.targets.numel()


@torch.no_grad()
def stream_outputs(model: nn.Module, stream: Tensor, batch_size: int, bptt: int) -> StreamOutputs:
    """Read stream (N,) with `read_stream`, in eval mode, keeping each position's features.

    `model` is a language model with `run(tokens, state) -> (features, state)` and
    `nll(features, targets)` (`seqlab.models.language_model.RNNLanguageModel`).
    """
    was_training = model.training
    model.eval()
    features, targets, log_prob = [], [], []
    try:
        for out, batch in read_stream(model, stream, batch_size, bptt):  # out (B, T, H)
            features.append(out.float().cpu())
            targets.append(batch.targets.cpu())
            log_prob.append(-model.nll(out, batch.targets).float().cpu())  # (B, T)
    finally:
        model.train(was_training)
    if not features:
        raise ConfigError(f"a stream of {stream.numel()} tokens has nothing to predict")
    return StreamOutputs(torch.cat(features, 1), torch.cat(targets, 1), torch.cat(log_prob, 1))


def cache_probability(
    features: Tensor, targets: Tensor, window: int, theta: float, block: int = 256
) -> Tensor:
    """p_cache(targets[:, t]) from positions [t - window, t) of the same row.

    Args:
        features: (B, C, H) hidden states; features[:, t] predicts targets[:, t].
        targets: (B, C) the word following each position.
    Returns:
        (B, C) float32; 0 at t = 0, where the cache is empty.
    """
    rows, length, _ = features.shape
    device = features.device
    out = torch.zeros(rows, length, dtype=torch.float32, device=device)
    for start in range(0, length, block):
        end = min(start + block, length)
        low = max(0, start - window)
        if end - 1 <= low:  # no position of this block has a past
            continue
        query = features[:, start:end].float()  # (B, T, H)
        keys = features[:, low : end - 1].float()  # (B, K, H): positions low .. end - 2
        scores = theta * torch.bmm(query, keys.transpose(1, 2))  # (B, T, K)
        t = torch.arange(start, end, device=device).unsqueeze(1)  # (T, 1)
        j = torch.arange(low, end - 1, device=device).unsqueeze(0)  # (1, K)
        visible = (j < t) & (j >= t - window)  # (T, K)
        scores = scores.masked_fill(~visible, -math.inf)
        weights = torch.softmax(scores, dim=-1).nan_to_num(0.0)  # rows without a past: 0
        same = targets[:, low : end - 1].unsqueeze(1) == targets[:, start:end].unsqueeze(2)
        out[:, start:end] = (weights * same).sum(-1)  # (B, T)
    return out


def mix(log_prob: Tensor, cache_prob: Tensor, lam: float) -> Tensor:
    """log((1 - lam) p_model + lam p_cache) where the cache has a past (t > 0), else log p_model.

    log_prob, cache_prob: (B, C) -> (B, C).
    """
    if lam == 0.0:
        return log_prob
    mixed = torch.logaddexp(
        log_prob + math.log1p(-lam), torch.log(cache_prob) + math.log(lam)
    )  # (B, C)
    mixed[:, 0] = log_prob[:, 0]
    return mixed


def perplexity_of(log_prob: Tensor) -> dict:
    """{"loss": mean NLL, "ppl": exp(loss), "tokens"} of per-token log-probabilities."""
    nll, tokens = -log_prob.double().sum().item(), log_prob.numel()
    return {"loss": nll / tokens, "ppl": perplexity(nll, tokens), "tokens": tokens}


def score(outputs: StreamOutputs, settings: CacheSettings) -> dict:
    """Perplexity with the cache of `settings`, and the model's own."""
    cache = cache_probability(outputs.features, outputs.targets, settings.window, settings.theta)
    result = perplexity_of(mix(outputs.log_prob, cache, settings.lam))
    result["model_ppl"] = perplexity_of(outputs.log_prob)["ppl"]
    result["cache"] = {"window": settings.window, "theta": settings.theta, "lambda": settings.lam}
    return result


def tune(
    outputs: StreamOutputs,
    window: int,
    thetas: Iterable[float] = THETAS,
    lambdas: Sequence[float] = LAMBDAS,
) -> tuple[CacheSettings, list[dict]]:
    """The (theta, lambda) of lowest perplexity on `outputs` (validation text), by grid search.

    Returns:
        (best settings, every grid point as {"theta", "lambda", "ppl"}).
    """
    CacheSettings(window=window)  # a window below 1 is an error, not an empty cache
    grid: list[dict] = []
    best: tuple[float, CacheSettings] | None = None
    for theta in thetas:
        cache = cache_probability(outputs.features, outputs.targets, window, theta)
        for lam in lambdas:
            ppl = perplexity_of(mix(outputs.log_prob, cache, lam))["ppl"]
            grid.append({"theta": theta, "lambda": lam, "ppl": ppl})
            if best is None or ppl < best[0]:
                best = (ppl, CacheSettings(window, theta, lam))
    if best is None:
        raise ConfigError("the cache grid is empty: give at least one theta and one lambda")
    return best[1], grid


def cache_scores(
    outputs: dict[str, StreamOutputs], window: int, settings: CacheSettings | None = None
) -> dict:
    """Score every stream's outputs with a cache: theta and lambda tuned on `outputs["valid"]`
    unless `settings` are given -> {"<name>_cache": `score(...)`} for each name."""
    if settings is None:
        if "valid" not in outputs:
            raise ConfigError("tuning the cache needs validation text (data.valid_split)")
        settings, _ = tune(outputs["valid"], window)
    return {f"{name}_cache": score(out, settings) for name, out in outputs.items()}
