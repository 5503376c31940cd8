"""The Python side of the CUDA batched MLP (`csrc/kernels/batched_mlp_cuda.cu`): the contract
its kernels meet and when they can run.

Everything is float32 (the tiny networks of KiloNeRF gain nothing from tensor cores at width
32: a row per thread, activations in registers). Widths, inputs and outputs up to
`MAX_DIM`, depth up to `MAX_DEPTH`, any activation of `fields.nn.activations`. First
derivatives (inputs, weights, biases); a second derivative differentiates the torch
reference, with a warning. The weight gradients are reduced per network inside the kernel in
a fixed order (deterministic, no atomics).

`BatchedKernels` is what `BatchedMLP` calls: `fields._C` on a CUDA build, or the CPU emulator
of the same kernels in the tests (`tests/cuda_emulator.py`).
"""

from __future__ import annotations

from typing import Protocol

import torch

from fields.nn import backend
from fields.nn.mlp_reference import MLPSpec

MAX_DIM = 64
MAX_DEPTH = 8


class BatchedKernels(Protocol):
    """The kernels' contract. x (N, n_in) float32 rows grouped by network, offsets (nets + 1,)
    int64 (network c's rows offsets[c]:offsets[c + 1]), weights[l] (nets, out, in), biases[l]
    (nets, out) or an empty list; `stream` the cudaStream_t, as an integer."""

    def batched_mlp_cuda_forward(self, x: torch.Tensor, offsets: torch.Tensor,
                                 weights: list[torch.Tensor], biases: list[torch.Tensor],
                                 width: int, activation: int, output_activation: int,
                                 omega: float, save: bool, stream: int) -> list[torch.Tensor]:
        """[y (N, n_out)], or with `save` [y, z]: z the pre-activations backward takes."""
        ...

    def batched_mlp_cuda_backward(self, dy: torch.Tensor, x: torch.Tensor,
                                  offsets: torch.Tensor, weights: list[torch.Tensor],
                                  has_bias: bool, z: torch.Tensor, width: int, activation: int,
                                  output_activation: int, omega: float, need_dx: bool,
                                  stream: int) -> list[torch.Tensor]:
        """[dx (N, n_in), or empty unless need_dx, dweights..., dbiases...]."""
        ...


def cuda_kernels() -> BatchedKernels | None:
    """`fields._C` when it was built with the CUDA kernels (the batched ones among them), else
    None."""
    kernels = backend.cuda_kernels()
    return kernels if hasattr(kernels, "batched_mlp_cuda_forward") else None


def unsupported(spec: MLPSpec) -> str:
    """Why the kernels cannot run networks of this shape ('' when they can)."""
    too_wide = [name for name, v in (("width", spec.width), ("n_in", spec.n_in),
                                     ("n_out", spec.n_out)) if v > MAX_DIM]
    if too_wide:
        return f"{', '.join(too_wide)} above {MAX_DIM} (the CUDA batched kernels' limit)"
    if spec.depth > MAX_DEPTH:
        return f"depth {spec.depth} above {MAX_DEPTH} (the CUDA batched kernels' limit)"
    return ""
