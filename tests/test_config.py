"""Recipes load strictly: unknown keys, wrong types and bad overrides are errors that name them."""

from pathlib import Path

import pytest

from seqlab.config import load_recipe, parse_override
from seqlab.errors import ConfigError

RECIPES = sorted(Path(__file__).resolve().parents[1].joinpath("recipes").glob("*.toml"))


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "r.toml"
    path.write_text(text)
    return path


BASE = """
name = "t"
task = "translation"
[data]
corpus = "synthetic"
[model]
kind = "rnn_seq2seq"
"""


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_every_recipe_loads(path):
    recipe = load_recipe(path)
    assert recipe.name == path.stem
    assert recipe.to_dict()["model"]["kind"] == recipe.model.kind


def test_unknown_key_names_key_file_and_closest(tmp_path):
    path = write(tmp_path, BASE + "[train]\nmax_step = 10\n")
    with pytest.raises(ConfigError) as err:
        load_recipe(path)
    message = str(err.value)
    assert "train.max_step" in message and str(path) in message and "max_steps" in message


def test_unknown_model_key_is_checked_against_the_kind(tmp_path):
    path = write(tmp_path, BASE + "hiden_size = 3\n")
    with pytest.raises(ConfigError, match="hidden_size"):
        load_recipe(path)


def test_wrong_type_names_key_and_expected_type(tmp_path):
    path = write(tmp_path, BASE + "[train]\nlr = 'fast'\n")
    with pytest.raises(ConfigError) as err:
        load_recipe(path)
    assert "train.lr" in str(err.value) and "float" in str(err.value)


def test_literal_choices_are_listed(tmp_path):
    path = write(tmp_path, BASE + "[train]\nschedule = 'exponential'\n")
    with pytest.raises(ConfigError, match="'cosine'"):
        load_recipe(path)


def test_unknown_model_kind_lists_kinds(tmp_path):
    path = write(tmp_path, BASE.replace("rnn_seq2seq", "mamba"))
    with pytest.raises(ConfigError, match="transformer"):
        load_recipe(path)


def test_overrides_are_toml_literals(tmp_path):
    path = write(tmp_path, BASE)
    recipe = load_recipe(
        path,
        [
            "train.max_steps=7",
            "train.lr=3e-4",
            "data.corpus=multi30k",
            "train.betas=[0.9, 0.99]",
            "train.patience=2",
        ],
    )
    assert recipe.train.max_steps == 7 and recipe.train.lr == pytest.approx(3e-4)
    assert recipe.data.corpus == "multi30k" and recipe.train.betas == (0.9, 0.99)
    assert recipe.train.patience == 2


def test_int_widens_to_float_but_bool_is_not_int(tmp_path):
    path = write(tmp_path, BASE)
    assert load_recipe(path, ["train.lr=1"]).train.lr == 1.0
    with pytest.raises(ConfigError, match=r"train\.max_steps"):
        load_recipe(path, ["train.max_steps=true"])


def test_bad_override_syntax():
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_override("train.max_steps")


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_recipe(tmp_path / "nope.toml")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_recipe(write(tmp_path, "name = \n"))


def test_round_trip_through_dict(tmp_path):
    from seqlab.config import recipe_from_dict

    recipe = load_recipe(write(tmp_path, BASE), ["train.max_steps=5"])
    again = recipe_from_dict(recipe.to_dict(), "x")
    assert again.to_dict() == recipe.to_dict()
