"""The data and weights a cell reads, identified by content for its key (torch-free).

The data: a digest of the split it reads (:func:`d2bench.data.digest.davis_digest`), or, in a
study that generates synthetic data after planning, of the generator spec. The weights: the
sha256 of the file (:mod:`.file_digest`). An input that cannot be identified (a data root or a
weights file that does not exist) raises :class:`UnidentifiedInput`, naming the key to set.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..core.config import CellConfig, DataConfig
from .file_digest import file_sha256
from .signature import CellInputs


class UnidentifiedInput(ValueError):
    """An input whose content cannot be digested; ``key`` is the config key to set."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


class InputIdentifier:
    """Identifies the inputs of configs, each distinct data split and weights file once.

    ``synthetic`` is the study's :class:`~d2bench.data.SynthSpec` when it generates its data:
    the folder may not exist yet, and the spec determines what will be written there.
    """

    def __init__(self, synthetic: Any = None) -> None:
        self._synthetic = synthetic
        self._data: dict[tuple[str, ...], str] = {}
        self._weights: dict[str, str] = {}

    def identify(self, config: CellConfig) -> CellInputs:
        return CellInputs(self.data(config.data), self.weights(config.model.weights))

    def data(self, data: DataConfig) -> str:
        from ..data.digest import davis_digest, synthetic_digest

        if self._synthetic is not None:
            return synthetic_digest(self._synthetic)
        root = Path(data.root).expanduser()
        sets = (data.train_set, data.val_set)
        memo = (str(root.resolve()), *sets)
        if memo not in self._data:
            if not root.is_dir():
                problem = "is not a folder" if root.exists() else "does not exist"
                raise UnidentifiedInput(
                    "data.root",
                    f"data root {root} {problem}, so the cell keys (which hold a digest "
                    "of the data) cannot be computed; set data.root (or the variable it reads, "
                    "such as DAVIS_ROOT) to a DAVIS folder, or set synthetic_data: true",
                )
            self._data[memo] = davis_digest(root, sets)
        return self._data[memo]

    def weights(self, weights: str) -> str:
        if weights == "none":
            return "none"
        path = Path(weights).expanduser()
        if weights not in self._weights:
            try:
                self._weights[weights] = "sha256-" + file_sha256(path)
            except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
                raise UnidentifiedInput(
                    "model.weights",
                    f"weights file {path} does not exist, so the cell keys (which hold a digest "
                    "of the weights) cannot be computed; set model.weights (or the variable it "
                    "reads, such as D2BENCH_CSN_WEIGHTS) to the file, or to none",
                ) from None
            except OSError as error:
                raise UnidentifiedInput(
                    "model.weights", f"weights file {path} cannot be read ({error.strerror})"
                ) from None
        return self._weights[weights]
