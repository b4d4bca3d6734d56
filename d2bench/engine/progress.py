"""A dependency-free progress line: redrawn in place on a terminal, periodic lines in logs."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """Shows ``label  done/total  [fields]`` at most every ``interval_s`` seconds (logs) or
    continuously (terminal)."""

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

    def update(self, done: int, **fields: float | str) -> None:
        self.done = done
        if not self.enabled:
            return
        now = time.perf_counter()
        finished = done >= self.total
        if not self._tty and not finished and now - self._last_print < self.interval_s:
            return
        self._last_print = now
        parts = [f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in fields.items()]
        width = len(str(self.total))
        line = f"{self.label}  {done:>{width}}/{self.total}  " + "  ".join(parts)
        line += f"  {now - self._start:.0f}s"
        if self._tty:
            self.stream.write("\r\033[K" + line + ("\n" if finished else ""))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()
