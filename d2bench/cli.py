"""The `d2bench` command line.

Sub-commands import their (possibly heavy) modules only when they run, so that the CLI starts
fast and commands that need no torch never import it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _demo(args: argparse.Namespace) -> int:
    from .operator_demo import main

    return main()


def _ops_build(args: argparse.Namespace) -> int:
    from . import ops
    from .ops._extension import build_directory, source_dir

    ops.ensure_loaded()
    from .ops._registration import load_and_register

    with_cuda = load_and_register()
    print(f"d2bench operators built from {source_dir()}")
    print(f"  cached in {build_directory(with_cuda)} ({'CPU + CUDA' if with_cuda else 'CPU'})")
    return 0


def _bench_ops(args: argparse.Namespace) -> int:
    from .bench.ops_bench import run_ops_benchmark

    path = run_ops_benchmark(
        args.out, quick=args.quick, repeats=args.repeats, warmup=args.warmup, device=args.device
    )
    print(f"wrote {path} and {path.with_suffix('.md')}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="d2bench", description="D²Conv3D ablation studies: operators, variants, reports."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = commands.add_parser("demo", help="build the operators and check every variant")
    demo.set_defaults(handler=_demo)

    ops_cmd = commands.add_parser("ops", help="the compiled operators")
    ops_sub = ops_cmd.add_subparsers(dest="ops_command", required=True, metavar="ACTION")
    ops_sub.add_parser("build", help="build (or load the cached) operators").set_defaults(
        handler=_ops_build
    )

    bench = commands.add_parser("bench", help="benchmarks (write results with their environment)")
    bench_sub = bench.add_subparsers(dest="bench_command", required=True, metavar="WHAT")
    bench_ops = bench_sub.add_parser("ops", help="time the operators against cuDNN conv3d")
    bench_ops.add_argument("--out", type=Path, default=Path("reports/bench"))
    bench_ops.add_argument("--quick", action="store_true", help="tiny shapes (a smoke run)")
    bench_ops.add_argument("--repeats", type=int, default=30)
    bench_ops.add_argument("--warmup", type=int, default=5)
    bench_ops.add_argument("--device", default=None, help="default: cuda if available")
    bench_ops.set_defaults(handler=_bench_ops)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
