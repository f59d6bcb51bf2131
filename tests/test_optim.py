"""AdamW parameter groups, learning-rate curves, exact scheduler resumption, gradient norms."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn

from seqlab.errors import ConfigError
from seqlab.optim import build_optimizer, build_scheduler, clip_grad_norm


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(10, 4)
        self.proj = nn.Linear(4, 10)
        self.norm = nn.LayerNorm(4)
        self.proj.weight = self.embed.weight  # tied: must appear once
        self.frozen = nn.Linear(4, 4)
        self.frozen.requires_grad_(False)


def test_weight_decay_only_on_matrices():
    model = Tiny()
    opt = build_optimizer(model, lr=1e-3, weight_decay=0.1, betas=(0.9, 0.98))
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert {id(p) for p in decay["params"]} == {id(model.embed.weight)}
    assert {id(p) for p in no_decay["params"]} == {
        id(model.proj.bias),
        id(model.norm.weight),
        id(model.norm.bias),
    }
    assert decay["betas"] == (0.9, 0.98)


def test_decay_is_decoupled_and_skips_biases():
    model = nn.Linear(3, 3)
    with torch.no_grad():
        model.weight.fill_(1.0)
        model.bias.fill_(1.0)
    opt = build_optimizer(model, lr=0.1, weight_decay=0.5)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()  # zero gradient: only decoupled decay moves anything
    torch.testing.assert_close(model.weight, torch.full((3, 3), 1 - 0.1 * 0.5))
    torch.testing.assert_close(model.bias, torch.ones(3))


def lrs(kind, steps, **kw):
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=2.0)
    sched = build_scheduler(opt, kind, **kw)
    out = []
    for _ in range(steps):
        out.append(opt.param_groups[0]["lr"])  # the lr the next update uses
        opt.step()
        sched.step()
    return out


@pytest.mark.parametrize("kind", ["constant", "inverse_sqrt", "cosine", "linear"])
def test_linear_warmup_to_the_peak(kind):
    lr = lrs(kind, 10, warmup_steps=4, total_steps=100)
    assert lr[:4] == pytest.approx([0.5, 1.0, 1.5, 2.0])  # update u uses peak * u / 4


def test_inverse_sqrt_after_warmup():
    lr = lrs("inverse_sqrt", 64, warmup_steps=4, total_steps=0)
    for u in (4, 9, 16, 64):
        assert lr[u - 1] == pytest.approx(2.0 * math.sqrt(4 / u))
    assert lrs("inverse_sqrt", 9, warmup_steps=0, total_steps=0)[8] == pytest.approx(2.0 / 3)


@pytest.mark.parametrize("kind", ["cosine", "linear"])
def test_decay_reaches_min_ratio_at_total_steps_and_stays(kind):
    lr = lrs(kind, 30, warmup_steps=4, total_steps=20, min_lr_ratio=0.1)
    assert lr[3] == pytest.approx(2.0)
    assert lr[19] == pytest.approx(0.2) and lr[29] == pytest.approx(0.2)
    middle = 2.0 * (0.1 + 0.9 * 0.5)  # halfway through the decay, both curves are at 55%
    assert lr[11] == pytest.approx(middle)
    assert all(a >= b for a, b in itertools.pairwise(lr[3:]))  # monotone after warmup
    if kind == "cosine":  # cosine stays above linear in the first half of the decay
        assert lr[7] > 2.0 * (0.1 + 0.9 * 0.75)


def test_constant_without_warmup():
    assert lrs("constant", 5, warmup_steps=0, total_steps=5) == [2.0] * 5


def test_scheduler_state_dict_resumes_exactly():
    def make():
        model = nn.Linear(2, 2)
        opt = build_optimizer(model, lr=1.0, weight_decay=0.0)
        return opt, build_scheduler(opt, "cosine", warmup_steps=3, total_steps=12)

    opt, sched = make()
    for _ in range(5):
        opt.step()
        sched.step()
    state = sched.state_dict()
    expected = []
    for _ in range(6):
        opt.step()
        sched.step()
        expected.append(sched.get_last_lr())
    opt2, sched2 = make()
    sched2.load_state_dict(state)
    resumed = []
    for _ in range(6):
        opt2.step()
        sched2.step()
        resumed.append(sched2.get_last_lr())
    assert resumed == expected


def test_unknown_schedule_is_a_config_error():
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    with pytest.raises(ConfigError, match="'triangle'"):
        build_scheduler(opt, "triangle", warmup_steps=0, total_steps=1)
    with pytest.raises(ConfigError, match="warmup_steps"):
        build_scheduler(opt, "constant", warmup_steps=-1, total_steps=1)


def test_clip_grad_norm_returns_norm_before_clipping():
    a, b = nn.Parameter(torch.zeros(2)), nn.Parameter(torch.zeros(1))
    a.grad, b.grad = torch.tensor([3.0, 0.0]), torch.tensor([4.0])
    assert clip_grad_norm([a, b], None) == pytest.approx(5.0)
    assert a.grad.tolist() == [3.0, 0.0]  # measured only
    assert clip_grad_norm(iter([a, b]), 0.0) == pytest.approx(5.0)
    norm = clip_grad_norm(iter([a, b]), 1.0)  # a generator, as model.parameters() is
    assert isinstance(norm, float) and norm == pytest.approx(5.0)
    total = torch.cat([a.grad, b.grad]).norm()
    assert total.item() == pytest.approx(1.0, rel=1e-4)
    assert clip_grad_norm([nn.Parameter(torch.zeros(1))], 1.0) == 0.0  # no gradients at all
