"""Loading pretrained weights into the ir-CSN backbone (never the decoder).

Accepted files:

- a PyTorch state dict (``.pt``/``.pth``), possibly wrapped as ``{"state_dict": ...}`` or
  ``{"model": ...}``, with keys of our backbone (what ``d2bench weights convert`` writes), of a
  whole :class:`SegmentationModel` (``backbone.*`` is used), with a DDP ``module.`` prefix, or in
  torchvision's ``VideoResNet`` layout (``stem.0``, ``layer1.0.conv1.0``: VMZ's PyTorch release);
- the VMZ Caffe2 ``.pkl`` (converted on load, see :mod:`.vmz`).

Classifier weights (``fc.*``) and BatchNorm's ``num_batches_tracked`` are ignored; anything else
that does not fit raises :class:`WeightsError` naming a few keys.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

from .errors import WeightsError, few
from .vmz import convert_vmz_blobs, read_vmz_blobs

#: Where the paper's weights come from, for error messages.
WEIGHTS_SOURCE = (
    "the ir-CSN-152 weights pretrained on Sports1M and fine-tuned on Kinetics "
    '("irCSN-152 Sports1M→Kinetics") from the VMZ model zoo '
    "(github.com/facebookresearch/VMZ): the Caffe2 .pkl, or a state dict made from it with "
    "`d2bench weights convert IN.pkl OUT.pth`"
)

_TORCHVISION_BLOCK = re.compile(r"^(layer\d+\.\d+)\.conv([123])\.([01])\.(.+)$")
_TORCHVISION_STEM = {"stem.0.": "conv1.", "stem.1.": "bn1."}


def _unwrap(obj: object, path: Path) -> dict[str, Tensor]:
    for wrapper in ("state_dict", "model"):
        if isinstance(obj, Mapping) and isinstance(obj.get(wrapper), Mapping):
            obj = obj[wrapper]
            break
    if not isinstance(obj, Mapping):
        raise WeightsError(f"{path}: expected a state dict (a mapping of tensors), got {type(obj)}")
    others = [str(key) for key, value in obj.items() if not isinstance(value, Tensor)]
    if others:
        raise WeightsError(f"{path}: entries that are not tensors: {few(others)}")
    return {str(key): value for key, value in obj.items()}


def _strip(state: dict[str, Tensor], prefix: str) -> dict[str, Tensor]:
    return {key.removeprefix(prefix): value for key, value in state.items()}


def _from_torchvision_layout(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """``VideoResNet`` keys (stem.0, layerL.k.convN.0/1) → ours (conv1/bn1, convN/bnN)."""
    renamed = {}
    for key, value in state.items():
        for old, new in _TORCHVISION_STEM.items():
            if key.startswith(old):
                key = new + key.removeprefix(old)
        match = _TORCHVISION_BLOCK.match(key)
        if match:
            block, n, part, rest = match.groups()
            key = f"{block}.{'conv' if part == '0' else 'bn'}{n}.{rest}"
        renamed[key] = value
    return renamed


def normalise_keys(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Our backbone's keys from any accepted layout; drops classifier and BN counters."""
    if state and all(key.startswith("module.") for key in state):
        state = _strip(state, "module.")
    if any(key.startswith("backbone.") for key in state):
        state = _strip({k: v for k, v in state.items() if k.startswith("backbone.")}, "backbone.")
    if "stem.0.weight" in state:
        state = _from_torchvision_layout(state)
    return {
        key: value
        for key, value in state.items()
        if not key.startswith("fc.") and not key.endswith("num_batches_tracked")
    }


def read_backbone_state_dict(path: str | Path) -> dict[str, Tensor]:
    """The backbone state dict held by ``path`` (any accepted format), on the CPU."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(
            f"weights file {path} not found. Expected {WEIGHTS_SOURCE}. "
            f"Set model.weights to 'none' to start from random initialisation."
        )
    if path.suffix == ".pkl":
        return convert_vmz_blobs(read_vmz_blobs(path))
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for a bad file
        raise WeightsError(
            f"{path}: not a PyTorch state dict readable with weights_only=True ({error}); "
            f"a VMZ Caffe2 file must end in .pkl"
        ) from None
    return normalise_keys(_unwrap(obj, path))


def check_state_dict(module: nn.Module, state: Mapping[str, Tensor], source: str) -> None:
    """Raise :class:`WeightsError` unless ``state`` has exactly ``module``'s keys and shapes."""
    expected = module.state_dict()
    missing = [key for key in expected if key not in state]
    unexpected = [key for key in state if key not in expected]
    mismatched = [
        f"{key} {tuple(state[key].shape)} vs {tuple(value.shape)}"
        for key, value in expected.items()
        if key in state and state[key].shape != value.shape
    ]
    problems = []
    if missing:
        problems.append(f"missing keys: {few(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {few(unexpected)}")
    if mismatched:
        problems.append(f"shape mismatches (file vs model): {few(mismatched)}")
    if problems:
        raise WeightsError(
            f"{source} does not fit this backbone ({len(expected)} tensors): "
            + "; ".join(problems)
            + ". Is it an ir-CSN of the same depth (csn152/csn50) and width?"
        )


def load_backbone_weights(model: nn.Module, path: str | Path) -> None:
    """Load ``path`` into ``model`` (an :class:`IrCSN`, or a model with a ``backbone``).

    On the meta device the weights are only checked against the architecture.
    """
    backbone = getattr(model, "backbone", model)
    state = read_backbone_state_dict(path)
    check_state_dict(backbone, state, str(path))
    if any(t.is_meta for t in backbone.state_dict().values()):
        return
    backbone.load_state_dict(state, strict=True)
