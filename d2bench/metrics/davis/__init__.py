"""DAVIS J&F, bit-exact with the official tools and fast.

- :func:`evaluate` (``d2bench eval``): three protocols (``davis16``, ``semi``,
  ``unsupervised``), parallel over sequences; returns a JSON-ready dict.
- :mod:`.reference`: a slow, independent re-statement of the official algorithm (full-frame
  one-hot volumes, per-pair boundaries and dilations): the oracle of the tests and the
  baseline of ``d2bench bench eval``.
- Building blocks: :mod:`.boundary` (boundary maps, radius, the dilation test),
  :mod:`.frame` (one frame's J and F), :mod:`.statistics` (Mean/Recall/Decay),
  :mod:`.sequence` (one sequence), :mod:`.layout` (where files are, reading PNGs).

J is the IoU of a result mask and a ground-truth mask; F is the F-measure of their 1-pixel
boundaries, a boundary pixel counting as matched within ``ceil(0.008 · frame diagonal)``
pixels of the other boundary. Per object: Mean, Recall (share of frames above 0.5) and Decay
(first quarter minus last quarter); the dataset values average those over objects.
"""

from .driver import evaluate
from .errors import EvalError
from .protocols import PROTOCOLS, Protocol
from .statistics import GLOBAL_KEYS
from .table import format_table, per_sequence_csv, per_sequence_rows

__all__ = [
    "GLOBAL_KEYS",
    "PROTOCOLS",
    "EvalError",
    "Protocol",
    "evaluate",
    "format_table",
    "per_sequence_csv",
    "per_sequence_rows",
]
