"""`seqlab export` and the engines: a CTranslate2 export translates as seqlab does, a seqlab
folder round-trips without pickle, and every model path works with translate and evaluate."""

from __future__ import annotations

import dataclasses
import logging
import os
import random

import pytest
import torch

from seqlab.checkpoint import load_model
from seqlab.errors import CheckpointError, SeqlabError
from seqlab.inference import Translator, open_translator
from seqlab.inference.export import export_model
from tests.conftest import REPO, run_cli

ct2 = pytest.importorskip("ctranslate2")

SYMBOLS = [f"s{i}" for i in range(12)]


def sentences(count: int, seed: int = 0) -> list[str]:
    """`count` random reverse-task inputs of 1 to 11 symbols, and one empty line."""
    rng = random.Random(seed)
    lines = [" ".join(rng.choices(SYMBOLS, k=rng.randint(1, 11))) for _ in range(count)]
    return [*lines[: count // 2], "", *lines[count // 2 :]]


def texts(results) -> list[str]:
    return [hyps[0].text if hyps else "" for hyps in results]


@pytest.fixture(scope="module")
def ct2_folder(transformer_checkpoint, tmp_path_factory):
    return export_model(
        transformer_checkpoint, tmp_path_factory.mktemp("ct2") / "model", "ctranslate2"
    )


@pytest.fixture(scope="module")
def seqlab_folder(transformer_checkpoint, tmp_path_factory):
    return export_model(transformer_checkpoint, tmp_path_factory.mktemp("sl") / "model", "seqlab")


@pytest.fixture(scope="module")
def reference(transformer_checkpoint) -> Translator:
    return open_translator(transformer_checkpoint)


# -- CTranslate2: the same output --------------------------------------------------------------


@pytest.mark.parametrize("beam", [1, 4])
def test_ctranslate2_float32_translates_as_seqlab(reference, ct2_folder, beam):
    engine = open_translator(ct2_folder, threads=2)
    assert engine.engine == "ctranslate2" and engine.decode == reference.decode
    lines = sentences(80)
    ours = reference.translate(lines, beam_size=beam)
    theirs = engine.translate(lines, beam_size=beam)
    assert [len(h) for h in theirs] == [len(h) for h in ours]  # one list per line, [] for ""
    assert texts(theirs) == texts(ours)
    for a, b in zip(ours, theirs):
        if a:  # the same tokens and the same score (log-prob, or / length under the beam)
            assert b[0].tokens == a[0].tokens
            assert b[0].score == pytest.approx(a[0].score, abs=1e-4)


def test_ctranslate2_nbest_lists_match(reference, ct2_folder):
    lines = sentences(20, seed=1)
    ours = reference.translate(lines, beam_size=4, nbest=3)
    theirs = open_translator(ct2_folder).translate(lines, beam_size=4, nbest=3)
    assert [[h.text for h in x] for x in theirs] == [[h.text for h in x] for x in ours]


def test_teacher_forced_log_probs_are_close(transformer_checkpoint, ct2_folder):
    """CTranslate2's `score_batch` against our model's log-softmax under teacher forcing, on the
    source + `<eos>` and `<bos>` + target conventions."""
    from seqlab.data.batch import collate

    loaded = load_model(transformer_checkpoint)
    src, tgt = loaded.sides["src"], loaded.sides["tgt"]
    lines = [line for line in sentences(30, seed=2) if line]
    targets = [" ".join(reversed(line.split())) for line in lines]
    pairs = [
        (src.vocab.encode(s.split()), tgt.vocab.encode(t.split())) for s, t in zip(lines, targets)
    ]
    batch = collate(pairs)
    with torch.no_grad():
        encoded = loaded.model.encode(batch.src, batch.src_mask)
        log_probs = torch.log_softmax(loaded.model.decoder(batch.tgt_in, encoded), -1)  # (B, T, V)
    ours = log_probs.gather(2, batch.tgt_out.unsqueeze(2)).squeeze(2)  # (B, T)
    scored = ct2.Translator(str(ct2_folder)).score_batch(
        [s.split() for s in lines], [t.split() for t in targets]
    )
    worst = 0.0
    for row, result in enumerate(scored):
        assert result.tokens[-1] == "<eos>"
        n = len(result.log_probs)
        worst = max(worst, (torch.tensor(result.log_probs) - ours[row, :n]).abs().max().item())
        assert batch.tgt_mask[row].sum() == n
    assert worst < 1e-4


def test_int8_export_runs_and_stays_close(transformer_checkpoint, ct2_folder, tmp_path):
    import sacrebleu

    folder = export_model(
        transformer_checkpoint, tmp_path / "int8", "ctranslate2", quantization="int8"
    )
    engine = open_translator(folder)
    assert engine.quantization == "int8"
    lines = [line for line in sentences(100, seed=3) if line]
    float32 = texts(open_translator(ct2_folder).translate(lines))
    int8 = texts(engine.translate(lines))
    assert sum(a == b for a, b in zip(int8, float32)) >= 0.8 * len(lines)
    assert sacrebleu.corpus_bleu(int8, [float32]).score > 90


def test_gnmt_length_penalty_warns_at_export(transformer_checkpoint, tmp_path, caplog):
    from seqlab.inference.ct2 import export_ctranslate2

    loaded = load_model(transformer_checkpoint)
    decode = dataclasses.replace(loaded.recipe.decode, length_penalty_kind="gnmt")
    gnmt = dataclasses.replace(loaded, recipe=dataclasses.replace(loaded.recipe, decode=decode))
    with caplog.at_level(logging.WARNING, logger="seqlab"):
        export_ctranslate2(gnmt, tmp_path / "gnmt")
    assert "'gnmt' length penalty" in caplog.text and "average" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="seqlab"):
        export_ctranslate2(loaded, tmp_path / "average")
    assert caplog.text == ""


def test_recurrent_checkpoint_is_a_clear_error(reverse_run_dir, tmp_path, capsys, monkeypatch):
    out = tmp_path / "rnn"
    args = ["export", reverse_run_dir / "best.pt", out, "--format", "ctranslate2"]
    code, _, err = run_cli(args, capsys, monkeypatch)
    assert code == 2 and err.count("\n") == 1
    assert "needs a Transformer translation model" in err and "rnn_seq2seq" in err
    assert "--format seqlab" in err and not out.exists()
    assert list(tmp_path.iterdir()) == []  # no temporary folder left either


def test_a_missing_ctranslate2_says_how_to_install_it(monkeypatch):
    import sys

    from seqlab.inference.ct2 import import_ctranslate2

    monkeypatch.setitem(sys.modules, "ctranslate2", None)  # `import ctranslate2` fails
    with pytest.raises(SeqlabError, match=r"pip install 'seqlab\[ct2\]'"):
        import_ctranslate2()


# -- the portable seqlab folder ------------------------------------------------------------------


def test_seqlab_folder_round_trips_without_pickle(reference, seqlab_folder, monkeypatch):
    names = sorted(p.name for p in seqlab_folder.iterdir())
    assert names == [
        "model.safetensors", "seqlab.json", "src.tokenizer.json", "src_vocab.json",
        "tgt.tokenizer.json", "tgt_vocab.json",
    ]  # fmt: skip

    def refuse(*args, **kwargs):
        raise AssertionError("torch.load called: the folder must load without unpickling")

    monkeypatch.setattr(torch, "load", refuse)
    monkeypatch.setattr("pickle.load", refuse)
    monkeypatch.setattr("pickle.loads", refuse)
    loaded = load_model(seqlab_folder, task="translation")
    original = reference.model.state_dict()
    assert loaded.model.state_dict().keys() == original.keys()
    assert all(torch.equal(v, original[k]) for k, v in loaded.model.state_dict().items())
    decoder = loaded.model.decoder
    assert decoder.output.weight is decoder.embedding.weight  # tied weights load tied
    translator = open_translator(seqlab_folder)
    assert translator.engine == "torch"
    lines = sentences(40, seed=4)
    assert texts(translator.translate(lines)) == texts(reference.translate(lines))


def test_a_recurrent_model_exports_as_a_seqlab_folder(reverse_run_dir, tmp_path):
    folder = export_model(reverse_run_dir / "best.pt", tmp_path / "rnn", "seqlab")
    lines = ["a b c", "", "d e f g"]
    expected = texts(open_translator(reverse_run_dir / "best.pt").translate(lines))
    assert texts(open_translator(folder).translate(lines)) == expected


def test_a_sentencepiece_side_is_written_as_its_model_file(seqlab_folder, tmp_path):
    from seqlab.data.tokenize import SentencePieceTokenizer
    from seqlab.data.vocab import Side
    from seqlab.inference.folder import read_meta, read_sides, write_sides

    texts_ = [" ".join(random.Random(i).choices(SYMBOLS, k=6)) for i in range(200)]
    tokenizer = SentencePieceTokenizer.train(texts_, vocab_size=20)
    side = Side(tokenizer, tokenizer.vocab())
    described = write_sides({"src": side}, tmp_path)
    assert described["src"]["model"] == "src.spm.model"
    assert (tmp_path / "src.spm.model").read_bytes() == tokenizer.model_bytes
    (back,) = read_sides(tmp_path, {"sides": described}).values()
    assert back.vocab == side.vocab and back.tokenizer.tokenize("s1 s2") == tokenizer.tokenize(
        "s1 s2"
    )
    assert read_meta(seqlab_folder)["engine"] == "seqlab"


# -- atomic output folders -----------------------------------------------------------------------


def test_outdir_is_never_half_written(transformer_checkpoint, tmp_path, monkeypatch):
    from seqlab.inference import ct2 as ct2_export
    from seqlab.inference import folder

    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(CheckpointError, match=r"not empty.*--force"):
        export_model(transformer_checkpoint, out, "seqlab")
    assert [p.name for p in out.iterdir()] == ["keep.txt"]

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(folder, "write_meta", crash)
    monkeypatch.setattr(ct2_export, "write_meta", crash)
    with pytest.raises(OSError):
        export_model(transformer_checkpoint, out, "seqlab", force=True)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]  # the old folder, untouched
    with pytest.raises(OSError):
        export_model(transformer_checkpoint, tmp_path / "new", "ctranslate2")
    assert not (tmp_path / "new").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temporary folder left
    monkeypatch.undo()
    export_model(transformer_checkpoint, out, "seqlab", force=True)
    assert "keep.txt" not in [p.name for p in out.iterdir()]
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o777 & ~umask  # not a private temporary folder
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


# -- the CLI with every kind of model path -------------------------------------------------------


def test_translate_and_evaluate_take_every_model_path(
    transformer_checkpoint, seqlab_folder, ct2_folder, tmp_path, capsys, monkeypatch
):
    lines = sentences(20, seed=5)
    stdin = "\n".join(lines) + "\n"
    outputs = {}
    for name, path, extra in [
        ("checkpoint", transformer_checkpoint, []),
        ("seqlab", seqlab_folder, []),
        ("ct2", ct2_folder, []),
        ("converted", transformer_checkpoint, ["--engine", "ctranslate2", "--threads", "2"]),
        ("torch-folder", seqlab_folder, ["--engine", "torch", "--threads", "1"]),
    ]:
        code, out, err = run_cli(["translate", path, "-q", *extra], capsys, monkeypatch, stdin)
        assert code == 0, err
        outputs[name] = out
    assert len(outputs["checkpoint"].splitlines()) == len(lines)
    assert len(set(outputs.values())) == 1, outputs
    src, ref = tmp_path / "src.txt", tmp_path / "ref.txt"
    src.write_text("\n".join(line for line in lines if line) + "\n")
    ref.write_text("\n".join(" ".join(reversed(x.split())) for x in lines if x) + "\n")
    scores = set()
    for path in (transformer_checkpoint, seqlab_folder, ct2_folder):
        code, out, err = run_cli(
            ["evaluate", path, "--src", src, "--ref", ref, "-q"], capsys, monkeypatch
        )
        assert code == 0, err
        scores.add(out.splitlines()[0])
    assert len(scores) == 1 and next(iter(scores)).startswith("bleu\t")


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--engine", "torch"], "a CTranslate2 export holds no PyTorch model"),
        (["--no-optimize"], "--no-optimize applies to the torch engine only"),
        (["--attention-plot", "a.png"], "--attention-plot needs the torch engine"),
    ],
)
def test_flags_ctranslate2_cannot_honour_are_clear_errors(
    ct2_folder, extra, message, capsys, monkeypatch
):
    code, _, err = run_cli(["translate", ct2_folder, *extra], capsys, monkeypatch, "s1 s2\n")
    assert code == 2 and message in err and err.count("\n") == 1


def test_a_folder_that_is_no_export_is_named(tmp_path, capsys, monkeypatch):
    code, _, err = run_cli(["translate", tmp_path], capsys, monkeypatch, "s1\n")
    assert code == 2 and "not a model exported by `seqlab export`" in err


def test_export_cli_prints_the_folder(transformer_checkpoint, tmp_path, capsys, monkeypatch):
    out = tmp_path / "int8"
    args = [
        "export",
        transformer_checkpoint,
        out,
        "--format",
        "ctranslate2",
        "--quantization",
        "int8",
    ]
    code, printed, err = run_cli(args, capsys, monkeypatch)
    assert code == 0, err
    assert printed.strip() == str(out) and (out / "model.bin").is_file()
    args = ["export", transformer_checkpoint, tmp_path / "x", "--format", "seqlab"]
    code, _, err = run_cli([*args, "--quantization", "int8"], capsys, monkeypatch)
    assert code == 2 and "--quantization applies to --format ctranslate2 only" in err


# -- start-up ------------------------------------------------------------------------------------

HEAVY = ("torch", "datasets", "pyarrow", "matplotlib", "tensorboard", "sacrebleu")


def imported_by(args: list[str], stdin: str = "") -> set[str]:
    """The HEAVY modules a fresh interpreter has imported after `seqlab ARGS`."""
    import json
    import subprocess
    import sys

    code = (
        "import json, sys\nfrom seqlab.cli import main\ncode = main(sys.argv[1:])\n"
        f"print(json.dumps([code, [m for m in {HEAVY!r} if m in sys.modules]]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, *args], input=stdin, capture_output=True, text=True,
        cwd=REPO, check=True,
    )  # fmt: skip
    status, heavy = json.loads(done.stdout.splitlines()[-1])
    assert status == 0, done.stderr
    return set(heavy)


def test_translate_imports_only_what_it_uses(ct2_folder, transformer_checkpoint, tmp_path):
    assert imported_by(["translate", str(ct2_folder), "-q"], "s1 s2\n") == set()
    assert imported_by(["translate", str(transformer_checkpoint), "-q"], "s1 s2\n") == {"torch"}
    (tmp_path / "src.txt").write_text("s1 s2\n")
    (tmp_path / "ref.txt").write_text("s2 s1\n")
    files = ["--src", str(tmp_path / "src.txt"), "--ref", str(tmp_path / "ref.txt"), "-q"]
    assert imported_by(["evaluate", str(ct2_folder), *files]) == {"sacrebleu"}


def test_a_classifier_exports_with_its_label_names(tmp_path, capsys, monkeypatch):
    """A task with `extras` (classification's label names): the seqlab folder keeps them in
    seqlab.json, and `seqlab classify` labels lines from the folder as from the checkpoint."""
    from seqlab.run import train_recipe
    from tests.tasks.test_classification_files import cls_recipe, files_data, toy_rows, write_rows

    train = write_rows(tmp_path / "train.tsv", toy_rows(200, 0))
    recipe = cls_recipe(tmp_path, files_data(train), TRAIN_CLASSIFIER)
    train_recipe(recipe, tmp_path / "run")
    folder = export_model(tmp_path / "run" / "best.pt", tmp_path / "cls", "seqlab")
    loaded = load_model(folder, task="classification")
    assert loaded.extras["labels"] == ["negative", "neutral", "positive"]
    stdin = "\n".join(text for text, _ in toy_rows(20, 1)) + "\n"
    outputs = [
        run_cli(["classify", path, "--probs"], capsys, monkeypatch, stdin)[:2]
        for path in (tmp_path / "run" / "best.pt", folder)
    ]
    assert outputs[0][0] == 0 and outputs[0] == outputs[1] and outputs[0][1].count("\n") == 20
    with pytest.raises(CheckpointError, match="needs a Transformer translation model"):
        export_model(folder, tmp_path / "cls-ct2", "ctranslate2")


TRAIN_CLASSIFIER = """
[train]
max_steps = 10
batch_size = 32
lr = 3e-3
warmup_steps = 2
valid_every = 10
device = "cpu"
"""


def test_post_ln_learned_positions_gelu_untied_convert_exactly(transformer_checkpoint, tmp_path):
    """The other architecture switches, on random weights: post-LN (no final LayerNorm), learned
    positions, GELU, separate source / target embeddings and an untied output layer. Teacher-forced
    log-probabilities and greedy output agree (greedy runs to the cap on random weights, which
    both engines handle alike)."""
    from seqlab.checkpoint import LoadedModel
    from seqlab.config import ModelSpec
    from seqlab.data.batch import collate
    from seqlab.inference.ct2 import export_ctranslate2
    from seqlab.models.transformer import TransformerConfig, build_transformer

    loaded = load_model(transformer_checkpoint)
    config = TransformerConfig(
        d_model=16, num_heads=2, num_encoder_layers=2, num_decoder_layers=1, d_ff=24,
        dropout=0.0, norm_first=False, positional="learned", max_len=24,
        share_embeddings=False, tie_output=False, activation="gelu",
    )  # fmt: skip
    torch.manual_seed(3)
    vocab = len(loaded.sides["src"].vocab)
    model = build_transformer(config, vocab, vocab).eval()
    recipe = dataclasses.replace(loaded.recipe, model=ModelSpec("transformer", config))
    folder = export_ctranslate2(LoadedModel(model, recipe, loaded.sides), tmp_path / "post")
    lines = [line for line in sentences(16, seed=6) if line]
    targets = [" ".join(reversed(line.split())) for line in lines]
    src, tgt = loaded.sides["src"].vocab, loaded.sides["tgt"].vocab
    batch = collate(
        [(src.encode(s.split()), tgt.encode(t.split())) for s, t in zip(lines, targets)]
    )
    with torch.no_grad():
        logits = model.decoder(batch.tgt_in, model.encode(batch.src, batch.src_mask))
    ours = torch.log_softmax(logits, -1).gather(2, batch.tgt_out.unsqueeze(2)).squeeze(2)
    scored = ct2.Translator(str(folder)).score_batch(
        [s.split() for s in lines], [t.split() for t in targets]
    )
    for row, result in enumerate(scored):
        theirs = torch.tensor(result.log_probs)
        assert torch.allclose(theirs, ours[row, : len(theirs)], atol=1e-4)
    reference = Translator(model, loaded.sides["src"], loaded.sides["tgt"], recipe.decode)
    engine = open_translator(folder)
    assert texts(engine.translate(lines, beam_size=1)) == texts(
        reference.translate(lines, beam_size=1)
    )
