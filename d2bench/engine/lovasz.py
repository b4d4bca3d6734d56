"""The Lovász hinge: the training loss of the paper, a convex surrogate of 1 − IoU.

Follows shared/reference/davis-eval.md: one loss per clip (all pixels of all its frames),
then the plain mean over the batch. A clip without foreground gets ``relu(1 + max s)``, the
value the general formula takes when G = 0 (every error is then a false positive and the
Jaccard gradient is 1 on the largest one).
"""

from __future__ import annotations

import torch
from torch import Tensor


def _jaccard_gradient(sorted_labels: Tensor) -> Tensor:
    """g_k = Jac_k − Jac_{k−1} for labels sorted by decreasing error (float tensor)."""
    positives = sorted_labels.sum()
    intersection = positives - sorted_labels.cumsum(0)
    union = positives + (1.0 - sorted_labels).cumsum(0)
    jaccard = 1.0 - intersection / union
    if jaccard.numel() > 1:
        jaccard = torch.cat([jaccard[:1], jaccard[1:] - jaccard[:-1]])
    return jaccard


def lovasz_hinge_flat(logits: Tensor, labels: Tensor) -> Tensor:
    """Loss of one example given flat logits and 0/1 labels of the same length."""
    if logits.numel() == 0:
        return logits.sum() * 0.0
    logits = logits.float()
    labels = labels.float()
    signs = 2.0 * labels - 1.0
    errors = 1.0 - logits * signs
    errors_sorted, order = torch.sort(errors, descending=True)
    gradient = _jaccard_gradient(labels[order])
    return torch.dot(torch.relu(errors_sorted), gradient)


def lovasz_hinge(logits: Tensor, labels: Tensor) -> Tensor:
    """Mean over the batch of the per-example loss; ``logits`` and ``labels`` are B×… alike."""
    if logits.shape != labels.shape:
        raise ValueError(
            f"logits {tuple(logits.shape)} and labels {tuple(labels.shape)} must match"
        )
    if logits.dim() == 0 or logits.shape[0] == 0:
        raise ValueError("lovasz_hinge needs a non-empty batch dimension")
    losses = [
        lovasz_hinge_flat(s.reshape(-1), y.reshape(-1)) for s, y in zip(logits, labels, strict=True)
    ]
    return torch.stack(losses).mean()
