"""``d2bench ops build | check``: the compiled operators."""

from __future__ import annotations

import argparse


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


def register(commands: argparse._SubParsersAction) -> None:
    ops_cmd = commands.add_parser("ops", help="the compiled operators")
    ops_sub = ops_cmd.add_subparsers(dest="ops_command", required=True, metavar="ACTION")
    ops_sub.add_parser("build", help="build (or load the cached) operators").set_defaults(
        handler=_ops_build
    )
    ops_sub.add_parser(
        "check", help="compiled kernels vs the reference, and each variant's identity"
    ).set_defaults(handler=_ops_check)
