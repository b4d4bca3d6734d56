"""``python -m d2bench.launch.worker TASK.json``: one cell attempt in its own process.

The local backend starts one of these per cell. It dies with its driver (Linux: the parent's
death is delivered as SIGTERM, which the cell runner turns into a checkpoint and a clean stop),
so killing the driver never leaves a cell training unobserved.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

EXIT_CODES = {"FINISHED": 0, "FAILED": 1, "KILLED": 3}


def die_with_parent() -> None:
    """Ask Linux to send SIGTERM when the parent exits (no-op elsewhere)."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
    except OSError:
        return
    pr_set_pdeathsig = 1
    libc.prctl(pr_set_pdeathsig, int(signal.SIGTERM))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m d2bench.launch.worker TASK.json", file=sys.stderr)
        return 2
    die_with_parent()
    expected_parent = os.environ.get("D2BENCH_DRIVER_PID")
    if expected_parent and str(os.getppid()) != expected_parent:
        return EXIT_CODES["KILLED"]  # the driver died before we could watch it
    from .task import CellTask, execute_cell

    task = CellTask.read(Path(argv[0]))
    try:
        return EXIT_CODES[execute_cell(task, handle_signals=True)]
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
