"""Multiresolution grid encodings (Müller et al. 2022): hash, dense and tiled grids.

``GridEncoding(n_input_dims, n_levels=16, n_features_per_level=2, log2_hashmap_size=19,
base_resolution=16, per_level_scale=2.0, interpolation="Linear", grid_type="Hash")`` takes
tiny-cuda-nn's keys and defaults (``HashGrid``, ``DenseGrid``, ``TiledGrid`` fix the type).

Layout (as tiny-cuda-nn):

- level l has ``scale_l = base_resolution * per_level_scale**l - 1`` (float32) and
  ``res_l = ceil(scale_l) + 1`` vertices per dimension;
- its table holds ``min(res_l**D rounded up to a multiple of 8, 2**log2_hashmap_size)``
  entries for a hash grid (vertices are hashed only when ``res_l**D`` does not fit, with the
  primes 1, 2654435761, 805459861, 3674653429 xor-ed), ``res_l**D`` (rounded up) for a dense
  grid, and ``min(res_l, base_resolution)**D`` for a tiled grid, whose vertices repeat with
  a period of ``base_resolution`` (our definition: coordinates are taken modulo the period);
- the parameters are one flat vector (`params`), level after level, ``n_features`` floats per
  entry, initialised uniformly in [-1e-4, 1e-4];
- the output is ``(..., n_levels * n_features)``, level-major.

Boundaries, documented: inputs are clamped to [0, 1] (an input outside the box encodes as the
nearest point on it and gets zero gradient; 0 and 1 exactly are inside; NaN encodes as 0
with zero gradient); a point sits at
``pos = x * scale + 0.5`` in vertex units, and corner vertices beyond ``res - 1`` are clamped
to it (clamp-to-edge), so the whole box is covered without aliasing. Nearest interpolation
takes the vertex ``floor(pos)`` and has zero input gradient.

Backends: ``"cpu"`` runs the C++ kernels (float32: forward, gradients to the table and to the
inputs, spread over torch's threads); ``"cuda"`` the CUDA kernels (`fields.nn.grid_cuda`:
float32 inputs, a float32 or float16 table, 1/2/4/8 features, up to 64 levels; built where
torch has CUDA); ``"torch"`` the reference (`grid_reference`: any dtype, any derivative
order); ``"auto"`` the kernels when they apply. A second derivative through the kernels
(``create_graph=True``) differentiates the reference, with a warning.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

from fields import _ext
from fields.nn import grid_cuda
from fields.nn.backend import (
    NO_CUDA_KERNELS,
    check_backend,
    cpu_kernels_reason,
    scope,
    select_backend,
    stream,
    warn_once,
)
from fields.nn.encoding import InputEncoding, _finite, _positive_int
from fields.nn.grid_reference import (
    ADDRESSING,
    GRID_TYPES,
    INTERPOLATIONS,
    MAX_ENTRIES,
    PRIMES,
    GridLayout,
    GridLevel,
    grid_layout,
    grid_reference,
)

logger = logging.getLogger("fields")

__all__ = [
    "ADDRESSING",
    "FEATURES_PER_LEVEL",
    "GRID_TYPES",
    "INTERPOLATIONS",
    "KERNEL_FEATURES",
    "MAX_ENTRIES",
    "PRIMES",
    "DenseGrid",
    "GridEncoding",
    "GridLayout",
    "GridLevel",
    "HashGrid",
    "TiledGrid",
    "canonical_choice",
    "grid_layout",
    "grid_reference",
]

FEATURES_PER_LEVEL = (1, 2, 4, 8)  # tiny-cuda-nn's choices
KERNEL_FEATURES = (1, 2, 4, 8, 16, 32)  # what the C++ kernels take (triplanes use 16/32)


class _GridCpu(torch.autograd.Function):
    """C++ forward and backward; a double backward differentiates the reference."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, params: torch.Tensor, layout: GridLayout) -> torch.Tensor:
        ctx.layout = layout
        ctx.save_for_backward(x, params)
        with scope("kernel:encoding forward"):
            return _ext.extension().grid_cpu_forward(x, params, *layout.kernel_args())

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        x, params = ctx.saved_tensors
        layout: GridLayout = ctx.layout
        need_x, need_p = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        if torch.is_grad_enabled():
            warn_once(
                "grid-double-backward",
                "GridEncoding(backend='cpu'): a higher-order derivative was requested; the C++ "
                "kernels compute first derivatives only, so this backward runs through the "
                "torch reference (correct, slower).",
            )
            inputs = [t for t, need in ((x, need_x), (params, need_p)) if need]
            y = grid_reference(x, params, layout)
            grads = iter(torch.autograd.grad(y, inputs, grad_out, create_graph=True))
            dx = next(grads) if need_x else None
            dp = next(grads) if need_p else None
            return dx, dp, None
        with scope("kernel:encoding backward"):
            dp, dx = _ext.extension().grid_cpu_backward(
                grad_out, x, params, *layout.kernel_args(), bool(need_p), bool(need_x)
            )
        return (dx if need_x else None), (dp if need_p else None), None


class _GridCpuGiven(torch.autograd.Function):
    """The C++ kernels' output `y` at `x`, computed earlier without gradients, joined to the
    graph: the backward is `_GridCpu`'s."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, params: torch.Tensor, y: torch.Tensor,
                layout: GridLayout) -> torch.Tensor:
        ctx.layout = layout
        ctx.save_for_backward(x, params)
        return y.view_as(y)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        dx, dp, _ = _GridCpu.backward(ctx, grad_out)
        return dx, dp, None, None


def canonical_choice(owner: str, key: str, value: object, choices: tuple[str, ...]) -> str:
    """`value` spelled as in `choices`, matched without regard to case; ValueError naming
    `owner`, `key` and the choices otherwise."""
    match = {c.lower(): c for c in choices}.get(str(value).lower())
    if match is None or not isinstance(value, str):
        raise ValueError(f"{owner}: {key!r} must be one of {', '.join(choices)}, got {value!r}")
    return match


class GridEncoding(InputEncoding):
    """A multiresolution hash / dense / tiled grid (see the module docstring)."""

    otype = "Grid"

    def __init__(
        self,
        n_input_dims: int,
        n_levels: int = 16,
        n_features_per_level: int = 2,
        log2_hashmap_size: int = 19,
        base_resolution: int = 16,
        per_level_scale: float = 2.0,
        interpolation: str = "Linear",
        grid_type: str = "Hash",
        *,
        backend: str = "auto",
        init_scale: float = 1e-4,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
        _allow_wide: bool = False,
    ) -> None:
        owner = type(self).__name__
        _positive_int(owner, "n_input_dims", n_input_dims, 4)
        self.n_levels_ = _positive_int(owner, "n_levels", n_levels, 64)
        allowed = KERNEL_FEATURES if _allow_wide else FEATURES_PER_LEVEL
        if n_features_per_level not in allowed or isinstance(n_features_per_level, bool):
            raise ValueError(
                f"{owner}: 'n_features_per_level' must be one of "
                f"{', '.join(map(str, allowed))}, got {n_features_per_level!r}"
            )
        self.log2_hashmap_size = _positive_int(owner, "log2_hashmap_size", log2_hashmap_size, 30)
        self.base_resolution = _positive_int(owner, "base_resolution", base_resolution)
        self.per_level_scale = _finite(owner, "per_level_scale", per_level_scale, positive=True)
        if self.per_level_scale < 1.0:
            raise ValueError(f"{owner}: 'per_level_scale' must be >= 1, got {per_level_scale!r}")
        self.interpolation = canonical_choice(owner, "interpolation", interpolation, INTERPOLATIONS)
        self.grid_type = canonical_choice(owner, "type", grid_type, GRID_TYPES)
        check_backend(owner, backend)
        self.n_features_per_level = n_features_per_level
        super().__init__(n_input_dims, n_levels * n_features_per_level)
        self.layout = grid_layout(
            n_input_dims,
            n_levels,
            n_features_per_level,
            self.log2_hashmap_size,
            self.base_resolution,
            self.per_level_scale,
            self.interpolation,
            self.grid_type,
            owner,
        )
        self.backend = backend
        if backend == "cpu" and cpu_kernels_reason():
            raise ValueError(f"{owner}: backend='cpu' is unavailable: {cpu_kernels_reason()}")
        # kernels to use instead of fields._C's CUDA ones (the tests' CPU emulator)
        self.kernels_override: grid_cuda.GridKernels | None = None
        if backend == "cuda" and grid_cuda.cuda_kernels() is None:
            raise ValueError(f"{owner}: backend='cuda' is unavailable: {NO_CUDA_KERNELS}")
        self.last_backend: str | None = None
        self.init_scale = init_scale
        params = torch.empty(self.layout.n_params, dtype=dtype, device=device)
        if params.device.type == "cpu" and params.nbytes >= 2**22 and _ext.available():
            _ext.extension().advise_huge_pages(params)  # before the first touch
        self.params = nn.Parameter(params)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        with torch.no_grad():
            self.params.uniform_(-self.init_scale, self.init_scale)

    # -- levels --
    @property
    def n_levels(self) -> int:
        return self.n_levels_

    def output_levels(self) -> torch.Tensor:
        return torch.arange(self.n_levels_).repeat_interleave(self.n_features_per_level)

    def level_table(self, level: int) -> torch.Tensor:
        """(entries, n_features) view of one level's table."""
        lv = self.layout.levels[level]
        nf = self.n_features_per_level
        return self.params[lv.offset * nf : (lv.offset + lv.size) * nf].view(lv.size, nf)

    # -- evaluation --
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        y = grid_reference(x.reshape(-1, self.n_input_dims), self.params, self.layout)
        return y.reshape(*lead, self.n_output_dims)

    def _cpu_reason(self, x: torch.Tensor) -> str:
        if cpu_kernels_reason():
            return cpu_kernels_reason()
        if x.device.type != "cpu" or self.params.device.type != "cpu":
            return f"the input is on {x.device}"
        if x.dtype != torch.float32 or self.params.dtype != torch.float32:
            return f"the input or table is not float32 (input {x.dtype})"
        return ""

    @property
    def cuda_kernels(self) -> grid_cuda.GridKernels | None:
        return self.kernels_override or grid_cuda.cuda_kernels()

    def _cuda_reason(self, x: torch.Tensor) -> str:
        kernels = self.cuda_kernels
        if kernels is None:
            return NO_CUDA_KERNELS
        if x.device.type != "cuda" and not getattr(kernels, "host_memory", False):
            return f"the input is on {x.device}"
        if self.params.device != x.device:
            return f"the table is on {self.params.device}, the input on {x.device}"
        return grid_cuda.unsupported(self.n_features_per_level, self.n_levels_, self.params)

    def select_backend(self, x: torch.Tensor) -> str:
        """The backend ("torch", "cpu" or "cuda") a call with input `x` (N, D) runs on
        (`fields.nn.backend.select_backend`)."""
        return select_backend(type(self).__name__, self.backend, x,
                              cpu_reason=lambda: self._cpu_reason(x),
                              cuda_reason=lambda auto: self._cuda_reason(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        backend = self.select_backend(x)
        if backend != self.last_backend:
            logger.info("%s: running on backend %r", type(self).__name__, backend)
            self.last_backend = backend
        if backend == "torch":
            return self.reference(x)
        lead = x.shape[:-1]
        x2 = x.reshape(-1, self.n_input_dims)
        if backend == "cuda":
            xf = x2.float().contiguous()
            if torch.is_grad_enabled() and (x2.requires_grad or self.params.requires_grad):
                y = grid_cuda.GridCuda.apply(xf, self.params, self.layout, self.cuda_kernels)
            else:
                y = self.cuda_kernels.grid_cuda_forward(
                    xf, self.params.detach(), *self.layout.kernel_args(),
                    self.params.dtype == torch.float16, stream(xf))
            return self._mask(y.reshape(*lead, self.n_output_dims), x)
        if torch.is_grad_enabled() and (x2.requires_grad or self.params.requires_grad):
            y = _GridCpu.apply(x2, self.params, self.layout)
        else:
            y = self._cpu_forward(x2)
        return self._mask(y.reshape(*lead, self.n_output_dims), x)

    def kernel_output(self, x: torch.Tensor) -> torch.Tensor | None:
        """The C++ kernel's output at `x` (N, D) without the level mask and without gradients,
        to hand back to `forward_given` for the same `x`; None when this call would not run
        on the CPU kernels."""
        if self.select_backend(x) != "cpu":
            return None
        with torch.no_grad():
            return self._cpu_forward(x.reshape(-1, self.n_input_dims))

    def _cpu_forward(self, x2: torch.Tensor) -> torch.Tensor:
        """The C++ kernel's output at x2 (N, D), outside the graph, without the level mask."""
        with scope("kernel:encoding forward"):
            return _ext.extension().grid_cpu_forward(
                x2.contiguous(), self.params.detach(), *self.layout.kernel_args())

    def forward_given(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """`forward(x)` from `y = kernel_output(x)` computed earlier (a pass that picked
        which points to train on): the same values and, when gradients are on, the same
        backward, without evaluating the grid again. `x` (N, D), `y` (N, n_output_dims)."""
        x2 = self._check_input(x).reshape(-1, self.n_input_dims)
        if y.shape != (x2.shape[0], self.n_output_dims):
            raise ValueError(f"{type(self).__name__}.forward_given: y must be "
                             f"({x2.shape[0]}, {self.n_output_dims}), got {tuple(y.shape)}")
        if torch.is_grad_enabled() and (x2.requires_grad or self.params.requires_grad):
            y = _GridCpuGiven.apply(x2.contiguous(), self.params, y, self.layout)
        return self._mask(y.reshape(*x.shape[:-1], self.n_output_dims), x)

    def config_values(self) -> dict[str, Any]:
        return {
            "type": self.grid_type,
            "n_levels": self.n_levels_,
            "n_features_per_level": self.n_features_per_level,
            "log2_hashmap_size": self.log2_hashmap_size,
            "base_resolution": self.base_resolution,
            "per_level_scale": self.per_level_scale,
            "interpolation": self.interpolation,
        }


class HashGrid(GridEncoding):
    """`GridEncoding` with type "Hash" (tiny-cuda-nn "HashGrid")."""

    def __init__(self, n_input_dims: int, **kwargs: Any) -> None:
        super().__init__(n_input_dims, grid_type="Hash", **kwargs)


class DenseGrid(GridEncoding):
    """`GridEncoding` with type "Dense" (tiny-cuda-nn "DenseGrid")."""

    def __init__(self, n_input_dims: int, **kwargs: Any) -> None:
        super().__init__(n_input_dims, grid_type="Dense", **kwargs)


class TiledGrid(GridEncoding):
    """`GridEncoding` with type "Tiled" (tiny-cuda-nn "TiledGrid")."""

    def __init__(self, n_input_dims: int, **kwargs: Any) -> None:
        super().__init__(n_input_dims, grid_type="Tiled", **kwargs)
