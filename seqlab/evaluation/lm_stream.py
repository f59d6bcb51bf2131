"""`read_stream`: a language model reading a token stream left to right, its state carried from
segment to segment, the way perplexity and the neural cache score text."""

from __future__ import annotations

from collections.abc import Iterator

from torch import Tensor, nn

from seqlab.data.lm_stream import LMBatch, sequential_batches


def read_stream(
    model: nn.Module, stream: Tensor, batch_size: int, bptt: int
) -> Iterator[tuple[Tensor, LMBatch]]:
    """Read stream (N,) left to right, the state carried from segment to segment: yields each
    segment's (features (B, T, H), batch on the model's device). The stream is read as
    `sequential_batches` from offset 0 with min(batch_size, N - 1) rows. Gradient mode and
    train/eval mode are the caller's."""
    device = next(model.parameters()).device
    rows = max(1, min(batch_size, stream.numel() - 1))
    state = None
    for batch in sequential_batches(stream, rows, bptt):
        batch = batch.to(device)
        features, state = model.run(batch.inputs, state if batch.carry else None)
        yield features, batch
