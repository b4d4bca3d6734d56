"""``d2bench bench train``: full-network training-step and inference throughput and memory."""

from __future__ import annotations

import argparse
from pathlib import Path

from ._help import OUT_HELP

DEFAULT_VARIANTS = ["baseline", "d2conv3d_iv"]


def _bench_train(args: argparse.Namespace) -> int:
    from ..bench.train_bench import run_train_benchmark

    path = run_train_benchmark(
        args.out,
        variants=args.variants,
        backbone=args.backbone,
        batch=args.batch,
        precision=args.precision,
        sampling_precisions=args.sampling_precision,
        repeats=args.repeats,
        device=args.device,
        quick=args.quick,
        convert_grads=not args.keep_grad_layout,
    )
    print(f"wrote {path} and {path.with_suffix('.md')}")
    return 0


def register_bench(bench: argparse._SubParsersAction) -> None:
    parser = bench.add_parser(
        "train", help="training step and inference of the full network (clips/s, memory)"
    )
    parser.add_argument("--out", type=Path, default=Path("reports/bench"), help=OUT_HELP)
    parser.add_argument("--variants", nargs="+", default=DEFAULT_VARIANTS, metavar="VARIANT",
                        help="variants to time (default: %(default)s)")  # fmt: skip
    parser.add_argument("--backbone", default="csn152", choices=["csn152", "csn50", "tiny"],
                        help="architecture (default: %(default)s)")  # fmt: skip
    parser.add_argument("--batch", type=int, default=1,
                        help="clips per step (default: %(default)s)")  # fmt: skip
    parser.add_argument(
        "--precision",
        default="bf16",
        choices=["bf16", "fp16", "fp32"],
        help="autocast dtype on CUDA (fp16 with the GradScaler, as released; default bf16)",
    )
    parser.add_argument(
        "--sampling-precision",
        nargs="+",
        default=["autocast"],
        choices=["autocast", "fp32"],
        help="dtype(s) of the DCN/D² sampling operator under autocast; give both to measure "
        "what float32 sampling (as released) costs, relative to autocast (default: autocast)",
    )
    parser.add_argument("--repeats", type=int, default=10,
                        help="timed steps per variant (default: %(default)s)")  # fmt: skip
    parser.add_argument("--device", default=None, help="default: cuda if available")
    parser.add_argument("--quick", action="store_true", help="tiny model on a small clip")
    parser.add_argument(
        "--keep-grad-layout",
        action="store_true",
        help="hand the sampling operators' backward the upstream gradient in the layout it "
        "arrives in (no copy into channels_last_3d for the tensor-core kernels), to measure "
        "what that copy saves",
    )
    parser.set_defaults(handler=_bench_train)
