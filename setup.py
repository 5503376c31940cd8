"""Builds fields._C from csrc/: the C++ kernels always, the CUDA kernels when torch has CUDA
and nvcc is present. Metadata lives in pyproject.toml."""

from __future__ import annotations

import os
import re
import shutil
import sys
from pathlib import Path

from setuptools import setup

ROOT = Path(__file__).parent

try:
    import torch
    from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension
except ImportError:  # pragma: no cover - only reached on a broken set-up
    sys.exit(
        "fields: torch must be installed before building (pip install torch==2.13.0 for the "
        "CPU build, then pip install --no-build-isolation -e .); `make setup` does both."
    )


def sources(pattern: str) -> list[str]:
    return sorted(str(p.relative_to(ROOT)) for p in (ROOT / "csrc").glob(pattern))


def cuda_arch_list() -> str:
    """TORCH_CUDA_ARCH_LIST with what the tensor-core kernels need (compute capability 8.0 or
    newer): the given list without older entries, else the visible GPUs' own, else 8.0;9.0."""
    given = os.environ.get("TORCH_CUDA_ARCH_LIST", "").replace(",", ";").split(";")
    archs = [a.strip() for a in given if a.strip()]
    if not archs and torch.cuda.is_available():
        archs = sorted({"{}.{}".format(*torch.cuda.get_device_capability(i))
                        for i in range(torch.cuda.device_count())})
    def major(a: str) -> int:
        m = re.match(r"(\d+)\.", a)
        return int(m.group(1)) if m else 0

    kept = [a for a in archs if major(a) >= 8]
    dropped = sorted(set(archs) - set(kept))
    if dropped:
        print(f"fields: not building the CUDA kernels for {', '.join(dropped)} (they need "
              "compute capability 8.0 or newer)", file=sys.stderr)
    return ";".join(kept) or "8.0;9.0"


def cxx_standard() -> str:
    """The C++ standard of the bindings: C++20 for torch 2.14 and newer (their headers require
    it: "C++20 or later compatible compiler is required to use ATen"), else C++17. The CUDA
    kernels include no torch header and stay C++17."""
    m = re.match(r"(\d+)\.(\d+)", torch.__version__)
    return "-std=c++20" if m and (int(m.group(1)), int(m.group(2))) >= (2, 14) else "-std=c++17"


def extension():
    # -fopenmp: at::parallel_for (inlined from ATen headers) is OpenMP; the extension then
    # shares the libgomp.so.1 that torch has already loaded.
    cxx_flags = ["-O3", cxx_standard(), "-ffp-contract=fast", "-fno-math-errno", "-fopenmp"]
    link_flags = ["-fopenmp"]
    cpp = sources("kernels/*.cpp") + sources("bindings/*.cpp")
    cu = sources("kernels/*.cu") + sources("bindings/*.cu")
    want_cuda = os.environ.get("FIELDS_CUDA", "auto")
    use_cuda = (
        bool(cu)
        and want_cuda != "0"
        and torch.version.cuda is not None
        and shutil.which("nvcc") is not None
    )
    if use_cuda:
        os.environ["TORCH_CUDA_ARCH_LIST"] = cuda_arch_list()
        # FIELDS_CUDA_PREBUILT=DIR: link DIR/<name>.o (from `make cuda-objects`, nvcc alone)
        # instead of compiling each .cu here: the kernels need no torch headers, so they can be
        # built ahead, on another machine, while only the bindings build against this torch.
        prebuilt = os.environ.get("FIELDS_CUDA_PREBUILT")
        objects = []
        if prebuilt:
            objects = [str(Path(prebuilt) / (Path(f).name + ".o")) for f in cu]
            missing = [o for o in objects if not Path(o).exists()]
            if missing:
                sys.exit(f"fields: FIELDS_CUDA_PREBUILT={prebuilt} lacks {', '.join(missing)} "
                         "(make cuda-objects builds them)")
        return CUDAExtension(
            "fields._C",
            cpp + ([] if prebuilt else cu),
            define_macros=[("FIELDS_WITH_CUDA", None)],
            include_dirs=[str(ROOT / "csrc")],
            extra_compile_args={"cxx": cxx_flags, "nvcc": ["-O3", "-std=c++17"]},
            extra_objects=objects,
            extra_link_args=link_flags,
        )
    return CppExtension(
        "fields._C", cpp, include_dirs=[str(ROOT / "csrc")], extra_compile_args=cxx_flags,
        extra_link_args=link_flags,
    )


setup(
    ext_modules=[extension()],
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
)
