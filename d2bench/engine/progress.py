"""A dependency-free progress display: a live bar on a terminal, periodic lines in logs.

Cells run under SLURM or Ray write to files, where a bar redrawn with carriage returns and
escape codes turns into one unreadable line; there each update is a plain line, at most one per
``interval_s`` (and always the last one), so a log shows how far an epoch got and when.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

from ..core.elapsed import elapsed_text

#: Width of the bar on a terminal, in characters.
BAR_WIDTH = 24


class Progress:
    """Shows ``label  done/total  fields  elapsed, ~left`` as units (steps, videos) finish."""

    def __init__(
        self,
        label: str,
        total: int,
        *,
        stream: TextIO | None = None,
        interval_s: float = 10.0,
        enabled: bool = True,
    ) -> None:
        self.label = label
        self.total = total
        self.stream = stream or sys.stderr
        self.interval_s = interval_s
        self.enabled = enabled
        self.done = 0
        self._tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self._last_print = 0.0
        self._start = time.perf_counter()
        self._base: int | None = None  # units done before this process's first (a resume)

    def update(self, done: int, **fields: float | str) -> None:
        if self._base is None:  # a resumed epoch: the pace is that of the units done here
            self._base = max(done - 1, 0)
        self.done = done
        if not self.enabled:
            return
        now = time.perf_counter()
        finished = done >= self.total
        if not self._tty and not finished and now - self._last_print < self.interval_s:
            return
        self._last_print = now
        self.stream.write(self.render(done, now - self._start, fields))
        self.stream.flush()

    def render(self, done: int, elapsed: float, fields: dict[str, float | str]) -> str:
        """The text one update writes: a redraw of the bar on a terminal, else one line."""
        parts = [f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in fields.items()]
        width = len(str(self.total))
        count = f"{done:>{width}}/{self.total}"
        paced = done - (self._base or 0)
        timing = elapsed_text(elapsed, paced, paced + self.total - done)
        if not self._tty:
            return "  ".join([self.label, count, *parts, timing]) + "\n"
        filled = BAR_WIDTH * done // max(self.total, 1)
        bar = "[" + "#" * filled + "." * (BAR_WIDTH - filled) + "]"
        line = "  ".join([self.label, bar, count, *parts, timing])
        return "\r\033[K" + line + ("\n" if done >= self.total else "")
