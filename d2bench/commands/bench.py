"""``d2bench bench WHAT``: every benchmark, each writing its results with their environment.

The handlers import the benchmarks (and torch) only when they run, so that the CLI starts fast.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from ._help import OUT_HELP
from .weights import BACKBONES

DTYPES = ("bf16", "fp16", "fp32")
#: Where every benchmark writes its report (``--out``).
OUT = Path("reports/bench")
DEFAULT_TRAIN_VARIANTS = ["baseline", "d2conv3d_iv"]


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _bench_ops(args: argparse.Namespace) -> int:
    from ..bench.ops_bench import rejudge_report, run_ops_benchmark
    from ..cli import UsageError

    if args.rejudge is not None:
        if not args.rejudge.is_file():
            raise UsageError(f"--rejudge {args.rejudge}: no such file (give an ops-<gpu>.json)")
        try:
            path = rejudge_report(args.rejudge)
        except (ValueError, KeyError) as error:
            raise UsageError(f"--rejudge {args.rejudge}: {error}") from None
        print(f"rewrote {path} and {path.with_suffix('.md')} (targets judged again)")
        return 0
    try:
        path = run_ops_benchmark(
            args.out,
            quick=args.quick,
            repeats=args.repeats,
            warmup=args.warmup,
            device=args.device,
            variants=args.variants,
        )
    except ValueError as error:
        raise UsageError(f"--variants: {error}") from None
    print(f"wrote {path} and {path.with_suffix('.md')}")
    return 0


def _run_kernel_bench(args: argparse.Namespace, run: Callable[..., Path]) -> int:
    """A kernel-choice benchmark (``bench tiles``, ``bench wgrad``): checked counts, a usage
    error where there is no GPU or CUDA build, the paths written."""
    from ..bench.tile_bench import TileBenchUnavailable
    from ..cli import UsageError

    if args.repeats < 1 or args.warmup < 0:
        raise UsageError(
            f"--repeats must be ≥ 1 and --warmup ≥ 0, got {args.repeats} and {args.warmup}"
        )
    try:
        path = run(
            args.out, quick=args.quick, repeats=args.repeats, warmup=args.warmup, device=args.device
        )
    except TileBenchUnavailable as error:
        raise UsageError(str(error)) from None
    print(f"wrote {path} and {path.with_suffix('.md')}")
    return 0


def _bench_tiles(args: argparse.Namespace) -> int:
    from ..bench.tile_bench import run_tile_benchmark

    return _run_kernel_bench(args, run_tile_benchmark)


def _bench_wgrad(args: argparse.Namespace) -> int:
    from ..bench.wgrad_bench import run_wgrad_benchmark

    return _run_kernel_bench(args, run_wgrad_benchmark)


def _bench_model(args: argparse.Namespace) -> int:
    from ..cli import UsageError
    from ..core.names import canonical_variant_name

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
        profile=args.profile,
        branch_precision=args.branch_precision,
        compile_backend=args.compile,
    )
    print(f"wrote {path} and {path.with_suffix('.md')}")
    return 0


def _bench_eval(args: argparse.Namespace) -> int:
    from ..bench.eval_bench import run_eval_benchmark

    path = run_eval_benchmark(args.out, quick=args.quick, workers=args.workers)
    print(f"wrote {path} and {path.with_suffix('.md')}")
    return 0


def _bench_plan(args: argparse.Namespace) -> int:
    """Time ``d2bench plan`` on a study of N cells against a store holding N finished runs."""
    from ..bench.plan_bench import run_plan_benchmark

    timing = run_plan_benchmark(args.cells, args.repeat, Path(args.dir) if args.dir else None)
    if timing.error is not None:
        print(timing.error, file=sys.stderr)
        return 1
    print(f"d2bench plan, {timing.cells} cells vs {timing.cells} finished runs: {timing.summary}")
    print("wall time per run (s): " + ", ".join(f"{t:.2f}" for t in timing.seconds))
    print(f"best {min(timing.seconds):.2f} s; store kept in {timing.folder}")
    return 0


def register_bench(bench: argparse._SubParsersAction) -> None:
    """Add every ``d2bench bench`` sub-command to ``bench``."""
    for add in (_add_ops, _add_tiles, _add_wgrad, _add_model, _add_train, _add_eval, _add_plan):
        add(bench)


def _out_and_quick(parser: argparse.ArgumentParser, quick_help: str) -> None:
    """Where the report goes, and the smoke-run switch."""
    parser.add_argument("--out", type=Path, default=OUT, help=OUT_HELP)
    parser.add_argument("--quick", action="store_true", help=quick_help)


def _repeats_warmup_device(
    parser: argparse.ArgumentParser, repeats: int, warmup: int, repeats_what: str
) -> None:
    """The operator benchmarks' timing protocol and device."""
    parser.add_argument(
        "--repeats", type=int, default=repeats, help=f"{repeats_what} (default: %(default)s)"
    )
    parser.add_argument(
        "--warmup", type=int, default=warmup, help="untimed calls first (default: %(default)s)"
    )
    parser.add_argument("--device", default=None, help="default: cuda if available")


def _add_ops(bench: argparse._SubParsersAction) -> None:
    """The operators against cuDNN conv3d."""
    bench_ops = bench.add_parser("ops", help="time the operators against cuDNN conv3d")
    _out_and_quick(bench_ops, "tiny shapes (a smoke run)")
    _repeats_warmup_device(bench_ops, 30, 5, "timed calls per shape")
    bench_ops.add_argument(
        "--rejudge",
        type=Path,
        metavar="JSON",
        help="judge a written report's measurements against today's criteria (the package's "
        "bench/targets.toml) and rewrite it (and its .md); measures nothing",
    )
    bench_ops.add_argument(
        "--variants",
        nargs="+",
        metavar="VARIANT",
        help="measure only these (their cuDNN baselines come along), e.g. d2conv3d_bf16 "
        "d2conv3d_fp16; default: all",
    )
    bench_ops.set_defaults(handler=_bench_ops)


def _add_tiles(bench: argparse._SubParsersAction) -> None:
    """The CUDA-core backward's tile heights."""
    bench_tiles = bench.add_parser(
        "tiles",
        help="the CUDA-core backward's tile heights, measured per kernel (needs a CUDA GPU)",
        description="Time both tile heights (64 and 128 rows) of the CUDA-core backward's two "
        "kernels and the height its launcher picks, on the operator benchmark's float32 shapes "
        "and 64-channel layers; write reports/bench/tiles-<gpu>.json and .md.",
    )
    _out_and_quick(bench_tiles, "two tiny shapes (a smoke run)")
    _repeats_warmup_device(bench_tiles, 5, 2, "profiled calls per height")
    bench_tiles.set_defaults(handler=_bench_tiles)


def _add_wgrad(bench: argparse._SubParsersAction) -> None:
    """The tensor-core weight gradient's channel block."""
    bench_wgrad = bench.add_parser(
        "wgrad",
        help="the tensor-core weight gradient's channels per CTA, measured (needs a CUDA GPU)",
        description="Time the 16-bit weight gradient with 32 and with 64 input channels per CTA "
        "and the block its launcher picks, on the operator benchmark's layers in bfloat16; write "
        "reports/bench/wgrad-<gpu>.json and .md.",
    )
    _out_and_quick(bench_wgrad, "one tiny shape (a smoke run)")
    _repeats_warmup_device(bench_wgrad, 10, 3, "profiled calls per block")
    bench_wgrad.set_defaults(handler=_bench_wgrad)


def _add_model(bench: argparse._SubParsersAction) -> None:
    """FPS and memory of every Table 1 variant."""
    parser = bench.add_parser(
        "model",
        help="FPS and peak memory of every Table 1 variant (full network, random weights)",
        description="Time every Table 1 variant with the full network at 8×480×864 (batch 1, "
        "bf16 on the GPU) and write reports/bench/model-<gpu>.json and .md, relative to the "
        "Revised Baseline.",
    )
    _out_and_quick(parser, "tiny model at 8×32×64 on the CPU (a smoke run)")
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


def _add_train(bench: argparse._SubParsersAction) -> None:
    """Training step and inference of the full network."""
    parser = bench.add_parser(
        "train", help="training step and inference of the full network (clips/s, memory)"
    )
    parser.add_argument("--out", type=Path, default=OUT, help=OUT_HELP)
    parser.add_argument("--variants", nargs="+", default=DEFAULT_TRAIN_VARIANTS, metavar="VARIANT",
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
    parser.add_argument(
        "--profile",
        action="store_true",
        help="profile one more training step per row and split its GPU time into the sampling "
        "operators (forward, input and weight gradient), convolutions and the rest",
    )
    parser.add_argument(
        "--branch-precision",
        default="fp32",
        choices=["fp32", "autocast"],
        help="the DCN/D² deformation branches' conv under autocast: float32 (default) or the "
        "autocast dtype on tensor cores (as released), its output taken to float32",
    )
    parser.add_argument(
        "--compile",
        nargs="?",
        const="inductor",
        default=None,
        metavar="BACKEND",
        help="run every row's network through torch.compile (default backend: inductor), the "
        "baseline's too; the warm-up steps compile",
    )
    parser.set_defaults(handler=_bench_train)


def _add_eval(bench: argparse._SubParsersAction) -> None:
    """The speed of ``d2bench eval``."""
    parser = bench.add_parser(
        "eval", help="time `d2bench eval` on a DAVIS-16-val-sized synthetic set"
    )
    _out_and_quick(parser, "a small set (a smoke run)")
    parser.add_argument("--workers", type=int, default=2, help="processes (default: 2)")
    parser.set_defaults(handler=_bench_eval)


def _add_plan(bench: argparse._SubParsersAction) -> None:
    """The speed of ``d2bench plan`` on a large study and store."""
    plan = bench.add_parser("plan", help="time `d2bench plan` on a large study and store")
    plan.add_argument("--cells", type=int, default=1000, help="cells (default: %(default)s)")
    plan.add_argument("--repeat", type=int, default=3,
                      help="times to run `d2bench plan` (default: %(default)s)")  # fmt: skip
    plan.add_argument("--dir", help="work folder (reused when it holds a filled store)")
    plan.set_defaults(handler=_bench_plan)
