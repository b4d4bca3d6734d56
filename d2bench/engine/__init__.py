"""Training loop, checkpoints, clip inference: the machinery a cell runs (imports torch)."""
