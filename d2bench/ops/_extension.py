"""Build (once, cached) and load the compiled operator library from ``d2bench/ops/csrc/``.

The library is built just in time with torch's C++ extension machinery and ninja, into a cache
folder keyed by the torch version, whether CUDA kernels are included and a hash of the sources;
later processes load the cached build in well under a second. The build compiles a copy of the
sources kept in that folder, never the checkout's own files: the compiler commands (which ninja
compares to decide what is stale) then name the same paths whichever checkout asks, so a second
clone of the repository reuses the first one's build instead of rebuilding it. A missing compiler
or a failing build raises :class:`OpsBuildError` with what to do, instead of a wall of compiler
output.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tempfile
from pathlib import Path

#: Environment variables the loader reads.
SOURCE_ENV = "D2BENCH_OPS_SRC"  # folder of the C++/CUDA sources (default: the packaged csrc/)
BUILD_ENV = "D2BENCH_BUILD_DIR"  # where builds are cached (default: ~/.cache/d2bench/ops)
VERBOSE_ENV = "D2BENCH_VERBOSE_BUILD"  # "1" shows the compiler's output
CUDA_ENV = "D2BENCH_BUILD_CUDA"  # "0" builds the CPU kernels only, even on a GPU machine
NVCC_FLAGS_ENV = "D2BENCH_NVCC_FLAGS"  # extra nvcc flags, e.g. "-Xptxas=-v" for register use


class OpsBuildError(RuntimeError):
    """The compiled operators could not be built or loaded."""


def source_dir() -> Path:
    """The folder with the operator sources: ``$D2BENCH_OPS_SRC`` or the package's ``csrc/``.

    The sources ship inside the package (package data), so an installed wheel builds too.
    """
    configured = os.environ.get(SOURCE_ENV)
    folder = Path(configured) if configured else Path(__file__).resolve().parent / "csrc"
    if not (folder / "registration.cpp").is_file():
        raise OpsBuildError(
            f"operator sources not found in {folder}. Reinstall d2bench (its wheel ships "
            f"d2bench/ops/csrc/) or point {SOURCE_ENV} at a folder holding registration.cpp; "
            "D2BENCH_OPS=reference runs the slow pure-PyTorch operators without building."
        )
    return folder


def _cuda_wanted() -> bool:
    import torch
    from torch.utils.cpp_extension import CUDA_HOME

    if os.environ.get(CUDA_ENV, "1") == "0":
        return False
    return bool(torch.cuda.is_available() and CUDA_HOME and torch.version.cuda)


#: The files a build reads: they make the cache key and are copied into the build folder.
SOURCE_SUFFIXES = frozenset({".h", ".cuh", ".cpp", ".cu"})


def _source_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix in SOURCE_SUFFIXES and p.is_file())


def _sources(folder: Path, with_cuda: bool) -> list[str]:
    files = [
        folder / "registration.cpp",
        folder / "kernel_policy.cpp",
        *sorted((folder / "cpu").glob("*.cpp")),
    ]
    if with_cuda:
        files += sorted((folder / "cuda").glob("*.cu"))
    return [str(f) for f in files]


def _check_toolchain() -> None:
    compiler = os.environ.get("CXX", "c++")
    if shutil.which(compiler) is None:
        raise OpsBuildError(
            f"no C++ compiler ({compiler!r}) on PATH to build the d2bench operators. Install one "
            "(Debian/Ubuntu: apt-get install g++; conda: conda install gxx) or set CXX; "
            "D2BENCH_OPS=reference runs the slow pure-PyTorch operators instead."
        )
    try:
        import ninja

        bin_dir = ninja.BIN_DIR
    except (ImportError, AttributeError):
        bin_dir = str(Path(sys.executable).parent)
    # torch looks for `ninja` on PATH; the pip package's binary sits beside the interpreter.
    os.environ["PATH"] = os.pathsep.join([bin_dir, os.environ.get("PATH", "")])


def _sources_digest(folder: Path) -> str:
    """Hash of every source and header, so an edited header gets a fresh build folder."""
    digest = hashlib.sha256()
    for path in _source_files(folder):
        digest.update(path.relative_to(folder).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:10]


def staged_sources(folder: Path, build_dir: Path) -> Path:
    """The sources of ``folder`` copied into ``build_dir/src`` (once; later calls reuse the copy).

    The build folder is keyed by the sources' hash, so an existing copy holds the same bytes; it
    is never rewritten, which keeps its timestamps older than the objects built from it (ninja
    would otherwise rebuild). The copy appears whole or not at all (renamed into place), so two
    processes staging at once do not see each other's half-written files.
    """
    staged = build_dir / "src"
    if staged.is_dir():
        return staged
    scratch = Path(tempfile.mkdtemp(prefix=".src-", dir=build_dir))
    scratch.chmod(0o755)  # mkdtemp's 0700 would hide the sources from a shared cache's users
    try:
        for path in _source_files(folder):
            target = scratch / path.relative_to(folder)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
        try:
            scratch.rename(staged)
        except OSError:
            if not staged.is_dir():  # not a concurrent stager that won the race
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return staged


#: How a build folder is laid out; part of its name, so that a d2bench that still compiles the
#: checkout's own files (layout 1) never shares, and keeps rewriting, this layout's folder.
BUILD_LAYOUT = "L2"


def build_directory(with_cuda: bool) -> Path:
    import torch

    root = Path(os.environ.get(BUILD_ENV, Path.home() / ".cache" / "d2bench" / "ops"))
    flavour = f"cu{torch.version.cuda}" if with_cuda else "cpu"
    version = torch.__version__.split("+")[0]
    folder = root / f"torch{version}-{flavour}-{_sources_digest(source_dir())}-{BUILD_LAYOUT}"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


#: Defined for builds that carry sm_90a code: the launcher may then pick the Hopper forward.
SM90A_DEFINE = "-DD2BENCH_SM90A_BUILD"


def cuda_arch_flags(
    capabilities: list[tuple[int, int]], arch_list: str | None, max_supported: tuple[int, int]
) -> list[str]:
    """nvcc target flags for a build on a machine whose GPUs have ``capabilities``.

    With ``TORCH_CUDA_ARCH_LIST`` (``arch_list``) set, torch emits exactly the architectures
    named and this only adds the sm_90a marker when "9.0a" is among them. Unset, the build targets
    the machine's own GPUs as torch would, except that a compute-capability-9.0 GPU gets sm_90a
    (Hopper's wgmma and setmaxnreg exist only there), plus PTX of the newest one for later GPUs.
    """
    if arch_list and arch_list != "native":
        named = arch_list.replace(" ", ";").split(";")
        return [SM90A_DEFINE] if any(a.split("+")[0] == "9.0a" for a in named) else []
    flags: list[str] = []
    for capability in sorted({min(c, max_supported) for c in capabilities}):
        num = f"{capability[0]}{capability[1]}"
        if capability == (9, 0):
            flags += ["-gencode=arch=compute_90a,code=sm_90a", SM90A_DEFINE]
        else:
            flags.append(f"-gencode=arch=compute_{num},code=sm_{num}")
    if flags:
        newest = max(min(c, max_supported) for c in capabilities)
        num = f"{newest[0]}{newest[1]}"
        flags.append(f"-gencode=arch=compute_{num},code=compute_{num}")
    return flags


def _machine_arch_flags() -> list[str]:
    import torch

    capabilities = [torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())]
    supported = [
        (int(arch[3:]) // 10, int(arch[3:]) % 10)
        for arch in torch.cuda.get_arch_list()
        if arch.startswith("sm_") and arch[3:].isdigit()
    ]
    return cuda_arch_flags(
        capabilities, os.environ.get("TORCH_CUDA_ARCH_LIST"), max(supported, default=(9, 0))
    )


def _cuda_flags() -> list[str]:
    # Any -gencode flag here stops torch from adding its own (it then leaves the targets to us).
    extra = os.environ.get(NVCC_FLAGS_ENV, "").split()
    return ["-O3", "--expt-relaxed-constexpr", "-lineinfo", *_machine_arch_flags(), *extra]


#: Written beside a finished build: what it was built from and with. A process whose own
#: settings match loads the library directly, without regenerating build.ninja: that file names
#: the torch of the environment that wrote it, so two checkouts with their own virtual
#: environments (same torch release) would otherwise rebuild the shared folder in turn.
BUILD_RECORD = "d2bench-build.json"
CFLAGS = ("-O3", "-fopenmp")
LDFLAGS = ("-fopenmp",)


def _build_settings(name: str, build_dir: Path, cuda_flags: list[str] | None) -> dict[str, object]:
    import torch

    return {
        "library": name,
        "torch": str(torch.__version__),
        "sources": build_dir.name,  # torch release, flavour, sources digest and layout
        "cflags": list(CFLAGS),
        "ldflags": list(LDFLAGS),
        "cuda_cflags": cuda_flags,
    }


def _load_recorded_build(build_dir: Path, settings: dict[str, object], verbose: bool) -> bool:
    """Load the folder's library when its record matches ``settings``; False to build."""
    import json

    import torch

    library = build_dir / f"{settings['library']}.so"
    try:
        recorded = json.loads((build_dir / BUILD_RECORD).read_text())
    except (OSError, ValueError):
        return False
    if recorded != settings or not library.is_file():
        return False
    torch.ops.load_library(str(library))
    if verbose:
        print(f"d2bench: loaded the cached operator build {library}", file=sys.stderr)
    return True


def load_library() -> bool:
    """Build if needed and load the library into the process; True when CUDA kernels are in it."""
    from torch.utils import cpp_extension

    from ..core.atomic_io import atomic_write_json

    folder = source_dir()
    with_cuda = _cuda_wanted()
    _check_toolchain()
    verbose = os.environ.get(VERBOSE_ENV, "0") == "1"
    build_dir = build_directory(with_cuda)
    name = "d2bench_ops_cuda" if with_cuda else "d2bench_ops_cpu"
    cuda_flags = _cuda_flags() if with_cuda else None
    settings = _build_settings(name, build_dir, cuda_flags)
    try:
        if _load_recorded_build(build_dir, settings, verbose):
            return with_cuda
        staged = staged_sources(folder, build_dir)
        cpp_extension.load(
            name=name,
            sources=_sources(staged, with_cuda),
            extra_include_paths=[str(staged)],
            # No -std flag: torch picks the standard its own headers were built for (C++20);
            # overriding it compiles c10 types differently and crashes when a kernel throws.
            extra_cflags=list(CFLAGS),  # copies: torch appends its own flags to these lists
            extra_ldflags=list(LDFLAGS),
            extra_cuda_cflags=list(cuda_flags) if cuda_flags else None,  # a copy, as above
            build_directory=str(build_dir),
            is_python_module=False,
            verbose=verbose,
        )
        atomic_write_json(build_dir / BUILD_RECORD, settings)
    except (RuntimeError, OSError, ImportError) as error:
        raise OpsBuildError(
            f"building the d2bench operators from {folder} failed: {error}. "
            f"Run with {VERBOSE_ENV}=1 to see the compiler output; "
            "D2BENCH_OPS=reference runs the slow pure-PyTorch operators instead."
        ) from error
    return with_cuda
