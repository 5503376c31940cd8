"""Building blocks: activations, the fused MLP and its reference, tiny-cuda-nn style configs."""

from fields.nn.activations import ACTIVATIONS, apply_activation, canonical_activation
from fields.nn.config import from_config, to_config
from fields.nn.mlp import BACKENDS, FusedMLP, MLPSpec, mlp_reference

__all__ = [
    "ACTIVATIONS",
    "BACKENDS",
    "FusedMLP",
    "MLPSpec",
    "apply_activation",
    "canonical_activation",
    "from_config",
    "mlp_reference",
    "to_config",
]
