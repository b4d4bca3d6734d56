"""Precision as released: fp16 autocast with a GradScaler, and the sampling operator in float32.

CPU tests build :class:`Amp` for the CPU by hand (a cell on a CPU runs float32, see
``d2bench.engine.amp``): torch's CPU autocast and GradScaler are real, so the fp16 training step,
its skipped steps and the scaler's checkpoint round trip are tested here without a GPU. The
CUDA tests at the end run the same on a GPU with the policy a cell really uses.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
import yaml
from torch.utils._python_dispatch import TorchDispatchMode

from d2bench.core.config import ConfigError, parse_cell_config
from d2bench.data import SynthSpec, TrainClips, ensure_synthetic_davis
from d2bench.engine import amp as amp_module
from d2bench.engine.amp import Amp, autocast_dtype
from d2bench.engine.checkpoint import list_checkpoints, load_checkpoint
from d2bench.engine.inference import predict_video
from d2bench.engine.journal import MetricsJournal
from d2bench.engine.trainer import Trainer
from d2bench.layers import get_variant
from d2bench.layers.replace import build_layer
from d2bench.models import build_model
from d2bench.ops import reference
from d2bench.ops.geometry import make_geometry

REPO = Path(__file__).resolve().parents[1]
SPEC = SynthSpec(
    sequences=2, val_sequences=1, frames=6, frame_jitter=0, height=32, width=64, distractors=1
)
MODEL = {"backbone": "tiny", "tiny_width": 4, "decoder_channels": 8, "variant": "d2conv3d_iv"}
#: Large enough that float16 gradients overflow: every step is skipped and the scale halves.
OVERFLOWING_SCALE = 2.0**40
#: Small enough that they do not (the default 2**16 already overflows this tiny model's
#: gradients of about 1: the scaler would rightly back off for a few steps first).
SAFE_SCALE = 2.0**8


class OperatorInputs(TorchDispatchMode):
    """Records the dtypes of the tensor arguments each d2bench operator is called with."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, list[torch.dtype]]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if "d2bench" in str(func):
            dtypes = [a.dtype for a in args if isinstance(a, torch.Tensor)]
            self.calls.append((str(func), dtypes))
        return func(*args, **(kwargs or {}))


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ensure_synthetic_davis(tmp_path_factory.mktemp("precision") / "davis", SPEC)


def _config(root: Path, **train: object):
    return parse_cell_config(
        {
            "model": {**MODEL, "sampling_precision": "fp32"},
            "data": {"root": str(root), "train_size": None, "num_workers": 0, "clip_len": 4,
                     "window": 2},
            "train": {"batch_size": 1, "lr": 1e-3, "max_steps_per_epoch": 2, **train},
            "infer": {"clip_len": 4, "gap": 2},
            "device": "cpu",
        }
    )  # fmt: skip


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _metric(records: list[dict], name: str) -> list[float]:
    found = []
    for record in records:
        metrics = record.get("metrics", record)
        if name in metrics:
            found.append(float(metrics[name]))
    return found


# -- config -----------------------------------------------------------------------------------


def test_defaults_and_paper_studies_are_as_released() -> None:
    config = parse_cell_config({"data": {"root": "DAVIS"}})
    assert (config.train.precision, config.infer.precision) == ("fp16", "fp16")
    assert config.model.sampling_precision == "fp32"
    base = yaml.safe_load((REPO / "studies" / "paper-base.yaml").read_text())["base"]
    assert base["train"]["precision"] == base["infer"]["precision"] == "fp16"
    assert base["model"]["sampling_precision"] == "fp32"
    bf16 = parse_cell_config(
        {"data": {"root": "x"}, "train": {"precision": "bf16"}, "model": {"sampling_precision":
         "autocast"}}
    )  # fmt: skip
    assert (bf16.train.precision, bf16.model.sampling_precision) == ("bf16", "autocast")


def test_unknown_sampling_precision_names_the_key_and_the_choices() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_cell_config({"data": {"root": "x"}, "model": {"sampling_precision": "fp16"}})
    message = str(caught.value)
    assert "model.sampling_precision" in message
    assert "'fp32'" in message and "'autocast'" in message


def test_table_caption_names_the_precision_and_fp32_sampling() -> None:
    from d2bench.core.config import config_to_dict
    from d2bench.report.protocol import protocol_from_configs

    def caption_dtype(**sections: dict) -> str | None:
        config = parse_cell_config({"data": {"root": "x"}, **sections})
        return protocol_from_configs([config_to_dict(config)]).dtype

    assert caption_dtype() == "fp16, fp32 sampling"
    assert caption_dtype(model={"sampling_precision": "autocast"}) == "fp16"
    assert caption_dtype(train={"precision": "bf16"}, infer={"precision": "fp32"}) == (
        "bf16 train / fp32 inference, fp32 sampling"
    )
    assert caption_dtype(train={"precision": "fp32"}, infer={"precision": "fp32"}) == "fp32"


# -- the layer --------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["d2conv3d_iv", "dcnv2"])
def test_fp32_sampling_feeds_the_operator_float32_and_matches_the_reference(variant) -> None:
    torch.manual_seed(0)
    conv = torch.nn.Conv3d(4, 6, 3, padding=1)
    layer = build_layer(conv, get_variant(variant, sampling_precision="fp32"))
    with torch.no_grad():  # a deformation that samples between grid points
        layer.branch.weight.normal_(0, 0.1)
    x = torch.randn(1, 4, 4, 8, 8).half()
    hooked = []
    layer.register_sampling_hook(lambda _, x_, g, m: hooked.append((x_.dtype, g.dtype, m.dtype)))
    spy = OperatorInputs()
    with spy, torch.autocast("cpu", dtype=torch.float16):
        out = layer(x)
    assert out.dtype == torch.float16  # back to the autocast dtype, as nn.Conv3d returns
    assert spy.calls and all(set(dtypes) == {torch.float32} for _, dtypes in spy.calls)
    assert hooked == [(torch.float32,) * 3]
    # The float64 reference on the same (float16-rounded) input and the same deformation.
    wide = x.double()
    geometry, modulation = layer.predict(wide)
    geom = make_geometry(wide, layer.stride, layer.padding, layer.dilation)
    weight, bias = layer.weight.double(), layer.bias.double()
    if variant == "dcnv2":
        expected = reference.deform_conv3d_reference(
            wide, geometry, modulation, weight, bias, geom, 1
        )
    else:
        expected = reference.d2conv3d_reference(wide, geometry, modulation, weight, bias, geom)
    torch.testing.assert_close(out.double(), expected, rtol=2e-3, atol=2e-3)
    out.float().sum().backward()  # gradients reach the float32 parameters through the casts
    assert layer.weight.grad is not None and layer.weight.grad.dtype == torch.float32
    assert layer.branch.weight.grad is not None


def test_autocast_sampling_hands_the_operator_the_half_input() -> None:
    """The other choice really differs: the operator then gets float16 (which our CPU kernels
    refuse, which is why a cell on a CPU runs float32)."""
    layer = build_layer(torch.nn.Conv3d(4, 4, 3, padding=1), get_variant("d2conv3d_iv"))
    assert layer.sampling_precision == "autocast"
    with pytest.raises(RuntimeError, match="Half"), torch.autocast("cpu", dtype=torch.float16):
        layer(torch.randn(1, 4, 4, 8, 8).half())


def test_model_config_reaches_every_sampling_layer() -> None:
    config = parse_cell_config({"data": {"root": "x"}, "model": MODEL})
    layers = build_model(config.model, load_weights=False).replaced_layers
    assert layers and {layer.sampling_precision for layer in layers.values()} == {"fp32"}


# -- training ---------------------------------------------------------------------------------


def _trainer(config, root: Path, folder: Path, amp: Amp | None, journal=None) -> Trainer:
    torch.manual_seed(0)
    model = build_model(config.model)
    clips = TrainClips(root, "2017/train", clip_len=4, window=2, size=None)
    return Trainer(
        config, model, clips, folder, torch.device("cpu"), journal=journal, amp=amp,
        show_progress=False, handle_signals=False,
    )  # fmt: skip


def test_fp16_step_with_grad_scaler_trains_on_cpu(data_root: Path, tmp_path: Path) -> None:
    config = _config(data_root, epochs=1)
    journal = MetricsJournal(tmp_path / "metrics.jsonl")
    amp = Amp("cpu", torch.float16, init_scale=SAFE_SCALE)
    trainer = _trainer(config, data_root, tmp_path / "ck", amp, journal)
    before = [p.detach().clone() for p in trainer.parameters]
    summary = trainer.fit()
    assert summary.steps == 2 and all(torch.isfinite(torch.tensor(summary.epoch_losses)))
    changed = any(not torch.equal(a, p) for a, p in zip(before, trainer.parameters, strict=True))
    assert changed, "no optimiser step was applied"
    records = _records(tmp_path / "metrics.jsonl")
    assert _metric(records, "train/loss_scale") == [SAFE_SCALE, SAFE_SCALE]
    assert _metric(records, "train/skipped_step") == [0.0, 0.0]
    state = load_checkpoint(list_checkpoints(tmp_path / "ck")[-1])
    assert state["scaler"]["scale"] == SAFE_SCALE
    assert state["scaler"]["_growth_tracker"] == 2  # two applied steps towards the next growth


def test_skipped_steps_keep_weights_and_lr_and_resume_restores_the_scale(
    data_root: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "ck"
    journal = MetricsJournal(tmp_path / "metrics.jsonl")
    first = _trainer(
        _config(data_root, epochs=1, lr_step_epochs=1, lr_gamma=0.5),
        data_root,
        folder,
        Amp("cpu", torch.float16, init_scale=OVERFLOWING_SCALE),
        journal,
    )
    before = [p.detach().clone() for p in first.parameters]
    first.fit()
    # Every gradient overflowed: no weight moved, each skip halved the scale.
    assert all(torch.equal(a, p) for a, p in zip(before, first.parameters, strict=True))
    records = _records(tmp_path / "metrics.jsonl")
    assert _metric(records, "train/skipped_step") == [1.0, 1.0]
    assert _metric(records, "train/loss_scale") == [OVERFLOWING_SCALE, OVERFLOWING_SCALE / 2]
    assert all(torch.isfinite(torch.tensor(_metric(records, "train/loss"))))
    assert load_checkpoint(list_checkpoints(folder)[-1])["scaler"]["scale"] == 2.0**38

    # Resume with a fresh policy (its own initial scale): the checkpoint's scale wins, and the
    # per-epoch LR schedule went on as if the skipped steps had been applied.
    journal = MetricsJournal(tmp_path / "metrics.jsonl")
    second = _trainer(
        _config(data_root, epochs=2, lr_step_epochs=1, lr_gamma=0.5),
        data_root,
        folder,
        Amp("cpu", torch.float16, init_scale=OVERFLOWING_SCALE),
        journal,
    )
    summary = second.fit()
    assert summary.resumed_from is not None
    records = _records(tmp_path / "metrics.jsonl")
    assert _metric(records, "train/loss_scale") == [2.0**40, 2.0**39, 2.0**38, 2.0**37]
    assert _metric(records, "train/lr") == [1e-3, 1e-3, 5e-4, 5e-4]


def test_checkpoint_without_scaler_state_is_refused_by_fp16() -> None:
    fp32_state = Amp("cpu", None).state_dict()
    assert fp32_state == {}
    with pytest.raises(ValueError, match="GradScaler state"):
        Amp("cpu", torch.float16).load_state_dict(fp32_state)


def test_fp16_on_a_cpu_cell_runs_float32_with_a_warning(
    data_root: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch
) -> None:
    monkeypatch.setattr(amp_module, "_warned", set())  # the warning is once per process
    config = _config(data_root, epochs=1, max_steps_per_epoch=1)
    assert autocast_dtype(torch.device("cpu"), "fp16") is None
    assert autocast_dtype(torch.device("cuda"), "fp16") == torch.float16
    with caplog.at_level(logging.WARNING, logger="d2bench.cell.precision"):
        trainer = _trainer(config, data_root, tmp_path / "ck", amp=None)
        assert trainer.amp.dtype is None and not trainer.amp.scaling
        trainer.fit()
        frames = (torch.rand(5, 32, 64, 3) * 255).to(torch.uint8).numpy()
        probabilities = predict_video(trainer.model, frames, config.infer, "cpu")
    assert probabilities.shape == (5, 32, 64)
    warnings = [r.getMessage() for r in caplog.records if r.name == "d2bench.cell.precision"]
    assert any("train.precision=fp16" in w and "float32" in w for w in warnings)
    assert any("infer.precision=fp16" in w for w in warnings)


# -- bench ------------------------------------------------------------------------------------


def test_bench_train_measures_both_sampling_precisions(tmp_path: Path) -> None:
    from d2bench.bench.train_bench import run_train_benchmark

    path = run_train_benchmark(
        tmp_path,
        variants=["d2conv3d_iv"],
        precision="fp16",
        sampling_precisions=["autocast", "fp32"],
        device="cpu",
        quick=True,
    )
    record = json.loads(path.read_text())
    rows = [(r["variant"], r["sampling_precision"]) for r in record["results"]]
    assert rows == [("d2conv3d_iv", "autocast"), ("d2conv3d_iv", "fp32")]
    assert all(r["train_step_ms"] > 0 and r["infer_ms"] > 0 for r in record["results"])
    assert record["settings"]["precision"] == "fp32"  # a CPU measures float32, and says so
    markdown = path.with_suffix(".md").read_text()
    fp32_row = next(line for line in markdown.splitlines() if "| fp32 |" in line)
    ratio = float(fp32_row.split("|")[4])
    expected = record["results"][1]["train_step_ms"] / record["results"][0]["train_step_ms"]
    assert ratio == pytest.approx(expected, abs=1e-3)


# -- CUDA -------------------------------------------------------------------------------------

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.cuda
@cuda
@pytest.mark.parametrize("sampling", ["autocast", "fp32"])
def test_cuda_sampling_precision_decides_the_operator_dtype(sampling: str) -> None:
    conv = torch.nn.Conv3d(8, 8, 3, padding=1).cuda()
    layer = build_layer(conv, get_variant("d2conv3d_iv", sampling_precision=sampling))
    x = torch.randn(1, 8, 4, 16, 16, device="cuda")
    spy = OperatorInputs()
    with spy, torch.autocast("cuda", dtype=torch.float16):
        out = layer(x)
    assert out.dtype == torch.float16
    input_dtype = spy.calls[0][1][0]
    assert input_dtype == (torch.float32 if sampling == "fp32" else torch.float16)


@pytest.mark.cuda
@cuda
def test_cuda_fp16_cell_trains_with_the_grad_scaler(data_root: Path, tmp_path: Path) -> None:
    config = _config(data_root, epochs=1).model_copy(update={"device": "cuda"})
    model = build_model(config.model)
    clips = TrainClips(data_root, "2017/train", clip_len=4, window=2, size=None)
    journal = MetricsJournal(tmp_path / "metrics.jsonl")
    trainer = Trainer(
        config, model, clips, tmp_path / "ck", torch.device("cuda"), journal=journal,
        show_progress=False, handle_signals=False,
    )  # fmt: skip
    assert trainer.amp.dtype == torch.float16 and trainer.amp.scaling
    trainer.fit()
    assert _metric(_records(tmp_path / "metrics.jsonl"), "train/loss_scale")
    assert load_checkpoint(list_checkpoints(tmp_path / "ck")[-1])["scaler"]["scale"] > 0
