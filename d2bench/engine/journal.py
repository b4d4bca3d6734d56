"""The training curve, committed together with checkpoints, so that every step is recorded once.

Why: a cell killed between two checkpoints resumes from the older one and trains the steps after
it again. Had those steps been written already (to ``metrics.jsonl`` and to MLflow), the curve
would show them twice, once from the lost attempt and once from the resumed one. So the metrics
of the steps since the last checkpoint are *uncommitted*: the journal holds them in memory and
writes them out right after the next checkpoint is on disk. Checkpoints come every epoch, on a
stop signal and every few minutes mid-epoch (see the trainer), so the live curve in MLflow lags
by minutes at most; the progress line on the terminal still shows every step as it happens.

Each checkpoint also stores what its commit writes (the file's line count after the commit and
the events themselves). Resuming puts ``metrics.jsonl`` back to exactly that state, whatever a
killed attempt left behind, and hands those events to the sink again, in case the kill came
between the checkpoint and the end of its commit (the MLflow logger drops points it already
holds). Torch-free.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..core.atomic_io import atomic_write_text

MetricsCallback = Callable[[dict[str, float], int], None]


class MetricsJournal:
    """Buffers ``(metrics, step)`` events until :meth:`commit`; see the module docstring.

    ``path`` is the JSON-lines file (None: keep nothing on disk), ``sink`` receives each
    committed event (the MLflow logger), ``on_commit`` is called once per commit, after the
    sink has all of its events (to send them on now rather than later).
    """

    def __init__(
        self,
        path: Path | None = None,
        sink: MetricsCallback | None = None,
        on_commit: Callable[[], None] | None = None,
    ) -> None:
        self.path = path
        self.sink = sink
        self.on_commit = on_commit
        self._pending: list[dict[str, Any]] = []
        self._committed_lines = len(self._read_lines())

    @property
    def pending(self) -> int:
        """Events recorded since the last commit."""
        return len(self._pending)

    def record(self, metrics: dict[str, float], step: int) -> None:
        self._pending.append({"step": int(step), **metrics})

    def state(self) -> dict[str, Any]:
        """What the next :meth:`commit` will have written: stored in the checkpoint before it."""
        return {
            "lines": self._committed_lines + len(self._pending),
            "tail": [dict(event) for event in self._pending],
        }

    def commit(self) -> None:
        """Append the pending events to the file and hand them to the sink (a checkpoint holding
        :meth:`state` has just been written)."""
        events, self._pending = self._pending, []
        if events and self.path is not None:
            with open(self.path, "a") as handle:
                handle.writelines(json.dumps(event) + "\n" for event in events)
                handle.flush()
                os.fsync(handle.fileno())
        self._committed_lines += len(events)
        self._deliver(events)

    def restore(self, state: dict[str, Any] | None) -> None:
        """Resume at a checkpoint's commit (None: at the start, nothing committed).

        The file keeps the lines written before that commit, then the commit's own events (they
        may be missing, or followed by lines of a later, lost attempt); the sink gets the
        commit's events again.
        """
        self._pending = []
        lines = self._read_lines()
        tail = [dict(event) for event in state["tail"]] if state else []
        keep = lines[: max(int(state["lines"]) - len(tail), 0)] if state else []
        restored = keep + [json.dumps(event) for event in tail]
        if self.path is not None and restored != lines:
            atomic_write_text(self.path, "".join(line + "\n" for line in restored))
        self._committed_lines = len(restored)
        self._deliver(tail)

    def _deliver(self, events: list[dict[str, Any]]) -> None:
        if self.sink is not None:
            for event in events:
                metrics = {key: value for key, value in event.items() if key != "step"}
                self.sink(metrics, int(event["step"]))
        if events and self.on_commit is not None:
            self.on_commit()

    def _read_lines(self) -> list[str]:
        if self.path is None or not self.path.is_file():
            return []
        return [line for line in self.path.read_text().splitlines() if line.strip()]
