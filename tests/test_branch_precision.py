"""The deformation branch's precision under autocast (``bench train --branch-precision``)."""

from __future__ import annotations

import pytest
import torch

from d2bench.layers import get_variant, set_branch_precision
from d2bench.layers.replace import build_layer


class ConvDtypes(torch.utils._python_dispatch.TorchDispatchMode):
    """The input dtypes of every convolution dispatched inside the block."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[torch.dtype] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.__name__.startswith("convolution"):
            self.seen.append(args[0].dtype)
        return func(*args, **(kwargs or {}))


def _layer(variant: str) -> torch.nn.Module:
    torch.manual_seed(0)
    layer = build_layer(torch.nn.Conv3d(4, 6, 3, padding=1), get_variant(variant))
    with torch.no_grad():  # a deformation that samples between grid points
        layer.branch.weight.normal_(0, 0.1)
    return layer


@pytest.mark.parametrize("variant", ["d2conv3d_iv", "dcnv2"])
def test_an_autocast_branch_runs_in_the_autocast_dtype_and_hands_float32_on(variant) -> None:
    layer = _layer(variant)
    x = torch.randn(1, 4, 4, 8, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        wide = layer.predict(x)
        assert set_branch_precision(layer, "autocast") == 1
        spy = ConvDtypes()
        with spy:
            narrow = layer.predict(x)
    assert spy.seen == [torch.bfloat16]  # the branch conv itself, on the autocast dtype
    for exact, rounded in zip(wide, narrow, strict=True):
        assert rounded.dtype == torch.float32  # coordinates are formed in float32
        torch.testing.assert_close(rounded, exact, rtol=2e-2, atol=2e-2)  # bf16 rounding only
        assert not torch.equal(rounded, exact)
    narrow[0].sum().backward()
    assert layer.branch.weight.grad is not None and layer.branch.weight.grad.dtype == torch.float32


def test_without_autocast_the_choice_changes_nothing() -> None:
    layer = _layer("d2conv3d_iv")
    x = torch.randn(1, 4, 4, 8, 8)
    before = layer.predict(x)
    set_branch_precision(layer, "autocast")
    after = layer.predict(x)
    for a, b in zip(before, after, strict=True):
        assert torch.equal(a, b)


def test_a_model_sets_every_sampling_layer_and_refuses_other_values() -> None:
    model = torch.nn.Sequential(_layer("d2conv3d_iv"), torch.nn.ReLU(), _layer("dcnv1"))
    assert set_branch_precision(model, "autocast") == 2
    assert {m.branch_precision for m in model if hasattr(m, "branch_precision")} == {"autocast"}
    with pytest.raises(ValueError, match="allowed: fp32, autocast"):
        set_branch_precision(model, "fp16")
