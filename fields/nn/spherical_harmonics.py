"""Real spherical harmonics of a direction (tiny-cuda-nn "SphericalHarmonics").

Input: 3-D points in the unit cube that stand for unit vectors ``v`` as ``(v + 1) / 2`` (the
tiny-cuda-nn convention); output: the ``degree**2`` real SH basis functions of bands
``l = 0 .. degree - 1``, ordered ``l**2 + l + m`` for ``m = -l .. l``, with the Condon-Shortley
phase (so band 1 is ``-c y, c z, -c x``, the layout used by instant-ngp and plenoxels).

The polynomials come from the associated Legendre recurrence written in Cartesian form for
unit vectors: ``Y_l^m = sqrt(2) K_l^m P~_l^|m|(z) * Re/Im (x + i y)^|m|``; no table of
coefficients is stored, so any degree 1..8 is the same code path.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from fields.nn.encoding import InputEncoding, _positive_int

MAX_DEGREE = 8


def _normalisation(l: int, m: int) -> float:  # noqa: E741 (l is the band, as in the literature)
    return math.sqrt((2 * l + 1) / (4 * math.pi) * math.factorial(l - m) / math.factorial(l + m))


def spherical_harmonics(v: torch.Tensor, degree: int) -> torch.Tensor:
    """The real SH basis up to band ``degree - 1`` of directions v (..., 3): (..., degree**2)."""
    x, y, z = v.unbind(-1)
    out: list[torch.Tensor | None] = [None] * (degree * degree)
    # (x + i y)^m, as real and imaginary parts
    re = [torch.ones_like(x)]
    im = [torch.zeros_like(x)]
    for _ in range(1, degree):
        re.append(re[-1] * x - im[-1] * y)
        im.append(re[-2] * y + im[-1] * x)
    for m in range(degree):
        # P~_l^m(z) = P_l^m / sin^m, a polynomial in z; Condon-Shortley phase included.
        p_mm = (-1.0) ** m * math.prod(range(1, 2 * m, 2))
        p_prev, p = None, torch.full_like(z, p_mm)
        for l in range(m, degree):  # noqa: E741
            if l == m + 1:
                p_prev, p = p, z * (2 * m + 1) * p
            elif l > m + 1:
                p_prev, p = p, ((2 * l - 1) * z * p - (l + m - 1) * p_prev) / (l - m)
            k = _normalisation(l, m)
            if m == 0:
                out[l * l + l] = k * p
            else:
                out[l * l + l + m] = math.sqrt(2.0) * k * p * re[m]
                out[l * l + l - m] = math.sqrt(2.0) * k * p * im[m]
    return torch.stack(out, dim=-1)  # type: ignore[arg-type]


class SphericalHarmonics(InputEncoding):
    """``degree**2`` real SH of the direction ``2 x - 1`` (tiny-cuda-nn "SphericalHarmonics").

    The input is not renormalised (as in tiny-cuda-nn): pass unit vectors mapped to [0, 1]^3.
    Bands are the levels for progressive masking.
    """

    otype = "SphericalHarmonics"

    def __init__(self, n_input_dims: int = 3, degree: int = 4) -> None:
        self.degree = _positive_int("SphericalHarmonics", "degree", degree, MAX_DEGREE)
        if n_input_dims != 3:
            raise ValueError(
                f"SphericalHarmonics: encodes 3-D directions, got n_input_dims={n_input_dims}"
            )
        super().__init__(n_input_dims, degree * degree)

    @property
    def n_levels(self) -> int:
        return self.degree

    def output_levels(self) -> torch.Tensor:
        return torch.cat([torch.full((2 * band + 1,), band) for band in range(self.degree)])

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return spherical_harmonics(2.0 * x - 1.0, self.degree)

    def config_values(self) -> dict[str, Any]:
        return {"degree": self.degree}
