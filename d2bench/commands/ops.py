"""``d2bench ops build`` and ``d2bench bench ops``: the compiled operators."""

from __future__ import annotations

import argparse
from pathlib import Path

from ._help import OUT_HELP


def _ops_build(args: argparse.Namespace) -> int:
    from ..ops._extension import build_directory, source_dir
    from ..ops._registration import load_and_register

    with_cuda = load_and_register()
    print(f"d2bench operators built from {source_dir()}")
    print(f"  cached in {build_directory(with_cuda)} ({'CPU + CUDA' if with_cuda else 'CPU'})")
    return 0


def _ops_check(args: argparse.Namespace) -> int:
    from ..operator_demo import main

    return main()


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
    path = run_ops_benchmark(
        args.out, quick=args.quick, repeats=args.repeats, warmup=args.warmup, device=args.device
    )
    print(f"wrote {path} and {path.with_suffix('.md')}")
    return 0


def _bench_tiles(args: argparse.Namespace) -> int:
    from ..bench.tile_bench import TileBenchUnavailable, run_tile_benchmark
    from ..cli import UsageError

    if args.repeats < 1 or args.warmup < 0:
        raise UsageError(
            f"--repeats must be ≥ 1 and --warmup ≥ 0, got {args.repeats} and {args.warmup}"
        )
    try:
        path = run_tile_benchmark(
            args.out, quick=args.quick, repeats=args.repeats, warmup=args.warmup, device=args.device
        )
    except TileBenchUnavailable as error:
        raise UsageError(str(error)) from None
    print(f"wrote {path} and {path.with_suffix('.md')}")
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    ops_cmd = commands.add_parser("ops", help="the compiled operators")
    ops_sub = ops_cmd.add_subparsers(dest="ops_command", required=True, metavar="ACTION")
    ops_sub.add_parser("build", help="build (or load the cached) operators").set_defaults(
        handler=_ops_build
    )
    ops_sub.add_parser(
        "check", help="compiled kernels vs the reference, and each variant's identity"
    ).set_defaults(handler=_ops_check)


def register_bench(bench: argparse._SubParsersAction) -> None:
    bench_ops = bench.add_parser("ops", help="time the operators against cuDNN conv3d")
    bench_ops.add_argument("--out", type=Path, default=Path("reports/bench"), help=OUT_HELP)
    bench_ops.add_argument("--quick", action="store_true", help="tiny shapes (a smoke run)")
    bench_ops.add_argument("--repeats", type=int, default=30,
                           help="timed calls per shape (default: %(default)s)")  # fmt: skip
    bench_ops.add_argument("--warmup", type=int, default=5,
                           help="untimed calls first (default: %(default)s)")  # fmt: skip
    bench_ops.add_argument("--device", default=None, help="default: cuda if available")
    bench_ops.add_argument(
        "--rejudge",
        type=Path,
        metavar="JSON",
        help="judge a written report's measurements against today's targets and rewrite it "
        "(and its .md); measures nothing",
    )
    bench_ops.set_defaults(handler=_bench_ops)

    bench_tiles = bench.add_parser(
        "tiles",
        help="the CUDA-core backward's tile heights, measured per kernel (needs a CUDA GPU)",
        description="Time both tile heights (64 and 128 rows) of the CUDA-core backward's two "
        "kernels and the height its launcher picks, on the operator benchmark's float32 shapes "
        "and 64-channel layers; write reports/bench/tiles-<gpu>.json and .md.",
    )
    bench_tiles.add_argument("--out", type=Path, default=Path("reports/bench"), help=OUT_HELP)
    bench_tiles.add_argument("--quick", action="store_true", help="two tiny shapes (a smoke run)")
    bench_tiles.add_argument("--repeats", type=int, default=5,
                             help="profiled calls per height (default: %(default)s)")  # fmt: skip
    bench_tiles.add_argument("--warmup", type=int, default=2,
                             help="untimed calls first (default: %(default)s)")  # fmt: skip
    bench_tiles.add_argument("--device", default=None, help="default: cuda if available")
    bench_tiles.set_defaults(handler=_bench_tiles)
