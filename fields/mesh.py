"""Meshes from fields: sample a scalar field on a grid (in chunks), marching cubes
(scikit-image), and PLY output written atomically."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from fields.io import atomic_write


def sample_grid(
    fn: Callable[[torch.Tensor], torch.Tensor],
    aabb: torch.Tensor,
    resolution: int,
    chunk: int = 2**18,
) -> torch.Tensor:
    """Values (res, res, res) of fn (P, 3) -> (P,) at the vertices of a regular grid spanning
    `aabb` (2, 3), indexed [ix, iy, iz]; evaluated in chunks of `chunk` points, no grad."""
    if resolution < 2:
        raise ValueError(f"sample_grid: resolution must be >= 2, got {resolution}")
    axes = [torch.linspace(float(aabb[0, i]), float(aabb[1, i]), resolution) for i in range(3)]
    out = torch.empty(resolution**3)
    yz = torch.stack(torch.meshgrid(axes[1], axes[2], indexing="ij"), -1).reshape(-1, 2)
    per_slab = yz.shape[0]
    slabs = max(1, chunk // per_slab)
    with torch.no_grad():
        for start in range(0, resolution, slabs):  # loop over slabs of the grid, not points
            xs = axes[0][start : start + slabs]
            pts = torch.cat(
                (xs.repeat_interleave(per_slab)[:, None], yz.repeat(xs.shape[0], 1)), dim=-1
            )
            out[start * per_slab : start * per_slab + pts.shape[0]] = fn(pts).reshape(-1)
    return out.reshape(resolution, resolution, resolution)


def marching_cubes(
    volume: torch.Tensor, level: float, aabb: torch.Tensor
) -> tuple[np.ndarray, np.ndarray]:
    """Triangle mesh (vertices (V, 3) float32 in world units, faces (F, 3) int64) of the
    `level` iso-surface of volume (res, res, res) sampled on the vertices of a grid over aabb;
    faces are oriented so that normals point from values above `level` towards values below
    it (outwards for a density, whose inside is above the level)."""
    from skimage.measure import marching_cubes as mc

    vol = volume.detach().cpu().numpy().astype(np.float32)
    if not (vol.min() < level < vol.max()):
        return np.zeros((0, 3), np.float32), np.zeros((0, 3), np.int64)
    lo = aabb[0].numpy()
    spacing = (aabb[1] - aabb[0]).numpy() / (np.array(vol.shape) - 1)
    verts, faces, _, _ = mc(vol, level=level, spacing=tuple(spacing), gradient_direction="ascent")
    return (verts + lo).astype(np.float32), faces.astype(np.int64)


def write_ply(
    path: str | os.PathLike,
    vertices: np.ndarray,
    faces: np.ndarray,
    colors: np.ndarray | None = None,
) -> Path:
    """Writes a binary little-endian PLY (vertices (V, 3), faces (F, 3), optional uint8
    colours (V, 3)) atomically."""
    v = np.ascontiguousarray(vertices, dtype="<f4")
    f = np.ascontiguousarray(faces, dtype="<i4")
    header = ["ply", "format binary_little_endian 1.0", f"element vertex {len(v)}",
              "property float x", "property float y", "property float z"]
    if colors is not None:
        header += ["property uchar red", "property uchar green", "property uchar blue"]
    header += [f"element face {len(f)}", "property list uchar int vertex_indices",
               "end_header"]
    if colors is not None:
        vdt = np.dtype([("p", "<f4", 3), ("c", "u1", 3)])
        vrec = np.empty(len(v), vdt)
        vrec["p"], vrec["c"] = v, np.asarray(colors, dtype=np.uint8)
    else:
        vrec = v
    frec = np.empty(len(f), np.dtype([("n", "u1"), ("i", "<i4", 3)]))
    frec["n"], frec["i"] = 3, f

    def write(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            fh.write(("\n".join(header) + "\n").encode("ascii"))
            fh.write(vrec.tobytes())
            fh.write(frec.tobytes())

    return atomic_write(path, write)


def read_ply(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Reads a PLY written by `write_ply` (binary, float xyz, optional uchar rgb, triangle
    faces): vertices (V, 3), faces (F, 3)."""
    data = Path(path).read_bytes()
    end = data.index(b"end_header\n") + len(b"end_header\n")
    header = data[:end].decode("ascii").splitlines()
    nv = int(next(h for h in header if h.startswith("element vertex")).split()[-1])
    nf = int(next(h for h in header if h.startswith("element face")).split()[-1])
    has_color = any("red" in h for h in header)
    vdt = np.dtype([("p", "<f4", 3), ("c", "u1", 3)]) if has_color else np.dtype(("<f4", 3))
    verts = np.frombuffer(data, vdt, nv, end)
    verts = verts["p"] if has_color else verts
    faces = np.frombuffer(data, np.dtype([("n", "u1"), ("i", "<i4", 3)]), nf,
                          end + nv * vdt.itemsize)["i"]
    return np.array(verts), np.array(faces, dtype=np.int64)


def clean_density_volume(
    volume: torch.Tensor, level: float, min_component: float = 1e-3
) -> torch.Tensor:
    """Keeps only the surface of a density volume (res, res, res) that can be seen from
    outside, for meshing a radiance field:

    - inside (density > `level`) components with fewer than `min_component` times the voxels
      of the largest one are removed (floaters in empty space);
    - empty cavities that do not connect to the volume's border are filled (a radiance field's
      density inside opaque objects is never observed, so iso-surfaces there are noise).

    Returns a copy whose removed voxels are 0 and whose filled voxels are at least
    2 * `level`, so marching cubes at `level` meshes only the outer surface."""
    from scipy import ndimage

    vol = volume.detach().cpu().numpy().copy()
    solid = vol > level
    labels, n = ndimage.label(solid)
    if n > 1:
        sizes = np.bincount(labels.ravel())[1:]
        small = np.flatnonzero(sizes < min_component * sizes.max()) + 1
        vol[np.isin(labels, small)] = 0.0
        solid = vol > level
    empty_labels, _ = ndimage.label(~solid)
    border = np.unique(np.concatenate([
        empty_labels[[0, -1]].ravel(), empty_labels[:, [0, -1]].ravel(),
        empty_labels[:, :, [0, -1]].ravel(),
    ]))
    border = border[border > 0]
    cavity = ~solid & ~np.isin(empty_labels, border)
    vol[cavity] = np.maximum(vol[cavity], 2.0 * level)
    return torch.from_numpy(vol)
