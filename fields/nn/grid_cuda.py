"""The Python side of the CUDA grid encoding (`csrc/kernels/grid_cuda.cu`): the autograd
function and the contract its kernels meet.

Inputs are float32; the table is float32 or float16 (the "fp16 table" option: the output is
then float16 too, as tiny-cuda-nn gives it); interpolation and accumulation are float32; the
table gradient is accumulated in float32 (atomics) and returned in the table's dtype. A second
derivative (``create_graph=True``) differentiates the torch reference, with a warning.

`GridKernels` is what the autograd function calls: `fields._C` on a CUDA build, or the CPU
emulator of the same kernels in the tests (`tests/cuda_emulator.py`).
"""

from __future__ import annotations

from typing import Protocol

import torch

from fields.nn import backend
from fields.nn.backend import stream as _stream
from fields.nn.backend import warn_once
from fields.nn.grid_reference import GridLayout, grid_reference

KERNEL_FEATURES = (1, 2, 4, 8)
MAX_LEVELS = 64


class GridKernels(Protocol):
    """The kernels' contract: `kernel_args` are GridLayout.kernel_args() (scales, meta,
    n_features, interpolation); `stream` the cudaStream_t to launch on, as an integer."""

    def grid_cuda_forward(self, x: torch.Tensor, params: torch.Tensor, scales: list[float],
                          meta: list[int], n_features: int, interpolation: int, out16: bool,
                          stream: int) -> torch.Tensor:
        """x (N, D) float32 -> (N, n_levels * n_features) float32, or float16 with out16."""
        ...

    def grid_cuda_backward(self, dy: torch.Tensor, x: torch.Tensor, params: torch.Tensor,
                           scales: list[float], meta: list[int], n_features: int,
                           interpolation: int, need_params: bool, need_dx: bool,
                           stream: int) -> list[torch.Tensor]:
        """dy (N, n_levels * n_features) -> [dparams float32 (empty unless need_params),
        dx float32 (empty unless need_dx)]."""
        ...


def cuda_kernels() -> GridKernels | None:
    """`fields._C` when it was built with the CUDA kernels, else None."""
    return backend.cuda_kernels()


def unsupported(n_features: int, n_levels: int, params: torch.Tensor) -> str:
    """Why the kernels cannot run this grid ('' when they can)."""
    if n_features not in KERNEL_FEATURES:
        return f"{n_features} features per level (the CUDA kernels take 1, 2, 4 or 8)"
    if n_levels > MAX_LEVELS:
        return f"{n_levels} levels (the CUDA kernels take up to {MAX_LEVELS})"
    if params.dtype not in (torch.float32, torch.float16):
        return f"a {params.dtype} table (the CUDA kernels take float32 or float16)"
    return ""


class GridCuda(torch.autograd.Function):
    """``apply(x (N, D) float32, params, layout, kernels)`` -> (N, n_levels * n_features)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, params: torch.Tensor, layout: GridLayout,
                kernels: GridKernels) -> torch.Tensor:
        ctx.layout, ctx.kernels = layout, kernels
        ctx.save_for_backward(x, params)
        return kernels.grid_cuda_forward(x, params, *layout.kernel_args(),
                                         params.dtype == torch.float16, _stream(x))

    @staticmethod
    def backward(ctx, dy: torch.Tensor):
        x, params = ctx.saved_tensors
        need_x, need_p = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        if torch.is_grad_enabled():
            warn_once("grid-cuda-double-backward",
                       "GridEncoding(backend='cuda'): a higher-order derivative was requested; "
                       "it runs through the torch reference (correct, slower).")
            inputs = [t for t, need in ((x, need_x), (params, need_p)) if need]
            y = grid_reference(x, params, ctx.layout).to(dy.dtype)
            grads = iter(torch.autograd.grad(y, inputs, dy, create_graph=True))
            return (next(grads) if need_x else None, next(grads) if need_p else None, None, None)
        if dy.dtype not in (torch.float32, torch.float16):
            dy = dy.float()
        dp, dx = ctx.kernels.grid_cuda_backward(dy.contiguous(), x, params,
                                                *ctx.layout.kernel_args(), bool(need_p),
                                                bool(need_x), _stream(x))
        return (dx if need_x else None, dp.to(params.dtype) if need_p else None, None, None)
