"""The paper's published numbers (Tables 1 and 2), placed beside ours in the reports.

Table 1 was measured on DAVIS'16 val with FPS and memory at inference on a GTX 1080 Ti; the
Table 2 row "1 + elu" is the same model as Table 1's (IV). J&F is in percent, as printed.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

#: Table 1, per canonical variant name: J&F (%), FPS, memory (GB); None where not printed.
TABLE1: Mapping[str, Mapping[str, float | None]] = MappingProxyType(
    {
        "baseline": {"jf": 83.5, "fps": 4.96, "mem": 1.92},
        "aspp": {"jf": 82.6, "fps": 4.50, "mem": 1.96},
        "dcnv1": {"jf": 84.4, "fps": 4.41, "mem": 1.95},
        "dcnv2": {"jf": 84.8, "fps": 4.36, "mem": 1.96},
        "d2conv3d_i": {"jf": 84.2, "fps": 4.49, "mem": 1.94},
        "d2conv3d_ii": {"jf": 84.3, "fps": 4.46, "mem": 1.94},
        "d2conv3d_iii": {"jf": 85.0, "fps": 4.46, "mem": 1.93},
        "d2conv3d_iv": {"jf": 85.5, "fps": 4.46, "mem": 1.94},
    }
)

#: Whether each Table 1 row uses a modulation map ("Mod." column); None = not applicable.
MODULATION: Mapping[str, bool | None] = MappingProxyType(
    {
        "baseline": None,
        "aspp": None,
        "dcnv1": False,
        "dcnv2": True,
        "d2conv3d_i": True,
        "d2conv3d_ii": True,
        "d2conv3d_iii": False,
        "d2conv3d_iv": True,
    }
)

#: Table 2, J&F (%) of variant (IV) per dilation activation.
TABLE2: Mapping[str, float] = MappingProxyType(
    {"none": 83.8, "1+relu": 83.9, "relu": 85.1, "1+elu": 85.5}
)

#: The original 3DC-Seg baseline (not a row we reproduce; quoted in captions).
ORIGINAL_BASELINE_JF = 82.2

#: Where the paper measured FPS and memory.
PAPER_HARDWARE = "GTX 1080 Ti"
