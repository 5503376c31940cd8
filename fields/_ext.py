"""Access to the compiled extension `fields._C`, with a clear message when it is missing."""

from __future__ import annotations

import functools
import os
from types import ModuleType

CPU_CACHE_ENV = "FIELDS_CPU_CACHE_MB"


@functools.cache
def _load() -> tuple[ModuleType | None, str]:
    try:
        from fields import _C
    except ImportError as e:  # not built, or built against another torch
        return None, (
            f"the extension fields._C could not be imported ({e}); build it with `make setup` "
            "or `pip install --no-build-isolation -e .`"
        )
    limit = cpu_cache_limit()
    if limit > 0 and hasattr(_C, "install_cpu_cache"):
        _C.install_cpu_cache(limit)
    return _C, ""


def cpu_cache_limit() -> int:
    """Bytes of freed large CPU tensors the caching allocator keeps for reuse: FIELDS_CPU_CACHE_MB
    (0 turns the cache off), by default a quarter of the memory, at most 4 GiB. The cache
    saves a training step the page faults of its large tensors (see csrc/bindings/cpu_cache.cpp)."""
    given = os.environ.get(CPU_CACHE_ENV, "").strip()
    if given:
        try:
            mb = float(given)
        except ValueError:
            raise ValueError(
                f"{CPU_CACHE_ENV}={given!r}: expected a number of MiB (0 turns the cache off)"
            ) from None
        if mb < 0:
            raise ValueError(f"{CPU_CACHE_ENV}={given!r}: expected a number of MiB >= 0")
        return int(mb * 2**20)
    try:
        memory = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        memory = 16 * 2**30
    return min(4 * 2**30, memory // 4)


def extension() -> ModuleType:
    """The compiled extension; raises RuntimeError saying how to build it when it is missing."""
    ext, why = _load()
    if ext is None:
        raise RuntimeError(why)
    return ext


def available() -> bool:
    """Whether the compiled extension fields._C could be loaded."""
    return _load()[0] is not None


def unavailable_reason() -> str:
    """Why fields._C could not be loaded ("" when it was)."""
    return _load()[1]


def cpu_isa() -> str:
    """Instruction set of the CPU kernels on this machine ("avx2+fma", "generic"), or "" if none."""
    ext, _ = _load()
    return ext.mlp_cpu_isa() if ext is not None else ""


def has_cuda_kernels() -> bool:
    """Whether fields._C was built with the CUDA kernels."""
    ext, _ = _load()
    return bool(ext is not None and getattr(ext, "has_cuda", False))
