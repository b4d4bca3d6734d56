"""Builds the CUDA sources of d2bench/ops/csrc/ as a CPU extension running the kernels emulated.

The sources are copied and changed in a few named places (each change must apply exactly, so a
source that moves on fails here loudly rather than silently testing something else):
- the tensor-core helpers (mma.cuh, wgmma.cuh) and the Hopper forward become stubs;
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

_MMA_STUB = """#pragma once
#include "common.cuh"
namespace d2bench {
namespace cuda {
template <typename scalar_t> struct MmaType;
template <> struct MmaType<at::BFloat16> {
  using type = __nv_bfloat16;
  static type from_float(float v) { return __float2bfloat16(v); }
  static uint32_t pack(float, float) { std::abort(); }
};
template <> struct MmaType<at::Half> {
  using type = __half;
  static type from_float(float v) { return __float2half(v); }
  static uint32_t pack(float, float) { std::abort(); }
};
inline void ldmatrix_x4(uint32_t*, const void*) { std::abort(); }
inline void ldmatrix_x4_trans(uint32_t*, const void*) { std::abort(); }
template <class T> void mma_16816(float*, const uint32_t*, const uint32_t*, T*) { std::abort(); }
template <class... A> void mma_row_major_b(A&&...) { std::abort(); }
inline void cp_async16(void*, const void*, bool) { std::abort(); }
inline void cp_async_commit() {}
inline void cp_async_wait_all() {}
}  // namespace cuda
}  // namespace d2bench
"""

_MODULE = """
#include <torch/extension.h>
PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("d2conv3d_backward", &d2bench::cuda::d2conv3d_backward_cuda);
  m.def("deform_conv3d_backward", &d2bench::cuda::deform_conv3d_backward_cuda);
  m.def("set_kernel_policy", &d2bench::set_kernel_policy);
}
"""


def _replace(text: str, old: str, new: str, where: str, count: int = 1) -> str:
    found = text.count(old)
    if found != count:
        raise AssertionError(f"{where}: expected {count}× {old!r}, found {found}")
    return text.replace(old, new)


def prepare(destination: Path) -> list[Path]:
    """Writes the emulation sources under ``destination``; returns the files to compile."""
    shutil.rmtree(destination, ignore_errors=True)
    shutil.copytree(ROOT / "d2bench" / "ops" / "csrc", destination / "ops_cuda")
    cuda = destination / "ops_cuda" / "cuda"
    (cuda / "mma.cuh").write_text(_MMA_STUB)
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
    flags = ["-std=c++20", "-O1", "-w", "-include", str(HERE / "emu.h"), f"-I{HERE / 'stub'}"]
    return load(
        name="d2bench_cuda_emulated",
        sources=[str(path) for path in sources],
        extra_cflags=flags,
        build_directory=str(workdir / "build"),
        verbose=False,
    )
