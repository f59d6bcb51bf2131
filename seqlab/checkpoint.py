"""Checkpoint files: atomic save, safe load, RNG state, a run folder's checkpoints, averaging.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts (never pickled objects),
so it loads with `torch.load(weights_only=True)` and a foreign or tampered file cannot run code.
Files are written to a temporary name in the same folder, fsynced and renamed, so a crash leaves
either the old file or the new one, never half of one. `CheckpointManager` keeps the run folder's
`checkpoint_<step>.pt`, `last.pt` and `best.pt` (with the best metric in `checkpoints.json`, so it
survives restarts); `average_checkpoints` averages weights as fairseq's
`scripts/average_checkpoints.py` does.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import random
import re
import shutil
import tempfile
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from seqlab.errors import CheckpointError, why_unwritable

FORMAT = "seqlab-checkpoint"
VERSION = 1
_SAFE_LEAVES = (torch.Tensor, str, int, float, bool, type(None), torch.dtype, torch.Size)


def _check_payload(value: Any, key: str) -> None:
    """Raise TypeError naming `key` when `value` holds something weights_only cannot load."""
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str | int):
                raise TypeError(f"checkpoint key {key}: dict key {k!r} is not a str or int")
            _check_payload(v, f"{key}.{k}" if key else str(k))
    elif isinstance(value, list | tuple) and not isinstance(value, torch.Size):
        for i, v in enumerate(value):
            _check_payload(v, f"{key}[{i}]")
    elif not isinstance(value, _SAFE_LEAVES):
        raise TypeError(
            f"checkpoint key {key}: {type(value).__name__} cannot be saved "
            "(use tensors, numbers, strings, lists and dicts)"
        )


def _atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Run `write(tmp)` on a temp file beside `path`, fsync it, then rename it over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        with tmp.open("rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as error:  # torch.save reports a short write as RuntimeError
        tmp.unlink(missing_ok=True)
        raise CheckpointError(_write_failure(path, error)) from error
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    try:  # make the rename itself durable; not possible on every platform
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass


def _write_failure(path: Path, error: BaseException) -> str:
    """The message for a file that could not be written: the path, and why in words."""
    return (
        f"{path}: could not be written: {why_unwritable(error)}; the previous checkpoints are kept"
    )


def remove_stale_temp_files(folder: str | Path) -> list[Path]:
    """Delete the temp files (`.NAME.*.tmp`) that a writer killed mid-save left in `folder`.

    Only for a folder no other process is writing into (a run folder as its run starts).
    """
    folder = Path(folder)
    stale = [p for p in folder.glob(".*.tmp") if p.is_file()] if folder.is_dir() else []
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def save_checkpoint(payload: dict, path: str | Path) -> None:
    """Write `payload` plus {"format": "seqlab-checkpoint", "version": 1} atomically to `path`.

    Raises:
        TypeError: a value is not a tensor, number, string, None, list, tuple or dict; the message
            names its key (e.g. "optimizer.state.0").
    """
    _check_payload(payload, "")
    full = {**payload, "format": FORMAT, "version": VERSION}
    _atomic_write(Path(path), lambda tmp: torch.save(full, tmp))


def load_checkpoint(path: str | Path, map_location: Any = "cpu") -> dict:
    """Load a checkpoint written by `save_checkpoint` with `torch.load(weights_only=True)`.

    Raises:
        CheckpointError: naming `path`, when the file is missing, truncated or corrupt, not a
            seqlab checkpoint, holds pickled objects (which would run code), or was written by
            a newer version of seqlab.
    """
    path = Path(path)
    if isinstance(map_location, str):  # a device the machine lacks is named as such, not as
        from seqlab.distributed import resolve_device  # an unreadable checkpoint

        map_location = resolve_device(map_location, "device")
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: empty file (0 bytes), not a seqlab checkpoint")
    with path.open("rb") as f:  # torch.save writes a zip archive; anything else is foreign
        if f.read(4) != b"PK\x03\x04":
            raise CheckpointError(f"{path}: not a seqlab checkpoint (not a PyTorch zip archive)")
    if not zipfile.is_zipfile(path):
        raise CheckpointError(f"{path}: unreadable checkpoint: truncated or corrupt zip archive")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:  # the weights-only unpickler met an object it will not build
        raise CheckpointError(
            f"{path}: refused to load: it holds pickled Python objects beyond tensors and plain "
            "values, which could run code; seqlab checkpoints never do"
        ) from None
    except Exception as exc:  # torch raises several types for truncated or foreign files
        raise CheckpointError(
            f"{path}: unreadable checkpoint (truncated or corrupt?): {exc}"
        ) from exc
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a seqlab checkpoint (no 'format': '{FORMAT}' entry)")
    version = state.get("version")
    if not isinstance(version, int) or version > VERSION:
        raise CheckpointError(
            f"{path}: checkpoint version {version!r} is newer than this seqlab reads ({VERSION})"
        )
    return state


# -- a trained model for use ------------------------------------------------------------------


@dataclass(frozen=True)
class LoadedModel:
    """A trained model ready for use: the model (eval mode, on the requested device), the
    resolved recipe it was trained with, its sides (tokenizer + vocabulary) by checkpoint
    key, in the order its task's spec names them (translation: "src", "tgt"), and the other
    values its spec's `extras` name (classification: "labels")."""

    model: torch.nn.Module
    recipe: Any  # seqlab.config.Recipe
    sides: dict[str, Any]  # key -> seqlab.data.vocab.Side
    extras: dict[str, Any] = field(default_factory=dict)


def load_model(path: str | Path, device: Any = "cpu", *, task: str | None = None) -> LoadedModel:
    """The one way to load a trained model: translate, evaluate, generate, perplexity and
    fine-tuning all come here. Its recipe's task (`seqlab.tasks.TASKS`) says which keys hold the
    sides and how the model is built before its weights are loaded.

    `path` may also be a folder written by `seqlab export --format seqlab` (safetensors weights
    and JSON, loaded without unpickling anything; `seqlab.inference.folder`).

    Raises:
        CheckpointError: naming `path`, when it is not a readable seqlab checkpoint or export
            folder, is of another task than `task`, or its weights do not fit its recipe's model.
    """
    if Path(path).is_dir():
        return _load_folder(Path(path), device, task)
    from seqlab.config import recipe_from_dict
    from seqlab.data.vocab import Side

    state = load_checkpoint(path, map_location=device)
    if "recipe" not in state or "model" not in state:
        raise CheckpointError(f"{path}: holds no trained model (no 'recipe' or 'model' entry)")
    recipe = recipe_from_dict(state["recipe"], f"{path} (recipe)")

    def side(key: str) -> Any:
        return Side.from_payload(state[key]) if key in state else None

    def load(model: torch.nn.Module) -> None:
        try:
            model.load_state_dict(state["model"])
        except RuntimeError as error:
            raise CheckpointError(
                f"{path}: weights do not fit the recipe's model: {error}"
            ) from error

    return _assemble(path, recipe, side, state, task, load, device)


def _load_folder(path: Path, device: Any, task: str | None) -> LoadedModel:
    """`load_model` for a `seqlab export --format seqlab` folder (no pickle anywhere)."""
    from seqlab.config import recipe_from_dict
    from seqlab.inference.folder import META, load_weights, read_folder

    if isinstance(device, str):  # a device the machine lacks is named as such
        from seqlab.distributed import resolve_device

        device = resolve_device(device, "device")
    meta, sides = read_folder(path)
    recipe = recipe_from_dict(meta["recipe"], f"{path / META} (recipe)")
    extras = meta.get("extras", {})
    return _assemble(path, recipe, sides.get, extras, task, lambda m: load_weights(m, path), device)


def _assemble(
    path: Any,
    recipe: Any,
    side_of: Callable[[str], Any],
    extras: dict[str, Any],
    task: str | None,
    load: Callable[[torch.nn.Module], None],
    device: Any,
) -> LoadedModel:
    """The `LoadedModel` of a checkpoint or export folder at `path`: `recipe`'s task checked
    against `task`, its spec's sides read by `side_of(key)` (None: missing) and its extras taken
    from `extras`, its model built and filled by `load`."""
    from seqlab.tasks import get_task  # the recipe names its task

    if task is not None and recipe.task != task:
        kind = "model" if Path(path).is_dir() else "checkpoint"
        raise CheckpointError(f"{path}: a '{recipe.task}' {kind}, not a '{task}' one")
    spec = get_task(recipe.task, str(path))
    sides = {key: side_of(key) for key in spec.sides}
    missing = [key for key, side in sides.items() if side is None]
    if missing:
        raise CheckpointError(f"{path}: no '{missing[0]}' entry (its tokenizer and vocabulary)")
    extras = {key: extras[key] for key in spec.extras if key in extras}
    model = spec.build_model(recipe, list(sides.values()), extras)
    load(model)
    return LoadedModel(model.to(device).eval(), recipe, sides, extras)


# -- random number generators -----------------------------------------------------------------


def rng_state() -> dict:
    """The state of every RNG a run draws from, as weights_only-safe values.

    Python's `random` (its state tuple as [version, int64 tensor, gauss_next]), numpy's legacy
    global generator when numpy is importable, torch's CPU generator and every CUDA device's.
    """
    version, internal, gauss = random.getstate()
    state: dict[str, Any] = {
        "python": [version, torch.tensor(internal, dtype=torch.int64), gauss],
        "torch": torch.get_rng_state(),
    }
    try:
        import numpy as np
    except ImportError:  # pragma: no cover - numpy ships with torch in practice
        np = None
    if np is not None:
        kind, keys, pos, has_gauss, cached = np.random.get_state()
        state["numpy"] = {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what `rng_state` captured (tensors may come back on any device)."""
    version, internal, gauss = state["python"]
    random.setstate((int(version), tuple(int(x) for x in internal.tolist()), gauss))
    torch.set_rng_state(state["torch"].cpu())
    if "numpy" in state:
        import numpy as np

        s = state["numpy"]
        keys = s["keys"].cpu().numpy().astype(np.uint32)
        np.random.set_state((s["kind"], keys, s["pos"], s["has_gauss"], s["cached_gaussian"]))
    if "cuda" in state and torch.cuda.is_available():
        saved = [t.cpu() for t in state["cuda"]][: torch.cuda.device_count()]
        for device, t in enumerate(saved):
            torch.cuda.set_rng_state(t, device)


# -- a run folder's checkpoints ----------------------------------------------------------------

_NUMBERED = re.compile(r"checkpoint_(\d+)\.pt")


def _atomic_link(source: Path, target: Path) -> None:
    """Make `target` a hard link to (or, where links fail, a copy of) `source`, atomically."""

    def write(tmp: Path) -> None:
        tmp.unlink()
        try:
            os.link(source, tmp)
        except OSError:
            shutil.copyfile(source, tmp)

    _atomic_write(target, write)


class CheckpointManager:
    """The checkpoints of one run folder.

    `save` writes `checkpoint_<step>.pt`, points `last.pt` at it and, when `metric` beats the best
    recorded so far, `best.pt` too. `last.pt` and `best.pt` are hard links (copies where the file
    system has none): their own directory entries, so pruning old numbered files never removes
    them. Only the `keep_last` newest numbered checkpoints are kept. The best metric and its step
    live in `checkpoints.json`, written atomically, so a resumed run keeps comparing against it.
    The run folder is created (with its parents) when the manager is.
    """

    def __init__(self, run_dir: str | Path, keep_last: int = 3):
        if keep_last < 0:
            raise ValueError(f"keep_last must be >= 0, got {keep_last}")
        self.run_dir, self.keep_last = Path(run_dir), keep_last
        self.index_path = self.run_dir / "checkpoints.json"
        self.run_dir.mkdir(parents=True, exist_ok=True)

    def _read_index(self) -> dict:
        if not self.index_path.is_file():
            return {"best": None, "last_step": None}
        try:
            return json.loads(self.index_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise CheckpointError(f"{self.index_path}: unreadable ({exc})") from exc

    def _improves(self, metric: float | None, higher_is_better: bool) -> bool:
        if metric is None or not math.isfinite(metric):  # never an infinite or NaN "best"
            return False
        best = self._read_index()["best"]
        if best is None:
            return True
        return metric > best["metric"] if higher_is_better else metric < best["metric"]

    def save(
        self, step: int, payload: dict, metric: float | None = None, higher_is_better: bool = True
    ) -> Path:
        """Write the checkpoint of `step`; update last/best; prune. Returns the numbered path."""
        path = self.run_dir / f"checkpoint_{step}.pt"
        save_checkpoint(payload, path)
        _atomic_link(path, self.run_dir / "last.pt")
        index = self._read_index()
        if self._improves(metric, higher_is_better):
            _atomic_link(path, self.run_dir / "best.pt")
            index["best"] = {"step": step, "metric": metric, "higher_is_better": higher_is_better}
        index["last_step"] = step
        text = json.dumps(index, indent=2)
        _atomic_write(self.index_path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
        numbered = self.checkpoints()
        for old in numbered[: max(len(numbered) - self.keep_last, 0)]:
            old.unlink(missing_ok=True)
        return path

    def checkpoints(self) -> list[Path]:
        """The numbered checkpoints, sorted by step (numerically: 9 before 10)."""
        if not self.run_dir.is_dir():
            return []
        found = [(m, p) for p in self.run_dir.iterdir() if (m := _NUMBERED.fullmatch(p.name))]
        return [p for m, p in sorted(found, key=lambda mp: int(mp[0].group(1)))]

    def latest(self) -> Path | None:
        """`last.pt` if present, else the highest numbered checkpoint, else None."""
        last = self.run_dir / "last.pt"
        if last.is_file():
            return last
        numbered = self.checkpoints()
        return numbered[-1] if numbered else None

    def best(self) -> Path | None:
        """`best.pt` if present, else None."""
        best = self.run_dir / "best.pt"
        return best if best.is_file() else None


# -- averaging ---------------------------------------------------------------------------------


def average_checkpoints(paths: Sequence[str | Path]) -> dict:
    """The payload of `paths[-1]` with "model" replaced by the mean of every path's "model".

    Floating-point tensors are summed in float64 and cast back to their dtype; integer and bool
    buffers (e.g. step counters) are taken from the last checkpoint, as in fairseq's
    `scripts/average_checkpoints.py`. Keys that share one tensor (tied weights) share their
    mean. The files are read one at a time.

    Raises:
        CheckpointError: naming the path and key, when a file has no "model", its keys or shapes
            differ from the first file's, or so do its recipe's [model] section or vocabularies
            (same-shaped weights of different models must not be averaged).
    """
    if not paths:
        raise CheckpointError("average_checkpoints: no checkpoint paths given")
    sums: dict[str, torch.Tensor] = {}
    reference: dict[str, torch.Tensor] = {}
    identity: dict = {}
    last: dict = {}
    for i, path in enumerate(paths):
        last = load_checkpoint(path)
        model = last.get("model")
        if not isinstance(model, dict):
            raise CheckpointError(f"{path}: no 'model' state dict to average")
        if i == 0:
            reference, identity = model, _model_identity(last)
        for what, value in _model_identity(last).items():
            if value != identity[what]:
                raise CheckpointError(
                    f"{path}: its {what} differs from {paths[0]}'s; cannot average"
                )
        _check_same_keys(path, paths[0], reference, model)
        for key, tensor in model.items():
            if isinstance(tensor, torch.Tensor) and tensor.is_floating_point():
                sums[key] = sums[key] + tensor.double() if key in sums else tensor.double()
    means: dict[tuple, torch.Tensor] = {}  # one mean per tensor of the last checkpoint

    def mean(key: str, tensor: torch.Tensor) -> torch.Tensor:
        if key not in sums:
            return tensor
        # Tied weights (an embedding reused as the output layer) are one tensor under several
        # keys; they stay one tensor, so the file holds it once and loads tied.
        same = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tensor.stride())
        if same not in means:
            means[same] = (sums[key] / len(paths)).to(tensor.dtype)
        return means[same]

    averaged = {key: mean(key, tensor) for key, tensor in last["model"].items()}
    return {**last, "model": averaged}


# What `seqlab.train.Trainer` writes only to resume training; inference reads none of it.
TRAINING_STATE = (
    "optimizer",
    "scheduler",
    "scaler",
    "rng",
    "rng_ranks",
    "progress",
    "history",
    "task_state",
)


def inference_only(payload: dict) -> dict:
    """`payload` without its `TRAINING_STATE`: recipe, weights and vocabularies remain, so
    translate / evaluate / generate read it as before, but it cannot resume training. About
    a third of an AdamW checkpoint (the optimizer keeps two moments per weight)."""
    return {key: value for key, value in payload.items() if key not in TRAINING_STATE}


def _model_identity(state: dict) -> dict:
    """What must agree, beyond weight shapes, for checkpoints to be averaged."""
    recipe = state.get("recipe")
    return {
        "[model] section of the recipe": recipe.get("model") if isinstance(recipe, dict) else None,
        "source vocabulary": (state.get("src") or {}).get("vocab"),
        "target vocabulary": (state.get("tgt") or {}).get("vocab"),
    }


def _check_same_keys(path: Any, first: Any, reference: dict, model: dict) -> None:
    missing, extra = set(reference) - set(model), set(model) - set(reference)
    if missing or extra:
        key = sorted(missing or extra)[0]
        where = "missing" if missing else "not in " + str(first)
        raise CheckpointError(f"{path}: model key {key!r} {where}; cannot average")
    for key, tensor in model.items():
        if getattr(tensor, "shape", None) != getattr(reference[key], "shape", None):
            raise CheckpointError(
                f"{path}: model key {key!r} has shape {getattr(tensor, 'shape', None)}, "
                f"{first} has {getattr(reference[key], 'shape', None)}; cannot average"
            )
