"""``d2bench train CONFIG`` and ``d2bench infer CONFIG --checkpoint CKPT``: one config by hand.

The config is the same schema a study expands into (d2bench.core.config.CellConfig), so a study cell
can be reproduced by running its ``config.yaml`` with these two commands.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def _load(path: Path):
    from ..cli import UsageError
    from ..core.config import ConfigError, load_cell_config

    try:
        return load_cell_config(path)
    except ConfigError as error:
        raise UsageError(str(error)) from None


def _check_data_root(config) -> None:
    from ..cli import UsageError

    if not Path(config.data.root).is_dir():
        raise UsageError(
            f"data.root {config.data.root!r} is not a folder; point it at a DAVIS root, or "
            "make one with `d2bench data synth --out DIR`"
        )


def _prepare(config_path: Path, out: Path | None, default_parent: str):
    import yaml

    from ..core.config import config_to_dict
    from ..core.contract import CONFIG_FILE
    from ..engine.distributed import rank_device
    from ..runner.cell import build_seeded_model

    config = _load(config_path)
    _check_data_root(config)
    out = out or Path(default_parent) / config_path.stem
    out.mkdir(parents=True, exist_ok=True)
    (out / CONFIG_FILE).write_text(yaml.safe_dump(config_to_dict(config), sort_keys=False))
    device = rank_device(config.device)
    return config, out, device, build_seeded_model(config)


def _train(args: argparse.Namespace) -> int:
    from ..core.contract import CHECKPOINT_DIR, EPOCHS, JF_MEAN, TRAIN_LOSS
    from ..engine.checkpoint import newest_checkpoint
    from ..engine.signals import CellInterrupted
    from ..runner.cell import train_cell

    config, out, device, model = _prepare(args.config, args.out, "runs/train")
    model_text = f"{config.model.describe()} ({config.model.backbone})"
    print(f"training {model_text} on {device}; output in {out}")
    try:
        summary = train_cell(config, out, device, model, None, True, not args.quiet)
    except CellInterrupted as interrupted:
        print(f"{interrupted}; run the same command again to resume")
        return 143
    checkpoint = newest_checkpoint(out / CHECKPOINT_DIR)
    if summary["resumed_from"]:
        print(f"resumed from {summary['resumed_from']}")
    print(
        f"finished: {summary[EPOCHS]:.0f} epochs, final loss {summary[TRAIN_LOSS]:.4f}; "
        f"checkpoint {checkpoint}"
    )
    best = summary["best_val"]
    if best is not None:
        print(
            f"best validation: epoch {best['epoch']}, J&F {best[JF_MEAN]:.4f}; "
            f"checkpoint {out / CHECKPOINT_DIR / best['file']}"
        )
    print(f"next: d2bench infer {args.config} --checkpoint {checkpoint}")
    return 0


def _infer(args: argparse.Namespace) -> int:
    from ..cli import UsageError
    from ..engine.checkpoint import load_checkpoint
    from ..runner.cell import infer_cell

    if not args.checkpoint.is_file():
        raise UsageError(f"checkpoint {args.checkpoint} does not exist")
    config, out, device, model = _prepare(args.config, args.out, "runs/infer")
    state = load_checkpoint(args.checkpoint)
    try:
        model.load_state_dict(state.get("model", state))
    except RuntimeError as error:
        raise UsageError(
            f"checkpoint {args.checkpoint} does not fit the model of {args.config} "
            f"({config.model.backbone}, {config.model.variant}): {error}"
        ) from None
    model.to(device)
    inferred = infer_cell(config, out, model, device, not args.quiet)
    print(f"masks written to {out / inferred['artifacts']['masks']}")
    if args.eval:
        from ..runner.cell import evaluate_cell

        metrics = evaluate_cell(config, out)
        print(
            "J&F {jf_mean:.4f}  J {j_mean:.4f}  F {f_mean:.4f}  ({p}, {s})".format(
                **metrics, p=config.measure.protocol, s=config.data.val_set
            )
        )
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    train = commands.add_parser("train", help="train one config (resumes from its checkpoints)")
    train.add_argument("config", type=Path, help="YAML config (the schema of a study cell)")
    train.add_argument("--out", type=Path, help="output folder (default runs/train/<name>)")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    train.set_defaults(handler=_train)

    infer = commands.add_parser("infer", help="write DAVIS-layout masks for the validation set")
    infer.add_argument("config", type=Path, help="YAML config the checkpoint was trained with")
    infer.add_argument("--checkpoint", type=Path, required=True, help="a training checkpoint")
    infer.add_argument("--out", type=Path, help="output folder (default runs/infer/<name>)")
    infer.add_argument("--eval", action="store_true", help="also compute J&F on the masks")
    infer.add_argument("--quiet", action="store_true", help="no progress bar")
    infer.set_defaults(handler=_infer)
