"""Classification data from the user's labelled files (`data.corpus = "files"`).

`file_tables(data, cache, seed)` reads `train_path`, `valid_path` and `test_path` (TSV, CSV or
JSONL: `seqlab.data.labelled_files`) into Arrow tables cached by each file's path, size and
modification time, collects the label names from the training file (sorted: `sorted_labels`),
checks `num_classes` against them, maps every label to its index and, without `valid_path`, holds
`valid_size` training rows out for validation, drawn with the recipe's seed. A validation or test
label the training file lacks is an error naming it, its file and line.
"""

from __future__ import annotations

from pathlib import Path

import datasets
import numpy as np

from seqlab.config import ClassificationData
from seqlab.data.dataset import fingerprint, text_dataset
from seqlab.data.labelled_files import read_labelled, sorted_labels
from seqlab.data.readers import file_identity
from seqlab.errors import ConfigError, DataError

READER_VERSION = 1  # bump when the rows change
DEFAULT_VALID_SIZE = 1000  # rows held out of data.train_path without data.valid_path


def _rows(path: str, text_column: str, label_column: str):
    yield from read_labelled(path, text_column, label_column)


def _file_table(path: str, data: ClassificationData, cache: Path) -> datasets.Dataset:
    columns = (data.text_column, data.label_column)
    fp = fingerprint("labelled-file", READER_VERSION, file_identity([path]), columns)
    kwargs = {"path": path, "text_column": columns[0], "label_column": columns[1]}
    return text_dataset(_rows, kwargs, fp, cache / "datasets")


def _check_known(table: datasets.Dataset, labels: list[str], path: str, train_path: str) -> None:
    """Name the first row of `table` (read from `path`) whose label is not in `labels`."""
    unknown = set(table.unique("label")) - set(labels)
    if not unknown:
        return
    for batch in table.select_columns(["line", "label"]).iter(batch_size=5000):
        for line, label in zip(batch["line"], batch["label"]):
            if label in unknown:
                raise DataError(
                    f"{path}:{line}: label {label!r} does not occur in the training file "
                    f"{train_path} (its labels: {', '.join(labels)})"
                )


def _index_batch(batch: dict, index: dict[str, int]) -> dict:
    return {"label": [index[label] for label in batch["label"]]}


def _indexed(table: datasets.Dataset, labels: list[str]) -> datasets.Dataset:
    """`table` with its string labels replaced by their index in `labels`."""
    index = {label: i for i, label in enumerate(labels)}
    return table.map(
        _index_batch,
        batched=True,
        fn_kwargs={"index": index},
        new_fingerprint=fingerprint(table._fingerprint, "label-index", labels),
        features=datasets.Features({**table.features, "label": datasets.Value("int64")}),
    )


def hold_out_rows(
    table: datasets.Dataset, size: int, seed: int, path: str
) -> tuple[datasets.Dataset, datasets.Dataset]:
    """(train, valid): `size` rows of `table` (read from `path`) drawn with `seed` go to valid;
    both keep the file's order."""
    if size >= len(table):
        raise DataError(
            f"data.valid_size = {size} holds out every one of the {len(table)} rows of {path}; "
            "lower it or give data.valid_path"
        )
    held = np.zeros(len(table), dtype=bool)
    held[np.random.default_rng(seed).choice(len(table), size, replace=False)] = True
    return table.select(np.flatnonzero(~held)), table.select(np.flatnonzero(held))


def label_names(data: ClassificationData, train: datasets.Dataset) -> list[str]:
    """The training table's labels, sorted; `data.num_classes`, when set, must count them."""
    labels = sorted_labels(train.unique("label"))
    if len(labels) < 2:
        raise DataError(f"{data.train_path}: one label only ({labels[0]!r}); need two or more")
    if data.num_classes is not None and data.num_classes != len(labels):
        raise ConfigError(
            f"data.num_classes = {data.num_classes}, but {data.train_path} has {len(labels)} "
            f"labels ({', '.join(labels)}); unset it or fix the data"
        )
    return labels


def file_tables(
    data: ClassificationData, cache: Path, seed: int
) -> tuple[dict[str, datasets.Dataset], list[str]]:
    """(tables "train", "valid" and, with test_path, "test": columns line, text, label index;
    label names)."""
    paths = {"train": data.train_path, "valid": data.valid_path, "test": data.test_path}
    raw = {name: _file_table(path, data, cache) for name, path in paths.items() if path}
    labels = label_names(data, raw["train"])
    for name in ("valid", "test"):
        if name in raw:
            _check_known(raw[name], labels, paths[name], data.train_path)
    tables = {name: _indexed(table, labels) for name, table in raw.items()}
    if "valid" not in tables:
        size = DEFAULT_VALID_SIZE if data.valid_size is None else data.valid_size
        tables["train"], tables["valid"] = hold_out_rows(
            tables["train"], size, seed, data.train_path
        )
    if data.max_train_examples is not None:
        train = tables["train"]
        tables["train"] = train.select(range(min(len(train), data.max_train_examples)))
    return tables, labels
