"""The `d2bench` command line.

Sub-commands live in :mod:`d2bench.commands`, one module per family, discovered at start-up.
They import their (possibly heavy) modules only when they run, so that the CLI starts fast and
commands that need no torch never import it.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from . import commands as _commands_package
from .tracking.store import StoreError


class UsageError(Exception):
    """Bad input from the user: printed without a traceback, exit code 2."""


class _VersionAction(argparse.Action):
    """``--version``: the resolved package versions are looked up only when asked for."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: object) -> None:
        super().__init__(option_strings, dest, nargs=0, help="show the installed versions and exit")

    def __call__(self, parser, namespace, values, option_string=None) -> None:  # type: ignore[override]
        from .core.versions import version_text

        print(version_text())
        parser.exit()


def _command_modules() -> list:
    names = sorted(info.name for info in pkgutil.iter_modules(_commands_package.__path__))
    return [importlib.import_module(f"{_commands_package.__name__}.{name}") for name in names]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="d2bench",
        description="D²Conv3D ablation studies: operators, models, studies, reports.",
    )
    parser.add_argument("--version", action=_VersionAction)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    bench = commands.add_parser("bench", help="benchmarks (write results with their environment)")
    bench_commands = bench.add_subparsers(dest="bench_command", required=True, metavar="WHAT")
    for module in _command_modules():
        if hasattr(module, "register"):
            module.register(commands)
        if hasattr(module, "register_bench"):
            module.register_bench(bench_commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    for stream in (sys.stdout, sys.stderr):  # progress shows at once, also through pipes and logs
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(line_buffering=True)
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except (UsageError, StoreError) as error:
        print(f"d2bench {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # run as a file: go through the package so UsageError is one class
    from d2bench.cli import main as package_main

    sys.exit(package_main())
