"""NeuS / IDR scenes (DTU and BlendedMVS as the NeuS authors distribute them).

Layout::

    scene/
      cameras_sphere.npz   world_mat_i (4x4: K [R | t], world to pixels), scale_mat_i (4x4:
                           the unit sphere of interest to world), for i = 0 .. N-1
      image/000.png ...    N images, sorted by name
      mask/000.png ...     optional masks (any channel; > 0.5 is foreground)

As NeuS does, each camera's projection is P = world_mat_i @ scale_mat_i (so the scene of
interest is the unit sphere), split into intrinsics K and pose by an RQ decomposition, and
converted from OpenCV's camera frame to the engine's OpenGL one (and the principal point from
OpenCV's integer pixel centres to the engine's half-integer ones). The box is [-1, 1]^3; masks
become the split's alpha, and the images are composited on black by them (the background,
black, is then what empty space renders to). Every
eighth image is held out for testing (as LLFF), unless `hold_out_every` says otherwise.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import torch

from fields.data.blender import area_downsample, hold_out_splits
from fields.data.dataset import SceneData
from fields.data.images import read_image
from fields.render.cameras import Cameras, opencv_to_opengl

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def decompose_projection(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(K (3, 3) with a positive diagonal, camera-to-world (3, 4) in OpenCV's frame) of a
    (3, 4) projection matrix P = K [R | t]."""
    from scipy.linalg import rq

    m = p[:, :3]
    k, r = rq(m)
    signs = np.diag(np.sign(np.diag(k)))
    k, r = k @ signs, signs @ r
    if np.linalg.det(r) < 0:  # P is only defined up to scale: flip both
        r = -r
        k = -k
    k = k / k[2, 2]
    centre = -np.linalg.solve(m, p[:, 3])
    return k, np.concatenate([r.T, centre[:, None]], axis=1)


def read_neus(path: str | os.PathLike, downscale: int = 1,
              hold_out_every: int | None = 8) -> SceneData:
    """Reads a NeuS / IDR scene folder (see the module docstring)."""
    root = Path(path)
    npz_path = root / "cameras_sphere.npz"
    if not npz_path.is_file():
        raise FileNotFoundError(f"{npz_path}: no such file")
    images = sorted(p for p in (root / "image").glob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise ValueError(f"{root / 'image'}: no images (.png or .jpg)")
    try:
        cams = np.load(npz_path)
    except Exception as e:
        raise ValueError(f"{npz_path}: not a readable .npz ({e})") from e
    c2w, fx, fy, cx, cy = [], [], [], [], []
    for i in range(len(images)):
        mats = []
        for key in (f"world_mat_{i}", f"scale_mat_{i}"):
            if key not in cams:
                raise ValueError(f"{npz_path}: field '{key}' is missing ({len(images)} images "
                                 "need world_mat_i and scale_mat_i for each)")
            m = np.asarray(cams[key], dtype=np.float64)
            if m.shape != (4, 4) or not np.isfinite(m).all():
                raise ValueError(f"{npz_path}: field '{key}' must be a finite 4x4 matrix, got "
                                 f"shape {m.shape}")
            mats.append(m)
        p = (mats[0] @ mats[1])[:3, :4]
        if abs(np.linalg.det(p[:, :3])) < 1e-12:
            raise ValueError(f"{npz_path}: world_mat_{i} @ scale_mat_{i} is singular")
        k, pose = decompose_projection(p)
        if abs(k[0, 1]) > 1e-3 * abs(k[0, 0]):
            warnings.warn(f"{npz_path}: world_mat_{i} has a skewed K (k01 = {k[0, 1]:.4g}); "
                          "the skew is dropped", stacklevel=2)
        c2w.append(pose)
        fx.append(k[0, 0])
        fy.append(k[1, 1])
        # OpenCV's pixel centres are at integers, the engine's at i + 0.5
        cx.append(k[0, 2] + 0.5)
        cy.append(k[1, 2] + 0.5)
    pics = [read_image(p) for p in images]
    h, w = pics[0].shape[:2]
    for p, im in zip(images, pics, strict=True):
        if im.shape[:2] != (h, w):
            raise ValueError(f"{p}: size {im.shape[1]}x{im.shape[0]} differs from the first "
                             f"image's {w}x{h}")
    rgb = torch.stack([im[..., :3] if im.shape[-1] >= 3 else im[..., :1].expand(h, w, 3)
                       for im in pics])
    alpha = None
    masks = sorted(p for p in (root / "mask").glob("*") if p.suffix.lower() in IMAGE_SUFFIXES) \
        if (root / "mask").is_dir() else []
    if masks:
        if len(masks) != len(images):
            raise ValueError(f"{root / 'mask'}: {len(masks)} masks for {len(images)} images")
        ms = []
        for p in masks:
            m = read_image(p)
            if m.shape[:2] != (h, w):
                raise ValueError(f"{p}: mask size {m.shape[1]}x{m.shape[0]}, image size {w}x{h}")
            ms.append((m[..., :1] > 0.5).float())
        alpha = torch.stack(ms)
        # the background is not part of the scene: composite the images on black by the masks
        rgb = rgb * alpha
    if downscale > 1:
        size = (h // downscale, w // downscale)
        rgb = area_downsample(rgb, size)
        alpha = area_downsample(alpha, size) if alpha is not None else None
    sx, sy = rgb.shape[2] / w, rgb.shape[1] / h
    cameras = Cameras(opencv_to_opengl(torch.tensor(np.stack(c2w), dtype=torch.float32)),
                      torch.tensor(fx) * sx, torch.tensor(fy) * sy,
                      torch.tensor(cx) * sx, torch.tensor(cy) * sy,
                      rgb.shape[2], rgb.shape[1])
    splits = hold_out_splits(rgb, cameras, [p.name for p in images], hold_out_every, alpha)
    return SceneData(root.name, splits, torch.tensor([[-1.0] * 3, [1.0] * 3]),
                     background=torch.zeros(3), near=0.0,
                     meta={"format": "neus", "source": str(root)})
