"""Tests of d2bench.models: shapes of the full network, the tiny model's training step, frozen
BN, the variant placement, and weight loading (state dicts, VMZ Caffe2 pickles, the CLI)."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from d2bench.cli import main
from d2bench.core.config import ModelConfig
from d2bench.core.names import VARIANT_NAMES
from d2bench.layers import ASPP3d, D2Conv3d, DeformConv3d, get_variant
from d2bench.models import (
    BackboneSpec,
    Bottleneck,
    FrozenBatchNorm3d,
    IrCSN,
    WeightsError,
    build_model,
    load_backbone_weights,
)

CLIP = (8, 480, 864)
SMALL = (8, 64, 96)
TINY = {"backbone": "tiny", "tiny_width": 4, "decoder_channels": 8}
#: Layers each variant puts into rf3 + rf2: ASPP replaces the first conv of each block.
EXPECTED_LAYER = {"aspp": ASPP3d, "dcnv1": DeformConv3d, "dcnv2": DeformConv3d}


@pytest.fixture(autouse=True, scope="module")
def _two_threads():
    threads = torch.get_num_threads()
    torch.set_num_threads(min(threads, 2))
    yield
    torch.set_num_threads(threads)


def tiny_cfg(**overrides) -> ModelConfig:
    return ModelConfig(**{**TINY, **overrides})


def clip(batch: int = 1, size: tuple[int, int, int] = SMALL, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, *size, generator=generator)


# --- the full-size network, shape-checked on the meta device ------------------------------


@pytest.mark.parametrize("variant", VARIANT_NAMES)
def test_full_size_output_shape_for_every_variant(variant: str) -> None:
    model = build_model(ModelConfig(variant=variant), device="meta")
    logits = model(torch.empty(1, 3, *CLIP, device="meta"))
    assert logits.shape == (1, 1, *CLIP)
    layers = model.replaced_layers
    if variant == "baseline":
        assert layers == {}
        return
    assert {name.split(".")[1] for name in layers} == {"rf3", "rf2"}
    expected_type = EXPECTED_LAYER.get(variant, D2Conv3d)
    assert all(isinstance(layer, expected_type) for layer in layers.values())
    assert len(layers) == (2 if variant == "aspp" else 10)


def test_full_size_encoder_features_match_the_paper() -> None:
    model = build_model(ModelConfig(), device="meta")
    features = model.features(torch.empty(1, 3, *CLIP, device="meta"))
    shapes = [tuple(f.shape[1:]) for f in features]
    assert shapes == [
        (256, 8, 120, 216),
        (512, 4, 60, 108),
        (1024, 2, 30, 54),
        (2048, 1, 15, 27),
    ]


@pytest.mark.parametrize(
    ("backbone", "blocks"), [("csn152", [3, 8, 36, 3]), ("csn50", [3, 4, 6, 3])]
)
def test_backbone_depth_and_depthwise_convs(backbone: str, blocks: list[int]) -> None:
    model = build_model(ModelConfig(backbone=backbone), device="meta")
    stages = [getattr(model.backbone, f"layer{i}") for i in range(1, 5)]
    assert [len(stage) for stage in stages] == blocks
    for stage in stages:
        for block in stage:
            assert isinstance(block, Bottleneck)
            assert block.conv2.groups == block.conv2.in_channels == block.conv2.out_channels
            assert block.conv2.kernel_size == (3, 3, 3)
    norms = [m for m in model.backbone.modules() if isinstance(m, FrozenBatchNorm3d)]
    assert norms and all(norm.eps == 1e-3 for norm in norms)
    assert not any(isinstance(m, nn.BatchNorm3d) for m in model.backbone.modules())


def test_aspp_rates_follow_the_block() -> None:
    model = build_model(tiny_cfg(variant="aspp"))
    rates = {name.split(".")[1]: layer.rates for name, layer in model.replaced_layers.items()}
    assert rates == {
        "rf3": ((1, 3, 3), (1, 6, 6), (1, 9, 9)),
        "rf2": ((1, 6, 6), (1, 12, 12), (1, 18, 18)),
    }


class _FixedLogits(nn.Module):
    """Stands in for the head's last conv: a 1/4-scale logit map known in advance."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.logits = logits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits.expand(x.shape[0], *self.logits.shape[1:])


def test_head_upsamples_the_logit_with_align_corners_false() -> None:
    """The original's final F.interpolate(×(1, 4, 4), trilinear) keeps align_corners=False."""
    model = build_model(tiny_cfg()).eval()
    quarter = torch.full((1, 1, 8, 16, 24), 4.0)  # 1/4 scale: column 0 is 0, the rest 4
    quarter[..., 0] = 0.0
    model.decoder.pred = _FixedLogits(quarter)
    with torch.no_grad():
        logits = model(clip())
    assert logits.shape == (1, 1, *SMALL)
    # output column x samples input column (x + 0.5) / 4 - 0.5, clamped at 0: columns 0..7 read
    # -0.375, -0.125, 0.125, 0.375, 0.625, 0.875, 1.125, 1.375 → 0, 0, 0.5, 1.5, 2.5, 3.5, 4, 4
    by_hand = torch.tensor([0.0, 0.0, 0.5, 1.5, 2.5, 3.5, 4.0, 4.0])
    torch.testing.assert_close(logits[0, 0, 3, 17, :8], by_hand)
    assert (logits[..., 8:] == 4).all()
    # align_corners=True would read input column x · 23/95 instead: 0.97 at output column 1
    assert logits[0, 0, 0, 0, 1] == 0.0


def test_ddp_makes_the_aspp_batchnorm_synchronous() -> None:
    from d2bench.engine.distributed import sync_batchnorm

    model = build_model(tiny_cfg(variant="aspp"))
    before = {name: p for name, p in model.named_parameters()}
    keys = set(model.state_dict())
    converted = sync_batchnorm(model)
    assert converted is model
    norms = [m for m in model.decoder.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert norms and all(isinstance(m, nn.SyncBatchNorm) for m in norms)
    assert len(norms) == 2 * (1 + 3 + 1)  # rf3, rf2: 1×1×1, three rates, the fusion
    assert not any(isinstance(m, nn.SyncBatchNorm) for m in model.backbone.modules())
    assert set(model.state_dict()) == keys  # checkpoints still load into a plain model
    after = dict(model.named_parameters())
    assert all(after[name] is param for name, param in before.items())  # the optimiser's


# --- the tiny model on the CPU ----------------------------------------------------------------


@pytest.mark.parametrize("variant", ["baseline", "d2conv3d_iv"])
def test_tiny_model_trains_with_finite_gradients(variant: str) -> None:
    torch.manual_seed(0)
    model = build_model(tiny_cfg(variant=variant)).train()
    logits = model(clip(batch=2))
    assert logits.shape == (2, 1, *SMALL)
    (logits.square().mean()).backward()
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for _, p in params)
    assert model.backbone.conv1.weight.grad.abs().sum() > 0
    for name, layer in model.replaced_layers.items():
        branch = layer.branch.weight.grad
        assert branch is not None and branch.abs().sum() > 0, f"{name}: no gradient to the branch"


def test_variant_starts_as_the_baseline_it_replaces() -> None:
    """The branch starts at zero and 1+elu maps 0 to 1, so (III) equals the baseline at init."""
    torch.manual_seed(1)
    baseline = build_model(tiny_cfg()).eval()
    variant = build_model(tiny_cfg(variant="d2conv3d_iii")).eval()
    variant.load_state_dict(baseline.state_dict(), strict=False)
    x = clip(seed=3)
    with torch.no_grad():
        torch.testing.assert_close(variant(x), baseline(x), atol=1e-5, rtol=1e-4)


def test_frozen_batchnorm_does_not_change_in_train_mode() -> None:
    model = build_model(tiny_cfg()).train()
    norms = {n: m for n, m in model.backbone.named_modules() if isinstance(m, FrozenBatchNorm3d)}
    for norm in norms.values():
        norm.running_mean.normal_()
        norm.running_var.uniform_(0.5, 2.0)
    before = {n: [b.clone() for b in m.buffers()] for n, m in norms.items()}
    optimiser = torch.optim.SGD(model.parameters(), lr=0.1)
    model(clip()).mean().backward()
    optimiser.step()
    for name, norm in norms.items():
        assert list(norm.parameters()) == []
        for old, new in zip(before[name], norm.buffers(), strict=True):
            assert torch.equal(old, new), name


def test_frozen_batchnorm_is_the_affine_normalisation() -> None:
    norm = FrozenBatchNorm3d(3)
    norm.weight.copy_(torch.tensor([1.0, 2.0, -1.0]))
    norm.bias.copy_(torch.tensor([0.0, 1.0, 0.5]))
    norm.running_mean.copy_(torch.tensor([0.1, -0.2, 0.3]))
    norm.running_var.copy_(torch.tensor([1.0, 4.0, 0.25]))
    reference = nn.BatchNorm3d(3, eps=1e-3).eval()
    reference.load_state_dict(norm.state_dict(), strict=False)
    x = torch.randn(2, 3, 2, 3, 4)
    torch.testing.assert_close(norm(x), reference(x))


def test_channels_last_and_autocast() -> None:
    torch.manual_seed(0)
    model = build_model(tiny_cfg(variant="dcnv2")).eval()
    x = clip()
    with torch.no_grad():
        expected = model(x)
        channels_last = model(x.contiguous(memory_format=torch.channels_last_3d))
        torch.testing.assert_close(channels_last, expected, atol=1e-5, rtol=1e-4)
        baseline = build_model(tiny_cfg()).eval()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = baseline(x.contiguous(memory_format=torch.channels_last_3d))
        high = baseline(x)
    assert low.dtype == torch.bfloat16
    assert (low.float() - high).abs().max() < 0.1 * high.abs().max() + 0.05


def test_activation_reaches_the_d2_layers_and_is_refused_elsewhere() -> None:
    model = build_model(tiny_cfg(variant="iv", activation="relu"), device="meta")
    assert {layer.activation for layer in model.replaced_layers.values()} == {"relu"}
    with pytest.raises(ValueError, match="applies to the D²Conv3D variants"):
        build_model(tiny_cfg(variant="dcnv2", activation="relu"), device="meta")


def test_replace_blocks_are_resolved_in_the_decoder() -> None:
    model = build_model(tiny_cfg(variant="iv", replace_blocks=("rf1",)), device="meta")
    assert {name.split(".")[1] for name in model.replaced_layers} == {"rf1"}
    with pytest.raises(ValueError, match=r"'rf4'.*rf3, rf2, rf1"):
        build_model(tiny_cfg(variant="iv", replace_blocks=("rf4",)), device="meta")


def test_checkpoint_branch_is_passed_to_the_layers() -> None:
    on = build_model(tiny_cfg(variant="iv"), device="meta")
    off = build_model(tiny_cfg(variant="iv", checkpoint_branch=False), device="meta")
    assert all(layer.checkpoint_branch for layer in on.replaced_layers.values())
    assert not any(layer.checkpoint_branch for layer in off.replaced_layers.values())


@pytest.mark.parametrize("shape", [(1, 3, 8, 60, 96), (1, 1, 8, 64, 96), (3, 8, 64, 96)])
def test_bad_input_shape_is_refused(shape: tuple[int, ...]) -> None:
    model = build_model(tiny_cfg(), device="meta")
    with pytest.raises(ValueError, match=r"multiples of 32|B×3×T×H×W"):
        model(torch.empty(shape, device="meta"))


# --- weights: PyTorch state dicts -------------------------------------------------------------


def _backbone_equal(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("wrapping", ["plain", "state_dict", "whole_model"])
def test_state_dict_round_trip(tmp_path: Path, wrapping: str) -> None:
    torch.manual_seed(0)
    source = build_model(tiny_cfg())
    for norm in source.backbone.modules():
        if isinstance(norm, FrozenBatchNorm3d):
            norm.running_var.uniform_(0.5, 2.0)
    payload = {
        "plain": source.backbone.state_dict(),
        "state_dict": {"state_dict": source.backbone.state_dict(), "epoch": 3},
        "whole_model": {"model": source.state_dict()},
    }[wrapping]
    path = tmp_path / "backbone.pth"
    torch.save(payload, path)
    torch.manual_seed(1)
    loaded = build_model(tiny_cfg(weights=str(path)))
    fresh = build_model(tiny_cfg())
    assert _backbone_equal(loaded.backbone, source.backbone)
    assert not _backbone_equal(fresh.backbone, source.backbone)
    # Only the backbone comes from the file.
    assert not torch.equal(loaded.decoder.pred.weight, source.decoder.pred.weight)


def test_torchvision_video_resnet_layout_loads(tmp_path: Path) -> None:
    source = build_model(tiny_cfg())
    renamed = {}
    for key, value in source.backbone.state_dict().items():
        key = key.replace("conv1.", "stem.0.", 1) if key.startswith("conv1.") else key
        key = key.replace("bn1.", "stem.1.", 1) if key.startswith("bn1.") else key
        for n in "123":
            key = key.replace(f".conv{n}.", f".conv{n}.0.").replace(f".bn{n}.", f".conv{n}.1.")
        renamed[key] = value
    renamed["fc.weight"] = torch.zeros(400, 128)
    renamed["layer1.0.conv1.1.num_batches_tracked"] = torch.tensor(0)
    assert "stem.0.weight" in renamed and "layer2.0.conv2.1.running_var" in renamed
    path = tmp_path / "videoresnet.pth"
    torch.save(renamed, path)
    target = build_model(tiny_cfg())
    load_backbone_weights(target, path)
    assert _backbone_equal(target.backbone, source.backbone)


def test_missing_key_fails_clearly(tmp_path: Path) -> None:
    state = build_model(tiny_cfg()).backbone.state_dict()
    del state["layer3.0.conv2.weight"]
    path = tmp_path / "broken.pth"
    torch.save(state, path)
    with pytest.raises(WeightsError, match=r"missing keys: layer3\.0\.conv2\.weight"):
        build_model(tiny_cfg(weights=str(path)))


def test_wrong_width_names_the_mismatched_shapes(tmp_path: Path) -> None:
    path = tmp_path / "wide.pth"
    torch.save(build_model(tiny_cfg(tiny_width=8)).backbone.state_dict(), path)
    with pytest.raises(WeightsError, match=r"shape mismatches.*conv1\.weight \(8, 3, 3, 7, 7\)"):
        build_model(tiny_cfg(weights=str(path)))


def test_missing_file_says_where_weights_come_from(tmp_path: Path) -> None:
    path = tmp_path / "irCSN_152_ft_kinetics_from_Sports1M.pkl"
    with pytest.raises(WeightsError) as caught:
        build_model(ModelConfig(weights=str(path)), device="meta")
    message = str(caught.value)
    assert str(path) in message and "VMZ" in message and "Sports1M" in message
    assert "'none'" in message


def test_meta_model_only_checks_weights(tmp_path: Path) -> None:
    path = tmp_path / "b.pth"
    torch.save(build_model(tiny_cfg()).backbone.state_dict(), path)
    model = build_model(tiny_cfg(weights=str(path)), device="meta")
    assert model.backbone.conv1.weight.is_meta


# --- weights: VMZ Caffe2 pickles ---------------------------------------------------------------


def vmz_blobs(backbone: IrCSN, seed: int = 0) -> dict[str, np.ndarray]:
    """Blobs named as VMZ's builder names an ir-CSN: blocks counted over the whole network,
    convs 1, 3 (depthwise) and 4, a shortcut projection on each stage's first block."""
    rng = np.random.default_rng(seed)

    def array(t: torch.Tensor, positive: bool = False) -> np.ndarray:
        values = rng.uniform(0.5, 2.0, t.shape) if positive else rng.standard_normal(t.shape)
        return values.astype(np.float32)

    def bn(prefix: str, norm: FrozenBatchNorm3d) -> dict[str, np.ndarray]:
        return {
            f"{prefix}_s": array(norm.weight),
            f"{prefix}_b": array(norm.bias),
            f"{prefix}_rm": array(norm.running_mean),
            f"{prefix}_riv": array(norm.running_var, positive=True),
        }

    blobs = {"conv1_w": array(backbone.conv1.weight), **bn("conv1_spatbn_relu", backbone.bn1)}
    index = 0
    for stage in range(1, 5):
        for block in getattr(backbone, f"layer{stage}"):
            for j, (conv, norm) in {
                1: ("conv1", "bn1"),
                3: ("conv2", "bn2"),
                4: ("conv3", "bn3"),
            }.items():
                blobs[f"comp_{index}_conv_{j}_w"] = array(getattr(block, conv).weight)
                blobs.update(bn(f"comp_{index}_spatbn_{j}", getattr(block, norm)))
            if block.downsample is not None:
                blobs[f"shortcut_projection_{index}_w"] = array(block.downsample[0].weight)
                blobs.update(bn(f"shortcut_projection_{index}_spatbn", block.downsample[1]))
            index += 1
    blobs["last_out_L400_w"] = rng.standard_normal((400, 10)).astype(np.float32)
    blobs["last_out_L400_b"] = np.zeros(400, np.float32)
    blobs["comp_0_conv_1_w_momentum"] = np.zeros(1, np.float32)
    return blobs


def write_pkl(path: Path, blobs: dict[str, np.ndarray]) -> Path:
    with path.open("wb") as file:
        pickle.dump({"blobs": blobs}, file, protocol=2)
    return path


#: Several blocks per stage, so that block numbering across stages is exercised.
MULTI_BLOCK = BackboneSpec("test", (2, 1, 3, 1), 4, (16, 32, 64, 128))


def test_vmz_pickle_converts_and_loads(tmp_path: Path) -> None:
    backbone = IrCSN(MULTI_BLOCK)
    blobs = vmz_blobs(backbone)
    load_backbone_weights(backbone, write_pkl(tmp_path / "ircsn.pkl", blobs))
    block = backbone.layer3[1]  # block 4 of the network (stages start at 0, 2, 3, 6)
    assert np.array_equal(block.conv2.weight.detach().numpy(), blobs["comp_4_conv_3_w"])
    assert np.array_equal(block.bn3.running_var.numpy(), blobs["comp_4_spatbn_4_riv"])
    assert np.array_equal(
        backbone.layer4[0].downsample[0].weight.detach().numpy(), blobs["shortcut_projection_6_w"]
    )
    assert np.array_equal(backbone.bn1.weight.numpy(), blobs["conv1_spatbn_relu_s"])
    with torch.no_grad():
        assert all(torch.isfinite(f).all() for f in backbone(torch.randn(1, 3, 4, 32, 32)))


def test_vmz_pickle_of_another_architecture_is_refused(tmp_path: Path) -> None:
    blobs = vmz_blobs(IrCSN(MULTI_BLOCK))
    blobs["comp_1_conv_2_middle_w"] = np.zeros((4, 4, 1, 3, 3), np.float32)  # ip-CSN style
    with pytest.raises(WeightsError, match="comp_1_conv_2_middle_w"):
        load_backbone_weights(IrCSN(MULTI_BLOCK), write_pkl(tmp_path / "ip.pkl", blobs))
    del blobs["comp_1_conv_2_middle_w"], blobs["comp_2_spatbn_3_riv"]
    with pytest.raises(WeightsError, match="missing comp_2_spatbn_3_riv"):
        load_backbone_weights(IrCSN(MULTI_BLOCK), write_pkl(tmp_path / "cut.pkl", blobs))


class _RunsCode:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_pickle_that_would_run_code_is_refused(tmp_path: Path, capsys) -> None:
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"blobs": {"conv1_w": _RunsCode()}}, protocol=2))
    with pytest.raises(WeightsError, match="refusing"):
        load_backbone_weights(IrCSN(MULTI_BLOCK), path)
    assert "never run" not in capsys.readouterr().out


def test_cli_converts_a_vmz_pickle(tmp_path: Path) -> None:
    source = build_model(tiny_cfg())
    pkl = write_pkl(tmp_path / "tiny.pkl", vmz_blobs(source.backbone, seed=5))
    out = tmp_path / "out" / "tiny.pth"
    args = ["weights", "convert", str(pkl), str(out), "--backbone", "tiny", "--tiny-width", "4"]
    assert main(args) == 0
    from_pth = build_model(tiny_cfg(weights=str(out)))
    from_pkl = build_model(tiny_cfg(weights=str(pkl)))
    assert _backbone_equal(from_pth.backbone, from_pkl.backbone)
    assert main(args) == 2  # exists: refused without --force
    assert main([*args, "--force"]) == 0
    assert main(["weights", "check", str(out), "--backbone", "tiny", "--tiny-width", "4"]) == 0


def test_cli_reports_a_mismatch_as_usage_error(tmp_path: Path, capsys) -> None:
    pkl = write_pkl(tmp_path / "tiny.pkl", vmz_blobs(build_model(tiny_cfg()).backbone))
    assert main(["weights", "convert", str(pkl), str(tmp_path / "o.pth")]) == 2  # not a csn152
    error = capsys.readouterr().err
    assert "does not fit" in error and "Traceback" not in error
    assert not (tmp_path / "o.pth").exists()


# --- CUDA: every variant under autocast and channels_last ---------------------------------------


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("variant", VARIANT_NAMES)
def test_cuda_bf16_channels_last_training_step(variant: str) -> None:
    torch.manual_seed(0)
    model = build_model(tiny_cfg(variant=variant), device="cuda").train()
    model = model.to(memory_format=torch.channels_last_3d)
    x = clip(batch=2).cuda().contiguous(memory_format=torch.channels_last_3d)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        logits = model(x)
    assert logits.shape == (2, 1, *SMALL)
    logits.float().mean().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert get_variant(variant).replaces_convs == bool(model.replaced_layers)


def test_cli_backbone_choices_match_the_config() -> None:
    from typing import get_args

    from d2bench.commands.weights import BACKBONES
    from d2bench.core.config import Backbone
    from d2bench.models import BACKBONE_NAMES

    assert BACKBONES == get_args(Backbone) == BACKBONE_NAMES


def test_single_group_norm_equals_group_norm_with_gradients() -> None:
    from d2bench.models.norm import SingleGroupNorm

    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2, 5, 3, 4, 6, generator=generator, dtype=torch.float64)
    ours = SingleGroupNorm(5).double()
    reference = nn.GroupNorm(1, 5).double()
    with torch.no_grad():
        for norm in (ours, reference):
            norm.weight.copy_(torch.linspace(-1.0, 2.0, 5))
            norm.bias.copy_(torch.linspace(0.5, -0.5, 5))
    x_ours, x_ref = x.clone().requires_grad_(), x.clone().requires_grad_()
    grad = torch.randn(x.shape, generator=generator, dtype=torch.float64)
    ours(x_ours).backward(grad)
    reference(x_ref).backward(grad)
    torch.testing.assert_close(ours(x), reference(x))
    torch.testing.assert_close(x_ours.grad, x_ref.grad)
    torch.testing.assert_close(ours.weight.grad, reference.weight.grad)
    torch.testing.assert_close(ours.bias.grad, reference.bias.grad)
    inputs = (x[:1, :, :2, :3, :3].clone().requires_grad_(), ours.weight, ours.bias)
    assert torch.autograd.gradcheck(lambda a, w, b: ours(a), inputs)
    assert ours(x.float().contiguous(memory_format=torch.channels_last_3d)).dtype == torch.float32
