"""The common part of the recorders that watch sampling layers (out-of-bounds counts, maps).

Each recorder registers one :meth:`SampledConv3d.register_sampling_hook` per layer while
attached and removes them all on detach, so nothing runs when no recorder is attached.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from torch import Tensor
from torch.utils.hooks import RemovableHandle

from ..layers.branch import SampledConv3d

SamplingHook = Callable[[SampledConv3d, Tensor, Tensor, "Tensor | None"], None]


class SamplingHookRecorder:
    """Attach/detach one sampling hook per named layer; subclasses say what a hook records."""

    def __init__(self, layers: Mapping[str, SampledConv3d]) -> None:
        self.layers = dict(layers)
        self._handles: list[RemovableHandle] = []

    @property
    def active(self) -> bool:
        """Whether hooks are registered."""
        return bool(self._handles)

    def _hook_for(self, name: str) -> SamplingHook:
        raise NotImplementedError

    def attach(self) -> None:
        if self._handles:
            raise RuntimeError(f"this {type(self).__name__} is already recording")
        for name, layer in self.layers.items():
            self._handles.append(layer.register_sampling_hook(self._hook_for(name)))

    def detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
