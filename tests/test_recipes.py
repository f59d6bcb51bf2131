"""Every recipe builds its model and trains a few steps (on tiny synthetic data, on CPU)."""

from pathlib import Path

import pytest

from seqlab.config import load_recipe
from seqlab.run import train_translation

RECIPES = sorted(Path(__file__).resolve().parents[1].joinpath("recipes").glob("*.toml"))
TINY = [
    "data.corpus='synthetic'",
    "data.synthetic_size=200",
    "data.tokenizer='word'",
    "train.max_steps=3",
    "train.valid_every=3",
    "train.max_tokens=400",
    "train.valid_max_sentences=10",
    "decode.beam_size=2",
    "train.device='cpu'",
]


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_recipe_runs_a_few_steps(path, tmp_path):
    recipe = load_recipe(path, TINY)
    summary = train_translation(recipe, tmp_path / recipe.name)
    assert summary["step"] == 3
    assert (tmp_path / recipe.name / "best.pt").exists()
    assert 0.0 <= summary["test"]["bleu"]["score"] <= 100.0
