"""The cell-result contract: what a cell writes into its folder and which metric keys it reports.

The cell runner writes these, the tracker logs them, the report reads them: all three take the
names from here, so a file or a key is renamed in one place.
"""

from __future__ import annotations

#: The validation curve's metric keys, logged once per validated epoch (step = epochs done).
VAL_JF, VAL_J, VAL_F = "val/jf_mean", "val/j_mean", "val/f_mean"
