"""LLFF forward-facing scenes: ``poses_bounds.npy`` plus ``images/`` (as in the NeRF paper's
real scenes).

``poses_bounds.npy`` is an (N, 17) float array, one row per image in sorted file-name order:
the first 15 values are a 3x5 matrix (row-major) ``[R | t | hwf]`` — a camera-to-world
rotation whose columns are the camera's [down, right, backwards] axes, its centre ``t`` and
``(height, width, focal)`` in pixels of the original images — and the last two the near and
far depth bounds of the scene content seen by that camera.

What `read_llff` does to them, as the original NeRF code (``load_llff_data``) does:

1. rotation columns to the OpenGL [right, up, backwards] frame: ``new = [c1, -c0, c2]``;
2. rescale so that the nearest bound becomes ``1 / bd_factor`` with ``bd_factor = 0.75``
   (``s = 1 / (0.75 * min(near))``; translations and bounds are multiplied by ``s``);
3. recentre: apply the inverse of the average pose (mean centre, mean viewing axis, mean up)
   to every pose, so the average camera sits at the origin looking down -z with +y up.

``hwf``'s focal length is scaled to the size of the images actually read.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fields.data.blender import check_downscale, hold_out_splits, load_images
from fields.data.dataset import SceneData
from fields.render.cameras import Cameras, check_cameras, checked_rotations, plain_numbers

BD_FACTOR = 0.75
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def image_files(folder: Path) -> list[Path]:
    """Image files (png, jpg, jpeg, any case) directly in `folder`, sorted by name."""
    return sorted(
        (p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES),
        key=lambda p: p.name,
    )


def _normalize(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def average_pose(c2w: np.ndarray) -> np.ndarray:
    """(4, 4) average of (N, 3, 4) OpenGL camera-to-world matrices: mean centre, the mean
    backwards axis, and the mean up axis orthogonalised against it (NeRF's ``poses_avg``)."""
    centre = c2w[:, :, 3].mean(0)
    back = _normalize(c2w[:, :, 2].sum(0))
    up = c2w[:, :, 1].sum(0)
    right = _normalize(np.cross(up, back))
    up = _normalize(np.cross(back, right))
    m = np.eye(4)
    m[:3, :4] = np.stack((right, up, back, centre), axis=1)
    return m


def _read_poses_bounds(npy: Path) -> np.ndarray:
    """The (N, 17) float64 array of ``poses_bounds.npy``, checked to be one, finite."""
    expected = ("expected (N, 17): an N x 17 float array, each row a row-major 3x5 pose "
                "[R | t | hwf] then the near and far bounds of one image")
    try:
        arr = np.load(npy, allow_pickle=False)
    except Exception as e:  # pickled or text data, a truncated header or body: many types
        raise ValueError(f"{npy}: not a .npy array ({type(e).__name__}: {e}; {expected})") \
            from e
    if not isinstance(arr, np.ndarray):  # an .npz archive
        raise ValueError(f"{npy}: not a .npy array (an .npz archive; {expected})")
    if arr.dtype.kind not in "iuf":
        raise ValueError(f"{npy}: array of type {arr.dtype} ({expected})")
    if arr.ndim != 2 or arr.shape[1] != 17 or arr.shape[0] < 1:
        raise ValueError(f"{npy}: array has shape {arr.shape} ({expected})")
    arr = arr.astype(np.float64)
    finite = np.isfinite(arr).all(axis=1)
    if not finite.all():
        i = int(np.argmin(finite))
        raise ValueError(f"{npy}: row {i} has non-finite values ({plain_numbers(arr[i])}; "
                         "expected finite numbers)")
    return arr


def checked_poses_bounds(npy: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``poses_bounds.npy`` read and checked: (poses (N, 3, 5), bounds (N, 2), rotations
    (N, 3, 3)); ValueError naming the file, the row and the columns otherwise."""
    arr = _read_poses_bounds(npy)
    poses = arr[:, :15].reshape(-1, 3, 5)
    bounds = arr[:, 15:17]
    bad = (bounds[:, 0] <= 0) | (bounds[:, 1] < bounds[:, 0])
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(f"{npy}: row {i}: near, far bounds (columns 15, 16) are "
                         f"{bounds[i, 0]:g} {bounds[i, 1]:g} (expected 0 < near <= far)")
    hwf = poses[:, :, 4]
    bad = (hwf <= 0).any(axis=1)
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(f"{npy}: row {i}: height, width, focal (columns 4, 9, 14) are "
                         f"{hwf[i, 0]:g} {hwf[i, 1]:g} {hwf[i, 2]:g} (expected > 0)")
    rot = checked_rotations(
        np.concatenate((poses[:, :, :3], np.zeros((len(poses), 3, 1))), axis=2),
        [f"{npy}: row {i}: rotation (columns 0-2, 5-7, 10-12)" for i in range(len(poses))],
    )[:, :, :3]
    return poses, bounds, rot


def llff_geometry(poses: np.ndarray, bounds: np.ndarray, rot: np.ndarray, w: int, h: int
                  ) -> dict[str, Any]:
    """LLFF's cameras for images of w x h (see the module docstring): {"c2w" (N, 3, 4) OpenGL,
    "focal" (N,), "bounds" (N, 2) rescaled, "aabb" (2, 3), "scale", "average_pose" (4, 4)}."""
    hwf = poses[:, :, 4]
    focal = hwf[:, 2] * w / hwf[:, 1]  # hwf's size is the original images'
    c2w = np.concatenate((rot[:, :, 1:2], -rot[:, :, 0:1], rot[:, :, 2:3], poses[:, :, 3:4]),
                         axis=2)
    s = 1.0 / (bounds.min() * BD_FACTOR)
    c2w[:, :, 3] *= s
    bounds = bounds * s
    avg = average_pose(c2w)
    c2w = np.linalg.inv(avg)[None, :3, :] @ np.concatenate(
        (c2w, np.broadcast_to([[[0.0, 0.0, 0.0, 1.0]]], (len(c2w), 1, 4))), axis=1
    )

    # aabb: camera centres and the far-bound corners of each frustum
    corners_px = np.array([[0, 0], [w, 0], [0, h], [w, h]], dtype=np.float64)
    x = (corners_px[None, :, 0] - 0.5 * w) / focal[:, None]  # (N, 4)
    y = (corners_px[None, :, 1] - 0.5 * h) / focal[:, None]
    far = bounds[:, 1:2]
    p_cam = np.stack((x * far, -y * far, -np.broadcast_to(far, x.shape)), axis=-1)  # (N, 4, 3)
    p_world = np.einsum("nij,nkj->nki", c2w[:, :, :3], p_cam) + c2w[:, None, :, 3]
    pts = np.concatenate((c2w[:, :, 3], p_world.reshape(-1, 3)))
    aabb = np.stack((pts.min(0), pts.max(0)))

    return {"c2w": c2w, "focal": focal, "bounds": bounds, "aabb": aabb, "scale": s,
            "average_pose": avg}


def read_llff(path: str | os.PathLike, downscale: int = 1, hold_every: int = 8) -> SceneData:
    """Reads an LLFF scene folder (see the module docstring for the pose conventions).

    Args:
        path: folder holding ``poses_bounds.npy`` and ``images/``.
        downscale: integer factor. Images come from ``images_<downscale>/`` when that folder
            exists (LLFF's pre-shrunk copies), else from ``images/`` area-averaged to
            ``(H // d, W // d)``.
        hold_every: with more than `hold_every` images, images 0, hold_every, 2 hold_every, ...
            form the "test" split and the rest "train"; 0 keeps all in "train".
    Returns:
        SceneData: images (N, H, W, 3); pinhole cameras with ``fx = fy = focal`` (scaled to the
        images read) and the principal point at the image centre; unbounded; near = 0.9 x the
        smallest near bound and far = the largest far bound (after rescaling); aabb the box
        around the camera centres and the corners of every camera's view frustum cut at its
        far bound (the region holding all content that LLFF's bounds admit). meta holds the
        rescaling factor and the recentring (4, 4) average pose.
    """
    root = Path(path)
    npy = root / "poses_bounds.npy"
    if not npy.is_file():
        raise FileNotFoundError(f"{npy}: no such file; not an LLFF scene folder")
    d = check_downscale(downscale)
    poses, bounds, rot = checked_poses_bounds(npy)
    folder = root / f"images_{d}"
    pre_shrunk = d > 1 and folder.is_dir()
    if not pre_shrunk:
        folder = root / "images"
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such folder (expected the images of {npy})")
    files = image_files(folder)
    if len(files) != len(poses):
        raise ValueError(
            f"{folder}: {len(files)} images but {npy} has {len(poses)} poses "
            "(expected one image per row, in sorted file-name order)"
        )
    images, _, _ = load_images(files, 1 if pre_shrunk else d, source=folder)
    h, w = images.shape[1:3]

    geo = llff_geometry(poses, bounds, rot, w, h)
    c2w, focal, bounds, aabb = geo["c2w"], geo["focal"], geo["bounds"], geo["aabb"]
    s, avg = geo["scale"], geo["average_pose"]

    cams = Cameras(torch.from_numpy(c2w).float(), torch.from_numpy(focal).float(),
                   torch.from_numpy(focal).float(), 0.5 * w, 0.5 * h, w, h)
    check_cameras(cams, [f"{npy}: row {i}" for i in range(len(cams))],
                  {"fx": "focal (column 14)", "fy": "focal (column 14)"})
    names = [f.name for f in files]
    splits = hold_out_splits(images, cams, names, hold_every)
    return SceneData(
        name=root.resolve().name, splits=splits, aabb=torch.from_numpy(aabb).float(),
        unbounded=True, near=float(0.9 * bounds[:, 0].min()), far=float(bounds[:, 1].max()),
        meta={"format": "llff", "path": str(root), "downscale": d, "scale": s,
              "average_pose": avg.tolist(), "images": str(folder)},
    )
