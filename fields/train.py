"""Training utilities shared by every field kind. For now: checkpoints, written atomically.

A checkpoint is a `torch.save` dict ``{"format": "fields-checkpoint", "version": 1,
"state_dict": ..., **extra}``; it is written to a temporary file in the target folder and
renamed over the target, so an interrupted write never leaves a truncated checkpoint.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fields.io import atomic_write

CHECKPOINT_FORMAT = "fields-checkpoint"
CHECKPOINT_VERSION = 1


def save_checkpoint(
    path: str | os.PathLike, model: nn.Module, extra: Mapping[str, Any] | None = None
) -> None:
    """Saves model.state_dict() (and `extra`) to `path` atomically."""
    p = Path(path)
    payload = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "state_dict": model.state_dict(),
        **(extra or {}),
    }
    atomic_write(p, lambda tmp: torch.save(payload, tmp))


def load_checkpoint(path: str | os.PathLike, model: nn.Module) -> dict[str, Any]:
    """Loads a checkpoint written by `save_checkpoint` into `model`; returns the whole dict."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no such checkpoint")
    try:
        payload = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"{p}: not a readable checkpoint ({e})") from e
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{p}: not a fields checkpoint (field 'format' != {CHECKPOINT_FORMAT!r})")
    if payload.get("version") != CHECKPOINT_VERSION:
        raise ValueError(
            f"{p}: checkpoint field 'version' is {payload.get('version')!r}, "
            f"expected {CHECKPOINT_VERSION}"
        )
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as e:
        raise ValueError(f"{p}: field 'state_dict' does not match the model: {e}") from e
    return payload
