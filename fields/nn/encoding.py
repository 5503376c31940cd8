"""Input encodings: the base class and the closed-form encodings.

Every encoding is a `torch.nn.Module` mapping ``(..., n_input_dims)`` to ``(..., n_output_dims)``
with tiny-cuda-nn's names, layouts and defaults (its DOCUMENTATION.md), a pure-torch reference
(`reference`) and a config (`to_config`, rebuilt by `fields.nn.encoding_from_config`).

Closed-form encodings here (plain torch ops, any dtype, any derivative order):

- `Identity`: ``x * scale + offset``.
- `Frequency` (NeRF positional encoding): per input dim d and frequency k,
  ``sin(2^k pi x_d), cos(2^k pi x_d)``, in that order (dim-major). Inputs are expected in [0, 1].
- `TriangleWave`: ``1 - 4 |frac(2^k x_d) - 1/2|``, a triangle wave in [-1, 1] with period
  2^-k, one output per dim and frequency.
- `OneBlob` (Müller et al. 2019): each input in [0, 1] becomes ``n_bins`` values, the mass of a
  Gaussian of standard deviation 1/n_bins centred on the input inside each bin. (tiny-cuda-nn
  uses a quartic kernel for speed; this is the Gaussian it approximates.)
- `RandomFourierFeatures` (Tancik et al. 2020): ``sin(2 pi B x), cos(2 pi B x)`` with a fixed
  random ``B ~ N(0, scale^2)`` of shape (n_frequencies, n_input_dims).

Levels and progressive masking: encodings made of levels (frequencies, grid resolutions) name
the level of each output (`output_levels`); `set_progress(alpha)` then scales level k by a
smooth window ``(1 - cos(pi * clamp(alpha - k, 0, 1))) / 2`` (coarse-to-fine as in BARF /
Nerfies). ``alpha`` is one number, or a callable giving each point its own (spatially
adaptive, SAPE-style); ``None`` (the default) disables the mask. See
`fields.nn.progressive.CoarseToFine` and `SpatialProgress`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, ClassVar

import torch
from torch import nn


class InputEncoding(nn.Module):
    """Base class: shape bookkeeping, the level mask and the config interface."""

    otype: ClassVar[str] = ""

    def __init__(self, n_input_dims: int, n_output_dims: int) -> None:
        super().__init__()
        if isinstance(n_input_dims, bool) or not isinstance(n_input_dims, int) or n_input_dims < 1:
            raise ValueError(
                f"{type(self).__name__}: n_input_dims must be a positive integer, "
                f"got {n_input_dims!r}"
            )
        self.n_input_dims = n_input_dims
        self.n_output_dims = n_output_dims
        self.progress: float | None = None

    # -- levels and progressive masking --
    @property
    def n_levels(self) -> int:
        """Number of maskable levels (0: the encoding has none)."""
        return 0

    def output_levels(self) -> torch.Tensor:
        """(n_output_dims,) level of each output feature (-1: never masked)."""
        return torch.full((self.n_output_dims,), -1, dtype=torch.long)

    def set_progress(self, alpha: float | Callable[[torch.Tensor], torch.Tensor] | None) -> None:
        """Reveals levels up to `alpha`, a float in [0, n_levels] for every point, or a callable
        mapping inputs (..., n_input_dims) to per-point alphas (...) (spatially adaptive, e.g.
        `fields.nn.progressive.SpatialProgress`); None reveals all."""
        if alpha is not None and not callable(alpha):
            if isinstance(alpha, bool) or not (
                isinstance(alpha, (int, float)) and math.isfinite(alpha)
            ):
                raise ValueError(
                    f"{type(self).__name__}: progress must be a number, a callable or None, "
                    f"got {alpha!r}"
                )
            alpha = float(alpha)
        self.progress = alpha

    def level_weights(
        self, device: torch.device, dtype: torch.dtype, x: torch.Tensor | None = None
    ) -> torch.Tensor | None:
        """Mask for the current progress: (n_output_dims,) for a global progress, (...,
        n_output_dims) for a per-point one (needs the inputs x); None when nothing is masked."""
        if self.progress is None or self.n_levels == 0:
            return None
        if callable(self.progress):
            if x is None:
                raise ValueError(f"{type(self).__name__}: a per-point progress needs the inputs")
            alpha = self.progress(x).to(device=device, dtype=dtype).unsqueeze(-1)
        elif self.progress >= self.n_levels:
            return None
        else:
            alpha = torch.tensor(self.progress, device=device, dtype=dtype)
        levels = self.output_levels().to(device)
        w = 0.5 * (1.0 - torch.cos(math.pi * (alpha - levels.to(dtype)).clamp(0.0, 1.0)))
        return torch.where(levels < 0, torch.ones_like(w), w)

    def _mask(self, y: torch.Tensor, x: torch.Tensor | None = None) -> torch.Tensor:
        w = self.level_weights(y.device, y.dtype, x)
        return y if w is None else y * w

    # -- evaluation --
    def _check_input(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.n_input_dims:
            raise ValueError(
                f"{type(self).__name__}: expected input (..., {self.n_input_dims}), "
                f"got {tuple(x.shape)}"
            )
        return x

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The encoding without the level mask, pure torch; subclasses implement it."""
        raise NotImplementedError

    def reference(self, x: torch.Tensor) -> torch.Tensor:
        """The pure-torch reference of `forward` (same values, any derivative order)."""
        return self._mask(self.encode(self._check_input(x)), x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.reference(x)

    # -- configuration --
    def config_values(self) -> dict[str, Any]:
        """The keys (other than otype) that rebuild this encoding."""
        return {}

    def to_config(self) -> dict[str, Any]:
        return {"otype": self.otype, **self.config_values()}

    def extra_repr(self) -> str:
        vals = ", ".join(f"{k}={v!r}" for k, v in self.config_values().items())
        return f"n_input_dims={self.n_input_dims}, n_output_dims={self.n_output_dims}" + (
            f", {vals}" if vals else ""
        )


def _positive_int(owner: str, name: str, value: object, maximum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{owner}: {name!r} must be a positive integer, got {value!r}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{owner}: {name!r} must be at most {maximum}, got {value}")
    return value


def _finite(owner: str, name: str, value: object, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{owner}: {name!r} must be a finite number, got {value!r}")
    if positive and value <= 0:
        raise ValueError(f"{owner}: {name!r} must be positive, got {value!r}")
    return float(value)


class Identity(InputEncoding):
    """``x * scale + offset`` (tiny-cuda-nn "Identity")."""

    otype = "Identity"

    def __init__(self, n_input_dims: int, scale: float = 1.0, offset: float = 0.0) -> None:
        super().__init__(n_input_dims, n_input_dims)
        self.scale = _finite("Identity", "scale", scale)
        self.offset = _finite("Identity", "offset", offset)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        if self.scale == 1.0 and self.offset == 0.0:
            return x
        return x * self.scale + self.offset

    def config_values(self) -> dict[str, Any]:
        return {"scale": self.scale, "offset": self.offset}


class Frequency(InputEncoding):
    """NeRF positional encoding (tiny-cuda-nn "Frequency"): 2 * n_frequencies outputs per dim."""

    otype = "Frequency"

    def __init__(self, n_input_dims: int, n_frequencies: int = 12) -> None:
        self.n_frequencies = _positive_int("Frequency", "n_frequencies", n_frequencies, 32)
        super().__init__(n_input_dims, 2 * n_input_dims * n_frequencies)

    @property
    def n_levels(self) -> int:
        return self.n_frequencies

    def output_levels(self) -> torch.Tensor:
        k = torch.arange(self.n_frequencies).repeat_interleave(2)
        return k.repeat(self.n_input_dims)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        freqs = math.pi * 2.0 ** torch.arange(self.n_frequencies, dtype=x.dtype, device=x.device)
        t = x.unsqueeze(-1) * freqs  # (..., D, K)
        y = torch.stack((torch.sin(t), torch.cos(t)), dim=-1)  # (..., D, K, 2)
        return y.flatten(-3)

    def config_values(self) -> dict[str, Any]:
        return {"n_frequencies": self.n_frequencies}


class TriangleWave(InputEncoding):
    """Triangle waves ``1 - 4 |frac(2^k x) - 1/2|`` (tiny-cuda-nn "TriangleWave"):
    n_frequencies outputs per dim."""

    otype = "TriangleWave"

    def __init__(self, n_input_dims: int, n_frequencies: int = 12) -> None:
        self.n_frequencies = _positive_int("TriangleWave", "n_frequencies", n_frequencies, 32)
        super().__init__(n_input_dims, n_input_dims * n_frequencies)

    @property
    def n_levels(self) -> int:
        return self.n_frequencies

    def output_levels(self) -> torch.Tensor:
        return torch.arange(self.n_frequencies).repeat(self.n_input_dims)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        freqs = 2.0 ** torch.arange(self.n_frequencies, dtype=x.dtype, device=x.device)
        t = x.unsqueeze(-1) * freqs
        y = 1.0 - 4.0 * (t - torch.floor(t) - 0.5).abs()
        return y.flatten(-2)

    def config_values(self) -> dict[str, Any]:
        return {"n_frequencies": self.n_frequencies}


class OneBlob(InputEncoding):
    """One-blob encoding (tiny-cuda-nn "OneBlob"): n_bins outputs per dim."""

    otype = "OneBlob"

    def __init__(self, n_input_dims: int, n_bins: int = 16) -> None:
        self.n_bins = _positive_int("OneBlob", "n_bins", n_bins, 1024)
        super().__init__(n_input_dims, n_input_dims * n_bins)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        edges = torch.linspace(0.0, 1.0, self.n_bins + 1, dtype=x.dtype, device=x.device)
        sigma = 1.0 / self.n_bins
        z = (edges - x.unsqueeze(-1)) / (sigma * math.sqrt(2.0))  # (..., D, n_bins + 1)
        cdf = 0.5 * torch.erf(z)
        return (cdf[..., 1:] - cdf[..., :-1]).flatten(-2)

    def config_values(self) -> dict[str, Any]:
        return {"n_bins": self.n_bins}


class RandomFourierFeatures(InputEncoding):
    """Random Fourier features (Tancik et al. 2020): 2 * n_frequencies outputs,
    ``[sin(2 pi B x), cos(2 pi B x)]`` with B ~ N(0, scale^2) drawn once from `seed`."""

    otype = "RandomFourierFeatures"

    def __init__(
        self, n_input_dims: int, n_frequencies: int = 128, scale: float = 10.0, seed: int = 1337
    ) -> None:
        self.n_frequencies = _positive_int("RandomFourierFeatures", "n_frequencies", n_frequencies)
        super().__init__(n_input_dims, 2 * self.n_frequencies)
        self.scale = _finite("RandomFourierFeatures", "scale", scale, positive=True)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"RandomFourierFeatures: 'seed' must be an integer, got {seed!r}")
        self.seed = seed
        gen = torch.Generator().manual_seed(seed)
        b = torch.randn(self.n_frequencies, n_input_dims, generator=gen) * self.scale
        self.register_buffer("B", b)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        t = 2.0 * math.pi * (x @ self.B.to(x.dtype).T)
        return torch.cat((torch.sin(t), torch.cos(t)), dim=-1)

    def config_values(self) -> dict[str, Any]:
        return {"n_frequencies": self.n_frequencies, "scale": self.scale, "seed": self.seed}
