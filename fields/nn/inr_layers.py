"""Networks of implicit neural representations that are not a `FusedMLP` with one real
activation: complex Gabor wavelets (WIRE), the low-pass / band-pass split of complex-wavelet
INRs, Fourier Analysis Network layers (FAN) and the learnable Chebyshev activation of SL²A-INR.

Every network maps (..., n_input_dims) coordinates in [-1, 1] to (..., n_output_dims) and is
plain torch (any derivative order). Sine, FINER and Gaussian activations need none of this:
they are `FusedMLP` activations (`fields.nn.activations`), fused on the CPU backend.

- `GaborNet` (WIRE, Saragadam et al. CVPR 2023): complex layers z = W h + b with the complex
  Gabor wavelet psi(z) = exp(i omega0 z) exp(-|s0 z|^2); the first layer takes real
  coordinates; the output is the real part of a last complex linear layer.
- `WaveletSplitNet` (Roddenberry, Saragadam, de Hoop, Baraniuk, ICLR 2024): their prescription
  of decoupling the low-pass and band-pass parts of the approximation: a smooth low-pass network
  (Gaussian activation, wide) plus a band-pass complex Gabor network, added.
- `FANNet` (Dong et al. 2024): each layer outputs [cos(W_p h), sin(W_p h), gelu(W_g h + b)],
  a quarter of its width for each periodic part and half for the gated part; a last linear
  layer.
- `ChebyshevKANLayer` + `SL2ANet` (Heidari et al. ICCV 2025): the first layer is a learnable
  activation per input-output pair, psi_ij(x_i) = sum_k c_ijk T_k(x_i) (Chebyshev polynomials
  up to degree K), summed over inputs; a ReLU MLP follows whose hidden layers are multiplied
  elementwise by the first layer's (projected) features, the paper's fusion by modulation.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def _check(name: str, value: object, minimum: float = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < minimum:
        raise ValueError(f"{name}: expected a number >= {minimum}, got {value!r}")


def gabor_wavelet(z: torch.Tensor, omega0: float, s0: float) -> torch.Tensor:
    """The complex Gabor wavelet exp(i omega0 z) exp(-|s0 z|^2) of a real or complex z."""
    if not z.is_complex():
        z = torch.complex(z, torch.zeros_like(z))
    return torch.exp(1j * omega0 * z - (s0 * z).abs().square())


class GaborNet(nn.Module):
    """WIRE: complex Gabor wavelet activations. `width` counts complex features (each holds
    two real numbers, so WIRE's papers shrink it by sqrt(2) at equal parameter count).

    The complex layers are stored and computed as real tensors (real and imaginary parts of
    weights and features; one real GEMM of twice the width per layer), which is several times
    faster on the CPU than torch's complex matrix products; `reference` is the same network
    in complex arithmetic, for tests. Psi(a + ib) = exp(-omega0 b - s0^2 (a^2 + b^2))
    (cos(omega0 a) + i sin(omega0 a)).
    """

    def __init__(self, n_input_dims: int, n_output_dims: int, width: int = 180,
                 depth: int = 3, omega0: float = 20.0, s0: float = 10.0) -> None:
        super().__init__()
        for name, v in (("width", width), ("depth", depth), ("n_input_dims", n_input_dims),
                        ("n_output_dims", n_output_dims)):
            _check(f"GaborNet.{name}", v)
        _check("GaborNet.omega0", omega0, 0)
        _check("GaborNet.s0", s0, 0)
        self.omega0, self.s0 = float(omega0), float(s0)
        self.first = nn.Linear(n_input_dims, width)  # real coordinates in, real weights
        # complex layers: weight (out, in) and bias (out) as real and imaginary parts
        self.weights_re = nn.ParameterList()
        self.weights_im = nn.ParameterList()
        self.biases_re = nn.ParameterList()
        self.biases_im = nn.ParameterList()
        for i, n_out in enumerate([width] * (depth - 1) + [n_output_dims]):
            bound = 1.0 / math.sqrt(2.0 * width)  # nn.Linear's bound, split over two parts
            n_im = 0 if i == depth - 1 else n_out  # only the real part of the output is used
            for plist, shape in ((self.weights_re, (n_out, width)),
                                 (self.weights_im, (n_out, width)),
                                 (self.biases_re, (n_out,)), (self.biases_im, (n_im,))):
                plist.append(nn.Parameter(torch.empty(shape).uniform_(-bound, bound)))
        self.n_input_dims, self.n_output_dims = n_input_dims, n_output_dims

    def _activation(self, a: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
        """[Re, Im] of psi(a + ib), concatenated on the last dim. The envelope is exactly 0
        where it is below exp(-60) ~ 1e-26: smaller values become denormal floats in the
        products that follow, which are several times slower on x86 (a WIRE step on a
        256 x 256 image took 1.5 s instead of 0.3 s)."""
        if b is None:
            e = -(self.s0 * a).square()
        else:
            e = -self.omega0 * b - self.s0 * self.s0 * (a.square() + b.square())
        amp = torch.where(e > -60.0, torch.exp(e), torch.zeros((), dtype=e.dtype))
        phase = self.omega0 * a
        return torch.cat((amp * torch.cos(phase), amp * torch.sin(phase)), dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self._activation(self.first(x), None)  # (..., 2 width): [Re | Im]
        last = len(self.weights_re) - 1
        for i, (wr, wi, br, bi) in enumerate(zip(self.weights_re, self.weights_im,
                                                 self.biases_re, self.biases_im, strict=True)):
            if i == last:  # the real part of the last complex layer
                return h @ torch.cat((wr, -wi), dim=1).T + br
            big = torch.cat((torch.cat((wr, -wi), dim=1), torch.cat((wi, wr), dim=1)), dim=0)
            z = h @ big.T + torch.cat((br, bi))
            n = wr.shape[0]
            h = self._activation(z[..., :n], z[..., n:])
        raise AssertionError("unreachable")

    def reference(self, x: torch.Tensor) -> torch.Tensor:
        """The same network in complex arithmetic (`gabor_wavelet`)."""
        h = gabor_wavelet(self.first(x), self.omega0, self.s0)
        for wr, wi, br, bi in zip(self.weights_re, self.weights_im, self.biases_re,
                                  self.biases_im, strict=True):
            h = h @ torch.complex(wr, wi).T + (torch.complex(br, bi) if bi.numel() else br)
            if wr is not self.weights_re[-1]:
                h = gabor_wavelet(h, self.omega0, self.s0)
        return h.real


class WaveletSplitNet(nn.Module):
    """Low-pass plus band-pass: out = lowpass(x) + bandpass(x), the low-pass part an MLP with a
    wide Gaussian activation (smooth, no oscillation), the band-pass part a `GaborNet`."""

    def __init__(self, n_input_dims: int, n_output_dims: int, width: int = 128,
                 depth: int = 3, omega0: float = 20.0, s0: float = 10.0,
                 lowpass_width: int = 64, lowpass_scale: float = 1.0) -> None:
        super().__init__()
        from fields.nn.mlp import FusedMLP

        self.lowpass = FusedMLP(n_input_dims, n_output_dims, lowpass_width, 2, "Gaussian",
                                bias=True, omega0=lowpass_scale)
        self.bandpass = GaborNet(n_input_dims, n_output_dims, width, depth, omega0, s0)
        self.n_input_dims, self.n_output_dims = n_input_dims, n_output_dims

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lowpass(x) + self.bandpass(x)


class FANLayer(nn.Module):
    """[cos(W_p h), sin(W_p h), gelu(W_g h + b)]: width // 4 cosines, as many sines, and the
    rest gated."""

    def __init__(self, n_in: int, width: int) -> None:
        super().__init__()
        _check("FANLayer.width", width, 4)
        self.n_periodic = width // 4
        self.periodic = nn.Linear(n_in, self.n_periodic, bias=False)
        self.gated = nn.Linear(n_in, width - 2 * self.n_periodic)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        p = self.periodic(h)
        return torch.cat((torch.cos(p), torch.sin(p), F.gelu(self.gated(h))), dim=-1)


class FANNet(nn.Module):
    """Fourier Analysis Network: `depth` FAN layers of `width` outputs, then a linear layer."""

    def __init__(self, n_input_dims: int, n_output_dims: int, width: int = 256,
                 depth: int = 3, input_scale: float = 1.0) -> None:
        super().__init__()
        _check("FANNet.depth", depth)
        self.input_scale = float(input_scale)
        dims = [n_input_dims] + [width] * depth
        self.layers = nn.ModuleList(FANLayer(a, width) for a in dims[:-1])
        self.last = nn.Linear(width, n_output_dims)
        self.n_input_dims, self.n_output_dims = n_input_dims, n_output_dims

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x * self.input_scale
        for layer in self.layers:
            h = layer(h)
        return self.last(h)


def chebyshev_basis(x: torch.Tensor, degree: int) -> torch.Tensor:
    """(..., degree + 1): T_0(x) .. T_degree(x) by the recurrence T_{k+1} = 2 x T_k - T_{k-1}
    (stable on [-1, 1], and differentiable there, unlike cos(k arccos x))."""
    out = [torch.ones_like(x), x]
    for _ in range(degree - 1):
        out.append(2.0 * x * out[-1] - out[-2])
    return torch.stack(out[: degree + 1], dim=-1)


class ChebyshevKANLayer(nn.Module):
    """out_j = sum_i sum_k c_ijk T_k(x_i): a learnable activation for every input-output pair,
    on inputs in [-1, 1] (clamped)."""

    def __init__(self, n_in: int, n_out: int, degree: int = 32) -> None:
        super().__init__()
        _check("ChebyshevKANLayer.degree", degree)
        self.degree = int(degree)
        # coefficients shrinking like 1/(k+1): a smooth start that can learn high orders
        scale = 1.0 / (n_in * torch.arange(1, degree + 2, dtype=torch.float32))
        self.coefficients = nn.Parameter(torch.randn(n_in, degree + 1, n_out) * scale[:, None])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        basis = chebyshev_basis(x.clamp(-1.0, 1.0), self.degree)  # (..., n_in, K + 1)
        return torch.einsum("...ik,iko->...o", basis, self.coefficients)


class SL2ANet(nn.Module):
    """SL²A-INR: a Chebyshev learnable-activation layer, then a ReLU MLP whose hidden layers
    are modulated (multiplied) by a linear projection of the first layer's features."""

    def __init__(self, n_input_dims: int, n_output_dims: int, width: int = 256,
                 depth: int = 3, degree: int = 32) -> None:
        super().__init__()
        _check("SL2ANet.depth", depth)
        self.activation = ChebyshevKANLayer(n_input_dims, width, degree)
        self.layers = nn.ModuleList(nn.Linear(width, width) for _ in range(depth - 1))
        self.modulation = nn.ModuleList(nn.Linear(width, width) for _ in range(depth - 1))
        self.last = nn.Linear(width, n_output_dims)
        for lin in self.layers:
            nn.init.kaiming_uniform_(lin.weight, a=0.0, nonlinearity="relu")
        self.n_input_dims, self.n_output_dims = n_input_dims, n_output_dims

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.activation(x)
        h = a
        for layer, mod in zip(self.layers, self.modulation, strict=True):
            h = F.relu(layer(h)) * mod(a)
        return self.last(h)


__all__ = [
    "ChebyshevKANLayer",
    "FANLayer",
    "FANNet",
    "GaborNet",
    "SL2ANet",
    "WaveletSplitNet",
    "chebyshev_basis",
    "gabor_wavelet",
]
