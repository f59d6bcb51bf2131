"""Every recipe builds its model and trains a few steps (on tiny synthetic data, on CPU)."""

import tomllib
from pathlib import Path

import pytest
import sacrebleu

from seqlab.config import load_recipe
from seqlab.run import train_recipe
from seqlab.tasks.translation_data import prepare

RECIPES = sorted(Path(__file__).resolve().parents[1].joinpath("recipes").glob("*.toml"))
TINY = [
    "data.corpus='synthetic'",
    "data.synthetic_size=200",
    "data.train_path=none",  # a recipe for the user's files (own-data-transformer) sets these
    "data.valid_path=none",
    "data.tokenizer='word'",
    "train.max_steps=3",
    "train.valid_every=3",
    "train.max_tokens=400",
    "train.valid_max_sentences=10",
    "decode.beam_size=2",
    "train.device='cpu'",
]


BERT_TASKS = ("masked_lm", "classification")
TINY_MASKED_LM = [
    "data.tokenizer='whitespace'",
    "data.max_train_pairs=64",
    "data.max_valid_pairs=32",
    "train.batch_size=32",
    "train.max_steps=3",
    "train.valid_every=3",
    "train.device='cpu'",
]
TINY_CLASSIFICATION = [
    "data.max_train_examples=64",
    "train.batch_size=32",
    "train.max_steps=3",
    "train.valid_every=3",
    "train.device='cpu'",
]


def _task(path: Path) -> str:
    return tomllib.loads(path.read_text()).get("task", "translation")


TRANSLATION_RECIPES = [p for p in RECIPES if _task(p) == "translation"]
BERT_RECIPES = [
    pytest.param(p, marks=pytest.mark.corpus, id=p.stem) for p in RECIPES if _task(p) in BERT_TASKS
]


@pytest.fixture(scope="module")
def tiny_bert_checkpoint(tmp_path_factory) -> Path:
    """A 3-step pretraining run of recipes/bert-wikitext2.toml: what the SST-2 recipes load."""
    run_dir = tmp_path_factory.mktemp("bert") / "run"
    recipe = load_recipe(RECIPES[0].parent / "bert-wikitext2.toml", TINY_MASKED_LM)
    train_recipe(recipe, run_dir)
    return run_dir / "best.pt"


@pytest.mark.parametrize("path", BERT_RECIPES)
def test_bert_recipe_runs_a_few_steps(path, tmp_path, request):
    if _task(path) == "masked_lm":
        recipe = load_recipe(path, TINY_MASKED_LM)
        metric = "valid_mlm_loss"
    else:
        checkpoint = request.getfixturevalue("tiny_bert_checkpoint")
        recipe = load_recipe(path, [*TINY_CLASSIFICATION, f"data.pretrained='{checkpoint}'"])
        metric = "valid_accuracy"
    summary = train_recipe(recipe, tmp_path / recipe.name)
    assert summary["step"] == 3
    assert (tmp_path / recipe.name / "best.pt").exists()
    assert metric in summary["last_validation"]


@pytest.mark.parametrize("path", TRANSLATION_RECIPES, ids=lambda p: p.stem)
def test_recipe_runs_a_few_steps(path, tmp_path):
    recipe = load_recipe(path, TINY)
    summary = train_recipe(recipe, tmp_path / recipe.name)
    assert summary["step"] == 3
    run_dir = tmp_path / recipe.name
    assert (run_dir / "best.pt").exists()
    # the reported BLEU is sacrebleu's on the translations the run wrote, against the references
    references = prepare(recipe).splits["test"]["tgt"]
    hypotheses = (run_dir / "test_translations.txt").read_text().splitlines()
    assert len(hypotheses) == len(references) == summary["test"]["sentences"]
    expected = sacrebleu.corpus_bleu(hypotheses, [references]).score
    assert summary["test"]["bleu"]["score"] == pytest.approx(expected)


def test_reverse_recipe_learns_to_reverse(tmp_path):
    """recipes/reverse.toml, smaller, for 200 steps (about 15 s of CPU): test BLEU 98.8 measured;
    a model or search that cannot attend to the right source position stays far below 90."""
    recipe = load_recipe(
        RECIPES[0].parent / "reverse.toml",
        [
            "data.synthetic_size=3000",
            "model.hidden_size=64",
            "model.embed_dim=32",
            "train.max_steps=200",
            "train.valid_every=100",
            "train.valid_max_sentences=100",
            "train.warmup_steps=20",
            "train.device='cpu'",
        ],
    )
    summary = train_recipe(recipe, tmp_path / "reverse")
    assert summary["test"]["sentences"] == 200
    assert summary["test"]["bleu"]["score"] > 90.0, summary["test"]["bleu"]


TINY_LM = [
    "data.max_train_tokens=3000",
    "data.max_eval_tokens=300",
    "model.embed_dim=16",
    "model.hidden_size=16",
    "train.batch_size=4",
    "train.max_steps=3",
    "train.valid_every=3",
    "train.device='cpu'",
]
LM_RECIPES = [
    pytest.param(p, marks=pytest.mark.corpus, id=p.stem)
    for p in RECIPES
    if _task(p) == "language_model"
]


@pytest.mark.parametrize("path", LM_RECIPES)
def test_language_model_recipe_runs_a_few_steps(path, tmp_path):
    adaptive = "adaptive_cutoffs" in tomllib.loads(path.read_text()).get("model", {})
    recipe = load_recipe(path, TINY_LM + (["model.adaptive_cutoffs=[50, 200]"] if adaptive else []))
    summary = train_recipe(recipe, tmp_path / recipe.name)
    assert summary["step"] == 3
    assert (tmp_path / recipe.name / "best.pt").exists()
    assert summary["valid"]["ppl"] > 1.0
