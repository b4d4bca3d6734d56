"""``d2bench eval`` (DAVIS J&F of a results folder) and ``d2bench bench eval``."""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

from ._help import OUT_HELP

PROTOCOL_CHOICES = ("davis16", "semi", "unsupervised")


def _write_json(path: Path, data: dict) -> None:
    """Write ``data`` to ``path`` atomically (a reader never sees half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=1, allow_nan=False)
            handle.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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
        _write_json(args.json, result)
        print(f"\nwrote {args.json}")
    return 0


def _bench_eval(args: argparse.Namespace) -> int:
    from ..bench.eval_bench import run_eval_benchmark

    path = run_eval_benchmark(args.out, quick=args.quick, workers=args.workers)
    print(f"wrote {path} and {path.with_suffix('.md')}")
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


def register_bench(bench: argparse._SubParsersAction) -> None:
    parser = bench.add_parser(
        "eval", help="time `d2bench eval` on a DAVIS-16-val-sized synthetic set"
    )
    parser.add_argument("--out", type=Path, default=Path("reports/bench"), help=OUT_HELP)
    parser.add_argument("--quick", action="store_true", help="a small set (a smoke run)")
    parser.add_argument("--workers", type=int, default=2, help="processes (default: 2)")
    parser.set_defaults(handler=_bench_eval)
