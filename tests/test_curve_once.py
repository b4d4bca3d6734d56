"""Each training step is recorded once across stops and resumes (metrics.jsonl and MLflow), and
a mid-epoch resume continues exactly: same weights, same RNG state as an uninterrupted run."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from d2bench.core.config import parse_cell_config
from d2bench.data import SynthSpec, TrainClips, ensure_synthetic_davis
from d2bench.engine.checkpoint import list_checkpoints, load_checkpoint
from d2bench.engine.journal import MetricsJournal
from d2bench.engine.signals import CellInterrupted
from d2bench.engine.trainer import CHECKPOINT_EVERY_ENV, Trainer
from d2bench.launch.task import CellTask
from d2bench.runner.cell import CHECKPOINT_DIR, METRICS_FILE, build_seeded_model
from d2bench.tracking import Tracker

SPEC = SynthSpec(
    sequences=3, val_sequences=1, frames=8, frame_jitter=0, height=32, width=48, distractors=0
)


@pytest.fixture
def one_thread():
    """The tests share a small machine: one torch thread is the fastest there."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ensure_synthetic_davis(tmp_path_factory.mktemp("curve") / "davis", SPEC)


def _config(root: Path, epochs: int, max_steps: int | None = None):
    return parse_cell_config(
        {
            "model": {"backbone": "tiny", "tiny_width": 4, "decoder_channels": 8,
                      "variant": "baseline", "weights": "none"},
            "data": {"root": str(root), "train_size": None, "num_workers": 0, "clip_len": 4,
                     "window": 2, "pad_multiple": 32},
            "train": {"epochs": epochs, "batch_size": 1, "lr": 1e-3, "precision": "fp32",
                      "channels_last": False, "gpus": 0, "max_steps_per_epoch": max_steps},
            "infer": {"clip_len": 4, "gap": 4, "precision": "fp32"},
            "measure": {"jf": False, "fps": False, "memory": False, "oob": False},
            "device": "cpu",
        }
    )  # fmt: skip


class _SignalAtFetch(torch.utils.data.Dataset):
    """The dataset, sending ``signum`` to this process when item number ``at`` is fetched (the
    step of that batch then finishes and the trainer stops after it)."""

    def __init__(self, dataset: TrainClips, at: int, signum: int) -> None:
        self.dataset, self.at, self.signum, self.fetched = dataset, at, signum, 0

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        self.fetched += 1
        if self.fetched == self.at:
            os.kill(os.getpid(), self.signum)
        return self.dataset[index]


def _train(config, dataset, folder: Path, sink: list) -> None:
    journal = MetricsJournal(folder / METRICS_FILE, lambda m, s: sink.append((s, m)))
    trainer = Trainer(config, build_seeded_model(config), dataset, folder / CHECKPOINT_DIR,
                      torch.device("cpu"), journal=journal, show_progress=False)  # fmt: skip
    trainer.fit()


def _curve(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / METRICS_FILE).read_text().splitlines()]


def _timeless(events: list) -> list:
    """Without the throughput, which depends on the machine's load, not on the training."""
    return [{key: value for key, value in event.items() if key != "train/clips_per_s"}
            for event in events]  # fmt: skip


def _once(events: list) -> list:
    """The events without the resume's replay of the last commit (the MLflow logger drops those
    points, as it holds them already); a replayed event must equal the original."""
    seen: dict = {}
    for step, metrics in events:
        key = (step, tuple(sorted(metrics)))
        assert seen.setdefault(key, metrics) == metrics, f"step {step} logged with other values"
    return [(step, metrics) for (step, _), metrics in seen.items()]


def test_a_warning_signal_mid_epoch_resumes_exactly_and_records_each_step_once(
    data_root: Path, tmp_path: Path, one_thread: None
) -> None:
    config = _config(data_root, epochs=2, max_steps=8)
    clips = TrainClips(data_root, "2017/train", clip_len=4, window=2, size=None)
    steps_per_epoch = 8
    assert len(clips) > steps_per_epoch
    expected: list = []
    _train(config, clips, tmp_path / "straight", expected)
    weights = load_checkpoint(list_checkpoints(tmp_path / "straight" / CHECKPOINT_DIR)[-1])["model"]
    rng_after = torch.get_rng_state()

    delivered: list = []
    stopping = _SignalAtFetch(clips, at=steps_per_epoch + 4, signum=signal.SIGUSR2)
    with pytest.raises(CellInterrupted) as stopped:
        _train(config, stopping, tmp_path / "resumed", delivered)
    assert stopped.value.is_warning
    assert Path(stopped.value.checkpoint).name == "ckpt-e0001-b000004.pt"
    assert [step for step, _ in delivered][-1] == steps_per_epoch + 4  # committed up to there
    _train(config, clips, tmp_path / "resumed", delivered)

    resumed = load_checkpoint(list_checkpoints(tmp_path / "resumed" / CHECKPOINT_DIR)[-1])["model"]
    for name, tensor in weights.items():
        assert torch.equal(tensor, resumed[name]), f"{name} differs after a mid-epoch resume"
    assert torch.equal(torch.get_rng_state(), rng_after), "the RNG stream moved on resuming"
    events = [{"step": step, **metrics} for step, metrics in _once(delivered)]
    straight = [{"step": step, **metrics} for step, metrics in expected]
    assert _timeless(events) == _timeless(straight)  # each step once, in order, same values
    assert _timeless(_curve(tmp_path / "resumed")) == _timeless(_curve(tmp_path / "straight"))


def test_the_curve_file_returns_to_the_checkpoint_whatever_a_killed_attempt_left(
    tmp_path: Path,
) -> None:
    path = tmp_path / METRICS_FILE
    sink: list = []
    journal = MetricsJournal(path, lambda m, s: sink.append(s))
    for step in (1, 2):
        journal.record({"train/loss": float(step)}, step)
    journal.commit()
    journal.record({"train/loss": 3.0}, 3)
    state = journal.state()  # a checkpoint at step 3, killed before its commit
    journal.record({"train/loss": 4.0}, 4)

    with open(path, "a") as handle:  # a later, lost attempt got further (older code, or a
        handle.write('{"step": 3, "train/loss": 9.0}\n{"step": 4, "tr')  # torn write)
    again: list = []
    MetricsJournal(path, lambda m, s: again.append((s, m))).restore(state)
    assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == [1, 2, 3]
    assert json.loads(path.read_text().splitlines()[-1])["train/loss"] == 3.0
    assert again == [(3, {"train/loss": 3.0})]  # the commit that may not have reached MLflow
    MetricsJournal(path).restore(None)
    assert path.read_text() == ""


def _history(tracker: Tracker, run_id: str, key: str) -> list[tuple[int, float]]:
    metrics = tracker.client.get_metric_history(run_id, key)
    return sorted((metric.step, metric.value) for metric in metrics)


def test_a_hard_kill_mid_epoch_then_the_same_run_again_logs_each_step_once(
    data_root: Path, tmp_path: Path
) -> None:
    """The requeue case without SLURM: one MLflow run, two attempts, SIGKILL in between."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = Tracker(uri)
    experiment = tracker.experiment_id("curve-once", create=True)
    run_id = tracker.client.create_run(experiment).info.run_id
    config = _config(data_root, epochs=3)
    cell_dir = tmp_path / "cell"
    task = CellTask("curve-once", "row", 0, "key", config.model_dump(mode="json"),
                    str(cell_dir), uri, run_id, "local")  # fmt: skip
    task_file = task.write(tmp_path / "task.json")
    # A mid-epoch checkpoint after nearly every step, whatever the machine's speed.
    env = {**os.environ, CHECKPOINT_EVERY_ENV: "0.05", "OMP_NUM_THREADS": "1"}
    env.pop("D2BENCH_DRIVER_PID", None)
    command = [sys.executable, "-m", "d2bench.launch.worker", str(task_file)]

    first = subprocess.Popen(command, env=env)
    checkpoints = cell_dir / CHECKPOINT_DIR
    deadline = time.monotonic() + 120
    mid_second_epoch = re.compile(r"^ckpt-e0001-b0*[1-9]")
    while not [p for p in list_checkpoints(checkpoints) if mid_second_epoch.match(p.name)]:
        assert first.poll() is None, "training ended before it could be killed"
        assert time.monotonic() < deadline, "no mid-epoch checkpoint in the second epoch"
        time.sleep(0.02)
    # Killed mid-way through the second of three epochs, with a whole epoch left: however fast
    # or slow the machine, the worker is still training (the steps since that checkpoint are
    # trained but not committed).
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert tracker.client.get_run(run_id).info.status == "RUNNING"

    second = subprocess.run(command, env=env, timeout=300)
    assert second.returncode == 0
    assert tracker.client.get_run(run_id).info.status == "FINISHED"
    log = (cell_dir / "cell.log").read_text()
    resumed = re.search(r"resumed from ckpt-e(\d{4})-b(\d{6})", log)
    assert resumed is not None and int(resumed.group(2)) > 0, log  # mid-epoch

    curve = _curve(cell_dir)
    train = [(event["step"], event["train/loss"]) for event in curve if "train/loss" in event]
    epochs = [event["step"] for event in curve if "epoch/loss" in event]
    steps_per_epoch = len(TrainClips(data_root, "2017/train", clip_len=4, window=2, size=None))
    assert [step for step, _ in train] == list(range(1, 3 * steps_per_epoch + 1))
    assert epochs == [1, 2, 3]
    assert _history(tracker, run_id, "train/loss") == train
    assert [step for step, _ in _history(tracker, run_id, "epoch/loss")] == [1, 2, 3]
