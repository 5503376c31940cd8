"""Images: a procedural test image (no download needed) and checked, atomic image I/O.

Images are float tensors (H, W, C) in [0, 1], C = 1, 3 or 4.
"""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path

import numpy as np
import torch

from fields.io import atomic_write


def _value_noise(size: int, cells: int, gen: torch.Generator) -> torch.Tensor:
    """Smooth noise in [-1, 1]: a random (cells+1)^2 lattice, bicubically upsampled."""
    lattice = torch.rand(1, 1, cells + 1, cells + 1, generator=gen) * 2 - 1
    up = torch.nn.functional.interpolate(lattice, size=(size, size), mode="bicubic",
                                         align_corners=True)
    return up[0, 0]


def procedural_image(size: int = 512, seed: int = 0) -> torch.Tensor:
    """A (size, size, 3) test image with detail at every scale: a smooth background, fractal
    noise, hard-edged shapes (anti-aliased by 4x supersampling), stripes and a checkerboard.

    It stands in for a photograph where none can be downloaded; the same seed gives the same
    image on every machine."""
    if size < 16:
        raise ValueError(f"procedural_image: size must be >= 16, got {size}")
    gen = torch.Generator().manual_seed(seed)
    ss = 4 * size  # supersampled
    t = (torch.arange(ss, dtype=torch.float32) + 0.5) / ss
    y, x = torch.meshgrid(t, t, indexing="ij")
    img = torch.stack(
        (0.25 + 0.5 * x, 0.3 + 0.4 * y, 0.65 - 0.35 * x * y), dim=-1
    )  # smooth background
    # 1/f fractal noise down to the pixel scale, its colour varying across the image
    octaves = [_value_noise(ss, 4 * 2**o, gen) * 0.6**o for o in range(int(math.log2(size)))]
    tint = torch.stack([_value_noise(ss, 3, gen) for _ in range(3)], dim=-1) * 0.5 + 1.0
    img = img + 0.15 * sum(octaves)[..., None] * tint

    def paint(mask: torch.Tensor, color: tuple[float, float, float]) -> None:
        nonlocal img
        img = torch.where(mask[..., None], torch.tensor(color), img)

    for i in range(40):  # discs and rings, large to small
        cx, cy, r = torch.rand(3, generator=gen).tolist()
        r = (0.03 + 0.12 * r) * (1.0 if i < 14 else 0.25)
        d = torch.sqrt((x - cx) ** 2 + (y - cy) ** 2)
        color = tuple(torch.rand(3, generator=gen).tolist())
        ring = torch.rand(1, generator=gen).item() < 0.4
        paint((d < r) & (d > 0.7 * r) if ring else d < r, color)
    for _ in range(16):  # rotated rectangles
        cx, cy, w, h, a = torch.rand(5, generator=gen).tolist()
        a *= math.pi
        u = (x - cx) * math.cos(a) + (y - cy) * math.sin(a)
        v = -(x - cx) * math.sin(a) + (y - cy) * math.cos(a)
        paint((u.abs() < 0.02 + 0.1 * w) & (v.abs() < 0.01 + 0.05 * h),
              tuple(torch.rand(3, generator=gen).tolist()))
    # stripes of rising frequency in one band, a checkerboard in a corner
    band = (y > 0.86) & (y < 0.94)
    stripes = torch.sin(2 * math.pi * (8 + 56 * x) * x) > 0
    paint(band & stripes, (0.1, 0.1, 0.12))
    checker = ((x * 40).floor() + (y * 40).floor()) % 2 == 0
    paint((x < 0.2) & (y < 0.2) & checker, (0.95, 0.95, 0.9))
    img = img.clamp(0.0, 1.0)
    img = torch.nn.functional.avg_pool2d(img.permute(2, 0, 1)[None], 4)[0].permute(1, 2, 0)
    return img.contiguous()


def read_image(path: str | os.PathLike) -> torch.Tensor:
    """Reads an image file as (H, W, C) float32 in [0, 1] (8- or 16-bit integer or float)."""
    import imageio.v3 as iio

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no such image file")
    try:
        with warnings.catch_warnings():  # imageio's fallback plugins warn about themselves
            warnings.simplefilter("ignore", DeprecationWarning)
            arr = np.asarray(iio.imread(p))
    except Exception as e:  # imageio raises many types for unreadable files
        raise ValueError(f"{p}: not a readable image ({e})") from e
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[-1] not in (1, 3, 4):
        raise ValueError(
            f"{p}: expected an image of shape (H, W) or (H, W, 1|3|4), got {arr.shape}"
        )
    if arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ValueError(f"{p}: the image is {arr.shape[1]}x{arr.shape[0]} pixels (expected at "
                         "least 1x1)")
    if arr.dtype.kind not in "biuf":
        raise ValueError(f"{p}: pixels of type {arr.dtype} (expected integer or float values)")
    if np.issubdtype(arr.dtype, np.integer):
        arr = arr.astype(np.float32) / np.iinfo(arr.dtype).max
    with np.errstate(over="ignore", invalid="ignore"):
        out = np.ascontiguousarray(arr, dtype=np.float32)
    if not np.isfinite(out).all():
        bad = np.argwhere(~np.isfinite(out))[0]
        raise ValueError(f"{p}: pixel (row {bad[0]}, column {bad[1]}) is {out[tuple(bad)]} "
                         "(expected finite values)")
    return torch.from_numpy(out).clamp(0.0, 1.0)


def write_image(path: str | os.PathLike, image: torch.Tensor) -> Path:
    """Writes (H, W, C) floats in [0, 1] as an 8-bit image, atomically."""
    import imageio.v3 as iio

    p = Path(path)
    arr = (image.detach().cpu().clamp(0, 1).numpy() * 255.0 + 0.5).astype(np.uint8)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    return atomic_write(p, lambda tmp: iio.imwrite(tmp, arr, extension=p.suffix))


def error_map(
    prediction: torch.Tensor, target: torch.Tensor, lo: float = 1e-4, hi: float = 1e-1
) -> torch.Tensor:
    """(H, W, 3) heat map of the per-pixel mean absolute error on a log scale: black at or
    below `lo`, through red and yellow, white at or above `hi` (so both a 20 dB and a 60 dB
    fit show their structure)."""
    err = (prediction - target).abs().mean(-1).clamp(min=lo)
    t = ((err.log10() - math.log10(lo)) / (math.log10(hi) - math.log10(lo))).clamp(0, 1)
    r = (3 * t).clamp(0, 1)
    g = (3 * t - 1).clamp(0, 1)
    b = (3 * t - 2).clamp(0, 1)
    return torch.stack((r, g, b), -1)


def psnr(prediction: torch.Tensor, target: torch.Tensor) -> float:
    """Peak signal-to-noise ratio in dB for images in [0, 1]."""
    mse = (prediction.clamp(0, 1) - target).square().mean().item()
    return float("inf") if mse == 0 else -10.0 * math.log10(mse)
