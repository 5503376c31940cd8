"""Procedural shapes with signed distance functions: negative inside, positive outside,
|gradient| = 1.

The primitives (`sphere`, `torus`, `box`, `capsule`) are exact Euclidean distances. CSG by
min / max (`union`, `intersection`, `difference`) keeps the zero level set and the sign
exactly; its magnitude is exact outside a union, and a bound (never larger than the true
distance) elsewhere. Supervising a field with it is standard practice (it is what the
literature's "CSG of exact SDFs" is); metrics use the zero level set only, meshed finely.

`BUILTIN` names the shapes `fields fit sdf` knows; each fits in [-1, 1]^3. The procedural
NeRF scenes (`fields.scenes.tabletop`) are built of the same primitives.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

SDF = Callable[[torch.Tensor], torch.Tensor]


def sphere(radius: float, centre: tuple[float, float, float] = (0.0, 0.0, 0.0)) -> SDF:
    """A ball of `radius` around `centre`: x (..., 3) -> (...)."""
    c = torch.tensor(centre)

    def f(x: torch.Tensor) -> torch.Tensor:
        return (x - c.to(x)).norm(dim=-1) - radius

    return f


def torus(major: float, minor: float, centre: tuple[float, float, float] = (0.0, 0.0, 0.0),
          axis: int = 2) -> SDF:
    """A ring of radius `major` around `axis` through `centre`, tube radius `minor`."""
    c = torch.tensor(centre)
    plane = [i for i in range(3) if i != axis]

    def f(x: torch.Tensor) -> torch.Tensor:
        p = x - c.to(x)
        q = torch.stack((p[..., plane].norm(dim=-1) - major, p[..., axis]), dim=-1)
        return q.norm(dim=-1) - minor

    return f


def box(half: tuple[float, float, float], centre: tuple[float, float, float] = (0.0, 0.0, 0.0),
        rounding: float = 0.0, yaw: float = 0.0) -> SDF:
    """A box of half-sizes `half` (its edges rounded by `rounding`), turned by `yaw` radians
    about the z axis."""
    b = torch.tensor(half) - rounding
    c = torch.tensor(centre)
    cs, sn = math.cos(yaw), math.sin(yaw)

    def f(x: torch.Tensor) -> torch.Tensor:
        p = x - c.to(x)
        if yaw:
            p = torch.stack((cs * p[..., 0] + sn * p[..., 1], -sn * p[..., 0] + cs * p[..., 1],
                             p[..., 2]), -1)
        q = p.abs() - b.to(x)
        outside = q.clamp_min(0).norm(dim=-1)
        inside = q.max(dim=-1).values.clamp_max(0)
        return outside + inside - rounding

    return f


def capsule(a: tuple[float, float, float], b: tuple[float, float, float], radius: float) -> SDF:
    """A segment a-b thickened by `radius` (a rod: a thin part when the radius is small)."""
    pa, pb = torch.tensor(a), torch.tensor(b)

    def f(x: torch.Tensor) -> torch.Tensor:
        ab = (pb - pa).to(x)
        t = (((x - pa.to(x)) @ ab) / (ab @ ab)).clamp(0, 1)
        return (x - pa.to(x) - t[..., None] * ab).norm(dim=-1) - radius

    return f


def union(*fs: SDF) -> SDF:
    """The union of the shapes `fs` (the minimum of their distances)."""

    def f(x: torch.Tensor) -> torch.Tensor:
        return torch.stack([g(x) for g in fs], dim=-1).min(dim=-1).values

    return f


def intersection(*fs: SDF) -> SDF:
    """The intersection of the shapes `fs` (the maximum of their distances)."""

    def f(x: torch.Tensor) -> torch.Tensor:
        return torch.stack([g(x) for g in fs], dim=-1).max(dim=-1).values

    return f


def difference(a: SDF, b: SDF) -> SDF:
    """a with b cut away."""

    def f(x: torch.Tensor) -> torch.Tensor:
        return torch.maximum(a(x), -b(x))

    return f


def csg_shape() -> SDF:
    """The default shape: a rounded box with a spherical bite taken out, a torus through it,
    and a thin handle (a 3%-radius rod arching over it): flat faces, sharp and rounded edges,
    a concave cut, a hole and a thin part."""
    body = difference(box((0.45, 0.45, 0.3), (0.0, 0.0, -0.25), rounding=0.05),
                      sphere(0.35, (0.3, 0.3, 0.05)))
    ring = torus(0.38, 0.08, (0.0, -0.1, 0.08), axis=0)
    handle = union(capsule((-0.45, 0.55, -0.2), (-0.45, 0.55, 0.55), 0.03),
                   capsule((-0.45, 0.55, 0.55), (0.45, 0.55, 0.55), 0.03),
                   capsule((0.45, 0.55, 0.55), (0.45, 0.55, -0.2), 0.03))
    return union(body, ring, handle)


BUILTIN: dict[str, Callable[[], SDF]] = {
    "csg": csg_shape,
    "sphere": lambda: sphere(0.6),
    "torus": lambda: torus(0.55, 0.2),
    "box": lambda: box((0.6, 0.45, 0.3)),
}


def builtin_shape(name: str) -> SDF:
    """The `BUILTIN` shape called `name`; ValueError naming the known ones otherwise."""
    if name not in BUILTIN:
        raise ValueError(f"unknown built-in shape {name!r}; expected one of {sorted(BUILTIN)}")
    return BUILTIN[name]()


def bumpy_blob() -> SDF:
    """A scanned-looking organic shape: a sphere with bumps of three frequencies, a torus
    handle and a dent. Its zero level set is what matters; the value is only distance-like
    (the displacement bends the gradient by a few per cent)."""
    ring = torus(0.28, 0.08, (0.0, 0.0, 0.55), axis=1)

    def body(x: torch.Tensor) -> torch.Tensor:
        r = x.norm(dim=-1)
        s = torch.sin
        bumps = (0.035 * s(6 * x[..., 0]) * s(5 * x[..., 1]) * s(7 * x[..., 2])
                 + 0.012 * s(17 * x[..., 0] + 3 * x[..., 2]) * s(19 * x[..., 1])
                 + 0.004 * s(41 * x[..., 1] + 29 * x[..., 0]))
        return r - 0.55 - bumps

    dent = sphere(0.25, (0.55, 0.0, 0.1))
    return union(difference(body, dent), ring)


def scan_like_mesh(n_faces: int = 100_000, noise: float = 0.0005,
                   seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A closed triangle mesh of `bumpy_blob` with about `n_faces` faces and Gaussian vertex
    noise of `noise` (box units) along the normals, like a scan: test data for
    `fields fit sdf --mesh` (nothing can be downloaded here)."""
    from fields.mesh import extract_surface

    cube = torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])
    f = bumpy_blob()
    res = 64
    verts, faces = extract_surface(f, cube, res)
    res = int(res * (n_faces / max(len(faces), 1)) ** 0.5)  # faces grow with res^2
    verts, faces = extract_surface(f, cube, res)
    rng = np.random.default_rng(seed)
    v = torch.from_numpy(verts).float().requires_grad_(True)
    (g,) = torch.autograd.grad(f(v).sum(), v)
    n = (g / g.norm(dim=-1, keepdim=True).clamp_min(1e-12)).numpy()
    verts = verts + n * rng.normal(0.0, noise, (len(verts), 1))
    return verts.astype(np.float32), faces
