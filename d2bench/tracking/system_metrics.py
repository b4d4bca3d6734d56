"""Optional system metrics (CPU, memory, disk, network and GPU use) of a cell's training.

MLflow's own monitor samples them into the cell's run as ``system/...``. It runs during training
only and stops before inference, so FPS timing never shares the machine with the sampler. It is
switched on by ``D2BENCH_SYSTEM_METRICS`` (the sampling interval in seconds), which
``d2bench run --system-metrics`` sets and the backends pass on to the workers.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

ENV = "D2BENCH_SYSTEM_METRICS"
#: The phases a cell announces: sampling runs in the first, stops at any other.
TRAINING = "train"


def sampling_interval(environ: Mapping[str, str] | None = None) -> float | None:
    """The interval ``D2BENCH_SYSTEM_METRICS`` asks for, or None (off: unset, empty or 0)."""
    value = (os.environ if environ is None else environ).get(ENV, "").strip()
    if value in ("", "0"):
        return None
    try:
        interval = float(value)
    except ValueError:
        interval = -1.0
    if not interval > 0:
        raise ValueError(f"{ENV}={value!r}: expected a sampling interval in seconds (e.g. 10)")
    return interval


class TrainingSystemMetrics:
    """A cell's phase callback: samples while the cell trains, stops when it moves on."""

    def __init__(self, run_id: str, tracking_uri: str, interval: float) -> None:
        self.run_id = run_id
        self.tracking_uri = tracking_uri
        self.interval = interval
        self._monitor: Any = None

    def __call__(self, phase: str) -> None:
        if phase == TRAINING:
            self.start()
        else:
            self.stop()

    def start(self) -> None:
        if self._monitor is not None:
            return
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

        # resume_logging: a requeued job continues the run's system curves after their last step
        self._monitor = SystemMetricsMonitor(
            self.run_id,
            sampling_interval=self.interval,
            resume_logging=True,
            tracking_uri=self.tracking_uri,
        )
        self._monitor.start()

    def stop(self) -> None:
        monitor, self._monitor = self._monitor, None
        if monitor is not None:
            monitor.finish()  # wakes the sampler, joins it and sends what it holds
