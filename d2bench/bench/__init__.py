"""Benchmarks: the environment a measurement ran in, a GPU timing protocol, the operator benchmark.

- :mod:`d2bench.bench.environment`: ``collect_environment(device)``.
- :mod:`d2bench.bench.timing`: ``time_fn`` (L2-rotated, per-call CUDA-event timing) and
  ``peak_extra_memory``.
- :mod:`d2bench.bench.ops_bench`: ``run_ops_benchmark`` (D²Conv3D and 3D DCNv2 against cuDNN),
  also runnable as ``python -m d2bench.bench.ops_bench``.

Importing this package does not import torch; the submodules do.
"""
