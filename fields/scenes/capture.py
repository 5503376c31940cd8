"""Captures we make ourselves (nothing can be downloaded): the tabletop scene, textured for
feature matching, as a folder of JPEG photos (hand-held: uneven orbit, jittered aim and roll,
varied exposure) or as an .mp4 of an orbit, with the true cameras beside them.

Used by `fields bench capture` and the tests of `fields process`: the true cameras let the
recovered ones be scored (after a similarity alignment, `fields.capture.align`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from fields.io import atomic_write, write_json, write_video
from fields.render.cameras import Cameras, look_at
from fields.scenes.tabletop import TABLE_TOP, shade, solid_noise

#: the point the cameras orbit and aim at: the middle of the table top
CENTRE = (0.0, 0.0, TABLE_TOP + 0.2)
#: height of the floor under the table (a textured plane to the horizon)
FLOOR = TABLE_TOP - 0.7


@dataclass(frozen=True)
class CaptureSpec:
    """How a synthetic capture is shot.

    Attributes:
        n: photos (or video frames).
        width, height: image size in pixels.
        fov: horizontal field of view, degrees.
        radius: orbit radius around `CENTRE` (scene units; the table is 1.9 wide).
        elevation: (lowest, highest) elevation of the cameras, degrees.
        arc: degrees of the orbit the capture goes round (360: all the way).
        jitter: photos only: standard deviation of the aim (scene units), of the roll (degrees
            / 10) and of the radius (fraction / 10), the hand-held look.
        exposure: photos only: (lowest, highest) exposure factor, drawn per photo.
        texture: solid-noise texture mixed into the albedo (`tabletop.shade`).
        seed: random seed of the path, aim and exposures.
    """

    n: int = 40
    width: int = 400
    height: int = 300
    fov: float = 55.0
    radius: float = 2.6
    elevation: tuple[float, float] = (22.0, 45.0)
    arc: float = 360.0
    jitter: float = 0.03
    exposure: tuple[float, float] = (0.75, 1.25)
    texture: float = 0.8
    seed: int = 0

    @property
    def focal(self) -> float:
        return 0.5 * self.width / math.tan(0.5 * math.radians(self.fov))


def capture_cameras(spec: CaptureSpec, video: bool = False) -> Cameras:
    """The true cameras (OpenGL c2w, z up): photos go once round an uneven orbit with jittered
    aim, roll and radius; video frames go round a smooth one (one turn, elevation rising)."""
    g = np.random.default_rng(spec.seed)
    k = np.arange(spec.n)
    lo, hi = (math.radians(a) for a in spec.elevation)
    centre = np.asarray(CENTRE)
    arc = math.radians(spec.arc)
    if video:
        az = arc * k / spec.n
        el = lo + (hi - lo) * 0.5 * (1 - np.cos(2 * math.pi * k / spec.n))
        radius = np.full(spec.n, spec.radius)
        aim = np.tile(centre, (spec.n, 1))
        roll = np.zeros(spec.n)
    else:
        az = arc * (k + g.uniform(-0.3, 0.3, spec.n)) / spec.n
        el = g.uniform(lo, hi, spec.n)
        radius = spec.radius * (1 + 0.1 * spec.jitter * g.standard_normal(spec.n) / 0.03)
        aim = centre + spec.jitter * g.standard_normal((spec.n, 3))
        roll = np.radians(spec.jitter / 0.03 * g.normal(0.0, 3.0, spec.n))
    eye = centre + radius[:, None] * np.stack(
        (np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)), -1)
    c2w = look_at(torch.from_numpy(eye).float(), torch.from_numpy(aim).float())
    # roll about the optical axis (the camera's own z)
    c, s = torch.from_numpy(np.cos(roll)).float(), torch.from_numpy(np.sin(roll)).float()
    z, o = torch.zeros_like(c), torch.ones_like(c)
    r = torch.stack((torch.stack((c, -s, z), -1), torch.stack((s, c, z), -1),
                     torch.stack((z, z, o), -1)), -2)
    c2w[:, :, :3] = c2w[:, :, :3] @ r
    f = spec.focal
    return Cameras(c2w, f, f, spec.width / 2, spec.height / 2, spec.width, spec.height)


def render_capture(spec: CaptureSpec, cams: Cameras,
                   progress: Callable[[int, int], None] | None = None) -> np.ndarray:
    """(N, H, W, 3) uint8 photos through `cams` of the textured tabletop standing over a
    textured floor (the plane z = `FLOOR`, to the horizon), under a white sky."""
    out = np.empty((len(cams), spec.height, spec.width, 3), dtype=np.uint8)
    for i in range(len(cams)):  # one image at a time: every ray of it in one batch
        o, d = cams.pixel_rays(i)
        rgb, cover = shade(o, d, torch.ones(3), texture=spec.texture)
        down = (cover < 1) & (d[:, 2] < -1e-3)
        if down.any():  # the floor, where the scene left the ray (partly) uncovered
            t = (FLOOR - o[down, 2]) / d[down, 2]
            p = o[down] + t[:, None] * d[down]
            n = sum(solid_noise(p, f, 7 + k) / 2**k for k, f in enumerate((2.0, 6.0, 17.0)))
            grey = (0.25 + 0.5 * n / 1.75)[:, None] * torch.tensor([0.8, 0.75, 0.65])
            fade = torch.exp(-0.04 * t)[:, None]  # haze towards the horizon
            floor = grey * fade + (1 - fade)
            c = cover[down, None]
            rgb[down] = rgb[down] * c + floor * (1 - c)
        out[i] = (rgb.reshape(spec.height, spec.width, 3).clamp(0, 1) * 255 + 0.5).byte().numpy()
        if progress is not None:
            progress(i + 1, len(cams))
    return out


def _exposed(images: np.ndarray, spec: CaptureSpec) -> tuple[np.ndarray, np.ndarray]:
    g = np.random.default_rng(spec.seed + 2)
    e = g.uniform(*spec.exposure, len(images))
    lit = np.clip(images.astype(np.float32) * e[:, None, None, None], 0, 255)
    return (lit + 0.5).astype(np.uint8), e


def write_truth(path: Path, spec: CaptureSpec, cams: Cameras, names: list[str],
                extra: dict | None = None) -> None:
    """`truth.json`: the spec, and per image its name and OpenGL camera-to-world matrix."""
    write_json(path, {"spec": asdict(spec), "convention": "OpenGL camera-to-world, z up",
                      "focal": spec.focal,
                      "frames": [{"name": n, "c2w": cams.c2w[i].tolist()}
                                 for i, n in enumerate(names)],
                      **(extra or {})})


def make_photos(folder: str | os.PathLike, spec: CaptureSpec | None = None,
                progress: Callable[[int, int], None] | None = None) -> Path:
    """Writes `spec.n` JPEG photos (``IMG_0000.jpg``...) of the textured tabletop into
    `folder`, each at its own exposure, and ``truth.json`` (true cameras, exposures) beside
    the folder (``<folder>.truth.json``), so that the folder holds photos only. Returns the
    folder."""
    import imageio.v3 as iio

    spec = spec or CaptureSpec()
    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    cams = capture_cameras(spec)
    images, exposures = _exposed(render_capture(spec, cams, progress), spec)
    names = [f"IMG_{i:04d}.jpg" for i in range(spec.n)]
    for name, img in zip(names, images, strict=True):
        atomic_write(root / name,
                     lambda tmp, img=img: iio.imwrite(tmp, img, extension=".jpg", quality=92))
    write_truth(truth_path(root), spec, cams, names, {"exposure": exposures.tolist()})
    return root


def make_video(path: str | os.PathLike, spec: CaptureSpec | None = None, fps: int = 24,
               progress: Callable[[int, int], None] | None = None) -> Path:
    """Writes an .mp4 (H.264 by imageio-ffmpeg) of `spec.n` frames along a smooth orbit and
    ``<path>.truth.json`` (frame k's camera is named ``frame_<k>``). Returns the path."""
    spec = spec or CaptureSpec(n=120)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    cams = capture_cameras(spec, video=True)
    frames = render_capture(spec, cams, progress)
    write_video(out, [torch.from_numpy(f).float() / 255 for f in frames], fps=fps)
    write_truth(truth_path(out), spec, cams, [f"frame_{k:05d}" for k in range(spec.n)],
                {"fps": fps})
    return out


def truth_path(capture: str | os.PathLike) -> Path:
    """Where `make_photos` / `make_video` put the true cameras of a capture."""
    p = Path(capture)
    return p.with_name(p.name + ".truth.json")
