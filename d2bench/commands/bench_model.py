"""``d2bench bench model``: FPS and peak memory of every Table 1 variant with the full network."""

from __future__ import annotations

import argparse
from pathlib import Path

from ._help import OUT_HELP

BACKBONES = ("csn152", "csn50", "tiny")
DTYPES = ("bf16", "fp16", "fp32")


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _bench_model(args: argparse.Namespace) -> int:
    from ..cli import UsageError
    from ..names import canonical_variant_name

    for name in args.variants or []:
        try:
            canonical_variant_name(name)
        except ValueError as error:
            raise UsageError(str(error)) from None

    import torch

    from ..bench.model_bench import run_model_benchmark

    device = args.device
    if not args.quick and device is None and not torch.cuda.is_available():
        raise UsageError(
            "no CUDA device: the full network at 8×480×864 needs a GPU; use --quick for a CPU "
            "smoke run, or --device cpu to measure on the CPU anyway"
        )
    try:
        path = run_model_benchmark(
            args.out,
            quick=args.quick,
            variants=args.variants,
            backbone=args.backbone,
            precision=args.dtype,
            repeats=args.repeats,
            warmup=args.warmup,
            videos=args.videos,
            branch_init=args.branch_init,
            sampling_precision=args.sampling_precision,
            device=device,
        )
    except ValueError as error:
        raise UsageError(str(error)) from None
    print(f"wrote {path} and {path.with_suffix('.md')}")
    return 0


def register_bench(bench: argparse._SubParsersAction) -> None:
    parser = bench.add_parser(
        "model",
        help="FPS and peak memory of every Table 1 variant (full network, random weights)",
        description="Time every Table 1 variant with the full network at 8×480×864 (batch 1, "
        "bf16 on the GPU) and write reports/bench/model-<gpu>.json and .md, relative to the "
        "Revised Baseline.",
    )
    parser.add_argument("--out", type=Path, default=Path("reports/bench"), help=OUT_HELP)
    parser.add_argument(
        "--quick", action="store_true", help="tiny model at 8×32×64 on the CPU (a smoke run)"
    )
    parser.add_argument(
        "--variants",
        nargs="+",
        metavar="VARIANT",
        help="variants to measure (default: all of Table 1; the baseline is always added)",
    )
    parser.add_argument("--backbone", choices=BACKBONES, help="default csn152 (quick: tiny)")
    parser.add_argument("--dtype", choices=DTYPES, help="default bf16 (quick: fp32)")
    parser.add_argument("--repeats", type=_positive, help="timed clip forwards (default 30)")
    parser.add_argument("--warmup", type=int, help="warm-up forwards (default 5)")
    parser.add_argument("--videos", type=_positive, help="random videos of the protocol run")
    parser.add_argument(
        "--branch-init",
        choices=("random", "zero"),
        help="deformation branches: random N(0, 1/fan_in) (default) or zero (no deformation)",
    )
    parser.add_argument(
        "--sampling-precision",
        choices=("autocast", "fp32"),
        help="the DCN/D² sampling operator under autocast: its dtype (default) or float32 as "
        "released; the fp32 run writes model-<gpu>-sampling-fp32.*",
    )
    parser.add_argument("--device", default=None, help="default: cuda if available (quick: cpu)")
    parser.set_defaults(handler=_bench_model)
