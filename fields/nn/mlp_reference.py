"""The MLP every `FusedMLP` backend computes, in plain torch ops (the reference), and its
static description (`MLPSpec`), shared by the backends' modules.

`mlp_reference` is the ``"torch"`` backend, the fallback of the kernels for derivatives they do
not give, and what the tests compare every kernel with.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from fields.nn.activations import apply_activation


@dataclass(frozen=True)
class MLPSpec:
    """Static description of an MLP, passed to the kernels."""

    n_in: int
    n_out: int
    width: int
    depth: int
    activation: str
    output_activation: str
    bias: bool
    omega0: float

    @property
    def n_layers(self) -> int:
        """Weight matrices: depth + 1."""
        return self.depth + 1

    def layer_dims(self) -> list[tuple[int, int]]:
        """(in_dim, out_dim) of each of the depth + 1 layers."""
        dims = [self.n_in] + [self.width] * self.depth + [self.n_out]
        return list(itertools.pairwise(dims))


def mlp_reference(
    x: torch.Tensor,
    weights: Sequence[torch.Tensor],
    biases: Sequence[torch.Tensor] | None,
    activation: str,
    output_activation: str,
    omega0: float = 30.0,
) -> torch.Tensor:
    """The MLP in plain torch ops.

    Args:
        x: (N, n_in) inputs.
        weights: depth + 1 matrices, weights[l] of shape (out_dim, in_dim).
        biases: None or depth + 1 vectors of shape (out_dim,).
        activation, output_activation: canonical activation names.
        omega0: frequency of the Sine activation.
    Returns:
        (N, n_out) outputs.
    """
    h = x
    last = len(weights) - 1
    for i, w in enumerate(weights):
        h = torch.nn.functional.linear(h, w, biases[i] if biases else None)
        h = apply_activation(output_activation if i == last else activation, h, omega0)
    return h
