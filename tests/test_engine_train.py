"""Training: the tiny model learns a clip, and a killed run resumes to the same weights."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from d2bench.core.config import parse_cell_config
from d2bench.data import SynthSpec, TrainClips, ensure_synthetic_davis, read_masks
from d2bench.engine.checkpoint import list_checkpoints, load_checkpoint
from d2bench.engine.inference import predict_video
from d2bench.engine.trainer import Trainer, epoch_batches
from d2bench.models import build_model

SPEC = SynthSpec(
    sequences=3, val_sequences=1, frames=8, frame_jitter=0, height=32, width=64, distractors=1
)
MODEL = {"backbone": "tiny", "tiny_width": 4, "decoder_channels": 8, "variant": "d2conv3d_iv"}


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ensure_synthetic_davis(tmp_path_factory.mktemp("engine") / "davis", SPEC)


def _config(root: Path, **train: object):
    return parse_cell_config(
        {
            "model": MODEL,
            "data": {"root": str(root), "train_size": None, "num_workers": 0, "clip_len": 4,
                     "window": 2},
            "train": {"batch_size": 1, "lr": 3e-3, "precision": "fp32", **train},
            "infer": {"clip_len": 4, "gap": 2, "precision": "fp32"},
            "device": "cpu",
        }
    )  # fmt: skip


class _OneClip(torch.utils.data.Dataset):
    """The same training clip, repeated: the overfitting target."""

    def __init__(self, clips: TrainClips, index: int, repeats: int) -> None:
        self.item = clips[index]
        self.repeats = repeats

    def __len__(self) -> int:
        return self.repeats

    def __getitem__(self, index: int) -> dict:
        return self.item


def test_epoch_order_depends_only_on_seed_and_epoch() -> None:
    assert epoch_batches(10, 3, seed=1, epoch=2, max_steps=None) == epoch_batches(
        10, 3, seed=1, epoch=2, max_steps=None
    )
    assert epoch_batches(10, 3, 1, 2, None) != epoch_batches(10, 3, 1, 3, None)
    batches = epoch_batches(10, 3, 0, 0, None)
    assert [len(b) for b in batches] == [3, 3, 3]  # the partial batch is dropped
    assert epoch_batches(10, 3, 0, 0, max_steps=2) == batches[:2]


def test_tiny_model_overfits_one_clip(data_root: Path, tmp_path: Path) -> None:
    torch.manual_seed(0)
    config = _config(data_root, epochs=1, lr=1e-3)
    clips = TrainClips(data_root, "2017/train", clip_len=4, window=2, size=None)
    model = build_model(config.model)
    dataset = _OneClip(clips, index=2, repeats=60)
    Trainer(config, model, dataset, tmp_path / "ck", torch.device("cpu"), show_progress=False).fit()
    sequence = dataset.item["sequence"]
    frame_ids = [int(i) for i in dataset.item["frame_ids"]]
    frames = dataset.item["frames"].permute(1, 2, 3, 0).mul(255).round().byte().numpy()
    probabilities = predict_video(model, frames, config.infer, "cpu")
    truth = read_masks(data_root, sequence)[frame_ids] > 0
    height, width = truth.shape[1:]
    predicted = probabilities[:, :height, :width] > 0.5
    jaccard = (predicted & truth).sum() / max((predicted | truth).sum(), 1)
    assert jaccard > 0.9, f"J = {jaccard:.3f} after overfitting one clip"


def _train_command(config_path: Path, out: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "d2bench",
        "train",
        str(config_path),
        "--out",
        str(out),
        "--quiet",
    ]


def _final_weights(out: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(list_checkpoints(out / "checkpoints")[-1])["model"]


def _assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), f"{name} differs after resuming"


@pytest.fixture(scope="module")
def uninterrupted(data_root: Path, tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("uninterrupted")
    config = _config(data_root, epochs=4, max_steps_per_epoch=6)
    path = folder / "cell.yaml"
    path.write_text(yaml.safe_dump(config.model_dump(mode="json")))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(_train_command(path, folder / "out"), check=True, env=env, timeout=900)
    return path, _final_weights(folder / "out")


def _wait_for(predicate, process: subprocess.Popen, timeout: float = 600.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert process.poll() is None, "training ended before it could be interrupted"
        assert time.monotonic() < deadline, "timed out waiting for a checkpoint"
        time.sleep(0.02)


def test_kill_9_and_resume_gives_the_same_weights(uninterrupted, tmp_path: Path) -> None:
    config_path, expected = uninterrupted
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(_train_command(config_path, out), env=env)
    first_epoch = out / "checkpoints" / "ckpt-e0001-b000000.pt"
    _wait_for(first_epoch.exists, process)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (out / "checkpoints" / "ckpt-e0004-b000000.pt").exists()
    resumed = subprocess.run(
        _train_command(config_path, out), env=env, timeout=900, capture_output=True, text=True
    )
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from ckpt-e" in resumed.stdout
    _assert_same_weights(_final_weights(out), expected)


def test_sigterm_checkpoints_mid_epoch_and_resumes_exactly(uninterrupted, tmp_path: Path) -> None:
    config_path, expected = uninterrupted
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(_train_command(config_path, out), env=env)
    _wait_for((out / "checkpoints" / "ckpt-e0001-b000000.pt").exists, process)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=600) == 143
    names = [p.name for p in list_checkpoints(out / "checkpoints")]
    assert names[-1] != "ckpt-e0004-b000000.pt"
    subprocess.run(_train_command(config_path, out), env=env, check=True, timeout=900)
    _assert_same_weights(_final_weights(out), expected)


def test_train_and_infer_commands_write_davis_masks(data_root: Path, tmp_path: Path) -> None:
    from d2bench.cli import main

    config = _config(data_root, epochs=1, max_steps_per_epoch=2)
    path = tmp_path / "cell.yaml"
    path.write_text(yaml.safe_dump(config.model_dump(mode="json")))
    assert main(["train", str(path), "--out", str(tmp_path / "t"), "--quiet"]) == 0
    checkpoint = list_checkpoints(tmp_path / "t" / "checkpoints")[-1]
    args = ["infer", str(path), "--checkpoint", str(checkpoint), "--out", str(tmp_path / "i")]
    assert main([*args, "--quiet", "--eval"]) == 0
    masks = sorted((tmp_path / "i" / "masks" / "val-00").glob("*.png"))
    assert len(masks) == len(read_masks(data_root, "val-00"))
    assert np.isin(np.array(__import__("PIL.Image").Image.open(masks[0])), [0, 1]).all()


def test_bad_config_and_missing_data_root_exit_2(tmp_path: Path, capsys) -> None:
    from d2bench.cli import main

    bad = tmp_path / "bad.yaml"
    bad.write_text("data: {root: x}\ntrain: {epochz: 1}\n")
    assert main(["train", str(bad)]) == 2
    assert "train.epochz: unknown key" in capsys.readouterr().err
    missing = tmp_path / "missing.yaml"
    missing.write_text(f"data: {{root: {tmp_path / 'nowhere'}}}\n")
    assert main(["train", str(missing)]) == 2
    assert "d2bench data synth" in capsys.readouterr().err
