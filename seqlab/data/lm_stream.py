"""A language model's text as one token stream, read in TBPTT segments: `LMBatch` and
`sequential_batches` (d2l's sequential partitioning). Used by the LM task for validation and test
and by `seqlab.evaluation` (perplexity, the neural cache), so it lives below both."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from torch import Tensor

from seqlab.data.batch import TensorBatch


@dataclass(frozen=True)
class LMBatch(TensorBatch):
    """One TBPTT segment of B rows.

    Attributes:
        inputs: (B, T) token ids.
        targets: (B, T) the next token of each input (inputs shifted left by one in the stream).
        carry: True when row b continues the text of row b of the previous batch, so the model
            starts from the state that batch ended in; False: start from zeros.
    """

    inputs: Tensor
    targets: Tensor
    carry: bool = False

    @property
    def num_tokens(self) -> int:
        return self.inputs.numel()


def sequential_batches(
    stream: Tensor, batch_size: int, bptt: int, offset: int = 0
) -> Iterator[LMBatch]:
    """d2l's `seq_data_iter_sequential` (with a shorter last segment, as pytorch/examples).

    stream (N,) from `offset` is laid out as batch_size rows of C tokens (the last N' mod B
    tokens dropped, N' = N - offset - 1), targets one token further; segments of `bptt` columns
    are read left to right, every one after the first with `carry=True`.
    """
    usable = (stream.numel() - offset - 1) // batch_size * batch_size
    if usable < batch_size:
        return
    inputs = stream[offset : offset + usable].view(batch_size, -1)  # (B, C)
    targets = stream[offset + 1 : offset + 1 + usable].view(batch_size, -1)  # (B, C)
    for start in range(0, inputs.size(1), bptt):
        end = start + bptt
        yield LMBatch(inputs[:, start:end], targets[:, start:end], carry=start > 0)
