"""Benchmarks: what a measurement ran on, a GPU timing protocol, and one module per benchmark.

- :mod:`d2bench.bench.common`: what every benchmark shares (``Target`` and the criteria of
  ``targets.toml``, report files, the Markdown header and tables).
- ``targets.toml`` (data): what the project expects of each benchmark's measurements; the
  benchmarks measure, the file judges.
- :mod:`d2bench.ops.environment`: ``collect_environment(device)``.
- :mod:`d2bench.bench.timing`: ``time_fn`` (L2-rotated, per-call CUDA-event timing),
  ``peak_extra_memory`` and the device chores (``synchronize``, ``release_memory``).
- :mod:`d2bench.bench.ops_bench`: ``d2bench bench ops`` (D²Conv3D and 3D DCNv2 against cuDNN).
- :mod:`d2bench.bench.tile_bench`: ``d2bench bench tiles`` (the CUDA-core backward's tile
  heights).
- :mod:`d2bench.bench.model_bench`: ``d2bench bench model`` (FPS and memory per Table 1 variant).
- :mod:`d2bench.bench.train_bench`: ``d2bench bench train`` (full-network training step and
  inference throughput).
- :mod:`d2bench.bench.eval_bench`: ``d2bench bench eval`` (J&F evaluation speed).
- :mod:`d2bench.bench.plan_bench`: ``d2bench bench plan`` (``d2bench plan`` on a large store).

The command line of every benchmark is :mod:`d2bench.commands.bench`, its one entry point.
Importing this package (or ``common``) does not import torch; the other submodules do, except
``plan_bench``.
"""
