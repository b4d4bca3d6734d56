"""Reading the settings of the ``nn.Conv3d`` a layer replaces, and refusing ones it cannot copy."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

Triple = tuple[int, int, int]


@dataclass(frozen=True)
class ConvSettings:
    """Stride, padding and dilation of a 3×3×3 convolution, as (t, y, x) triples."""

    stride: Triple
    padding: Triple
    dilation: Triple

    @property
    def keeps_size(self) -> bool:
        """Whether output size = ceil(input size / stride) for every size (padding = dilation)."""
        return self.padding == self.dilation


def is_replaceable(module: nn.Module) -> bool:
    """A dense 3×3×3 ``nn.Conv3d``: the only kind of layer the variants stand in for."""
    return (
        isinstance(module, nn.Conv3d)
        and tuple(module.kernel_size) == (3, 3, 3)
        and module.groups == 1
    )


def conv_settings(conv: nn.Module) -> ConvSettings:
    """Settings of ``conv``; ValueError for anything the sampling operators cannot reproduce."""
    if not is_replaceable(conv):
        raise ValueError(f"only a dense 3×3×3 nn.Conv3d (groups=1) can be replaced, got {conv!r}")
    assert isinstance(conv, nn.Conv3d)
    if conv.padding_mode != "zeros":
        raise ValueError(
            f"the operators pad with zeros; cannot replace a conv with padding_mode="
            f"{conv.padding_mode!r}"
        )
    dilation: Triple = tuple(conv.dilation)  # type: ignore[assignment]
    padding = conv.padding
    if padding == "same":
        padding = dilation  # a 3-tap kernel needs dilation zeros on each side
    elif padding == "valid":
        padding = (0, 0, 0)
    return ConvSettings(tuple(conv.stride), tuple(padding), dilation)  # type: ignore[arg-type]
