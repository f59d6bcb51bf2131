"""Recurrent language models: the Decoder contract, state carrying, tying, adaptive softmax."""

from __future__ import annotations

import pytest
import torch

from seqlab.config import ModelSpec
from seqlab.decoding.search import greedy_search, sample
from seqlab.errors import ConfigError
from seqlab.models import MODELS, build_model
from seqlab.models.language_model import LMConfig, LMState, build_language_model
from tests.models.contract import check_reorder_commutes, check_step_equals_forward

V = 40
AWD = dict(
    dropout_input=0.2,
    dropout_hidden=0.1,
    dropout_embedding=0.1,
    weight_drop=0.3,
    ar_alpha=2.0,
    tar_beta=1.0,
)
CONFIGS = {
    "rnn": LMConfig("rnn", 8, 8, 1, 0.1, True),
    "gru": LMConfig("gru", 8, 12, 2, 0.1, False),
    "lstm-tied": LMConfig("lstm", 8, 8, 2, 0.1, True),
    "lstm-projected": LMConfig("lstm", 6, 12, 2, 0.1, True),
    "lstm-adaptive": LMConfig("lstm", 8, 16, 2, 0.1, False, adaptive_cutoffs=(10, 20)),
    "lstm-awd": LMConfig("lstm", 8, 8, 3, 0.1, True, variational=True, **AWD),
}


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def model(name: str, seed: int = 0):
    torch.manual_seed(seed)
    return build_language_model(CONFIGS[name], V).eval()


def tokens(batch: int = 3, length: int = 7, seed: int = 1) -> torch.Tensor:
    return torch.randint(7, V, (batch, length), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", CONFIGS)
def test_stepping_equals_teacher_forcing_and_reorder_commutes(name):
    lm, x = model(name), tokens()
    check_step_equals_forward(lm, lm.empty_source(3), x)
    check_reorder_commutes(lm, lm.empty_source(3), x)
    primed = lm.prime(tokens(seed=2))  # from a state after a prefix, too
    check_step_equals_forward(lm, primed, x)
    check_reorder_commutes(lm, primed, x)


@pytest.mark.parametrize("name", CONFIGS)
@torch.no_grad()
def test_carried_state_continues_the_text_exactly(name):
    """run(x1) then run(x2, state) == run(x1 ++ x2): what sequential TBPTT relies on."""
    lm, x = model(name), tokens(length=10)
    whole, _ = lm.run(x)  # (B, 10, H)
    first, state = lm.run(x[:, :4])
    second, _ = lm.run(x[:, 4:], state)
    torch.testing.assert_close(torch.cat([first, second], 1), whole, atol=1e-5, rtol=0)
    fresh, _ = lm.run(x[:, 4:])  # a reset state gives something else
    assert not torch.allclose(fresh, whole[:, 4:], atol=1e-3)


@pytest.mark.parametrize("name", CONFIGS)
@torch.no_grad()
def test_nll_is_the_cross_entropy_of_the_logits(name):
    lm, x = model(name), tokens()
    features, _ = lm.run(x)
    log_probs = torch.log_softmax(lm.logits(features), dim=-1)  # (B, T, V)
    assert torch.allclose(log_probs.exp().sum(-1), torch.ones(x.shape), atol=1e-5)
    want = -log_probs.gather(-1, x.roll(1, 1).unsqueeze(-1)).squeeze(-1)
    torch.testing.assert_close(lm.nll(features, x.roll(1, 1)), want, atol=1e-5, rtol=0)


def test_a_state_is_batch_first_and_detaches():
    lm = build_language_model(LMConfig("lstm", 8, 12, 3, 0.0, False), V)
    _, state = lm.run(tokens(batch=5))
    assert state.hidden.shape == state.cell.shape == (5, 3, 12)
    assert state.hidden.requires_grad and not state.detach().hidden.requires_grad
    gru = build_language_model(LMConfig("gru", 8, 12, 1, 0.0, False), V)
    assert gru.zero_state(2).cell is None
    with pytest.raises(TypeError, match="LMState"):
        gru.init_state(gru.empty_source(2, state=torch.zeros(2, 1, 12)))  # type: ignore[arg-type]
    assert isinstance(gru.prime(tokens()[:, :0]).final, type(None))


def test_tying_shares_one_table_and_projects_when_sizes_differ():
    tied, projected = model("lstm-tied"), model("lstm-projected")
    assert tied.output.weight is tied.embedding.weight
    assert projected.output[-1].weight is projected.embedding.weight
    assert projected.output[0].in_features == 12 and projected.output[0].out_features == 6
    untied = model("gru")
    assert untied.output.weight is not untied.embedding.weight
    n_tied = sum(p.numel() for p in tied.parameters())
    n_untied = sum(
        p.numel() for p in build_language_model(LMConfig("lstm", 8, 8, 2), V).parameters()
    )
    assert n_tied == n_untied  # the default config ties too


def test_top_k_one_sampling_equals_greedy_from_a_prefix():
    lm = model("lstm-tied", seed=3)
    encoded = lm.prime(tokens(batch=2, length=5))
    limits = {"bos_id": 9, "eos_id": 3, "max_len_b": 12}
    greedy = greedy_search(lm, encoded, **limits)
    drawn = sample(lm, encoded, top_k=1, num_samples=2, **limits)
    for [want], hyps in zip(greedy, drawn):
        assert [h.tokens for h in hyps] == [want.tokens, want.tokens]


def test_registered_as_rnn_lm_and_bad_settings_are_config_errors():
    assert MODELS["rnn_lm"].config is LMConfig
    lm = build_model(ModelSpec("rnn_lm", LMConfig(hidden_size=8, embed_dim=8)), V, V)
    assert lm.logits(torch.zeros(1, 8)).shape == (1, V)
    bad = [
        (LMConfig(hidden_size=0), "model.hidden_size"),
        (LMConfig(dropout=1.0), "model.dropout"),
        (LMConfig(weight_drop=1.0), "model.weight_drop"),
        (LMConfig(dropout_hidden=-0.1), "model.dropout_hidden"),
        (LMConfig(tar_beta=-1.0), "model.tar_beta"),
        (LMConfig(adaptive_cutoffs=(10, 20)), "tie_embeddings"),
        (LMConfig(tie_embeddings=False, adaptive_cutoffs=(20, 10)), "adaptive_cutoffs"),
        (LMConfig(tie_embeddings=False, adaptive_cutoffs=(10, V)), "adaptive_cutoffs"),
    ]
    for config, message in bad:
        with pytest.raises(ConfigError, match=message):
            build_language_model(config, V)
    with pytest.raises(ConfigError, match="one vocabulary"):
        build_language_model(LMConfig(), V, V + 1)
    adaptive = model("lstm-adaptive")
    with pytest.raises(ConfigError, match="label smoothing"):
        adaptive.nll(torch.zeros(1, 2, 16), torch.zeros(1, 2, dtype=torch.long), 0.1)


def test_lm_state_reorders_rows():
    state = LMState(torch.arange(6.0).view(3, 1, 2), None)
    assert state.reorder(torch.tensor([2, 0])).hidden[:, 0, 0].tolist() == [4.0, 0.0]


def test_awd_regularisation_trains_and_leaves_eval_deterministic():
    """A tiny AWD-regularised LSTM learns a short repeated text; in eval it drops nothing, so
    two evaluations agree, and a fresh model loads its weights (parametrized keys included)."""
    torch.manual_seed(0)
    lm = build_language_model(CONFIGS["lstm-awd"], V)
    text = tokens(batch=4, length=12, seed=3)
    optimizer = torch.optim.Adam(lm.parameters(), lr=0.03)
    lm.train()
    losses = []
    for _ in range(200):
        features, _, penalty = lm.run_with_penalty(text[:, :-1])
        assert penalty.item() > 0.0
        loss = lm.nll(features, text[:, 1:]).mean()
        optimizer.zero_grad()
        (loss + penalty).backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses[::20]
    lm.eval()
    with torch.no_grad():
        first, second = lm.run(text)[0], lm.run(text)[0]
        assert torch.equal(first, second)
        assert lm.run_with_penalty(text)[2].item() > 0.0  # AR / TAR do not depend on the mode
        fresh = build_language_model(CONFIGS["lstm-awd"], V).eval()
        fresh.load_state_dict(lm.state_dict())
        torch.testing.assert_close(fresh.run(text)[0], first)
