"""Checkpoints: one format for every field kind, written atomically.

A checkpoint is a `torch.save` dict ``{"format": "fields-checkpoint", "version": 1,
"state_dict": ..., "kind": <the kind's name>, **extra}``; it is written to a temporary file in
the target folder and renamed over the target, so an interrupted write never leaves a
truncated checkpoint. `read_checkpoint` loads with ``weights_only=True`` (no pickled code).
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


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """The dict of a checkpoint written by `save_checkpoint`, checked, on the CPU."""
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
    if not isinstance(payload.get("state_dict"), Mapping):
        raise ValueError(f"{p}: checkpoint has no field 'state_dict'")
    return payload


def read_kind_checkpoint(path: str | os.PathLike, kind: str, info_key: str,
                         label: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """`read_checkpoint`, then the payload and its `info_key` dict, which a checkpoint of
    kind `kind` carries; ValueError naming the file and the 'kind' field otherwise (`label`:
    how the message names the kind, e.g. "a NeRF")."""
    payload = read_checkpoint(path)
    info = payload.get(info_key)
    if payload.get("kind") != kind or not isinstance(info, dict):
        raise ValueError(f"{path}: not {label} checkpoint (field 'kind' is "
                         f"{payload.get('kind')!r}, expected {kind!r})")
    return payload, info


def load_checkpoint(path: str | os.PathLike, model: nn.Module) -> dict[str, Any]:
    """Loads a checkpoint written by `save_checkpoint` into `model`; returns the whole dict."""
    payload = read_checkpoint(path)
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as e:
        raise ValueError(f"{path}: field 'state_dict' does not match the model: {e}") from e
    return payload


def run_config(checkpoint: str | os.PathLike) -> dict[str, Any]:
    """The run's ``config.json`` beside `checkpoint` (written by every `fields fit`), or {}
    when there is none; ValueError naming the file when it is not a JSON object."""
    import json

    path = Path(checkpoint).with_name("config.json")
    if not path.is_file():
        return {}
    try:
        d = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(d, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(d).__name__}")
    return d
