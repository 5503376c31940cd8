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
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from fields.data.blender import (
    area_downsample,
    check_downscale,
    downscaled_size,
    hold_out_splits,
)
from fields.data.dataset import SceneData
from fields.data.images import read_image
from fields.render.cameras import Cameras, check_cameras, opencv_to_opengl

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


def _matrix(cams: Mapping[str, np.ndarray], key: str, npz_path: Path, n: int) -> np.ndarray:
    """The finite 4x4 float64 array `key` of the archive, or ValueError naming it."""
    if key not in cams:
        raise ValueError(f"{npz_path}: field '{key}' is missing ({n} images need world_mat_i "
                         "and scale_mat_i for each)")
    try:
        raw = cams[key]
    except Exception as e:  # a damaged member, an object array: many types
        raise ValueError(f"{npz_path}: field '{key}' cannot be read ({type(e).__name__}: {e}; "
                         "expected a finite 4x4 float matrix)") from e
    if raw.dtype.kind not in "iuf":
        raise ValueError(f"{npz_path}: field '{key}' has type {raw.dtype} (expected a finite "
                         "4x4 float matrix)")
    m = np.asarray(raw, dtype=np.float64)
    if m.shape != (4, 4) or not np.isfinite(m).all():
        raise ValueError(f"{npz_path}: field '{key}' must be a finite 4x4 matrix, got "
                         f"shape {m.shape}" + ("" if m.shape != (4, 4) else
                                               " with non-finite values"))
    return m


def read_neus(path: str | os.PathLike, downscale: int = 1,
              hold_out_every: int | None = 8) -> SceneData:
    """Reads a NeuS / IDR scene folder (see the module docstring).

    Args:
        path: the scene folder.
        downscale: integer factor; images (and masks) are area-averaged to
            ``(H // d, W // d)`` and the intrinsics scaled with them.
        hold_out_every: every this many-th image (0, k, 2k, ...) is held out as "test";
            None or 0 keeps all in "train".
    Returns:
        SceneData: images (N, H, W, 3) composited on black by the masks, alpha (N, H, W, 1)
        with masks, cameras from the decomposed projections, aabb [-1, 1]^3.
    Raises:
        FileNotFoundError without ``cameras_sphere.npz``; ValueError naming the file and
        field (``world_mat_3``, an image) for anything malformed."""
    root = Path(path)
    npz_path = root / "cameras_sphere.npz"
    if not npz_path.is_file():
        raise FileNotFoundError(f"{npz_path}: no such file")
    images = sorted(p for p in (root / "image").glob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise ValueError(f"{root / 'image'}: no images (.png or .jpg)")
    d = check_downscale(downscale)
    try:
        cams = np.load(npz_path, allow_pickle=False)
    except Exception as e:  # not a zip, truncated, a pickle: many types
        raise ValueError(f"{npz_path}: not a readable .npz ({type(e).__name__}: {e}; "
                         "expected an .npz archive of world_mat_i and scale_mat_i)") from e
    if not isinstance(cams, Mapping):  # a plain .npy array under the .npz name
        raise ValueError(f"{npz_path}: not an .npz archive (a single array; expected an .npz "
                         "archive of world_mat_i and scale_mat_i)")
    c2w, fx, fy, cx, cy = [], [], [], [], []
    try:
        for i in range(len(images)):
            mats = [_matrix(cams, key, npz_path, len(images))
                    for key in (f"world_mat_{i}", f"scale_mat_{i}")]
            with np.errstate(all="ignore"):
                p = (mats[0] @ mats[1])[:3, :4]
                det = np.linalg.det(p[:, :3]) if np.isfinite(p).all() else np.inf
            if not np.isfinite(det):
                raise ValueError(f"{npz_path}: world_mat_{i} @ scale_mat_{i} overflows (expected "
                                 "a finite projection matrix)")
            with np.errstate(over="ignore"):
                scale = np.abs(p[:, :3]).max()
                ill = abs(det) < 1e-12 or abs(det) <= 1e-9 * scale**3
            if ill:
                raise ValueError(f"{npz_path}: world_mat_{i} @ scale_mat_{i} is singular or "
                                 f"ill-conditioned (det {det:.3g}, largest entry {scale:.3g}; "
                                 "expected a projection K [R | t] of full rank)")
            k, pose = decompose_projection(p)
            if not (np.isfinite(k).all() and np.isfinite(pose).all()):
                raise ValueError(f"{npz_path}: world_mat_{i} @ scale_mat_{i} does not "
                                 "decompose into finite intrinsics and pose (expected a "
                                 "projection K [R | t])")
            if abs(k[0, 1]) > 1e-3 * abs(k[0, 0]):
                warnings.warn(f"{npz_path}: world_mat_{i} has a skewed K (k01 = {k[0, 1]:.4g}); "
                              "the skew is dropped", stacklevel=2)
            c2w.append(pose)
            fx.append(k[0, 0])
            fy.append(k[1, 1])
            # OpenCV's pixel centres are at integers, the engine's at i + 0.5
            cx.append(k[0, 2] + 0.5)
            cy.append(k[1, 2] + 0.5)
    finally:
        cams.close()  # the archive's file
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
    if d > 1:
        size = downscaled_size((h, w), d, root / "image")
        rgb = area_downsample(rgb, size)
        alpha = area_downsample(alpha, size) if alpha is not None else None
    sx, sy = rgb.shape[2] / w, rgb.shape[1] / h
    cameras = Cameras(opencv_to_opengl(torch.tensor(np.stack(c2w), dtype=torch.float32)),
                      torch.tensor(fx) * sx, torch.tensor(fy) * sy,
                      torch.tensor(cx) * sx, torch.tensor(cy) * sy,
                      rgb.shape[2], rgb.shape[1])
    check_cameras(cameras, [f"{npz_path}: world_mat_{i} @ scale_mat_{i}"
                            for i in range(len(images))],
                  {"fx": "K[0, 0] (fx)", "fy": "K[1, 1] (fy)", "cx": "K[0, 2] (cx)",
                   "cy": "K[1, 2] (cy)"})
    splits = hold_out_splits(rgb, cameras, [p.name for p in images], hold_out_every, alpha)
    return SceneData(root.name, splits, torch.tensor([[-1.0] * 3, [1.0] * 3]),
                     background=torch.zeros(3), near=0.0,
                     meta={"format": "neus", "source": str(root)})
