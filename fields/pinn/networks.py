"""Networks for PINNs: input embeddings and the architectures from the literature.

A network *spec* (`MLP`, `Gaussians`) is a small description that `solve` builds once it knows
the input and output sizes: ``spec.build(n_in, n_out)``. Any ``nn.Module`` mapping the embedded
inputs (N, n_in) to (N, n_out) can be given instead.

- `Embedding`: maps raw coordinates to the network's inputs: each coordinate scaled to
  [-1, 1]; a periodic coordinate replaced by ``cos/sin(2 pi k (x - lo) / P)``, k = 1..K (every
  derivative periodic: the periodic condition holds exactly); optional random Fourier features
  ``[cos(2 pi B x), sin(2 pi B x)]``, ``B ~ N(0, sigma^2)`` (Tancik et al. 2020; Wang et al.
  2021 for PINNs). A scale per coordinate (``{"x": 5, "t": 0}``) draws each coordinate's
  row of B with its own sigma; a coordinate with sigma 0 (or left out) takes no part in the
  features and is passed on as it is, beside them (spatio-temporal features, Wang, Wang &
  Perdikaris 2021: a fast mode in space, a slow one in time).
- `MLP`: tanh / sin / gelu / silu / ``"wavelet"`` activations (the learnable
  ``w1 sin(x) + w2 cos(x)`` of PINNsFormer, Zhao et al. 2024); ``modified=True`` is the modified
  MLP of Wang, Teng & Perdikaris (2021) (two encoders gate every hidden layer);
  ``factorized=True`` the random weight factorisation ``W = diag(exp(s)) V`` (Wang et al. 2022);
  ``first_scale=k`` makes the first layer ``sin(k (W x + b))`` (used by multi-stage training
  to start at a residual's dominant frequency); ``backend="fused"`` runs the same MLP on
  `fields.nn.FusedMLP`.
- `Gaussians`: physics-informed Gaussians (Kang et al. 2024): ``sum_i f_i exp(-|(x - mu_i) /
  sigma_i|^2 / 2)`` with learnable centres, widths and feature vectors, then a small MLP.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from fields.pinn.geometry import Box

__all__ = ["ACTIVATIONS", "MLP", "Embedding", "Gaussians", "NetworkSpec", "Wavelet"]

ACTIVATIONS = ("tanh", "sin", "wavelet", "gelu", "silu")


class Wavelet(nn.Module):
    """``w1 sin(x) + w2 cos(x)`` with learnable scalars (PINNsFormer's activation)."""

    def __init__(self) -> None:
        super().__init__()
        self.w1 = nn.Parameter(torch.ones(()))
        self.w2 = nn.Parameter(torch.ones(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w1 * torch.sin(x) + self.w2 * torch.cos(x)


class _Sin(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sin(x)


def _activation(name: str) -> nn.Module:
    if name == "tanh":
        return nn.Tanh()
    if name == "sin":
        return _Sin()
    if name == "wavelet":
        return Wavelet()
    if name == "gelu":
        return nn.GELU()
    if name == "silu":
        return nn.SiLU()
    raise ValueError(f"unknown PINN activation {name!r}; expected one of {', '.join(ACTIVATIONS)}")


class Embedding(nn.Module):
    """Raw coordinates (N, dim) to network inputs (N, out_features); see the module doc."""

    def __init__(self, box: Box, periodic: dict[str, int] | None = None,
                 fourier: int = 0, fourier_sigma: float | dict[str, float] = 1.0,
                 seed: int = 0, dtype: torch.dtype = torch.float64) -> None:
        super().__init__()
        periodic = dict(periodic or {})
        for name in periodic:
            box.index(name)
        self.names = box.names
        self.register_buffer("lo", torch.as_tensor(box.lo, dtype=dtype))
        self.register_buffer("hi", torch.as_tensor(box.hi, dtype=dtype))
        self.plain = [i for i, n in enumerate(box.names) if n not in periodic]
        self.periodic = [(box.index(n), int(k)) for n, k in periodic.items()]
        out = len(self.plain) + sum(2 * k for _, k in self.periodic)
        self.fourier = int(fourier)
        self.keep: list[int] = []  # input columns passed on beside the Fourier features
        if self.fourier > 0:
            g = torch.Generator().manual_seed(seed + 101)
            B = torch.randn(out, self.fourier, generator=g, dtype=dtype)
            if isinstance(fourier_sigma, dict):
                for name in fourier_sigma:
                    box.index(name)  # a ValueError naming the coordinates
                # the input columns each coordinate gives, in forward's order
                cols = [box.names[i] for i in self.plain]
                for i, k in self.periodic:
                    cols += [box.names[i]] * (2 * k)
                scale = torch.tensor([float(fourier_sigma.get(n, 0.0)) for n in cols],
                                     dtype=dtype)
                self.keep = [j for j, sc in enumerate(scale.tolist()) if sc == 0.0]
                B = B * scale[:, None]
            else:
                B = B * float(fourier_sigma)
            self.register_buffer("B", B)
            out = 2 * self.fourier + len(self.keep)
        self.out_features = out

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        unit = (X - self.lo) / (self.hi - self.lo)  # [0, 1]
        parts = []
        if self.plain:
            parts.append(2.0 * unit[:, self.plain] - 1.0)
        for i, k in self.periodic:
            ks = torch.arange(1, k + 1, dtype=X.dtype, device=X.device)
            ang = 2.0 * math.pi * unit[:, i : i + 1] * ks
            parts += [torch.cos(ang), torch.sin(ang)]
        h = torch.cat(parts, 1) if len(parts) > 1 else parts[0]
        if self.fourier > 0:
            z = 2.0 * math.pi * h @ self.B
            h = torch.cat([torch.cos(z), torch.sin(z)] + ([h[:, self.keep]] if self.keep else []),
                          1)
        return h


class NetworkSpec:
    """Builds a network once the input and output sizes are known."""

    def build(self, n_in: int, n_out: int, dtype: torch.dtype = torch.float64,
              seed: int = 0) -> nn.Module:  # pragma: no cover - interface
        raise NotImplementedError

    def describe(self) -> str:
        return type(self).__name__


class _Linear(nn.Module):
    """A dense layer, optionally with random weight factorisation."""

    def __init__(self, n_in: int, n_out: int, factorized: bool, g: torch.Generator,
                 dtype: torch.dtype, gain: float = 1.0) -> None:
        super().__init__()
        std = gain * math.sqrt(2.0 / (n_in + n_out))  # Glorot normal
        w = torch.randn(n_out, n_in, generator=g, dtype=dtype) * std
        self.factorized = factorized
        if factorized:
            s = 1.0 + 0.1 * torch.randn(n_out, 1, generator=g, dtype=dtype)
            self.s = nn.Parameter(s)
            self.v = nn.Parameter(w / torch.exp(s))
        else:
            self.weight = nn.Parameter(w)
        self.bias = nn.Parameter(torch.zeros(n_out, dtype=dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = torch.exp(self.s) * self.v if self.factorized else self.weight
        return torch.addmm(self.bias, x, w.t())


class _MLP(nn.Module):
    def __init__(self, spec: MLP, n_in: int, n_out: int, dtype: torch.dtype, seed: int) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        f = spec.factorized
        self.has_first_scale = spec.first_scale is not None
        if self.has_first_scale:  # a buffer: it travels with the state dict
            self.register_buffer("first_scale", torch.tensor(float(spec.first_scale),
                                                             dtype=dtype))
        self.layers = nn.ModuleList()
        self.acts = nn.ModuleList()
        d = n_in
        for _ in range(spec.depth):
            self.layers.append(_Linear(d, spec.width, f, g, dtype))
            self.acts.append(_activation(spec.activation))
            d = spec.width
        self.out = _Linear(d, n_out, f, g, dtype)
        self.modified = spec.modified
        if self.modified:
            self.enc_u = _Linear(n_in, spec.width, f, g, dtype)
            self.enc_v = _Linear(n_in, spec.width, f, g, dtype)
            self.enc_act = _activation(spec.activation)
        if self.has_first_scale:
            with torch.no_grad():  # SIREN-style first layer: uniform(-1/n, 1/n) then scaled
                lin = self.layers[0]
                w = (torch.rand(lin.bias.shape[0], n_in, generator=g, dtype=dtype) * 2 - 1)
                if lin.factorized:
                    lin.v.copy_(w / torch.exp(lin.s))
                else:
                    lin.weight.copy_(w)
                lin.bias.copy_(torch.rand(lin.bias.shape, generator=g, dtype=dtype) * 2 - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.modified:
            u = self.enc_act(self.enc_u(x))
            v = self.enc_act(self.enc_v(x))
        h = x
        for k, (lin, act) in enumerate(zip(self.layers, self.acts, strict=True)):
            z = lin(h)
            if k == 0 and self.has_first_scale:
                h = torch.sin(self.first_scale * z)
            else:
                h = act(z)
            if self.modified:
                h = h * u + (1.0 - h) * v
        return self.out(h)


class _FusedWrap(nn.Module):
    def __init__(self, mlp: nn.Module) -> None:
        super().__init__()
        self.mlp = mlp

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(x)


@dataclass
class MLP(NetworkSpec):
    """A fully connected network: `depth` hidden layers of `width`; see the module doc."""

    width: int = 32
    depth: int = 4
    activation: str = "tanh"
    modified: bool = False
    factorized: bool = False
    first_scale: float | None = None
    backend: str = "torch"

    def __post_init__(self) -> None:
        if self.width < 1 or self.depth < 1:
            raise ValueError(f"MLP: width and depth must be >= 1, got {self.width}, {self.depth}")
        _activation(self.activation)
        if self.backend not in ("torch", "fused"):
            raise ValueError(f"MLP: backend must be 'torch' or 'fused', got {self.backend!r}")
        if self.backend == "fused" and (self.modified or self.factorized or self.first_scale
                                        or self.activation not in ("tanh", "sin")):
            raise ValueError("MLP(backend='fused') is a plain tanh or sin MLP (FusedMLP); "
                             "modified / factorized / first_scale / other activations need "
                             "backend='torch'")

    def build(self, n_in: int, n_out: int, dtype: torch.dtype = torch.float64,
              seed: int = 0) -> nn.Module:
        if self.backend == "fused":
            from fields.nn.mlp import FusedMLP

            torch.manual_seed(seed)
            act = "Tanh" if self.activation == "tanh" else "Sine"
            return _FusedWrap(FusedMLP(n_in, n_out, self.width, self.depth, act, bias=True,
                                       backend="auto", omega0=1.0, dtype=dtype))
        return _MLP(self, n_in, n_out, dtype, seed)

    def describe(self) -> str:
        kind = "modified MLP" if self.modified else "MLP"
        extra = " RWF" if self.factorized else ""
        return f"{kind} {self.depth}x{self.width} {self.activation}{extra}"


class _Gaussians(nn.Module):
    def __init__(self, spec: Gaussians, n_in: int, n_out: int, dtype: torch.dtype,
                 seed: int) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        # inputs are scaled to [-1, 1]: centres uniform there, widths ~ the spacing of a grid
        self.mu = nn.Parameter(torch.rand(spec.n, n_in, generator=g, dtype=dtype) * 2 - 1)
        spacing = 2.0 / spec.n ** (1.0 / n_in)
        self.log_sigma = nn.Parameter(torch.full((spec.n, n_in), math.log(spacing * spec.sigma),
                                                 dtype=dtype))
        self.features = nn.Parameter(torch.randn(spec.n, spec.features, generator=g,
                                                 dtype=dtype) * 0.1)
        self.mlp = _MLP(MLP(width=spec.width, depth=spec.depth, activation="tanh"),
                        spec.features, n_out, dtype, seed + 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = (x[:, None, :] - self.mu) / torch.exp(self.log_sigma)
        w = torch.exp(-0.5 * (z * z).sum(-1))  # (N, n)
        return self.mlp(w @ self.features)


@dataclass
class Gaussians(NetworkSpec):
    """Physics-informed Gaussians: `n` learnable Gaussians carrying `features`-vectors, then a
    small tanh MLP (`depth` x `width`)."""

    n: int = 400
    features: int = 4
    width: int = 16
    depth: int = 1
    sigma: float = 1.0  # initial width, in grid spacings

    def build(self, n_in: int, n_out: int, dtype: torch.dtype = torch.float64,
              seed: int = 0) -> nn.Module:
        return _Gaussians(self, n_in, n_out, dtype, seed)

    def describe(self) -> str:
        return f"PIG {self.n} Gaussians + MLP {self.depth}x{self.width}"

