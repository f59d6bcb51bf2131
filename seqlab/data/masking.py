"""Masked-language-model corruption (Devlin et al. 2019, §3.1 "Task #1" and appendix A.1).

Of the maskable tokens of a sequence, `round(mask_prob * n)` (at least one) are chosen for
prediction, uniformly without replacement, as BERT's `create_pretraining_data.py` and d2l do.
Each chosen token is replaced by `<mask>` with probability `mask_token_prob` (0.8), by a random
regular token with probability `random_token_prob` (0.1), and left unchanged otherwise (0.1).
Special tokens (`<pad>`, `<bos>`, `<eos>`, `<mask>`, `<cls>`, `<sep>`) are never chosen; `<unk>`
stands for a real word and may be. Random replacements are drawn from the regular ids only
(7..V-1), so corruption never creates a special token.

Masks are drawn afresh every epoch, reproducibly: `example_rng(seed, stream, epoch, index)` seeds
one generator per example from the run's seed, a stream (0 train, 1 validation), the epoch and the
example's row index. The masks of an example therefore do not depend on batching, shuffling,
DataLoader workers or where a resumed run restarts, and no per-epoch copy of the corpus is written.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from seqlab.data.vocab import MASK, SPECIALS, UNK

SPECIAL_IDS = np.array([i for i, t in enumerate(SPECIALS) if t != UNK])  # never masked
FIRST_REGULAR_ID = len(SPECIALS)  # 7: random replacements come from [7, V)


def example_rng(seed: int, stream: int, epoch: int, index: int) -> np.random.Generator:
    """The generator of one example's masks: a function of its four arguments only."""
    return np.random.default_rng([seed, stream, epoch, index])


def maskable(ids: np.ndarray) -> np.ndarray:
    """(T,) bool: True at tokens that may be chosen (every id but the specials, `<unk>` allowed)."""
    return ~np.isin(ids, SPECIAL_IDS)


@dataclass(frozen=True)
class Masker:
    """BERT's 80/10/10 corruption with fixed rates (see the module docstring).

    Attributes:
        vocab_size: V; random replacements are drawn from [7, V).
        mask_prob: share of maskable tokens chosen for prediction (0.15).
        mask_token_prob: of the chosen, the share replaced by `<mask>` (0.8).
        random_token_prob: of the chosen, the share replaced by a random token (0.1).
        mask_id: the id of `<mask>`.
    """

    vocab_size: int
    mask_prob: float = 0.15
    mask_token_prob: float = 0.8
    random_token_prob: float = 0.1
    mask_id: int = SPECIALS.index(MASK)

    def __post_init__(self) -> None:
        if self.vocab_size <= FIRST_REGULAR_ID:
            raise ValueError(f"vocab_size = {self.vocab_size} has no regular token to draw")

    def __call__(self, ids: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Corrupt one sequence.

        Args:
            ids: (T,) int token ids, specials included (e.g. `<cls> A <sep> B <sep>`).
            rng: its generator (`example_rng`).

        Returns:
            inputs: (T,) the corrupted ids the model reads.
            chosen: (T,) bool, True at the positions whose original id is to be predicted.
        """
        ids = np.asarray(ids, dtype=np.int64)
        candidates = np.flatnonzero(maskable(ids))  # (n,)
        chosen = np.zeros(ids.shape, dtype=bool)  # (T,)
        inputs = ids.copy()
        if candidates.size == 0 or self.mask_prob == 0.0:
            return inputs, chosen
        count = max(1, round(self.mask_prob * candidates.size))
        picked = rng.choice(candidates, size=count, replace=False)  # (count,)
        chosen[picked] = True
        action = rng.random(count)  # (count,) in [0, 1)
        to_mask = picked[action < self.mask_token_prob]
        to_random = picked[
            (action >= self.mask_token_prob)
            & (action < self.mask_token_prob + self.random_token_prob)
        ]
        inputs[to_mask] = self.mask_id
        inputs[to_random] = rng.integers(FIRST_REGULAR_ID, self.vocab_size, size=to_random.size)
        return inputs, chosen
