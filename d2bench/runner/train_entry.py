"""Entry point of each ``torchrun`` rank when a cell trains on several GPUs.

``python -m torch.distributed.run --nproc-per-node N -m d2bench.runner.train_entry CELL_DIR``
trains the cell whose ``config.yaml`` is in CELL_DIR; the parent process then infers and
measures on one GPU with the weights of the final checkpoint.
"""

from __future__ import annotations

import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    from ..core.config import load_cell_config
    from ..core.contract import CONFIG_FILE
    from ..engine.distributed import rank_device
    from .cell import build_seeded_model, train_cell

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m d2bench.runner.train_entry CELL_DIR", file=sys.stderr)
        return 2
    cell_dir = Path(args[0])
    config = load_cell_config(cell_dir / CONFIG_FILE)
    device = rank_device(config.device)
    model = build_seeded_model(config)
    train_cell(config, cell_dir, device, model, None, True, True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
