"""Meshes from fields: sample a scalar field on a grid (in chunks), marching cubes
(scikit-image), mesh files (PLY through the engine's one PLY codec,
`fields.data.pointclouds.write_ply` / `read_ply`; other formats through trimesh) and surface
metrics."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fields.data.pointclouds import read_ply, write_ply
from fields.io import atomic_write
from fields.render.cameras import plain_numbers


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


# -- chunked extraction: any resolution, no seams --


def extract_surface(
    fn: Callable[[torch.Tensor], torch.Tensor],
    aabb: torch.Tensor,
    resolution: int,
    level: float = 0.0,
    chunk: int = 128,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The `level` iso-surface of fn (P, 3) -> (P,) over a grid of `resolution`^3 vertices
    spanning `aabb` (2, 3), by marching cubes over blocks of `chunk`^3 cells: memory stays at
    one block whatever the resolution. Neighbouring blocks share their boundary samples, so
    the vertices they both make coincide and are merged: the mesh equals the one extracted in
    one piece (up to vertex order and float32 rounding). Faces are oriented so that normals
    point towards values above `level` (outwards for a signed distance).

    Returns vertices (V, 3) float32 (world units) and faces (F, 3) int64."""
    from skimage.measure import marching_cubes as mc

    if resolution < 2:
        raise ValueError(f"extract_surface: resolution must be >= 2, got {resolution}")
    if chunk < 1:
        raise ValueError(f"extract_surface: chunk must be >= 1, got {chunk}")
    aabb = torch.as_tensor(aabb, dtype=torch.float64).reshape(2, 3)
    lo = aabb[0]
    step = (aabb[1] - aabb[0]) / (resolution - 1)
    n_cells = resolution - 1
    starts = list(range(0, n_cells, chunk))
    blocks = [(i, j, k) for i in starts for j in starts for k in starts]
    verts_all: list[np.ndarray] = []
    faces_all: list[np.ndarray] = []
    offset = 0
    for b, (i, j, k) in enumerate(blocks):
        ends = [min(s + chunk, n_cells) for s in (i, j, k)]
        idx = [torch.arange(s, e + 1, dtype=torch.float64) for s, e in zip((i, j, k), ends,
                                                                         strict=True)]
        gx, gy, gz = torch.meshgrid(*idx, indexing="ij")
        pts = (lo + torch.stack((gx, gy, gz), -1) * step).reshape(-1, 3).float()
        with torch.no_grad():
            vals = torch.cat([fn(p).reshape(-1) for p in pts.split(2**18)])
        vol = vals.reshape(gx.shape).numpy().astype(np.float32)
        if progress is not None:
            progress(b + 1, len(blocks))
        if not (vol.min() < level < vol.max()):
            continue
        v, f, _, _ = mc(vol, level=level, gradient_direction="descent")
        verts_all.append(v.astype(np.float64) + np.array([i, j, k], dtype=np.float64))
        faces_all.append(f.astype(np.int64) + offset)
        offset += len(v)
    if not verts_all:
        return np.zeros((0, 3), np.float32), np.zeros((0, 3), np.int64)
    verts = np.concatenate(verts_all)
    faces = np.concatenate(faces_all)
    # merge the vertices that neighbouring blocks both made: the same point on the same grid
    # edge, up to float32 rounding in each block's frame (they are not bit-identical: each
    # block adds its fraction to its own integer offset). Distinct vertices closer than 2^-16
    # cells only occur where the field is ~0 at a grid vertex; merging those collapses
    # degenerate slivers, which are dropped below.
    keys = np.round(verts * 65536.0).astype(np.int64)
    _, first, inverse = np.unique(keys, axis=0, return_index=True, return_inverse=True)
    uniq = verts[first]
    faces = inverse.reshape(-1)[faces]
    keep = (faces[:, 0] != faces[:, 1]) & (faces[:, 1] != faces[:, 2]) & (faces[:, 0] !=
                                                                          faces[:, 2])
    world = lo.numpy() + uniq * step.numpy()
    return world.astype(np.float32), faces[keep]


# -- mesh files through trimesh --


def save_mesh(path: str | os.PathLike, vertices: np.ndarray, faces: np.ndarray,
              colors: np.ndarray | None = None) -> Path:
    """Writes a mesh (vertices (V, 3), faces (F, 3), optional uint8 colours (V, 3))
    atomically; the format follows the suffix: .ply (binary, `fields.data.pointclouds.write_ply`),
    .obj, .glb, .stl, .off (trimesh)."""
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix == ".ply":
        return write_ply(p, vertices, faces, colors)
    if suffix not in (".obj", ".glb", ".stl", ".off"):
        raise ValueError(f"{p}: unknown mesh format {suffix!r}; use .ply, .obj, .glb, .stl "
                         "or .off")
    import trimesh

    mesh = trimesh.Trimesh(vertices, faces, vertex_colors=colors, process=False)
    data = mesh.export(file_type=suffix[1:])
    blob = data.encode() if isinstance(data, str) else data

    def write(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            fh.write(blob)

    return atomic_write(p, write)


def load_mesh(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Vertices (V, 3) float64 and triangle faces (F, 3) int64 of a mesh file (obj, ply, stl,
    glb, off; scenes are flattened into one mesh).

    Raises FileNotFoundError for a missing file and ValueError naming the file for one that
    is not a readable triangle mesh: no vertices or no triangles, a vertex that is not
    finite (``vertex 12 is not finite (nan, 0, 1)``), face indices outside the vertices, or
    no area at all."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no such mesh file")
    if p.suffix.lower() == ".ply":  # the engine's own codec: errors name the header line
        verts, tris = read_ply(p)
        v = np.asarray(verts, dtype=np.float64)
        f = np.zeros((0, 3), np.int64) if tris is None else tris
    else:
        v, f = _load_trimesh(p)
    return check_mesh(p, v, f)


def _load_trimesh(p: Path) -> tuple[np.ndarray, np.ndarray]:
    """(vertices, faces) as trimesh reads them, unchecked; ValueError naming the file when
    trimesh cannot read it."""
    import trimesh

    try:
        with np.errstate(all="ignore"):
            mesh = trimesh.load(p, force="mesh", process=False)
            if hasattr(mesh, "merge_vertices"):  # STL stores every triangle's own corners
                verts = np.asarray(mesh.vertices)
                if len(verts) and np.isfinite(verts).all():  # merging compares coordinates
                    mesh.merge_vertices()
        v = np.asarray(getattr(mesh, "vertices", np.zeros((0, 3))), dtype=np.float64)
        f = np.asarray(getattr(mesh, "faces", np.zeros((0, 3))))
    except Exception as e:  # trimesh raises many types for files it cannot parse
        raise ValueError(f"{p}: not a readable mesh ({type(e).__name__}: {e})") from e
    return v, f


def check_mesh(path: Path, v: np.ndarray, f: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Vertices (V, 3) float64 and faces (F, 3) int64, checked; ValueError naming `path` and
    what is wrong (see `load_mesh`)."""
    v = np.asarray(v, dtype=np.float64)
    f = np.asarray(f)
    if v.ndim != 2 or v.shape[1] != 3 or len(v) == 0 or f.size == 0 or f.ndim != 2 \
            or f.shape[1] != 3:
        raise ValueError(f"{path}: no triangles in the mesh (vertices of shape {v.shape}, "
                         f"faces of shape {f.shape}; expected a triangle mesh: (V, 3) vertices "
                         "and (F, 3) faces, V, F >= 1)")
    if f.dtype.kind not in "iu":
        raise ValueError(f"{path}: face indices of type {f.dtype} (expected integers)")
    f = f.astype(np.int64)
    finite = np.isfinite(v).all(axis=1)
    if not finite.all():
        i = int(np.argmin(finite))
        raise ValueError(f"{path}: vertex {i} is not finite ({plain_numbers(v[i], ', ', 9)}); "
                         f"{int((~finite).sum())} of {len(v)} vertices are not (expected finite "
                         "coordinates)")
    out = (f < 0) | (f >= len(v))
    if out.any():
        i = int(np.argmax(out.any(axis=1)))
        raise ValueError(f"{path}: face {i} has vertex indices {' '.join(map(str, f[i]))}, "
                         f"outside the {len(v)} vertices (expected indices in [0, {len(v)}))")
    with np.errstate(all="ignore"):
        area = np.linalg.norm(np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]]),
                              axis=1)
    if not np.isfinite(area).all():
        raise ValueError(f"{path}: vertex coordinates so large that triangle areas overflow "
                         "(expected coordinates below ~1e150)")
    if not area.sum() > 0:
        raise ValueError(f"{path}: the mesh has no area (all {len(f)} triangles are "
                         "degenerate; expected a surface)")
    return v, f


# -- surface metrics --


def sample_surface(vertices: np.ndarray, faces: np.ndarray, n: int,
                   seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """`n` points uniformly on the surface (area-weighted) and their faces' unit normals."""
    v = np.asarray(vertices, dtype=np.float64)
    f = np.asarray(faces, dtype=np.int64)
    a, b, c = v[f[:, 0]], v[f[:, 1]], v[f[:, 2]]
    cross = np.cross(b - a, c - a)
    area = np.linalg.norm(cross, axis=1)
    if area.sum() <= 0:
        raise ValueError("sample_surface: the mesh has no area")
    rng = np.random.default_rng(seed)
    tri = rng.choice(len(f), size=n, p=area / area.sum())
    r1, r2 = rng.random(n), rng.random(n)
    s = np.sqrt(r1)
    pts = (1 - s)[:, None] * a[tri] + (s * (1 - r2))[:, None] * b[tri] + (s * r2)[:, None] * c[tri]
    normals = cross[tri] / np.maximum(area[tri], 1e-30)[:, None]
    return pts, normals


def surface_metrics(pred: tuple[np.ndarray, np.ndarray], gt: tuple[np.ndarray, np.ndarray],
                    n_points: int = 100_000, tau: float = 0.005, seed: int = 0,
                    objects: tuple[Callable[[np.ndarray], np.ndarray], Sequence[str]] | None
                    = None) -> dict[str, Any]:
    """Chamfer-L1, F-score@tau and normal consistency between two meshes ((vertices, faces)
    each), from `n_points` sampled on each, in units of the ground truth's bounding-box
    diagonal (`shared/BENCHMARKS.md`).

    - ``chamfer_l1``: the mean of the two directions' mean nearest-neighbour distances
      (accuracy: predicted to true; completeness: true to predicted), also returned apart;
    - ``f_score``: harmonic mean of precision (predicted points within tau of the truth) and
      recall (true points within tau of the prediction), tau a fraction of the diagonal;
    - ``normal_consistency``: the mean |cos| between each point's normal and its nearest
      neighbour's on the other mesh, both directions;
    - ``objects`` (with `objects`, a function labelling points (P, 3) of the truth with object
      ids (P,) and the objects' names): per object, the Chamfer-L1, accuracy and completeness
      restricted to it (completeness over its true points, accuracy over the predicted points
      whose nearest true point is on it) and its share of the true surface.
    """
    from scipy.spatial import cKDTree

    gv = np.asarray(gt[0], dtype=np.float64)
    diag = float(np.linalg.norm(gv.max(0) - gv.min(0)))
    if len(pred[1]) == 0:  # no surface at all: no distances (null in JSON), F-score 0
        return {"chamfer_l1": None, "accuracy": None,
                "completeness": None, "f_score": 0.0, "precision": 0.0,
                "recall": 0.0, "normal_consistency": 0.0, "tau": tau, "diagonal": diag}
    p_pts, p_n = sample_surface(pred[0], pred[1], n_points, seed)
    g_pts, g_n = sample_surface(gt[0], gt[1], n_points, seed + 1)
    d_pg, i_pg = cKDTree(g_pts).query(p_pts, workers=-1)
    d_gp, i_gp = cKDTree(p_pts).query(g_pts, workers=-1)
    d_pg, d_gp = d_pg / diag, d_gp / diag
    precision = float((d_pg < tau).mean())
    recall = float((d_gp < tau).mean())
    f = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    nc = 0.5 * (np.abs((p_n * g_n[i_pg]).sum(1)).mean() + np.abs((g_n * p_n[i_gp]).sum(1)).mean())
    out: dict[str, Any] = {
        "chamfer_l1": float(0.5 * (d_pg.mean() + d_gp.mean())),
        "accuracy": float(d_pg.mean()), "completeness": float(d_gp.mean()),
        "f_score": f, "precision": precision, "recall": recall,
        "normal_consistency": float(nc), "tau": tau, "diagonal": diag}
    if objects is not None:
        label, names = objects
        g_id = np.asarray(label(g_pts))
        p_id = g_id[i_pg]  # a predicted point belongs to its nearest true point's object
        per = {}
        for k, name in enumerate(names):
            g_k, p_k = g_id == k, p_id == k
            if not g_k.any():
                continue
            acc = float(d_pg[p_k].mean()) if p_k.any() else None
            comp = float(d_gp[g_k].mean())
            per[name] = {"chamfer_l1": None if acc is None else 0.5 * (acc + comp),
                         "accuracy": acc, "completeness": comp, "share": float(g_k.mean())}
        out["objects"] = per
    return out


def is_watertight(faces: np.ndarray) -> bool:
    """Whether every edge is shared by exactly two faces (a closed 2-manifold edge set)."""
    f = np.asarray(faces, dtype=np.int64)
    if len(f) == 0:
        return False
    e = np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])
    e.sort(axis=1)
    _, counts = np.unique(e, axis=0, return_counts=True)
    return bool((counts == 2).all())
