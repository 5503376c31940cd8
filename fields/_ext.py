"""Access to the compiled extension `fields._C`, with a clear message when it is missing."""

from __future__ import annotations

import functools
from types import ModuleType


@functools.cache
def _load() -> tuple[ModuleType | None, str]:
    try:
        from fields import _C
    except ImportError as e:  # not built, or built against another torch
        return None, (
            f"the extension fields._C could not be imported ({e}); build it with `make setup` "
            "or `pip install --no-build-isolation -e .`"
        )
    return _C, ""


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
