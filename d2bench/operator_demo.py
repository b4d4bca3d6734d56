"""`d2bench ops check`: builds the operators and checks them where a user can see.

It prints, for both operators, how far the compiled kernels are from the pure-PyTorch reference
(values and every gradient), and for every row of Table 1 the identity that a freshly replaced
layer must satisfy, with its branch size and a forward+backward time. Exit code 1 if any check
fails, so the demo doubles as an installation check.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
from torch import Tensor, nn

from . import ops
from .layers import PAPER_LABELS, VARIANT_NAMES, get_variant, replace_convs
from .ops import reference
from .ops.geometry import make_geometry

TOLERANCE = 1e-10


def _max_gap(compiled: Callable[..., Tensor], oracle: Callable[..., Tensor], inputs) -> float:
    """Largest |compiled − reference| over the output and the gradients of all inputs."""
    a = [t.clone().requires_grad_() for t in inputs]
    b = [t.clone().requires_grad_() for t in inputs]
    out_a, out_b = compiled(*a), oracle(*b)
    grad = torch.randn_like(out_a)
    out_a.backward(grad)
    out_b.backward(grad)
    gaps = [(out_a - out_b).detach().abs().max()]
    gaps += [(x.grad - y.grad).abs().max() for x, y in zip(a, b, strict=True)]
    return float(torch.stack(gaps).max())


def check_operators() -> bool:
    """Compiled vs reference in float64 on random inputs with out-of-bounds samples."""
    gen = torch.Generator().manual_seed(0)
    f64 = torch.float64
    x = torch.randn(2, 4, 5, 6, 7, generator=gen, dtype=f64)
    geom = make_geometry(x, 1, 1, 1)
    w = torch.randn(3, 4, 3, 3, 3, generator=gen, dtype=f64)
    b = torch.randn(3, generator=gen, dtype=f64)
    s = torch.randn(2, 3, *geom.out_size, generator=gen, dtype=f64) * 2
    m = torch.rand(2, 27, *geom.out_size, generator=gen, dtype=f64)
    off = torch.randn(2, 162, *geom.out_size, generator=gen, dtype=f64) * 2
    mask = torch.rand(2, 54, *geom.out_size, generator=gen, dtype=f64)
    cases = {
        "d2conv3d": (
            lambda *t: ops.d2conv3d(*t),
            lambda *t: reference.d2conv3d_reference(*t, geom),
            (x, s, m, w, b),
        ),
        "deform_conv3d (2 offset groups)": (
            lambda *t: ops.deform_conv3d(*t, offset_groups=2),
            lambda *t: reference.deform_conv3d_reference(*t, geom, 2),
            (x, off, mask, w, b),
        ),
    }
    ok = True
    print("Compiled kernels vs the pure-PyTorch reference (float64, output and all gradients):")
    for name, (compiled, oracle, inputs) in cases.items():
        gap = _max_gap(compiled, oracle, inputs)
        passed = gap < TOLERANCE
        ok &= passed
        print(f"  {name:<32} max |difference| = {gap:.2e}  {'ok' if passed else 'FAILED'}")
    return ok


def _tiny_net(channels: int) -> nn.Module:
    block = nn.Sequential(
        nn.Conv3d(channels, channels, 3, padding=1), nn.ReLU(),
        nn.Conv3d(channels, channels, 3, padding=1), nn.ReLU(),
    )  # fmt: skip
    return nn.Sequential(block)


def check_variants(channels: int = 16, size: tuple[int, int, int] = (4, 24, 32)) -> bool:
    """Each Table 1 row replaces the convs; a fresh layer must match the conv it replaced."""
    torch.manual_seed(0)
    x = torch.randn(1, channels, *size)
    shape = "×".join(str(v) for v in (1, channels, *size))
    print(f"\nTable 1 variants on a {channels}-channel block, input {shape}:")
    print(f"  {'variant':<20} {'replaced':>8} {'branch ch':>9} {'identity gap':>12} "
          f"{'fwd+bwd ms':>10}")  # fmt: skip
    ok = True
    for name in VARIANT_NAMES:
        net = _tiny_net(channels).eval()
        with torch.no_grad():
            before = net(x)
        spec = get_variant(name)
        replaced = replace_convs(net, spec)
        layers = [net.get_submodule(r) for r in replaced]
        branch = sum(getattr(layer, "branch_channels", 0) for layer in layers[:1])
        with torch.no_grad():
            after = net(x)
        # Zero-initialised branch: no deformation. Modulated variants see 0.5·x (sigmoid(0)).
        expected = before
        if spec.kind in ("dcn", "d2") and spec.modulation:
            expected = _tiny_net_half_input(net, x)
        gap = float((after - expected).abs().max()) if spec.kind != "aspp" else float("nan")
        passed = spec.kind == "aspp" or gap < 1e-4
        ok &= passed
        start = time.perf_counter()
        net.train()
        net(x.clone().requires_grad_()).square().mean().backward()
        ms = (time.perf_counter() - start) * 1e3
        shown = "n/a (new)" if spec.kind == "aspp" else f"{gap:.1e}"
        print(f"  {PAPER_LABELS[name]:<20} {len(replaced):>8} {branch:>9} {shown:>12} "
              f"{ms:>10.1f}  {'ok' if passed else 'FAILED'}")  # fmt: skip
    return ok


def _tiny_net_half_input(net: nn.Module, x: Tensor) -> Tensor:
    """What the modulated, zero-initialised net must compute: each replaced conv sees 0.5·input."""
    out = x
    with torch.no_grad():
        for layer in net[0]:
            if hasattr(layer, "weight") and layer.weight.dim() == 5:
                out = nn.functional.conv3d(0.5 * out, layer.weight, layer.bias, padding=1)
            else:
                out = layer(out)
    return out


def main() -> int:
    backend = ops.selected_implementation()
    print(f"d2bench operator demo (operators: {backend}, torch {torch.__version__})")
    if backend == "compiled":
        print("Building/loading the compiled operators (first run builds, about 15 s)...")
        start = time.perf_counter()
        ops.ensure_loaded()
        print(f"  ready in {time.perf_counter() - start:.1f} s")
    ok = check_operators() if backend == "compiled" else True
    ok &= check_variants()
    print("\nAll checks passed." if ok else "\nSome checks FAILED (see above).")
    return 0 if ok else 1
