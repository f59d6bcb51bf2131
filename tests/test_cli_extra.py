"""`seqlab average`, `seqlab translate --attention-plot`, refusing unsafe or foreign checkpoints.

The session's tiny synthetic run (checkpoints at steps 2, 4 and 6) is shared; the Transformer and
no-attention checkpoints reuse its recipe and vocabularies with freshly built (untrained) weights.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from seqlab.checkpoint import load_checkpoint, save_checkpoint
from seqlab.models.rnn import RNNSeq2SeqConfig, build_rnn_seq2seq
from seqlab.models.transformer import TransformerConfig, build_transformer
from tests.conftest import run_cli

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
LINES = "a b c\nd e f g\n\nh i\n"


@pytest.fixture(scope="module")
def run_dir(reverse_run_dir):
    return reverse_run_dir


def _rebuilt(run_dir, out, kind: str, config, build) -> str:
    """The run's last checkpoint with another (untrained) model of the same vocabularies."""
    state = load_checkpoint(run_dir / "checkpoint_6.pt")
    torch.manual_seed(0)
    model = build(config, len(state["src"]["vocab"]), len(state["tgt"]["vocab"]))
    recipe = {**state["recipe"], "model": {"kind": kind, **dataclasses.asdict(config)}}
    save_checkpoint({**state, "recipe": recipe, "model": model.state_dict()}, out)
    return out


@pytest.fixture(scope="module")
def transformer_checkpoint(run_dir):
    config = TransformerConfig(
        d_model=16, num_heads=2, num_encoder_layers=1, num_decoder_layers=2, d_ff=32, max_len=64
    )
    return _rebuilt(run_dir, run_dir.parent / "tf.pt", "transformer", config, build_transformer)


def _assert_one_line_error(code: int, err: str, *fragments: str) -> None:
    assert code == 2 and err.startswith("seqlab: error:") and "Traceback" not in err
    assert err.count("\n") == 1
    for fragment in fragments:
        assert fragment in err, err


# -- seqlab average ----------------------------------------------------------------------------


def test_average_of_two_checkpoints_is_the_parameter_mean(run_dir, tmp_path, capsys, monkeypatch):
    a, b, out = run_dir / "checkpoint_2.pt", run_dir / "checkpoint_4.pt", tmp_path / "avg.pt"
    code, stdout, _ = run_cli(["average", a, b, "-o", out], capsys, monkeypatch)
    assert code == 0 and stdout.strip() == str(out)
    first, second, averaged = (load_checkpoint(p)["model"] for p in (a, b, out))
    assert averaged.keys() == first.keys()
    for key, tensor in averaged.items():
        torch.testing.assert_close(tensor, (first[key] + second[key]) / 2)
    assert any(not torch.equal(first[k], second[k]) for k in first)  # the mean is not trivial
    assert load_checkpoint(out)["averaged_from"] == [str(a), str(b)]
    code, stdout, _ = run_cli(["translate", out], capsys, monkeypatch, LINES)
    assert code == 0 and stdout.count("\n") == 4 and stdout.split("\n")[2] == ""


def test_weights_only_checkpoint_translates_the_same_in_a_smaller_file(
    run_dir, tmp_path, capsys, monkeypatch
):
    last, out = run_dir / "checkpoint_6.pt", tmp_path / "weights.pt"
    assert run_cli(["average", "--weights-only", last, "-o", out], capsys, monkeypatch)[0] == 0
    state = load_checkpoint(out)
    assert "optimizer" not in state and "rng" not in state and "model" in state
    assert out.stat().st_size < 0.6 * last.stat().st_size
    _, expected, _ = run_cli(["translate", last], capsys, monkeypatch, LINES)
    _, got, _ = run_cli(["translate", out], capsys, monkeypatch, LINES)
    assert got == expected


def test_averaging_a_checkpoint_with_itself_keeps_its_translations(
    run_dir, tmp_path, capsys, monkeypatch
):
    last, out = run_dir / "checkpoint_6.pt", tmp_path / "self.pt"
    assert run_cli(["average", last, last, "-o", out], capsys, monkeypatch)[0] == 0
    for beam in ("1", "3"):
        _, expected, _ = run_cli(
            ["translate", last, "--beam-size", beam], capsys, monkeypatch, LINES
        )
        _, got, _ = run_cli(["translate", out, "--beam-size", beam], capsys, monkeypatch, LINES)
        assert got == expected


def test_average_last_n_of_a_run(run_dir, tmp_path, capsys, monkeypatch):
    explicit, last = tmp_path / "explicit.pt", tmp_path / "last.pt"
    pair = [run_dir / "checkpoint_4.pt", run_dir / "checkpoint_6.pt"]
    assert run_cli(["average", *pair, "-o", explicit], capsys, monkeypatch)[0] == 0
    assert run_cli(["average", "--last", 2, run_dir, "-o", last], capsys, monkeypatch)[0] == 0
    for key, tensor in load_checkpoint(explicit)["model"].items():
        assert torch.equal(load_checkpoint(last)["model"][key], tensor)
    evaluate = ["evaluate", last, "--src", tmp_path / "s.txt", "--ref", tmp_path / "r.txt"]
    (tmp_path / "s.txt").write_text("a b c\n")
    (tmp_path / "r.txt").write_text("c b a\n")
    code, out, _ = run_cli(evaluate, capsys, monkeypatch)
    assert code == 0 and out.startswith("bleu\t")


def test_average_errors_are_one_line(
    run_dir, transformer_checkpoint, tmp_path, capsys, monkeypatch
):
    out, ckpt = tmp_path / "out.pt", run_dir / "checkpoint_6.pt"
    cases = [
        (["--last", 4, run_dir], ["--last 4", "3 numbered"]),
        (["--last", 2, tmp_path / "nowhere"], ["nowhere", "no such run folder"]),
        (["--last", 2, run_dir, ckpt], ["one RUN_DIR"]),
        ([ckpt, tmp_path / "missing.pt"], ["missing.pt"]),
        ([ckpt, transformer_checkpoint], ["tf.pt", "[model]"]),
    ]
    state = load_checkpoint(ckpt)
    vocab = list(state["tgt"]["vocab"])
    vocab[-1], vocab[-2] = vocab[-2], vocab[-1]  # same size and shapes, other vocabulary
    other = tmp_path / "other_vocab.pt"
    save_checkpoint({**state, "tgt": {**state["tgt"], "vocab": vocab}}, other)
    cases.append(([ckpt, other], ["other_vocab.pt", "target vocabulary"]))
    for args, fragments in cases:
        code, _, err = run_cli(["average", *args, "-o", out], capsys, monkeypatch)
        _assert_one_line_error(code, err, *fragments)
        assert not out.exists()


# -- seqlab translate --attention-plot ---------------------------------------------------------


def test_attention_plot_of_an_attention_rnn(run_dir, tmp_path, capsys, monkeypatch):
    png = tmp_path / "attn.png"
    args = ["translate", run_dir / "best.pt", "--attention-plot", png]
    code, out, _ = run_cli(args, capsys, monkeypatch, "\na b c d\n")
    assert code == 0 and out.split("\n")[0] == "" and out.count("\n") == 2  # output unchanged
    assert png.read_bytes().startswith(PNG_MAGIC)
    code, _, err = run_cli([*args, "--beam-size", "3"], capsys, monkeypatch, "a b\nc\n")
    _assert_one_line_error(code, err, "exactly one non-empty input line", "got 2")
    code, _, err = run_cli([*args, "--attention-layer", "0"], capsys, monkeypatch, "a b\n")
    _assert_one_line_error(code, err, "single attention")


def test_attention_plot_of_a_transformer_layer_and_head(
    transformer_checkpoint, tmp_path, capsys, monkeypatch
):
    png = tmp_path / "tf.png"
    args = ["translate", transformer_checkpoint, "--attention-plot", png]
    for extra in ([], ["--attention-layer", "0", "--attention-head", "1", "--beam-size", "2"]):
        png.unlink(missing_ok=True)
        assert run_cli([*args, *extra], capsys, monkeypatch, "a b c\n")[0] == 0
        assert png.read_bytes().startswith(PNG_MAGIC)
    code, _, err = run_cli([*args, "--attention-layer", "2"], capsys, monkeypatch, "a b c\n")
    _assert_one_line_error(code, err, "out of range", "2 decoder layers, 2 heads")


def test_attention_plot_needs_attention_and_the_flag(run_dir, tmp_path, capsys, monkeypatch):
    config = RNNSeq2SeqConfig(embed_dim=8, hidden_size=8, num_layers=1, attention=False)
    plain = _rebuilt(run_dir, tmp_path / "plain.pt", "rnn_seq2seq", config, build_rnn_seq2seq)
    png = tmp_path / "x.png"
    code, _, err = run_cli(
        ["translate", plain, "--attention-plot", png], capsys, monkeypatch, "a b\n"
    )
    _assert_one_line_error(code, err, "no attention")
    assert not png.exists()
    code, _, err = run_cli(
        ["translate", plain, "--attention-head", "0"], capsys, monkeypatch, "a b\n"
    )
    _assert_one_line_error(code, err, "--attention-plot")


# -- unsafe and foreign checkpoints ------------------------------------------------------------


class _RunsCodeWhenUnpickled:
    """Unpickling this calls open(marker, "w"): a stand-in for any code a pickle can run."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_pickle_that_runs_code_is_refused(tmp_path, capsys, monkeypatch):
    marker, evil = tmp_path / "pwned", tmp_path / "evil.pt"
    payload = {"format": "seqlab-checkpoint", "version": 1, "model": _RunsCodeWhenUnpickled(marker)}
    torch.save(payload, evil)
    for args in (["translate", evil], ["average", evil, evil, "-o", tmp_path / "o.pt"]):
        code, _, err = run_cli(args, capsys, monkeypatch, "a b\n")
        assert code == 2 and err.startswith("seqlab: error:") and "Traceback" not in err
        assert "evil.pt" in err and not marker.exists()
    torch.load(evil, weights_only=False)  # the file really is live: an unsafe load runs it
    assert marker.exists()


def test_future_version_and_foreign_files_are_clear_errors(run_dir, tmp_path, capsys, monkeypatch):
    state = load_checkpoint(run_dir / "checkpoint_6.pt")
    future, foreign = tmp_path / "future.pt", tmp_path / "foreign.pt"
    torch.save({**state, "version": 99}, future)
    torch.save(state["model"], foreign)  # a plain state dict, as other tools write
    for path, fragment in [(future, "version 99 is newer"), (foreign, "not a seqlab checkpoint")]:
        code, _, err = run_cli(["translate", path], capsys, monkeypatch, "a b\n")
        _assert_one_line_error(code, err, path.name, fragment)


def test_the_refusal_of_a_code_running_pickle_is_one_line(tmp_path, capsys, monkeypatch):
    evil = tmp_path / "evil.pt"
    torch.save(
        {"format": "seqlab-checkpoint", "model": _RunsCodeWhenUnpickled(tmp_path / "m")}, evil
    )
    code, _, err = run_cli(["translate", evil], capsys, monkeypatch, "a b\n")
    _assert_one_line_error(code, err, "evil.pt")
    assert "weights_only=False" not in err and not (tmp_path / "m").exists()
