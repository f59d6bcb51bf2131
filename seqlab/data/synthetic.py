"""Synthetic seq2seq tasks (copy, reverse, sort) for tests and a sanity-check recipe.

A model that cannot learn to reverse a sequence of 20 symbols has a bug, whatever BLEU it reaches
on real data; these tasks need no download and train in minutes. `synthetic_pairs` returns text
whose tokens are space-separated symbol words ("s3 s11 s7" -> "s7 s11 s3"), so it flows through the
normal word tokenizer and `Vocab`; `synthetic_id_pairs` returns the same pairs as id lists (symbol
`s<k>` -> id `first_id + k`, after the 7 special ids) for unit tests that skip tokenization.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Literal

Task = Literal["copy", "reverse", "sort"]

# Each task maps a source sequence of symbol numbers to its target.
TASKS: dict[str, Callable[[list[int]], list[int]]] = {
    "copy": lambda xs: list(xs),
    "reverse": lambda xs: xs[::-1],
    "sort": sorted,
}

# The first id after the project's special ids (<pad> <unk> <bos> <eos> <mask> <cls> <sep>).
FIRST_SYMBOL_ID = 7


def _symbol_pairs(
    task: str, n: int, num_symbols: int, min_len: int, max_len: int, seed: int
) -> list[tuple[list[int], list[int]]]:
    """n (source, target) pairs of symbol numbers in [0, num_symbols), lengths uniform."""
    if task not in TASKS:
        raise ValueError(f"unknown synthetic task {task!r}; choose one of {sorted(TASKS)}")
    if n < 0 or num_symbols < 1 or not 1 <= min_len <= max_len:
        raise ValueError(
            f"synthetic task needs n >= 0, num_symbols >= 1 and 1 <= min_len <= max_len; got "
            f"n={n}, num_symbols={num_symbols}, min_len={min_len}, max_len={max_len}"
        )
    rng = random.Random(seed)
    target = TASKS[task]
    pairs = []
    for _ in range(n):
        src = [rng.randrange(num_symbols) for _ in range(rng.randint(min_len, max_len))]
        pairs.append((src, target(src)))
    return pairs


def synthetic_pairs(
    task: Task,
    n: int,
    *,
    num_symbols: int = 20,
    min_len: int = 3,
    max_len: int = 12,
    seed: int = 0,
) -> list[tuple[str, str]]:
    """n (source, target) text pairs of the task, tokens "s0" ... "s<num_symbols-1>".

    Args:
        task: "copy" (target = source), "reverse" (target = source reversed) or "sort" (target =
            source sorted by symbol number, so "s2" < "s10").
        n: number of pairs.
        num_symbols: size of the symbol alphabet.
        min_len, max_len: source lengths are drawn uniformly from [min_len, max_len].
        seed: the same seed gives the same pairs.

    Raises:
        ValueError: for an unknown task (the message lists the tasks) or impossible sizes.
    """
    pairs = _symbol_pairs(task, n, num_symbols, min_len, max_len, seed)

    def words(xs: list[int]) -> str:
        return " ".join(f"s{x}" for x in xs)

    return [(words(src), words(tgt)) for src, tgt in pairs]


def synthetic_id_pairs(
    task: Task,
    n: int,
    *,
    num_symbols: int = 20,
    min_len: int = 3,
    max_len: int = 12,
    seed: int = 0,
    first_id: int = FIRST_SYMBOL_ID,
) -> list[tuple[list[int], list[int]]]:
    """The pairs of `synthetic_pairs` with the same arguments, as ids: `s<k>` -> `first_id + k`.

    No special tokens are added (`collate` adds EOS and BOS). Ids lie in
    [first_id, first_id + num_symbols), so a vocabulary of `first_id + num_symbols` ids covers them.
    """
    pairs = _symbol_pairs(task, n, num_symbols, min_len, max_len, seed)
    return [([first_id + x for x in src], [first_id + x for x in tgt]) for src, tgt in pairs]
