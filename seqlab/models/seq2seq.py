"""`Seq2Seq`: an encoder and a decoder joined behind the interface training and search use.

It knows nothing about either side beyond the contracts of `interfaces.py`: the encoder maps
(src, src_mask) to `Encoded`, the decoder is a `Decoder`. Training calls `forward`; search calls
`encode` once per batch, then `decoder.init_state` and `decoder.step`.
"""

from __future__ import annotations

from torch import Tensor, nn

from seqlab.models.interfaces import Encoded


class Seq2Seq(nn.Module):
    """An encoder-decoder model, model-agnostic.

    Attributes:
        encoder: a module with `forward(src (B, S), src_mask (B, S)) -> Encoded`
            (state_dict keys `encoder.*`).
        decoder: a module satisfying the `Decoder` protocol (state_dict keys `decoder.*`).
    """

    def __init__(self, encoder: nn.Module, decoder: nn.Module):
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder

    def encode(self, src: Tensor, src_mask: Tensor) -> Encoded:
        """src (B, S) ids, src_mask (B, S) bool -> Encoded(memory (B, S, Hm), mask, final)."""
        return self.encoder(src, src_mask)

    def forward(
        self, src: Tensor, src_mask: Tensor, tgt_in: Tensor, rows: Tensor | None = None
    ) -> Tensor:
        """Teacher forcing: src (B, S), src_mask (B, S), tgt_in (B, T) -> logits (B, T, V), or
        (N, V) at the flat target positions `rows` (N,) only (see `Decoder.forward`)."""
        return self.decoder(tgt_in, self.encode(src, src_mask), rows)
