"""The layers of seqlab point one way (DESIGN.md §1): every `import` in seqlab/ (at module level or
inside a function) goes to the same layer or one below it.

    errors <- data <- layers <- models <- config <- decoding | evaluation <- training
           <- inference <- tasks <- app (run, cli, the package's own __init__)

`config` sits above models because a recipe's `[model]` table is read into the model's own config
dataclass (`seqlab.models.MODELS`). Layers of one rank (decoding, evaluation) are siblings and
import neither each other. inference sits below tasks: the translation task validates through
its `Translator`, and nothing in inference knows a task. A violation fails with the importing
file and line; `ALLOWED` lists the few known exceptions, each with its reason, and fails when one
is no longer needed.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "seqlab"

# module prefix -> layer (the longest matching prefix wins)
LAYER_OF = {
    "seqlab.errors": "errors",
    "seqlab.data": "data",
    "seqlab.layers": "layers",
    "seqlab.models": "models",
    "seqlab.config": "config",
    "seqlab.decoding": "decoding",
    "seqlab.evaluation": "evaluation",
    # the training-level modules; they move into seqlab/training with the task redesign
    "seqlab.train": "training",
    "seqlab.optim": "training",
    "seqlab.losses": "training",
    "seqlab.checkpoint": "training",
    "seqlab.distributed": "training",
    "seqlab.execution": "training",
    "seqlab.curves": "training",
    "seqlab.tensorboard_log": "training",
    "seqlab.inference": "inference",
    "seqlab.generate": "inference",  # loading an LM and sampling from it: using a model
    "seqlab.tasks": "tasks",
    "seqlab.plot": "app",
    "seqlab.run": "app",
    "seqlab.cli": "app",
    "seqlab.__main__": "app",
    "seqlab": "app",  # the package's __init__: its public names, from every layer
}
RANK = {
    "errors": 0,
    "data": 1,
    "layers": 2,
    "models": 3,
    "config": 4,
    "decoding": 5,
    "evaluation": 5,
    "training": 6,
    "inference": 7,
    "tasks": 8,
    "app": 9,
}

# (importing module, imported module): why it is allowed for now.
ALLOWED = {
    ("seqlab.checkpoint", "seqlab.tasks"): (
        "load_model rebuilds a checkpoint's model as its recipe's task says (which keys hold "
        "the sides, how the model is built): a lookup in the registry, inside the function"
    ),
    ("seqlab.checkpoint", "seqlab.inference.folder"): (
        "load_model also opens an exported model folder (safetensors + JSON): the folder format "
        "lives with the other export formats, and load_model hands the folder to it"
    ),
    ("seqlab.config", "seqlab.tasks"): (
        "a recipe names its task, and only the task's spec knows the dataclass of its [data] "
        "section: parsing a recipe looks the task up in the registry (inside the function)"
    ),
    ("seqlab.generate", "seqlab.tasks.language_model_data"): (
        "generate normalises a prefix exactly as the LM's data stage normalised its training "
        "text (`normalise`), so both must be one function"
    ),
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(module: str) -> str:
    best = max((p for p in LAYER_OF if module == p or module.startswith(p + ".")), key=len)
    return LAYER_OF[best]


def imported(tree: ast.AST, module: str, is_package: bool) -> list[tuple[str, int]]:
    """(seqlab module, line) for every import in `tree`, at any depth (functions too)."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the importing module's package
                package = module.split(".")
                package = package if is_package else package[:-1]
                base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
            # `from seqlab import run` imports the module seqlab.run
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                target = candidate if _exists(candidate) else base
                found.append((target, node.lineno))
    return [(name, line) for name, line in found if name.split(".")[0] == "seqlab"]


def _exists(module: str) -> bool:
    path = PACKAGE.parent / module.replace(".", "/")
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def allowed(source: str, target: str) -> bool:
    mine, theirs = layer(source), layer(target)
    return mine == theirs or RANK[theirs] < RANK[mine]


def all_imports() -> list[tuple[str, str, str]]:
    """(importing module, imported module, "file:line") over seqlab/."""
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = module_name(path)
        tree = ast.parse(path.read_text(), filename=str(path))
        for target, line in imported(tree, module, path.name == "__init__.py"):
            out.append((module, target, f"{path.relative_to(PACKAGE.parent)}:{line}"))
    return out


def test_every_module_has_a_layer_and_every_layer_a_rank():
    modules = {module_name(p) for p in PACKAGE.rglob("*.py")}
    assert {layer(m) for m in modules} <= RANK.keys()
    assert set(LAYER_OF.values()) == RANK.keys()


def test_imports_point_down_the_layers():
    violations = [
        f"{where}: {source} ({layer(source)}) imports {target} ({layer(target)})"
        for source, target, where in all_imports()
        if not allowed(source, target) and (source, target) not in ALLOWED
    ]
    assert not violations, "imports up the layers:\n" + "\n".join(violations)


def test_every_allowed_exception_is_still_needed():
    needed = {(s, t) for s, t, _ in all_imports() if not allowed(s, t)}
    assert set(ALLOWED) <= needed, f"no longer needed: {sorted(set(ALLOWED) - needed)}"


def test_the_check_catches_an_import_inside_a_function():
    """The walk sees imports in function bodies, relative ones, and `from seqlab import module`."""
    code = (
        "def f():\n    from seqlab.tasks.language_model import read_stream\n"
        "from ..models import interfaces\nfrom seqlab import run\n"
    )
    found = imported(ast.parse(code), "seqlab.evaluation.neural_cache", is_package=False)
    assert sorted(found, key=lambda item: item[1]) == [
        ("seqlab.tasks.language_model", 2),
        ("seqlab.models.interfaces", 3),
        ("seqlab.run", 4),
    ]
    assert not allowed("seqlab.evaluation.neural_cache", "seqlab.tasks.language_model")
    assert not allowed("seqlab.decoding.search", "seqlab.evaluation.bleu")  # siblings
    assert allowed("seqlab.tasks.translation", "seqlab.inference.translator")
