"""Networks from tiny-cuda-nn style JSON dicts.

``from_config({"otype": "FullyFusedMLP", "activation": "ReLU", "output_activation": "None",
"n_neurons": 64, "n_hidden_layers": 4}, n_in, n_out)`` builds a `FusedMLP`. Key names and
defaults are tiny-cuda-nn's (its DOCUMENTATION.md):

| key                | default  |
|--------------------|----------|
| otype              | required: "FullyFusedMLP" or "CutlassMLP" |
| activation         | "ReLU"   |
| output_activation  | "None"   |
| n_neurons          | 128      |
| n_hidden_layers    | 5        |
| feedback_alignment | false (only false is supported) |

Keys of our own, optional: ``bias`` (false), ``omega0`` (30.0, for Sine), ``backend`` ("auto").
Unknown keys or values raise ValueError naming the key and what was expected.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fields.config import check_keys, did_you_mean
from fields.nn.mlp import FusedMLP

NETWORK_OTYPES = ("FullyFusedMLP", "CutlassMLP")
NETWORK_DEFAULTS: dict[str, Any] = {
    "activation": "ReLU",
    "output_activation": "None",
    "n_neurons": 128,
    "n_hidden_layers": 5,
    "feedback_alignment": False,
    "bias": False,
    "omega0": 30.0,
    "backend": "auto",
}


def from_config(config: Mapping[str, Any], n_in: int, n_out: int) -> FusedMLP:
    """Builds a network from a tiny-cuda-nn style network config.

    Args:
        config: {"otype": "FullyFusedMLP", ...}, see the module docstring.
        n_in, n_out: input and output features.
    """
    if not isinstance(config, Mapping):
        raise ValueError(f"network config must be a dict, got {type(config).__name__}")
    otype = config.get("otype")
    if otype is None:
        raise ValueError(
            f"network config: missing 'otype'; expected one of {', '.join(NETWORK_OTYPES)}"
        )
    match = {o.lower(): o for o in NETWORK_OTYPES}.get(str(otype).lower())
    if match is None:
        raise ValueError(
            f"network config: unsupported otype {otype!r}{did_you_mean(otype, NETWORK_OTYPES)}; "
            f"expected one of {', '.join(NETWORK_OTYPES)}"
        )
    where = f"network config ({match})"
    check_keys(where, config, ["otype", *NETWORK_DEFAULTS])
    cfg = {**NETWORK_DEFAULTS, **{k: v for k, v in config.items() if k != "otype"}}
    if cfg["feedback_alignment"] not in (False, 0):
        raise ValueError(f"{where}: 'feedback_alignment' must be false (true is not supported)")
    for key in ("n_neurons", "n_hidden_layers"):
        v = cfg[key]
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{where}: {key!r} must be a positive integer, got {v!r}")
    if not isinstance(cfg["bias"], bool):
        raise ValueError(f"{where}: 'bias' must be true or false, got {cfg['bias']!r}")
    try:
        return FusedMLP(
            n_in,
            n_out,
            width=cfg["n_neurons"],
            depth=cfg["n_hidden_layers"],
            activation=cfg["activation"],
            output_activation=cfg["output_activation"],
            bias=cfg["bias"],
            backend=cfg["backend"],
            omega0=cfg["omega0"],
        )
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from e


def to_config(net: FusedMLP) -> dict[str, Any]:
    """The config that rebuilds `net` (parameters aside) with `from_config`."""
    s = net.spec
    return {
        "otype": "FullyFusedMLP",
        "activation": s.activation,
        "output_activation": s.output_activation,
        "n_neurons": s.width,
        "n_hidden_layers": s.depth,
        "bias": s.bias,
        "omega0": s.omega0,
        "backend": net.backend,
    }
