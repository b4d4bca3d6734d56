"""Helpers for the study/launch tests: tiny studies that run real cells in seconds."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

#: The smallest synthetic set the cells can train and evaluate on.
TINY_SYNTH = {"sequences": 2, "val_sequences": 1, "frames": 8, "frame_jitter": 0,
              "height": 32, "width": 48, "distractors": 0}  # fmt: skip

TINY_BASE: dict[str, Any] = {
    "model": {"backbone": "tiny", "tiny_width": 4, "decoder_channels": 8, "weights": "none"},
    "data": {"root": "${D2BENCH_TEST_DATA}", "train_size": None, "num_workers": 0,
             "clip_len": 4, "window": 2, "pad_multiple": 32},
    "train": {"epochs": 1, "batch_size": 1, "lr": 1e-3, "max_steps_per_epoch": 2,
              "precision": "fp32", "channels_last": False, "gpus": 0},
    "infer": {"clip_len": 4, "gap": 4, "precision": "fp32"},
    "device": "cpu",
}  # fmt: skip


def write_study(
    folder: Path,
    name: str,
    rows: list[dict[str, Any]] | None = None,
    **overrides: Any,
) -> Path:
    """A study file of tiny cells (J&F only) under ``folder``."""
    rows = rows or [
        {"name": "baseline", "model": {"variant": "baseline"}},
        {"name": "dcnv1", "model": {"variant": "dcnv1"}},
    ]
    spec: dict[str, Any] = {
        "name": name,
        "synthetic_data": TINY_SYNTH,
        "base": TINY_BASE,
        "rows": rows,
        "seeds": [0],
        "measure": ["jf"],
        "resources": {"gpus": 0, "cpus": 1, "memory_gb": 2, "time_min": 10},
        "runs_dir": str(folder / "runs"),
    }
    spec.update(overrides)
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def d2bench(
    *args: str,
    cwd: Path,
    env: dict[str, str] | None = None,
    timeout: float = 300,
    check: bool = False,
) -> subprocess.CompletedProcess:
    """Run the ``d2bench`` CLI in a fresh interpreter (as a user would)."""
    full_env = {**os.environ, **(env or {})}
    full_env.pop("PYTEST_CURRENT_TEST", None)
    done = subprocess.run(
        [sys.executable, "-m", "d2bench.cli", *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and done.returncode != 0:
        raise AssertionError(f"d2bench {' '.join(args)} exited {done.returncode}:\n{done.stderr}")
    return done


def finished_counts(frame) -> dict[str, int]:
    return frame["status"].value_counts().to_dict()
