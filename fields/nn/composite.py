"""`Composite`: different encodings on different input dimensions, outputs concatenated.

tiny-cuda-nn's "Composite": ``{"otype": "Composite", "nested": [{"n_dims_to_encode": 3,
"otype": "HashGrid", ...}, {"otype": "SphericalHarmonics", "degree": 4}]}``; each nested
encoding takes the next ``n_dims_to_encode`` inputs, the last one may omit it and takes the
rest. Levels of the parts are not masked by the composite itself: set progress on the parts
(`fields.nn.progressive.CoarseToFine` does it for every encoding in a module).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from fields.nn.encoding import InputEncoding


class Composite(InputEncoding):
    """Concatenation of encodings applied to consecutive slices of the input."""

    otype = "Composite"

    def __init__(self, parts: list[InputEncoding]) -> None:
        if not parts:
            raise ValueError("Composite: 'nested' must list at least one encoding")
        super().__init__(
            sum(p.n_input_dims for p in parts), sum(p.n_output_dims for p in parts)
        )
        self.parts = nn.ModuleList(parts)

    def _slices(self, x: torch.Tensor) -> list[torch.Tensor]:
        out, start = [], 0
        for p in self.parts:
            out.append(x[..., start : start + p.n_input_dims])
            start += p.n_input_dims
        return out

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        parts = zip(self.parts, self._slices(x), strict=True)
        return torch.cat([p.reference(s) for p, s in parts], dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        return torch.cat(
            [p(s) for p, s in zip(self.parts, self._slices(x), strict=True)], dim=-1
        )

    def extra_repr(self) -> str:
        return f"n_input_dims={self.n_input_dims}, n_output_dims={self.n_output_dims}"

    def config_values(self) -> dict[str, Any]:
        return {
            "nested": [{"n_dims_to_encode": p.n_input_dims, **p.to_config()} for p in self.parts]
        }
