"""Packaging: every third-party import declared, one version source, licence and type marker."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib

from tests.conftest import REPO

PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


def requirement_names(requirements: list[str]) -> set[str]:
    return {re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0].lower() for r in requirements}


def third_party_imports() -> dict[str, bool]:
    """Top-level names of non-stdlib modules imported by seqlab/, each with whether some module
    imports it unconditionally (at module level, outside try), which makes it a core need."""
    found: dict[str, bool] = {}
    for path in (REPO / "seqlab").rglob("*.py"):
        tree = ast.parse(path.read_text(), str(path))
        unconditional = {id(node) for node in tree.body}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top in sys.stdlib_module_names or top == "seqlab":
                    continue
                found[top] = found.get(top, False) or id(node) in unconditional
    return found


def distribution(module: str) -> str:
    """The installed distribution providing `module` (e.g. `yaml` -> `pyyaml`)."""
    names = importlib.metadata.packages_distributions().get(module, [module])
    return names[0].lower()


def test_every_imported_package_is_declared():
    core = requirement_names(PYPROJECT["project"]["dependencies"])
    extras = set().union(
        *map(requirement_names, PYPROJECT["project"]["optional-dependencies"].values())
    )
    imports = third_party_imports()
    assert {"torch", "numpy", "pyarrow", "datasets", "tqdm"} <= set(imports)  # the walk works
    for module, needed_always in sorted(imports.items()):
        dist = distribution(module)
        if needed_always:
            assert dist in core, f"seqlab imports {module} at module level: add {dist} to deps"
        else:
            assert dist in core | extras, f"seqlab imports {module}: declare {dist} (an extra)"


def test_extras_are_named_for_what_they_bring():
    extras = PYPROJECT["project"]["optional-dependencies"]
    assert requirement_names(extras["tensorboard"]) == {"tensorboard"}
    assert requirement_names(extras["plot"]) == {"matplotlib"}
    makefile = (REPO / "Makefile").read_text()
    assert re.search(r"^EXTRAS \?= .*\btensorboard\b", makefile, re.M)  # CI installs it
    assert requirement_names(extras["ct2"]) == {"ctranslate2"}
    assert re.search(r"^EXTRAS \?= .*\bct2\b", makefile, re.M)  # so the export tests run in CI


def test_version_has_one_source():
    """pyproject reads the version from seqlab/__init__.py (hatch), so the two cannot drift."""
    assert "version" not in PYPROJECT["project"]
    assert "version" in PYPROJECT["project"]["dynamic"]
    assert PYPROJECT["tool"]["hatch"]["version"]["path"] == "seqlab/__init__.py"
    text = (REPO / "seqlab" / "__init__.py").read_text()
    assert re.search(r'^__version__ = "\d+\.\d+\.\d+"$', text, re.M)


def test_licence_file_matches_the_declared_licence_and_types_are_marked():
    assert PYPROJECT["project"]["license"] == {"text": "MIT"}
    licence = (REPO / "LICENSE").read_text()
    assert licence.startswith("MIT License") and "the seqlab authors" in licence
    assert (REPO / "seqlab" / "py.typed").is_file()
    assert PYPROJECT["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"] == ["seqlab"]


def test_property_tests_have_no_deadline():
    """Every hypothesis test, with or without its own @settings, runs without a deadline."""
    from hypothesis import settings

    assert settings.default.deadline is None
    for path in (REPO / "tests").rglob("test_*.py"):
        assert not re.search(r"settings\([^)]*deadline=(?!None)", path.read_text()), path
