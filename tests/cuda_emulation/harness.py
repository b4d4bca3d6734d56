"""Builds the CUDA sources of d2bench/ops/csrc/ as a CPU extension running the kernels emulated.

The sources are copied and changed in a few named places (each change must apply exactly, so a
source that moves on fails here loudly rather than silently testing something else):
- in mma.cuh, the inline-assembly primitives (ldmatrix, mma.sync, cp.async) give way to the
  host versions of emu_mma.h, so the mma.sync kernels run too; wgmma.cuh and the Hopper forward
  (wgmma, TMA) become empty;
- in launchers.cuh, ``kernel<<<grid, block, smem, stream>>>(args)`` becomes
  ``emu::launcher(kernel, grid, block, smem, stream)(args)``;
- dynamic shared memory comes from the emulated block;
- the CUDA dispatch registration is replaced by a pybind11 module exposing the backward entry
  points, which then take CPU tensors;
- the entry points and all instantiate_*.cu files are compiled as one translation unit, beside
  the kernel policy (kernel_policy.cpp), which the module's ``set_kernel_policy`` sets.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from types import ModuleType

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


_MODULE = """
#include <torch/extension.h>
PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("d2conv3d", &d2bench::cuda::d2conv3d_cuda);
  m.def("deform_conv3d", &d2bench::cuda::deform_conv3d_cuda);
  m.def("d2conv3d_backward", &d2bench::cuda::d2conv3d_backward_cuda);
  m.def("deform_conv3d_backward", &d2bench::cuda::deform_conv3d_backward_cuda);
  m.def("set_kernel_policy", &d2bench::set_kernel_policy);
  m.def("launched_kernels", &emu::launched_kernels);
}
"""


def _replace(text: str, old: str, new: str, where: str, count: int = 1) -> str:
    found = text.count(old)
    if found != count:
        raise AssertionError(f"{where}: expected {count}× {old!r}, found {found}")
    return text.replace(old, new)


def _cut(text: str, start: str, end: str, where: str) -> str:
    """``text`` without the span from ``start`` up to (not including) ``end``; each must occur
    exactly once."""
    for marker in (start, end):
        if text.count(marker) != 1:
            raise AssertionError(f"{where}: expected 1× {marker!r}, found {text.count(marker)}")
    return text[: text.index(start)] + text[text.index(end) :]


def _emulated_mma(text: str) -> str:
    """mma.cuh with its assembly primitives replaced by emu_mma.h's (MmaType and the tiled
    product helpers, which call the primitives, stay as they are)."""
    text = _cut(text, "__device__ __forceinline__ void ldmatrix_x4(",
                "// acc[i][j] += a[i]", "mma.cuh")  # fmt: skip
    text = _cut(text, "// 16-byte asynchronous global", "}  // namespace cuda", "mma.cuh")
    include = '#include "common.cuh"\n'
    return _replace(text, include, include + '#include "emu_mma.h"\n', "mma.cuh")


def prepare(destination: Path) -> list[Path]:
    """Writes the emulation sources under ``destination``; returns the files to compile."""
    shutil.rmtree(destination, ignore_errors=True)
    shutil.copytree(ROOT / "d2bench" / "ops" / "csrc", destination / "ops_cuda")
    cuda = destination / "ops_cuda" / "cuda"
    (cuda / "mma.cuh").write_text(_emulated_mma((cuda / "mma.cuh").read_text()))
    (cuda / "wgmma.cuh").write_text("#pragma once\n")
    (cuda / "hopper_forward.cuh").write_text("#pragma once\n")
    taps = destination / "ops_cuda" / "taps.h"
    # put(): the atomic branch is the device one.
    taps.write_text(_replace(taps.read_text(), "#ifdef __CUDA_ARCH__", "#if 1", "taps.h"))
    for header in ("simt_backward.cuh", "fused_backward.cuh"):  # two kernels each
        path = cuda / header
        shared = "extern __shared__ uint4 dynamic_smem[];"
        emulated = "uint4* dynamic_smem = emu::dynamic_smem();"
        path.write_text(_replace(path.read_text(), shared, emulated, header, count=2))
    launchers = cuda / "launchers.cuh"
    text, launches = re.subn(
        r"(\w+)<<<(.*?)>>>\(", r"emu::launcher(\1, \2)(", launchers.read_text(), flags=re.S
    )
    if launches == 0:
        raise AssertionError("launchers.cuh: no kernel launches found")
    launchers.write_text(text)
    source = (cuda / "sampling_conv_cuda.cu").read_text()
    source = _replace(source, 'TORCH_CHECK(input.is_cuda(), "expected CUDA tensors");', "",
                      "sampling_conv_cuda.cu")  # fmt: skip
    start = source.index("TORCH_LIBRARY_IMPL(d2bench, CUDA, m)")
    end = source.index("}", source.index('m.impl("deform_conv3d_backward"'))
    # One translation unit: the entry points, then every dtype's launcher instantiations.
    shards = sorted(path.name for path in cuda.glob("instantiate_*.cu"))
    if not shards:
        raise AssertionError("d2bench/ops/csrc/cuda: no instantiate_*.cu files found")
    includes = "".join(f'#include "{name}"\n' for name in shards)
    source = source[:start] + source[end + 1 :] + includes + _MODULE
    main = cuda / "emulated.cpp"
    main.write_text(source)
    return [main, destination / "ops_cuda" / "kernel_policy.cpp"]


def build(workdir: Path) -> ModuleType:
    """Compiles the emulation (about half a minute on two cores) and imports it."""
    from torch.utils.cpp_extension import load

    sources = prepare(workdir / "src")
    (workdir / "build").mkdir(parents=True, exist_ok=True)
    includes = [f"-I{HERE / 'stub'}", f"-I{HERE}"]
    flags = ["-std=c++20", "-O1", "-w", "-include", str(HERE / "emu.h"), *includes]
    return load(
        name="d2bench_cuda_emulated",
        sources=[str(path) for path in sources],
        extra_cflags=flags,
        build_directory=str(workdir / "build"),
        verbose=False,
    )
