"""Building blocks: encodings, activations, the fused MLP and its reference, configs, and the
backend selection of every kernel (`backend`).

The tiny-cuda-nn Python API names are here too (`Encoding`, `Network`,
`NetworkWithInputEncoding`), so ``import fields.nn as tcnn`` runs tiny-cuda-nn style code.
"""

from fields.nn.activations import ACTIVATIONS, apply_activation, canonical_activation
from fields.nn.backend import BACKENDS
from fields.nn.batched_mlp import BatchedMLP
from fields.nn.composite import Composite
from fields.nn.config import from_config, to_config
from fields.nn.encoding import (
    Frequency,
    Identity,
    InputEncoding,
    OneBlob,
    RandomFourierFeatures,
    TriangleWave,
)
from fields.nn.encoding_config import encoding_from_config, encoding_to_config, hash_grid_config
from fields.nn.grid import DenseGrid, GridEncoding, HashGrid, TiledGrid
from fields.nn.grid_reference import grid_reference
from fields.nn.mlp import FusedMLP
from fields.nn.mlp_reference import MLPSpec, mlp_reference
from fields.nn.modules import Encoding, Network, NetworkWithInputEncoding, count_parameters
from fields.nn.progressive import CoarseToFine, SpatialProgress
from fields.nn.spherical_harmonics import SphericalHarmonics
from fields.nn.triplane import Triplane

__all__ = [
    "ACTIVATIONS",
    "BACKENDS",
    "BatchedMLP",
    "CoarseToFine",
    "Composite",
    "DenseGrid",
    "Encoding",
    "Frequency",
    "FusedMLP",
    "GridEncoding",
    "HashGrid",
    "Identity",
    "InputEncoding",
    "MLPSpec",
    "Network",
    "NetworkWithInputEncoding",
    "OneBlob",
    "RandomFourierFeatures",
    "SpatialProgress",
    "SphericalHarmonics",
    "TiledGrid",
    "TriangleWave",
    "Triplane",
    "apply_activation",
    "canonical_activation",
    "count_parameters",
    "encoding_from_config",
    "encoding_to_config",
    "from_config",
    "grid_reference",
    "hash_grid_config",
    "mlp_reference",
    "to_config",
]
