"""Atomic file output: write to a temporary file in the target folder, then rename over the
target, so a crash or interrupt never leaves a truncated file behind."""

from __future__ import annotations

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
