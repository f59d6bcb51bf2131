"""An adaptive softmax over the vocabulary that runs under bf16 autocast (the models' plain logits
layer is an `nn.Linear`).

`AdaptiveSoftmax` is torch's `nn.AdaptiveLogSoftmaxWithLoss` (Grave et al. 2017) with the same
parameters, whose forward and `log_prob` keep their matrix products in the autocast dtype and
their log-softmaxes and outputs in float32. torch's own forward fails under CPU bf16 autocast
(it copies bf16 log-probabilities into a float32 buffer), and bf16 matrix products are several
times faster than float32 ones on CPUs with AVX512-BF16 or AMX.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class AdaptiveSoftmax(nn.AdaptiveLogSoftmaxWithLoss):
    """`nn.AdaptiveLogSoftmaxWithLoss` (same parameters, state-dict keys and results in float32)
    that also runs under autocast: products in the autocast dtype, log-softmax in float32.

    `target_log_prob(hidden, target)` is the training path: the log-probability of each target
    only, computing a tail cluster's projection for the rows whose target falls in it.
    """

    def target_log_prob(self, hidden: Tensor, target: Tensor) -> Tensor:
        """hidden (N, H), target (N,) -> log p(target | hidden) (N,), float32."""
        if hidden.dim() != 2 or target.shape != hidden.shape[:1]:
            raise ValueError(
                f"hidden must be (N, H) and target (N,), got {tuple(hidden.shape)} and "
                f"{tuple(target.shape)}"
            )
        if target.numel() and (target.min() < 0 or target.max() >= self.n_classes):
            raise IndexError(f"targets must lie in [0, {self.n_classes}), got {target.tolist()}")
        head = self.head(hidden).float().log_softmax(-1)  # (N, shortlist + clusters)
        cutoffs = [0, *self.cutoffs]  # cutoffs ends with n_classes
        # a tail word's head entry is its cluster's row: shortlist + cluster index
        cluster = torch.bucketize(target, target.new_tensor(self.cutoffs), right=True)  # (N,)
        head_index = torch.where(cluster == 0, target, self.shortlist_size + cluster - 1)
        out = head.gather(1, head_index.unsqueeze(1)).squeeze(1)  # (N,)
        for i in range(self.n_clusters):
            rows = (cluster == i + 1).nonzero().squeeze(1)  # (M,)
            if rows.numel() == 0:
                continue
            tail = self.tail[i](hidden.index_select(0, rows)).float().log_softmax(-1)  # (M, C)
            local = (target.index_select(0, rows) - cutoffs[i + 1]).unsqueeze(1)  # (M, 1)
            out = out.index_add(0, rows, tail.gather(1, local).squeeze(1))
        return out

    def forward(self, input_: Tensor, target_: Tensor):  # type: ignore[override]
        """torch's (output, loss) result: output (N,) float32 log-probabilities, loss their
        negated mean. Accepts unbatched (H,) / () input like torch's."""
        unbatched = input_.dim() == 1
        hidden = input_.unsqueeze(0) if unbatched else input_
        target = target_.unsqueeze(0) if unbatched else target_
        output = self.target_log_prob(hidden, target)
        loss = -output.mean()
        return nn.modules.adaptive._ASMoutput(output.squeeze(0) if unbatched else output, loss)

    def log_prob(self, input: Tensor) -> Tensor:
        """(N, H) or (H,) -> log-probabilities over all classes (N, V) / (V,), float32."""
        unbatched = input.dim() == 1
        hidden = input.unsqueeze(0) if unbatched else input
        head = self.head(hidden).float().log_softmax(-1)  # (N, shortlist + clusters)
        parts = [head[:, : self.shortlist_size]]
        for i in range(self.n_clusters):
            tail = self.tail[i](hidden).float().log_softmax(-1)  # (N, C_i)
            parts.append(tail + head[:, self.shortlist_size + i].unsqueeze(1))
        out = torch.cat(parts, dim=1)  # (N, V)
        return out.squeeze(0) if unbatched else out

    def predict(self, input: Tensor) -> Tensor:
        """The most probable class of each row: (N, H) -> (N,)."""
        return self.log_prob(input).argmax(dim=-1)
