"""tiny-cuda-nn's Python API names, so that its users switch with a changed import:

    import fields.nn as tcnn     # instead of: import tinycudann as tcnn
    model = tcnn.NetworkWithInputEncoding(3, 4, encoding_config, network_config)

`Encoding(n_input_dims, encoding_config, seed=1337, dtype=None)`,
`Network(n_input_dims, n_output_dims, network_config, seed=1337)` and
`NetworkWithInputEncoding(n_input_dims, n_output_dims, encoding_config, network_config,
seed=1337)` take tiny-cuda-nn's configs (`fields.nn.encoding_config`, `fields.nn.config`).
Differences: outputs are float32 (tiny-cuda-nn returns float16 on the GPU), and parameters are
ordinary named tensors rather than one flat ``params`` vector.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import nn

from fields.nn.config import from_config
from fields.nn.encoding_config import encoding_from_config


@contextlib.contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Parameters initialised inside draw from `seed`; the global RNG state is left as it was."""
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


class Encoding(nn.Module):
    """An input encoding built from a tiny-cuda-nn style config."""

    def __init__(
        self,
        n_input_dims: int,
        encoding_config: Mapping[str, Any],
        seed: int = 1337,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        with _seeded(seed):
            self.encoding = encoding_from_config(n_input_dims, encoding_config)
        if dtype is not None:
            self.encoding.to(dtype)
        self.n_input_dims = n_input_dims
        self.n_output_dims = self.encoding.n_output_dims

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoding(x)


class Network(nn.Module):
    """A network built from a tiny-cuda-nn style config (a `FusedMLP`)."""

    def __init__(
        self,
        n_input_dims: int,
        n_output_dims: int,
        network_config: Mapping[str, Any],
        seed: int = 1337,
    ) -> None:
        super().__init__()
        with _seeded(seed):
            self.network = from_config(network_config, n_input_dims, n_output_dims)
        self.n_input_dims = n_input_dims
        self.n_output_dims = n_output_dims

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(x)


class NetworkWithInputEncoding(nn.Module):
    """An encoding followed by a network, both from tiny-cuda-nn style configs."""

    def __init__(
        self,
        n_input_dims: int,
        n_output_dims: int,
        encoding_config: Mapping[str, Any],
        network_config: Mapping[str, Any],
        seed: int = 1337,
    ) -> None:
        super().__init__()
        with _seeded(seed):
            self.encoding = encoding_from_config(n_input_dims, encoding_config)
            self.network = from_config(
                network_config, self.encoding.n_output_dims, n_output_dims
            )
        self.n_input_dims = n_input_dims
        self.n_output_dims = n_output_dims

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(self.encoding(x))


def count_parameters(module: nn.Module) -> int:
    """Real numbers in the trainable parameters of `module` (a complex parameter counts
    twice: its real and imaginary parts)."""
    return sum(p.numel() * (2 if p.is_complex() else 1) for p in module.parameters()
               if p.requires_grad)
