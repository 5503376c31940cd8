"""Backend selection, once, for every module with kernels: `FusedMLP`, the grid encodings and
`OccupancyGrid.sample`.

A module is asked for one of `BACKENDS`:

- ``"torch"``: the pure-torch reference (any dtype, device and derivative order);
- ``"cpu"``: the C++ kernels of `fields._C` (CPU tensors, float32); an error when they cannot
  run the call, saying why;
- ``"cuda"``: the CUDA kernels of `fields._C` (built where torch has CUDA and nvcc is present;
  the tests run them on a CPU emulator); an error when they cannot run the call, saying why;
- ``"auto"``: the CUDA kernels for CUDA tensors when they can run the call, else the CPU
  kernels when they can, else the reference, with a warning (once per reason) unless the
  input asked for the reference itself (a CPU tensor that is not float32, e.g. float64).

Each module says why a backend cannot run a call (`cpu_reason`, `cuda_reason`: '' when it
can); `select_backend` applies the rules above. `warn_once` is the one warning-once of the
kernels (fallbacks to the reference, fp16 overflow), `stream` the CUDA stream the kernels
launch on.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable
from typing import Any

import torch

from fields import _ext

BACKENDS: tuple[str, ...] = ("auto", "torch", "cpu", "cuda")

NO_CUDA_KERNELS = ("fields._C was built without the CUDA kernels (they are built where torch "
                   "has CUDA and nvcc is present: `make setup` on a GPU machine)")

_warned: set[str] = set()

_profiling = torch._C._autograd._profiler_enabled


def scope(name: str) -> contextlib.AbstractContextManager[Any]:
    """A torch profiler label `name` (what `fields bench nerf` attributes time to); a no-op
    costing well under a microsecond while no profiler runs (a label costs ~10 us)."""
    if _profiling():
        return torch.profiler.record_function(name)
    return contextlib.nullcontext()


def warn_once(key: str, message: str, stacklevel: int = 3) -> None:
    """Warns `message` (a UserWarning) the first time `key` is seen in this process."""
    if key not in _warned:
        _warned.add(key)
        warnings.warn(message, stacklevel=stacklevel)


def forget_warnings() -> None:
    """Forgets which warnings were given, so that each is given again (for tests)."""
    _warned.clear()


def check_backend(owner: str, backend: object) -> str:
    """`backend` when it is one of `BACKENDS`; ValueError naming `owner` otherwise."""
    if backend not in BACKENDS:
        raise ValueError(f"{owner}: unknown backend {backend!r}; expected one of "
                         f"{', '.join(BACKENDS)}")
    return str(backend)


def stream(t: torch.Tensor) -> int:
    """The cudaStream_t (as an integer) of the current stream of `t`'s device; 0 on the CPU."""
    return torch.cuda.current_stream(t.device).cuda_stream if t.is_cuda else 0


def cuda_kernels() -> Any | None:
    """`fields._C` when it was built with the CUDA kernels, else None."""
    return _ext.extension() if _ext.has_cuda_kernels() else None


def cpu_kernels_reason() -> str:
    """Why the C++ kernels cannot run at all ('' when `fields._C` is importable)."""
    return "" if _ext.available() else _ext.unavailable_reason()


def select_backend(
    owner: str,
    requested: str,
    x: torch.Tensor,
    cpu_reason: Callable[[], str],
    cuda_reason: Callable[[bool], str],
) -> str:
    """The backend ("torch", "cpu" or "cuda") a call on input `x` runs on.

    Args:
        owner: the module's name, for messages (``"FusedMLP"``).
        requested: one of `BACKENDS`.
        x: the input of the call.
        cpu_reason: why the CPU kernels cannot run this call ('' when they can).
        cuda_reason: why the CUDA kernels cannot run this call ('' when they can); its argument
            is True under ``"auto"``, where a module may ask more (e.g. 16-bit inputs) than
            it accepts when the CUDA backend is asked for by name.
    Raises:
        ValueError naming `owner` and the reason when a backend asked for by name cannot run.
    """
    if requested == "torch":
        return "torch"
    on_cuda = x.device.type == "cuda"
    cuda_why = ""
    if requested == "cuda" or (requested == "auto" and on_cuda):
        cuda_why = cuda_reason(requested == "auto")
        if not cuda_why:
            return "cuda"
        if requested == "cuda":
            raise ValueError(f"{owner}: backend='cuda' cannot run this call: {cuda_why}")
    reason = cpu_reason()
    if not reason:
        return "cpu"
    if requested == "cpu":
        raise ValueError(f"{owner}: backend='cpu' cannot run this call: {reason}")
    reason = cuda_why or reason  # a CUDA input: why the CUDA kernels could not run it
    if x.dtype == torch.float32 or x.device.type != "cpu":
        warn_once(f"{owner}:auto:{reason}",
                  f"{owner}(backend='auto'): running on the torch reference because {reason}",
                  stacklevel=4)
    return "torch"
