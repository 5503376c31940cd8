"""Activation functions shared by every MLP backend.

The names follow tiny-cuda-nn (`"None"`, `"ReLU"`, ...) and are matched case-insensitively.
The integer ids are the ones the C++ kernels use (`csrc/kernels/mlp_cpu.h`, `Activation`).

Definitions (z is the pre-activation):

| name        | act(z)                          |
|-------------|---------------------------------|
| None        | z                               |
| ReLU        | max(z, 0)                       |
| LeakyReLU   | z if z > 0 else 0.01 z          |
| Softplus    | log(1 + exp(z)), z above 20     |
| Sigmoid     | 1 / (1 + exp(-z))               |
| Tanh        | tanh(z)                         |
| Exponential | exp(z)                          |
| SiLU        | z sigmoid(z)                    |
| Sine        | sin(omega0 z)  (SIREN)          |
| Squareplus  | (z + sqrt(z^2 + 4)) / 2         |
| Gaussian    | exp(-(omega0 z)^2)              |
| Finer       | sin(omega0 (|z| + 1) z)  (FINER)|

omega0 is the MLP's one frequency parameter: SIREN's omega_0 for Sine and Finer, the inverse
width of the Gaussian (exp(-z^2 / (2 sigma^2)) is omega0 = 1 / (sigma sqrt(2))).
"""

from __future__ import annotations

import difflib

import torch
import torch.nn.functional as F

ACTIVATIONS: tuple[str, ...] = (
    "None",
    "ReLU",
    "LeakyReLU",
    "Softplus",
    "Sigmoid",
    "Tanh",
    "Exponential",
    "SiLU",
    "Sine",
    "Squareplus",
    "Gaussian",
    "Finer",
)
ACTIVATION_IDS: dict[str, int] = {name: i for i, name in enumerate(ACTIVATIONS)}
LEAKY_SLOPE = 0.01
_BY_LOWER = {name.lower(): name for name in ACTIVATIONS}


def canonical_activation(name: str, what: str = "activation") -> str:
    """Returns the canonical spelling of an activation name; ValueError for unknown names."""
    if not isinstance(name, str):
        raise ValueError(f"{what} must be a string naming an activation, got {name!r}")
    found = _BY_LOWER.get(name.lower())
    if found is None:
        close = difflib.get_close_matches(name.lower(), list(_BY_LOWER), n=1)
        hint = f" (did you mean {_BY_LOWER[close[0]]!r}?)" if close else ""
        raise ValueError(f"unknown {what} {name!r}{hint}; expected one of {', '.join(ACTIVATIONS)}")
    return found


def apply_activation(name: str, z: torch.Tensor, omega0: float = 30.0) -> torch.Tensor:
    """act(z) in plain torch ops (any dtype, any derivative order). `name` must be canonical."""
    if name == "None":
        return z
    if name == "ReLU":
        return F.relu(z)
    if name == "LeakyReLU":
        return F.leaky_relu(z, LEAKY_SLOPE)
    if name == "Softplus":
        return F.softplus(z, beta=1.0, threshold=20.0)
    if name == "Sigmoid":
        return torch.sigmoid(z)
    if name == "Tanh":
        return torch.tanh(z)
    if name == "Exponential":
        return torch.exp(z)
    if name == "SiLU":
        return F.silu(z)
    if name == "Sine":
        return torch.sin(omega0 * z)
    if name == "Squareplus":
        return 0.5 * (z + torch.sqrt(z * z + 4.0))
    if name == "Gaussian":
        return torch.exp(-(omega0 * z).square())
    if name == "Finer":
        return torch.sin(omega0 * (z.abs() + 1.0) * z)
    raise ValueError(f"unknown activation {name!r}")


class _TruncExp(torch.autograd.Function):
    """exp(x) whose gradient uses exp(min(x, 15)): instant-ngp's density activation, kept
    from blowing up where the log-density grows large."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return torch.exp(x)

    @staticmethod
    def backward(ctx, g: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        return g * torch.exp(x.clamp(max=15.0))


def trunc_exp(x: torch.Tensor) -> torch.Tensor:
    """exp(x) whose gradient uses exp(min(x, 15)), so that large densities do not explode
    the backward pass (instant-ngp's density activation); any shape."""
    return _TruncExp.apply(x)
