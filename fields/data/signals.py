"""Signals for implicit neural representations: built-in photographs, audio, volumes, video.

Every signal becomes samples on a regular grid: `grid_coords(shape)` gives the sample centres
in [0, 1]^d (axes reversed, x first: for an (H, W) image the coordinates are (x, y), as
`fields.inr.pixel_centres`), and the values are (N, C) floats in [0, 1].

- Images: scikit-image's bundled photographs (`builtin_image`, no download), any file
  `fields.data.images.read_image` reads.
- Audio: WAV (`read_audio` / `write_audio`, scipy's reader: 8/16/32-bit integer or float,
  mono or multichannel), as (N, C) in [-1, 1] and the sample rate.
- Volumes: `.npy` arrays (D, H, W) or (D, H, W, C), scaled to [0, 1] by their range.
- Video: a folder of frames (sorted by name) or a video file imageio reads (mp4 needs the
  imageio-ffmpeg plugin), as (T, H, W, C).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from fields.io import atomic_write

BUILTIN_IMAGES: tuple[str, ...] = (
    "camera", "astronaut", "coffee", "chelsea", "coins", "moon", "brick", "grass", "rocket",
)


def grid_coords(shape: tuple[int, ...] | torch.Size) -> torch.Tensor:
    """(prod(shape), len(shape)) sample centres in [0, 1], row-major over `shape`, with the
    coordinates in reversed axis order (x = the last axis first)."""
    axes = [(torch.arange(n, dtype=torch.float32) + 0.5) / n for n in shape]
    grids = torch.meshgrid(*axes, indexing="ij")
    return torch.stack(grids[::-1], dim=-1).reshape(-1, len(shape))


def resize_image(image: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(H, W, C) resized with anti-aliasing (scikit-image)."""
    from skimage.transform import resize

    arr = resize(image.numpy(), (height, width, image.shape[-1]), order=3, anti_aliasing=True)
    return torch.from_numpy(np.clip(arr, 0.0, 1.0).astype(np.float32))


def builtin_image(name: str, size: int | None = 256) -> torch.Tensor:
    """A photograph bundled with scikit-image (`BUILTIN_IMAGES`) as (H, W, C) in [0, 1], its
    longer side resized to `size` (None: as stored; camera is 512 x 512)."""
    import skimage.data

    if name not in BUILTIN_IMAGES:
        raise ValueError(f"unknown built-in image {name!r}; expected one of "
                         f"{', '.join(BUILTIN_IMAGES)}")
    arr = np.asarray(getattr(skimage.data, name)())
    if arr.ndim == 2:
        arr = arr[..., None]
    img = torch.from_numpy(arr.astype(np.float32) / 255.0)
    if size is not None:
        if isinstance(size, bool) or not isinstance(size, int) or size < 2:
            raise ValueError(f"builtin_image: size must be an integer >= 2, got {size!r}")
        h, w = img.shape[:2]
        scale = size / max(h, w)
        img = resize_image(img, max(1, round(h * scale)), max(1, round(w * scale)))
    return img


def read_audio(path: str | os.PathLike) -> tuple[torch.Tensor, int]:
    """A WAV file as ((N, C) float32 in [-1, 1], sample rate)."""
    from scipy.io import wavfile

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no such audio file")
    try:
        rate, data = wavfile.read(p)
    except Exception as e:  # scipy raises ValueError and others for bad headers
        raise ValueError(f"{p}: not a readable WAV file ({e})") from e
    arr = np.asarray(data)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"{p}: expected (samples,) or (samples, channels) audio, "
                         f"got shape {arr.shape}")
    if int(rate) <= 0:
        raise ValueError(f"{p}: sample rate {rate} in the header (expected > 0 Hz)")
    if arr.dtype.kind not in "iuf":
        raise ValueError(f"{p}: samples of type {arr.dtype} (expected integer or float PCM)")
    if arr.dtype == np.uint8:
        out = (arr.astype(np.float32) - 128.0) / 128.0
    elif np.issubdtype(arr.dtype, np.integer):
        out = arr.astype(np.float32) / float(np.iinfo(arr.dtype).max)
    else:
        with np.errstate(over="ignore", invalid="ignore"):
            out = arr.astype(np.float32)
    if not np.isfinite(out).all():
        i = int(np.argmax(~np.isfinite(out).all(axis=1)))
        raise ValueError(f"{p}: sample {i} is not finite ({' '.join(map(str, out[i]))}; "
                         "expected finite float samples)")
    return torch.from_numpy(np.clip(out, -1.0, 1.0)), int(rate)


def write_audio(path: str | os.PathLike, samples: torch.Tensor, rate: int) -> Path:
    """Writes (N, C) floats in [-1, 1] as a 16-bit WAV file, atomically."""
    from scipy.io import wavfile

    arr = samples.detach().cpu().clamp(-1, 1).numpy()
    pcm = np.round(arr * 32767.0).astype(np.int16)
    return atomic_write(Path(path), lambda tmp: wavfile.write(tmp, int(rate), pcm))


def synthetic_audio(seconds: float = 1.0, rate: int = 16000) -> torch.Tensor:
    """(N, 1): a chirp plus two tones with an envelope, a test signal with known content."""
    t = torch.arange(int(seconds * rate), dtype=torch.float64) / rate
    chirp = torch.sin(2 * torch.pi * (200 * t + 1500 * t * t))
    tones = 0.5 * torch.sin(2 * torch.pi * 440 * t) + 0.3 * torch.sin(2 * torch.pi * 1250 * t)
    env = torch.exp(-3.0 * (t - 0.5 * seconds).square())
    return (0.45 * (chirp + tones) * env).float()[:, None]


def read_volume(path: str | os.PathLike) -> tuple[torch.Tensor, tuple[float, float]]:
    """A `.npy` volume (D, H, W) or (D, H, W, C) as (D, H, W, C) float32 in [0, 1], and the
    (min, max) it was scaled from."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no such volume file")
    try:
        arr = np.load(p, allow_pickle=False)
    except Exception as e:
        raise ValueError(f"{p}: not a readable .npy array ({e})") from e
    if arr.ndim == 3:
        arr = arr[..., None]
    if arr.ndim != 4 or min(arr.shape[:3]) < 2 or arr.shape[-1] > 4:
        raise ValueError(f"{p}: expected a volume of shape (D, H, W) or (D, H, W, C<=4), "
                         f"got {arr.shape}")
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
        raise ValueError(f"{p}: expected a numeric array, got dtype {arr.dtype}")
    vol = arr.astype(np.float32)
    if not np.isfinite(vol).all():
        raise ValueError(f"{p}: the volume has non-finite values")
    lo, hi = float(vol.min()), float(vol.max())
    vol = (vol - lo) / (hi - lo) if hi > lo else np.zeros_like(vol)
    return torch.from_numpy(np.ascontiguousarray(vol)), (lo, hi)


def synthetic_volume(size: int = 48) -> torch.Tensor:
    """(size, size, size, 1): a smooth blob, a shell and a thin rod, a test volume."""
    c = grid_coords((size, size, size)).reshape(size, size, size, 3) * 2 - 1
    r = c.norm(dim=-1)
    blob = torch.exp(-8.0 * (c - torch.tensor([0.3, -0.2, 0.1])).square().sum(-1))
    shell = torch.exp(-200.0 * (r - 0.6).square())
    rod = torch.exp(-300.0 * (c[..., 0].square() + c[..., 1].square())) * (c[..., 2].abs() < 0.8)
    vol = 0.6 * blob + 0.5 * shell + 0.8 * rod
    return (vol / vol.max()).clamp(0, 1)[..., None]


def read_video(path: str | os.PathLike, max_frames: int | None = None) -> torch.Tensor:
    """A folder of frames (images sorted by name) or a video file as (T, H, W, C) in [0, 1]."""
    from fields.data.images import read_image

    p = Path(path)
    if p.is_dir():
        names = sorted(f for f in p.iterdir()
                       if f.suffix.lower() in (".png", ".jpg", ".jpeg", ".exr", ".bmp", ".tif",
                                               ".tiff"))
        if not names:
            raise ValueError(f"{p}: no image frames (png/jpg/exr/bmp/tif) in the folder")
        frames = [read_image(f) for f in names[:max_frames]]
    elif p.is_file():
        import imageio.v3 as iio

        try:
            arr = np.asarray(iio.imread(p))
        except Exception as e:
            raise ValueError(f"{p}: not a readable video ({e})") from e
        if arr.ndim == 3:
            arr = arr[..., None]
        if arr.ndim != 4:
            raise ValueError(f"{p}: expected frames (T, H, W[, C]), got shape {arr.shape}")
        scale = float(np.iinfo(arr.dtype).max) if np.issubdtype(arr.dtype, np.integer) else 1.0
        frames = [torch.from_numpy(f.astype(np.float32) / scale) for f in arr[:max_frames]]
    else:
        raise FileNotFoundError(f"{p}: no such video file or frame folder")
    shapes = {tuple(f.shape) for f in frames}
    if len(shapes) != 1:
        raise ValueError(f"{p}: frames differ in size: {sorted(shapes)}")
    return torch.stack(frames).clamp(0, 1)
