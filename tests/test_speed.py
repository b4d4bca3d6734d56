"""Tests of the FPS/memory protocol (d2bench.metrics.speed), map recording
(d2bench.metrics.sampling_maps) and ``d2bench bench model --quick``."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch
from torch import nn

from d2bench.bench import model_bench
from d2bench.cli import main
from d2bench.core.config import InferConfig
from d2bench.engine.inference import plan_clips, predict_video
from d2bench.layers import replace_convs
from d2bench.metrics.sampling_maps import load_maps, record_maps, save_maps
from d2bench.metrics.speed import measure_inference, measure_synthetic, synthetic_videos

CFG = InferConfig(clip_len=4, gap=2, precision="fp32")


class CountingNet(nn.Module):
    """conv → (variant) conv → 1×1 logit; counts its forwards and can be slow on the first ones."""

    def __init__(self, variant: str = "d2conv3d_iv", slow_calls: int = 0, delay: float = 0.0):
        super().__init__()
        self.head = nn.Conv3d(3, 4, 3, padding=1)
        self.body = nn.Conv3d(4, 4, 3, stride=(1, 2, 2), padding=1)
        self.logit = nn.Conv3d(4, 1, 1)
        replace_convs(self, variant, ["body"])
        self.calls = 0
        self.slow_calls = slow_calls
        self.delay = delay

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls <= self.slow_calls:
            time.sleep(self.delay)
        y = self.logit(torch.relu(self.body(torch.relu(self.head(x)))))
        return nn.functional.interpolate(y, size=x.shape[-3:])


def _videos() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "short": rng.integers(0, 256, (7, 20, 30, 3), dtype=np.uint8),
        "long": rng.integers(0, 256, (11, 20, 30, 3), dtype=np.uint8),
    }


def test_protocol_fields_and_fps_on_cpu():
    model = CountingNet()
    videos = _videos()
    result = measure_inference(model, videos, CFG, "cpu", warmup_clips=2)
    clips = {name: len(plan_clips(v.shape[0], CFG.clip_len, CFG.gap)) for name, v in videos.items()}
    per_video = {entry["video"]: entry for entry in result["per_video"]}
    assert set(per_video) == set(videos)
    for name, entry in per_video.items():
        assert entry["frames"] == videos[name].shape[0]
        assert entry["forwards"] == clips[name]
        assert entry["fps"] == pytest.approx(entry["frames"] / entry["forward_seconds"])
        assert entry["fps"] > 0
    assert result["fps"] == pytest.approx(np.mean([e["fps"] for e in per_video.values()]))
    assert result["frames"] == sum(v.shape[0] for v in videos.values())
    protocol = result["protocol"]
    assert protocol["device"] == "cpu"
    assert protocol["dtype"] == "float32"
    assert (protocol["clip_len"], protocol["gap"], protocol["batch_size"]) == (4, 2, 1)
    assert protocol["warmup_clips"] == 2
    assert protocol["videos"] == 2
    assert protocol["resolution"] == [[20, 30]]
    assert protocol["input_resolution"] == [[32, 32]]
    env = result["environment"]
    for key in ("torch_version", "cuda_version", "driver_version", "gpu_name", "git_revision"):
        assert key in env
    memory = result["memory"]
    assert memory["kind"] == "cpu_rss"
    assert memory["peak_rss_gb"] > 0
    assert memory["weights_gb"] > 0
    json.dumps(result)  # JSON-ready


def test_warm_up_runs_first_and_is_not_timed():
    delay = 0.5
    model = CountingNet(slow_calls=2, delay=delay)
    videos = _videos()
    result = measure_inference(model, videos, CFG, "cpu", warmup_clips=2)
    timed = sum(entry["forwards"] for entry in result["per_video"])
    assert model.calls == 2 + timed
    # The slow calls were the warm-up: no timed forward includes the delay.
    assert max(entry["forward_seconds_max"] for entry in result["per_video"]) < delay


def test_without_warm_up_the_slow_first_call_is_timed():
    delay = 0.5
    model = CountingNet(slow_calls=1, delay=delay)
    result = measure_inference(model, _videos(), CFG, "cpu", warmup_clips=0)
    assert model.calls == sum(entry["forwards"] for entry in result["per_video"])
    assert result["per_video"][0]["forward_seconds_max"] >= delay
    assert result["per_video"][1]["forward_seconds_max"] < delay


def test_batched_clips_are_timed_per_forward():
    model = CountingNet(variant="dcnv2")
    cfg = InferConfig(clip_len=4, gap=2, precision="fp32", batch_size=2)
    frames = synthetic_videos(1, 11, 20, 30)
    result = measure_inference(model, frames, cfg, "cpu", warmup_clips=1)
    clips = len(plan_clips(11, 4, 2))
    assert result["per_video"][0]["forwards"] == -(-clips // 2)
    assert result["protocol"]["batch_size"] == 2


def test_measure_synthetic_records_its_videos():
    model = CountingNet(variant="baseline")
    result = measure_synthetic(model, 6, 32, 40, infer_cfg=CFG, device="cpu", videos=2)
    assert result["protocol"]["synthetic"] == {"videos": 2, "frames": 6, "seed": 0}
    assert result["protocol"]["resolution"] == [[32, 40]]
    assert result["protocol"]["input_resolution"] == [[32, 64]]
    assert len(result["per_video"]) == 2


def test_bad_input_is_refused():
    model = CountingNet()
    with pytest.raises(ValueError, match="at least one video"):
        measure_inference(model, [], CFG, "cpu")
    with pytest.raises(ValueError, match="T×H×W×3"):
        measure_inference(model, [np.zeros((4, 8, 8), np.uint8)], CFG, "cpu")
    with pytest.raises(ValueError, match="warmup_clips"):
        measure_inference(model, _videos(), CFG, "cpu", warmup_clips=-1)


# ------------------------------------------------------------------------------------------
# Map recording


def test_maps_have_one_entry_per_clip_and_output_voxel(tmp_path):
    model = CountingNet()
    frames = synthetic_videos(1, 7, 20, 30)["synthetic_0"]
    with torch.no_grad():
        nn.init.normal_(model.body.branch.weight, std=0.1)  # dilations that vary per voxel
    with record_maps(model) as recorder:
        predict_video(model, frames, CFG, "cpu")
    assert len(model.body._sampling_hooks) == 0
    clips = len(plan_clips(7, CFG.clip_len, CFG.gap))
    arrays = recorder.arrays()
    assert set(arrays) == {"body"}
    # body: stride (1, 2, 2) on the 4×32×32 padded clip → 4×16×16
    assert arrays["body"]["dilation"].shape == (clips, 3, 4, 16, 16)
    assert arrays["body"]["modulation_mean"].shape == (clips, 4, 16, 16)
    assert np.ptp(arrays["body"]["dilation"]) > 0
    modulation = arrays["body"]["modulation_mean"]
    assert ((modulation > 0) & (modulation < 1)).all()

    path = save_maps(tmp_path / "maps", recorder, {"sequence": "synthetic_0", "clips": clips})
    assert path.suffix == ".npz"
    loaded, metadata = load_maps(path)
    assert metadata == {"sequence": "synthetic_0", "clips": clips}
    np.testing.assert_array_equal(loaded["body"]["dilation"], arrays["body"]["dilation"])
    np.testing.assert_array_equal(
        loaded["body"]["modulation_mean"], arrays["body"]["modulation_mean"]
    )


def test_zero_initialised_layer_records_unit_dilation_and_half_modulation():
    model = CountingNet()
    frames = synthetic_videos(1, 4, 32, 32)["synthetic_0"]
    with record_maps(model) as recorder:
        predict_video(model, frames, CFG, "cpu")
    arrays = recorder.arrays()["body"]
    np.testing.assert_array_equal(arrays["dilation"], 1.0)
    np.testing.assert_array_equal(arrays["modulation_mean"], 0.5)


def test_layers_without_modulation_record_only_dilation():
    model = CountingNet(variant="d2conv3d_iii")
    frames = synthetic_videos(1, 4, 32, 32)["synthetic_0"]
    with record_maps(model) as recorder:
        predict_video(model, frames, CFG, "cpu")
    assert set(recorder.arrays()["body"]) == {"dilation"}


def test_models_without_d2_layers_record_nothing():
    model = CountingNet(variant="dcnv2")
    with record_maps(model) as recorder:
        predict_video(model, synthetic_videos(1, 4, 32, 32)["synthetic_0"], CFG, "cpu")
    assert recorder.arrays() == {}


# ------------------------------------------------------------------------------------------
# d2bench bench model


def test_bench_model_quick_writes_json_and_markdown(tmp_path, capsys):
    argv = ["bench", "model", "--quick", "--out", str(tmp_path), "--variants", "iv"]
    argv += ["--repeats", "1", "--warmup", "0"]
    assert main(argv) == 0
    report = json.loads((tmp_path / "model-cpu-quick.json").read_text())
    assert list(report["results"]) == ["baseline", "d2conv3d_iv"]
    for entry in report["results"].values():
        assert "error" not in entry, entry.get("error")
        assert entry["clip"]["median_ms"] > 0
        assert entry["protocol"]["fps"] > 0
    assert report["results"]["baseline"]["relative"]["fps"] == pytest.approx(1.0)
    assert report["results"]["d2conv3d_iv"]["replaced_layers"] == 10
    assert report["protocol"]["backbone"] == "tiny"
    assert report["environment"]["torch_version"] == torch.__version__
    assert [row["quantity"] for row in report["targets"]] == ["fps", "memory"]
    assert all(row["ratio"] is not None for row in report["targets"])
    drift = report["baseline_drift"]
    assert drift["first_ms"] == report["results"]["baseline"]["clip"]["median_ms"]
    assert drift["last_ms"] > 0 and drift["change"] == pytest.approx(
        drift["last_ms"] / drift["first_ms"] - 1
    )
    markdown = (tmp_path / "model-cpu-quick.md").read_text()
    assert "(IV) S+T (\\|D\\|=3)" in markdown
    assert "Targets" in markdown and "measured again after the last variant" in markdown


def test_bench_model_leaves_the_fps_target_unjudged_when_the_host_drifts():
    entries = {
        "baseline": {"relative": {"fps": 1.0, "memory": 1.0}},
        "d2conv3d_iv": {"relative": {"fps": 1.18, "memory": 1.2}},
    }
    drifting = model_bench.baseline_drift(45.5, 30.0)
    assert not drifting["stable"] and drifting["change"] == pytest.approx(30.0 / 45.5 - 1)
    rows = {row["quantity"]: row for row in model_bench.evaluate_targets(
        entries, gpu=True, drift=drifting)}  # fmt: skip
    assert rows["fps"]["met"] is None and rows["fps"]["unjudged_for_drift"]
    assert rows["memory"]["met"] is False  # memory does not depend on the host's speed
    steady = model_bench.baseline_drift(45.5, 47.0)
    rows = {row["quantity"]: row for row in model_bench.evaluate_targets(
        entries, gpu=True, drift=steady)}  # fmt: skip
    assert steady["stable"] and rows["fps"]["met"] is True
    assert not model_bench.baseline_drift(45.5, None)["stable"]


def test_bench_model_rejects_an_unknown_variant(tmp_path, capsys):
    argv = ["bench", "model", "--quick", "--out", str(tmp_path), "--variants", "dcnv3"]
    assert main(argv) == 2
    assert "unknown variant 'dcnv3'" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown without a GPU")
def test_bench_model_without_a_gpu_points_to_quick(tmp_path, capsys):
    assert main(["bench", "model", "--out", str(tmp_path)]) == 2
    assert "--quick" in capsys.readouterr().err
