"""fields: a neural-fields engine (fused MLP and encoding kernels, and the fields on top)."""

from fields import nn

__version__ = "0.1.0"
__all__ = ["__version__", "nn"]
