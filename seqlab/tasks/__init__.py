"""Tasks: what each kind of recipe prepares, how its loss is computed and how it is validated."""

from __future__ import annotations

from seqlab.config import Recipe
from seqlab.errors import ConfigError


def prepare_task(recipe: Recipe):
    """Run the data stage of `recipe`'s task; the result has a `.summary()`."""
    if recipe.task == "translation":
        from seqlab.tasks.translation_data import prepare

        return prepare(recipe)
    raise ConfigError(f"{recipe.path}: task '{recipe.task}' has no prepare step")
