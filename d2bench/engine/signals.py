"""Stop requests from the scheduler: SIGTERM (preemption, scancel) and SIGUSR2 (SLURM's warning).

The handler only sets a flag; the training loop checks it between steps, writes a checkpoint and
raises :class:`CellInterrupted`, so nothing is lost and the next attempt resumes exactly there.
What happens next depends on the signal: SIGUSR2 is the warning SLURM sends before a time limit
or a preemption (submitit's ``--signal=USR2@delay``), after which a SLURM cell is requeued to
continue; SIGTERM (``scancel``, Ctrl-C of the driver) is a stop, recorded as KILLED. When both
arrive (a preemption may send SIGTERM first), the warning wins: the job is meant to come back.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType, TracebackType

STOP_SIGNALS: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGUSR2)
#: SLURM's warning before a time limit or preemption (submitit's default ``USR2``).
WARNING_SIGNAL = signal.SIGUSR2


class CellInterrupted(Exception):
    """Training stopped on request after writing a checkpoint; running again resumes it."""

    def __init__(self, signal_number: int, checkpoint: str) -> None:
        name = signal.Signals(signal_number).name
        super().__init__(f"stopped by {name} after writing checkpoint {checkpoint}")
        self.signal_number = signal_number
        self.checkpoint = checkpoint

    @property
    def is_warning(self) -> bool:
        """Stopped by the scheduler's warning signal (to be requeued), not by a stop request."""
        return self.signal_number == WARNING_SIGNAL


class StopFlag:
    """Context manager that records a stop signal instead of dying on it.

    Installs handlers only when enabled and on the main thread (Python's rule for signals);
    otherwise it is an inert flag that can still be set by hand (tests, other callers).
    """

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.received: int | None = None
        self._previous: dict[signal.Signals, object] = {}

    def __bool__(self) -> bool:
        return self.received is not None

    def set(self, signal_number: int = signal.SIGTERM) -> None:
        if self.received != WARNING_SIGNAL:  # the warning wins (see the module docstring)
            self.received = signal_number

    def _handle(self, signal_number: int, frame: FrameType | None) -> None:
        self.set(signal_number)

    def __enter__(self) -> StopFlag:
        if self.enabled and threading.current_thread() is threading.main_thread():
            for sig in STOP_SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)  # type: ignore[arg-type]
        self._previous.clear()
