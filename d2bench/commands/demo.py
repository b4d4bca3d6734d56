"""``d2bench demo``: the main job on the embedded default."""

from __future__ import annotations

import argparse


def _demo(args: argparse.Namespace) -> int:
    from ..operator_demo import main

    return main()


def register(commands: argparse._SubParsersAction) -> None:
    demo = commands.add_parser("demo", help="build the operators and check every variant")
    demo.set_defaults(handler=_demo)
