"""Batch normalisation with frozen statistics and affine parameters, as the backbone uses it.

The encoder is fine-tuned with batches of two clips, far too few for batch statistics; like the
original, its BatchNorm layers keep the pretrained statistics and scales. Holding them as
buffers (not parameters) means no optimiser can touch them and train mode changes nothing.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

#: The epsilon of the VMZ Caffe2 models (PyTorch's default is 1e-5).
CSN_BN_EPS = 1e-3


class FrozenBatchNorm3d(nn.Module):
    """``y = (x - running_mean) / sqrt(running_var + eps) * weight + bias``, never updated.

    Its state-dict keys are those of ``nn.BatchNorm3d`` (without ``num_batches_tracked``), so
    state dicts of ordinary BatchNorm models load into it. The affine transform runs in the
    input's dtype, so that under autocast a bf16 activation stays bf16.
    """

    weight: Tensor
    bias: Tensor
    running_mean: Tensor
    running_var: Tensor

    def __init__(
        self,
        num_features: int,
        eps: float = CSN_BN_EPS,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.num_features = num_features
        self.eps = eps
        self.register_buffer("weight", torch.ones(num_features, **factory))
        self.register_buffer("bias", torch.zeros(num_features, **factory))
        self.register_buffer("running_mean", torch.zeros(num_features, **factory))
        self.register_buffer("running_var", torch.ones(num_features, **factory))

    def forward(self, x: Tensor) -> Tensor:
        scale = self.weight * torch.rsqrt(self.running_var + self.eps)
        shift = self.bias - self.running_mean * scale
        shape = (1, -1) + (1,) * (x.dim() - 2)
        return x * scale.to(x.dtype).view(shape) + shift.to(x.dtype).view(shape)

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}"
