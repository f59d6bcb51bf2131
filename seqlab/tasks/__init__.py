"""Tasks: what each kind of recipe prepares, trains, validates and scores (`TaskSpec`).

`TASKS` is the one registry of task names: a recipe's `task = "..."` is looked up there, and
`register_task` adds one from outside the package (a test, a user's project). The built-in tasks
are the modules named in `_BUILTIN`, each exporting its `SPEC`; a module is imported when its task
is first looked up, so reading a translation checkpoint never imports the other tasks' data stages.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping

from seqlab.errors import ConfigError
from seqlab.tasks.spec import TaskSpec, TrainingTask

_BUILTIN = ("translation", "language_model", "masked_lm", "classification")


class TaskRegistry(Mapping[str, TaskSpec]):
    """Task name -> `TaskSpec`: the built-in ones (loaded on first use) and registered ones."""

    def __init__(self) -> None:
        self._specs: dict[str, TaskSpec] = {}

    def register(self, spec: TaskSpec) -> TaskSpec:
        if self._specs.get(spec.name, spec) is not spec:
            raise ValueError(f"task '{spec.name}' is already registered")
        self._specs[spec.name] = spec
        return spec

    def __getitem__(self, name: str) -> TaskSpec:
        if name not in self._specs and name in _BUILTIN:
            spec = importlib.import_module(f"seqlab.tasks.{name}").SPEC
            assert spec.name == name, f"seqlab.tasks.{name} exports the spec of '{spec.name}'"
            self._specs[name] = spec
        return self._specs[name]

    def __iter__(self) -> Iterator[str]:
        for name in _BUILTIN:
            self[name]
        added = [name for name in self._specs if name not in _BUILTIN]
        return iter([*_BUILTIN, *added])

    def __len__(self) -> int:
        return len(list(iter(self)))

    def __contains__(self, name: object) -> bool:
        return name in self._specs or name in _BUILTIN


TASKS = TaskRegistry()


def register_task(spec: TaskSpec) -> TaskSpec:
    """Make `spec` trainable as `task = "<spec.name>"`; a name is registered once."""
    return TASKS.register(spec)


def get_task(name: str, source: str = "<recipe>") -> TaskSpec:
    """The spec of task `name`, or a ConfigError listing the known ones."""
    if name not in TASKS:
        raise ConfigError(f"{source}: unknown task '{name}'; known: {', '.join(TASKS)}")
    return TASKS[name]


__all__ = ["TASKS", "TaskSpec", "TrainingTask", "get_task", "register_task"]
