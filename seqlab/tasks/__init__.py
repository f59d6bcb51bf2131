"""Tasks: what each kind of recipe prepares, how its loss is computed and how it is validated."""

from __future__ import annotations

from seqlab.config import Recipe
from seqlab.errors import ConfigError


def prepare_task(recipe: Recipe):
    """Run the data stage of `recipe`'s task; the result has a `.summary()`."""
    if recipe.task == "translation":
        from seqlab.tasks.translation_data import prepare

        return prepare(recipe)
    if recipe.task == "masked_lm":
        from seqlab.tasks.masked_lm_data import prepare as prepare_masked_lm

        return prepare_masked_lm(recipe)
    if recipe.task == "classification":
        from seqlab.tasks.classification import prepare as prepare_classification

        return prepare_classification(recipe)
    if recipe.task == "language_model":
        from seqlab.tasks.language_model_data import prepare as prepare_language_model

        return prepare_language_model(recipe)
    raise ConfigError(f"{recipe.path}: task '{recipe.task}' has no prepare step")
