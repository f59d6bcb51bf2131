"""`list_lengths`: lengths of the rows a filtered or selected `datasets.Dataset` really holds."""

from __future__ import annotations

import datasets

from seqlab.data.dataset import list_lengths


def test_lengths_follow_filter_and_select_mappings():
    ds = datasets.Dataset.from_dict({"ids": [[1] * n for n in range(10)]})
    assert list_lengths(ds, "ids").tolist() == list(range(10))
    odd = ds.filter(lambda row: len(row["ids"]) % 2 == 1)
    assert list_lengths(odd, "ids").tolist() == [1, 3, 5, 7, 9]
    picked = odd.select([4, 0, 2])
    assert list_lengths(picked, "ids").tolist() == [9, 1, 5]
    assert list_lengths(picked.flatten_indices(), "ids").tolist() == [9, 1, 5]
