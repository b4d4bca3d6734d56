"""``d2bench eval``: DAVIS J&F of a results folder."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

PROTOCOL_CHOICES = ("davis16", "semi", "unsupervised")


def _eval(args: argparse.Namespace) -> int:
    from ..cli import UsageError
    from ..metrics.davis import EvalError, evaluate, format_table

    if args.workers is not None and args.workers < 1:
        raise UsageError(f"--workers must be at least 1, got {args.workers}")
    try:
        result = evaluate(
            args.davis_root,
            args.results,
            protocol=args.protocol,
            imageset=args.imageset,
            workers=args.workers,
        )
    except EvalError as error:
        raise UsageError(str(error)) from error
    print(format_table(result))
    if args.json is not None:
        from ..core.atomic_io import atomic_write_text

        atomic_write_text(args.json, json.dumps(result, indent=1, allow_nan=False) + "\n")
        print(f"\nwrote {args.json}")
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "eval",
        help="DAVIS J&F of a results folder (bit-exact with the official tools)",
        description="Evaluate DAVIS results (<results>/<sequence>/<frame>.png, palette or "
        "greyscale PNGs of object ids, frame names as in the annotations) against a DAVIS "
        "root. Prints the global values and one row per object; --json writes everything, "
        "per-frame values included.",
    )
    parser.add_argument("--davis-root", type=Path, required=True, help="folder with ImageSets/")
    parser.add_argument("--results", type=Path, required=True, help="results folder")
    parser.add_argument(
        "--protocol",
        choices=PROTOCOL_CHOICES,
        default="davis16",
        help="davis16: the paper's (one binary object, first/last frame skipped); semi: DAVIS "
        "2017 semi-supervised; unsupervised: DAVIS 2017/2019 unsupervised (Hungarian "
        "matching, at most 20 proposals). Default: davis16",
    )
    parser.add_argument(
        "--imageset", default="2016/val", help="ImageSets/<imageset>.txt (default: 2016/val)"
    )
    parser.add_argument("--json", type=Path, default=None, help="write the full result here")
    parser.add_argument(
        "--workers", type=int, default=None, help="processes (default: one per CPU)"
    )
    parser.set_defaults(handler=_eval)
