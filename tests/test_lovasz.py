"""The Lovász hinge against the formula in shared/reference/davis-eval.md, term by term."""

from __future__ import annotations

import pytest
import torch

from d2bench.engine.lovasz import lovasz_hinge, lovasz_hinge_flat


def _slow_lovasz(logits: list[float], labels: list[int]) -> float:
    """The formula written out with Python loops: sort errors, Jaccard increments, dot."""
    errors = [1.0 - s * (2 * y - 1) for s, y in zip(logits, labels, strict=True)]
    order = sorted(range(len(errors)), key=lambda i: -errors[i])
    positives = sum(labels)
    loss, previous = 0.0, 0.0
    seen_pos = seen_neg = 0
    for i in order:
        seen_pos += labels[i]
        seen_neg += 1 - labels[i]
        intersection = positives - seen_pos
        union = positives + seen_neg
        jaccard = 1.0 - intersection / union
        loss += max(errors[i], 0.0) * (jaccard - previous)
        previous = jaccard
    return loss


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_the_formula_written_out(seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(50, generator=generator, dtype=torch.float64) * 2
    labels = (torch.rand(50, generator=generator) > 0.6).long()
    got = lovasz_hinge_flat(logits, labels).item()
    want = _slow_lovasz(logits.tolist(), labels.tolist())
    assert got == pytest.approx(want, rel=1e-6)


def test_zero_logits_cost_exactly_one() -> None:
    labels = torch.tensor([0, 1, 1, 0, 1])
    assert lovasz_hinge_flat(torch.zeros(5), labels).item() == pytest.approx(1.0)


def test_confident_correct_prediction_costs_nothing() -> None:
    labels = torch.tensor([0, 1, 1, 0])
    logits = (labels * 2 - 1).float() * 5
    assert lovasz_hinge_flat(logits, labels).item() == 0.0


def test_no_foreground_is_relu_of_one_plus_max_logit() -> None:
    logits = torch.tensor([-3.0, 0.25, -1.0])
    labels = torch.zeros(3)
    assert lovasz_hinge_flat(logits, labels).item() == pytest.approx(1.25)


def test_batch_is_the_mean_of_per_clip_losses_and_has_gradients() -> None:
    generator = torch.Generator().manual_seed(3)
    logits = torch.randn(2, 1, 2, 4, 4, generator=generator, requires_grad=True)
    labels = (torch.rand(2, 1, 2, 4, 4, generator=generator) > 0.5).float()
    loss = lovasz_hinge(logits, labels)
    per_clip = [lovasz_hinge_flat(logits[i].reshape(-1), labels[i].reshape(-1)) for i in range(2)]
    assert loss.item() == pytest.approx(((per_clip[0] + per_clip[1]) / 2).item())
    loss.backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()


def test_shape_mismatch_is_refused() -> None:
    with pytest.raises(ValueError, match="must match"):
        lovasz_hinge(torch.zeros(2, 4), torch.zeros(2, 5))
