"""``d2bench weights convert|check``: pretrained encoder weights (VMZ Caffe2 .pkl, state dicts)."""

from __future__ import annotations

import argparse
from pathlib import Path

#: ``d2bench.core.config.Backbone``, repeated here: the CLI imports every command module at
#: start-up, and this one must not pull in pydantic (GPU machines may have only torch and numpy).
BACKBONES: tuple[str, ...] = ("csn152", "csn50", "tiny")


def _checked_state(args: argparse.Namespace):
    """The backbone state dict of ``args.input``, checked against the chosen architecture."""
    import torch

    from ..cli import UsageError
    from ..models import (
        WeightsError,
        backbone_spec,
        check_state_dict,
        read_backbone_state_dict,
    )
    from ..models.csn import IrCSN

    try:
        state = read_backbone_state_dict(args.input)
        with torch.device("meta"):
            backbone = IrCSN(backbone_spec(args.backbone, args.tiny_width))
        check_state_dict(backbone, state, str(args.input))
    except WeightsError as error:
        raise UsageError(str(error)) from None
    return state


def _convert(args: argparse.Namespace) -> int:
    import torch

    from ..cli import UsageError

    if args.output.exists() and not args.force:
        raise UsageError(f"{args.output} exists; pass --force to overwrite it")
    state = _checked_state(args)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    temporary = args.output.with_name(args.output.name + ".partial")
    torch.save(state, temporary)
    temporary.replace(args.output)
    print(f"wrote {args.output}: {len(state)} tensors of the {args.backbone} backbone")
    return 0


def _check(args: argparse.Namespace) -> int:
    state = _checked_state(args)
    count = sum(t.numel() for t in state.values())
    print(f"{args.input} fits the {args.backbone} backbone: {len(state)} tensors, {count:,} values")
    return 0


def _add_architecture(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--backbone", choices=BACKBONES, default="csn152",
        help="architecture to check against (default: %(default)s)",
    )  # fmt: skip
    parser.add_argument(
        "--tiny-width", type=int, default=16,
        help="channel multiplier of the tiny backbone (default: %(default)s)",
    )  # fmt: skip


def register(commands: argparse._SubParsersAction) -> None:
    weights = commands.add_parser("weights", help="pretrained encoder weights")
    actions = weights.add_subparsers(dest="weights_command", required=True, metavar="ACTION")
    convert = actions.add_parser(
        "convert",
        help="convert the VMZ Caffe2 .pkl of ir-CSN (or another accepted file) to a state dict",
    )
    convert.add_argument("input", type=Path, help="VMZ .pkl (or .pt/.pth) to read")
    convert.add_argument("output", type=Path, help="state dict (.pth) to write")
    convert.add_argument("--force", action="store_true", help="overwrite OUTPUT")
    _add_architecture(convert)
    convert.set_defaults(handler=_convert)
    check = actions.add_parser("check", help="check that a weights file fits the backbone")
    check.add_argument("input", type=Path, help=".pkl, .pt or .pth file")
    _add_architecture(check)
    check.set_defaults(handler=_check)
