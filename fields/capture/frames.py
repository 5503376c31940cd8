"""A video's frames for structure from motion: about `target` frames, evenly spread, each the
sharpest of its window (variance of the Laplacian: motion blur lowers it)."""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np


def sharpness(frame: np.ndarray) -> float:
    """Variance of the 4-neighbour Laplacian of the frame's luminance (H, W, 3) uint8."""
    g = frame[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    lap = (g[1:-1, :-2] + g[1:-1, 2:] + g[:-2, 1:-1] + g[2:, 1:-1] - 4 * g[1:-1, 1:-1])
    return float(lap.var())


def video_frames(path: str | os.PathLike, target: int = 150,
                 progress: Callable[[int, int], None] | None = None
                 ) -> tuple[list[np.ndarray], list[int], float]:
    """Reads the video at `path` once (imageio-ffmpeg) and keeps, of each of `target` equal
    windows of frames, the sharpest: (frames (H, W, 3) uint8, their indices, frames per
    second). All frames are kept when there are fewer than `target`.

    Raises:
        FileNotFoundError: no such file; ValueError: not a video ffmpeg can read, or no frames.
    """
    import imageio_ffmpeg

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no such video file")
    if target < 3:
        raise ValueError(f"--frames {target}: expected at least 3 frames")
    try:
        total, _ = imageio_ffmpeg.count_frames_and_secs(str(p))
        reader = imageio_ffmpeg.read_frames(str(p))
        meta = reader.__next__()
    except (RuntimeError, OSError, StopIteration) as e:
        why = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
        raise ValueError(f"{p}: not a video ffmpeg can read ({why})") from None
    if total < 1:
        raise ValueError(f"{p}: the video has no frames")
    w, h = meta["size"]
    fps = float(meta.get("fps") or 0.0)
    window = max(1, math.ceil(total / target))
    best: dict[int, tuple[float, int, np.ndarray]] = {}
    k = -1
    for k, raw in enumerate(reader):  # frames stream through: one window's best is kept
        frame = np.frombuffer(raw, np.uint8).reshape(h, w, 3)
        s = sharpness(frame)
        slot = k // window
        if slot not in best or s > best[slot][0]:
            best[slot] = (s, k, frame.copy())
        if progress is not None:
            progress(k + 1, total)
    if k < 0:
        raise ValueError(f"{p}: the video has no frames")
    kept = [best[i] for i in sorted(best)]
    return [f for _, _, f in kept], [i for _, i, _ in kept], fps
