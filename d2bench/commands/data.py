"""``d2bench data ...``: the DAVIS data (``synth`` writes a synthetic DAVIS-layout set)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def _synth(args: argparse.Namespace) -> int:
    from ..cli import UsageError
    from ..data import DavisError, SynthSpec, write_synthetic_davis

    defaults = SynthSpec()
    sequences = defaults.sequences if args.sequences is None else args.sequences
    if args.val_sequences is not None:
        val_sequences = args.val_sequences
    elif args.sequences is None:
        val_sequences = defaults.val_sequences
    else:  # keep the default split's share (about 30 %) of validation videos
        val_sequences = min(max(1, round(sequences * 2 / 7)), max(sequences - 1, 1))
    # Videos vary in length by up to a fifth of --frames unless told otherwise.
    jitter = max(0, min(defaults.frame_jitter, args.frames // 5))
    try:
        spec = SynthSpec(
            sequences=sequences,
            val_sequences=val_sequences,
            frames=args.frames,
            frame_jitter=jitter if args.frame_jitter is None else args.frame_jitter,
            height=args.height,
            width=args.width,
            seed=args.seed,
        )
        start = time.perf_counter()
        write_synthetic_davis(args.out, spec, progress=print)
    except (ValueError, DavisError) as error:
        raise UsageError(str(error)) from None
    elapsed = time.perf_counter() - start
    print(
        f"{spec.train_sequences} train + {spec.val_sequences} val sequences, "
        f"{spec.height}×{spec.width}, seed {spec.seed}, in {elapsed:.1f} s"
    )
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    data = commands.add_parser("data", help="DAVIS data: generate a synthetic DAVIS-layout set")
    data_sub = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    defaults = _spec_defaults()
    synth = data_sub.add_parser(
        "synth",
        help="write a deterministic synthetic DAVIS set (JPEGImages, Annotations, ImageSets)",
        description="Write small deterministic videos in the DAVIS folder layout: textured "
        "moving objects (annotated), distractor shapes (not annotated), occluders and scale "
        "changes. The same seed gives byte-identical files.",
    )
    synth.add_argument("--out", type=Path, required=True, help="folder to write (new or empty)")
    synth.add_argument(
        "--sequences",
        type=int,
        default=None,
        help=f"number of videos, train + val (default {defaults['sequences']})",
    )
    synth.add_argument(
        "--val-sequences",
        type=int,
        default=None,
        help=f"how many of them are validation videos (default {defaults['val_sequences']}, "
        "or about 30%% of --sequences)",
    )
    synth.add_argument(
        "--frames",
        type=int,
        default=defaults["frames"],
        help="frames of the longest video (default %(default)s)",
    )
    synth.add_argument(
        "--frame-jitter",
        type=int,
        default=None,
        help=f"videos are up to this many frames shorter (default {defaults['frame_jitter']}, "
        "at most a fifth of --frames)",
    )
    synth.add_argument(
        "--height", type=int, default=defaults["height"], help="(default %(default)s)"
    )
    synth.add_argument("--width", type=int, default=defaults["width"], help="(default %(default)s)")
    synth.add_argument("--seed", type=int, default=defaults["seed"], help="(default %(default)s)")
    synth.set_defaults(handler=_synth)


def _spec_defaults() -> dict[str, int]:
    """SynthSpec's defaults, read without importing the data package at CLI start-up."""
    from ..data.spec import SynthSpec

    return SynthSpec().to_dict()
