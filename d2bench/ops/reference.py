"""Pure-PyTorch reference operators: the readable oracle the compiled kernels are tested against.

Slow and memory-hungry on purpose (one tap at a time, plain gathers), so that every line maps to
the formula in the docstrings of :mod:`d2bench.ops`. Gradients come from autograd through these
expressions; at integer sampling coordinates autograd differentiates ``coord - floor(coord)``
and so takes the one-sided difference towards the +1 corner, the same convention as the kernels.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .geometry import TAPS, ConvGeometry


def trilinear_sample(volume: Tensor, t: Tensor, y: Tensor, x: Tensor) -> Tensor:
    """Sample ``volume`` (N×G×Cg×T×H×W) at coordinates ``t, y, x`` (each N×G×P).

    Zero padding: each of the 8 corners outside the volume contributes 0. Returns N×G×Cg×P.
    """
    n, g, cg, depth, height, width = volume.shape
    flat = volume.reshape(n, g, cg, depth * height * width)
    t0, y0, x0 = t.floor(), y.floor(), x.floor()
    ft, fy, fx = t - t0, y - y0, x - x0
    out = volume.new_zeros(n, g, cg, t.shape[-1])
    for dt in (0, 1):
        ti = t0 + dt
        wt = ft if dt else 1 - ft
        for dy in (0, 1):
            yi = y0 + dy
            wy = fy if dy else 1 - fy
            for dx in (0, 1):
                xi = x0 + dx
                wx = fx if dx else 1 - fx
                inside = (ti >= 0) & (ti < depth) & (yi >= 0) & (yi < height)
                inside &= (xi >= 0) & (xi < width)
                index = (
                    ti.clamp(0, depth - 1) * height + yi.clamp(0, height - 1)
                ) * width + xi.clamp(0, width - 1)
                index = index.long().unsqueeze(2).expand(n, g, cg, -1)
                weight = (wt * wy * wx * inside).unsqueeze(2)
                out = out + torch.gather(flat, 3, index) * weight
    return out


def _centres(geom: ConvGeometry, like: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Input coordinates of the centre tap of every output voxel, each 1×1×P."""
    axes = []
    for size, stride, pad, dil in zip(
        geom.out_size, geom.stride, geom.padding, geom.dilation, strict=True
    ):
        axes.append(torch.arange(size, dtype=like.dtype, device=like.device) * stride - pad + dil)
    ct, cy, cx = torch.meshgrid(*axes, indexing="ij")
    return tuple(c.reshape(1, 1, -1) for c in (ct, cy, cx))  # type: ignore[return-value]


def _convolve_taps(
    input: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    geom: ConvGeometry,
    groups: int,
    tap_coords,
    tap_mask,
) -> Tensor:
    """Σ_k W_k · m_k · x(coord_k) + b, one tap at a time.

    ``tap_coords(k)`` returns (t, y, x), each N×G×P; ``tap_mask(k)`` returns N×G×P or None.
    """
    n, c = input.shape[:2]
    volume = input.reshape(n, groups, c // groups, *input.shape[2:])
    out = input.new_zeros(n, weight.shape[0], geom.out_numel)
    flat_weight = weight.reshape(weight.shape[0], c, 27)
    for k in range(27):
        sample = trilinear_sample(volume, *tap_coords(k))
        mask = tap_mask(k)
        if mask is not None:
            sample = sample * mask.unsqueeze(2)
        out = out + torch.einsum("oc,ncp->nop", flat_weight[:, :, k], sample.reshape(n, c, -1))
    if bias is not None:
        out = out + bias.view(1, -1, 1)
    return out.reshape(n, weight.shape[0], *geom.out_size)


def deform_conv3d_reference(
    input: Tensor,
    offset: Tensor,
    mask: Tensor | None,
    weight: Tensor,
    bias: Tensor | None,
    geom: ConvGeometry,
    offset_groups: int,
) -> Tensor:
    """3D (modulated) deformable convolution, tap k of group g at ``centre + p_k·dil + Δ_gk``."""
    n = input.shape[0]
    offs = offset.reshape(n, offset_groups, 27, 3, -1)
    masks = None if mask is None else mask.reshape(n, offset_groups, 27, -1)
    ct, cy, cx = _centres(geom, input)
    dt, dy, dx = geom.dilation

    def tap_coords(k: int) -> tuple[Tensor, Tensor, Tensor]:
        pt, py, px = TAPS[k]
        return (
            ct + pt * dt + offs[:, :, k, 0],
            cy + py * dy + offs[:, :, k, 1],
            cx + px * dx + offs[:, :, k, 2],
        )

    def tap_mask(k: int) -> Tensor | None:
        return None if masks is None else masks[:, :, k]

    return _convolve_taps(input, weight, bias, geom, offset_groups, tap_coords, tap_mask)


def d2conv3d_reference(
    input: Tensor,
    dilation_map: Tensor,
    modulation: Tensor | None,
    weight: Tensor,
    bias: Tensor | None,
    geom: ConvGeometry,
) -> Tensor:
    """D²Conv3D: tap k at ``centre + p_k · dil · s(p)`` with the per-voxel dilation ``s``."""
    n = dilation_map.shape[0]
    scale = dilation_map.reshape(n, 1, 3, -1)
    mods = None if modulation is None else modulation.reshape(n, 1, 27, -1)
    ct, cy, cx = _centres(geom, input)
    dt, dy, dx = geom.dilation

    def tap_coords(k: int) -> tuple[Tensor, Tensor, Tensor]:
        pt, py, px = TAPS[k]
        return (
            ct + pt * dt * scale[:, :, 0],
            cy + py * dy * scale[:, :, 1],
            cx + px * dx * scale[:, :, 2],
        )

    def tap_mask(k: int) -> Tensor | None:
        return None if mods is None else mods[:, :, k]

    return _convolve_taps(input, weight, bias, geom, 1, tap_coords, tap_mask)
