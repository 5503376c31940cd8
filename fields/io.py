"""Atomic file output: write to a temporary file in the target folder, then rename over the
target, so a crash or interrupt never leaves a truncated file behind."""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Calls write(tmp_path) and renames tmp_path to `path` (creating parent folders); the
    file gets the permissions a plain open() would give it. Returns the path."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.", suffix=p.suffix)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return p


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Writes a text file atomically."""
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def save_npy_atomic(path: str | os.PathLike, array: Any) -> Path:
    """Writes a numpy array as .npy atomically (no pickles)."""
    import numpy as np

    def write(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            np.save(fh, np.asarray(array), allow_pickle=False)

    return atomic_write(path, write)



def write_video(path: str | os.PathLike, frames: Sequence[Any], fps: int = 24) -> Path:
    """Writes frames ((H, W, 3) float tensors in [0, 1]) as a video, atomically. ``.mp4``
    goes through imageio's ffmpeg plugin (the imageio-ffmpeg package, a dependency);
    ``.gif`` needs imageio alone."""
    import imageio
    import numpy as np

    p = Path(path)
    suffix = p.suffix.lower()
    if suffix not in (".mp4", ".gif"):
        raise ValueError(f"{p}: unknown video extension {p.suffix!r}; use .mp4 or .gif")
    arr = [(f.detach().cpu().clamp(0, 1).numpy() * 255 + 0.5).astype(np.uint8) for f in frames]

    def write(tmp: str) -> None:
        if suffix == ".gif":
            imageio.mimwrite(tmp, arr, format="GIF", duration=1000 / fps, loop=0)
        else:
            imageio.mimwrite(tmp, arr, format="FFMPEG", fps=fps, macro_block_size=1,
                             quality=8)

    return atomic_write(p, write)


def _jsonable(obj: Any) -> Any:
    """`obj` with non-finite floats as None (strict JSON), tuples as lists, paths as str."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, os.PathLike):
        return str(obj)
    if hasattr(obj, "item") and getattr(obj, "ndim", 1) == 0:  # numpy / torch scalars
        return _jsonable(obj.item())
    return obj


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Writes `obj` as strict JSON (no NaN or Infinity: None), atomically."""
    return write_text_atomic(path, json.dumps(_jsonable(obj), indent=2, allow_nan=False) + "\n")
