"""Pinhole and OpenCV-distorted cameras, and the rays through their pixels.

Convention inside the engine (OpenGL / Blender / NeRF): a camera-to-world matrix ``c2w``
(3, 4) maps camera coordinates to world coordinates; in camera coordinates the camera looks
down ``-z``, ``+x`` points right in the image and ``+y`` points up. Pixel ``(u, v)`` has
``u`` growing to the right and ``v`` growing downwards; pixel centres sit at ``u + 0.5``.
Readers of OpenCV-convention data (COLMAP, OpenCV calibrations: looks down ``+z``, ``+y``
down) convert with `opencv_to_opengl`.

Distortion follows OpenCV's radial-tangential model ``(k1, k2, p1, p2)``: a point at
normalised image coordinates ``(x, y)`` (the OpenCV frame, ``y`` down) is imaged at
``x' = x (1 + k1 r^2 + k2 r^4) + 2 p1 x y + p2 (r^2 + 2 x^2)``,
``y' = y (1 + k1 r^2 + k2 r^4) + p1 (r^2 + 2 y^2) + 2 p2 x y``. Rays are made by inverting
this map with fixed-point iterations.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch


def opencv_to_opengl(c2w: torch.Tensor) -> torch.Tensor:
    """Converts (..., 3, 4|4) camera-to-world matrices from the OpenCV camera frame (looks
    down +z, +y down) to the OpenGL one (looks down -z, +y up): flips the y and z axes."""
    flip = torch.tensor([1.0, -1.0, -1.0], dtype=c2w.dtype, device=c2w.device)
    out = c2w.clone()
    out[..., :3, :3] = c2w[..., :3, :3] * flip
    return out


@dataclass
class Cameras:
    """A batch of N cameras that share an image size.

    Attributes:
        c2w: (N, 3, 4) float32 camera-to-world matrices, OpenGL convention.
        fx, fy, cx, cy: (N,) float32 intrinsics in pixels.
        width, height: image size in pixels.
        distortion: (N, 4) float32 OpenCV ``(k1, k2, p1, p2)``; zeros for a pinhole; for
            ``fisheye``, OpenCV's fisheye ``(k1, k2, k3, k4)``.
        model: ``perspective`` (pinhole, with the radial-tangential distortion),
            ``fisheye`` (OpenCV's equidistant model: a ray at angle θ from the axis is imaged
            at radius ``θ (1 + k1 θ² + k2 θ⁴ + k3 θ⁶ + k4 θ⁸)`` in normalised coordinates) or
            ``equirectangular`` (a 360° panorama, nerfstudio's convention: longitude
            ``-π (u - cx) / fx``, ``fx = W / 2``; latitude from the top row looking up to the
            bottom row looking down, ``fy = H``).
    """

    c2w: torch.Tensor
    fx: torch.Tensor
    fy: torch.Tensor
    cx: torch.Tensor
    cy: torch.Tensor
    width: int
    height: int
    distortion: torch.Tensor | None = None
    model: str = "perspective"

    def __post_init__(self) -> None:
        if self.c2w.dim() != 3 or self.c2w.shape[1:] not in ((3, 4), (4, 4)):
            raise ValueError(f"Cameras: c2w must be (N, 3, 4), got {tuple(self.c2w.shape)}")
        self.c2w = self.c2w[:, :3, :4].float()
        n = self.c2w.shape[0]

        def vec(v: torch.Tensor | float, name: str) -> torch.Tensor:
            t = torch.as_tensor(v, dtype=torch.float32).reshape(-1)
            if t.numel() == 1:
                t = t.expand(n).clone()
            if t.shape != (n,):
                raise ValueError(f"Cameras: {name} must have {n} values, got {t.numel()}")
            return t

        self.fx, self.fy = vec(self.fx, "fx"), vec(self.fy, "fy")
        self.cx, self.cy = vec(self.cx, "cx"), vec(self.cy, "cy")
        if self.model not in CAMERA_MODELS:
            raise ValueError(f"Cameras: model {self.model!r} not in {CAMERA_MODELS}")
        self.width, self.height = int(self.width), int(self.height)
        if self.width < 1 or self.height < 1:
            raise ValueError(f"Cameras: bad image size {self.width}x{self.height}")
        if self.distortion is None:
            self.distortion = torch.zeros(n, 4)
        else:
            d = torch.as_tensor(self.distortion, dtype=torch.float32)
            if d.dim() == 1:
                d = d.expand(n, 4).clone()
            if d.shape != (n, 4):
                raise ValueError(
                    f"Cameras: distortion must be (N, 4) k1 k2 p1 p2, got {tuple(d.shape)}"
                )
            self.distortion = d

    def __len__(self) -> int:
        return self.c2w.shape[0]

    def __getitem__(self, idx: int | slice | torch.Tensor) -> Cameras:
        if isinstance(idx, int):
            idx = slice(idx, idx + 1)
        return Cameras(
            self.c2w[idx],
            self.fx[idx],
            self.fy[idx],
            self.cx[idx],
            self.cy[idx],
            self.width,
            self.height,
            self.distortion[idx],
            self.model,
        )

    @property
    def has_distortion(self) -> bool:
        return bool(self.distortion.abs().max() > 0) if len(self) else False

    def to_dict(self) -> dict[str, torch.Tensor | int]:
        return {
            "c2w": self.c2w,
            "fx": self.fx,
            "fy": self.fy,
            "cx": self.cx,
            "cy": self.cy,
            "width": self.width,
            "height": self.height,
            "distortion": self.distortion,
            "model": self.model,
        }

    def rays(
        self, camera: torch.Tensor, u: torch.Tensor, v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """World-space rays through image points.

        Args:
            camera: (R,) int64 camera index of each ray.
            u, v: (R,) float32 image coordinates in pixels (pixel centres at ``i + 0.5``).
        Returns:
            origins (R, 3) and unit directions (R, 3).
        """
        x = (u - self.cx[camera]) / self.fx[camera]
        y = (v - self.cy[camera]) / self.fy[camera]  # OpenCV frame: y down
        if self.model == "equirectangular":
            theta = -math.pi * x
            phi = math.pi * (0.5 + y)  # 0 at the top row (up), pi at the bottom (down)
            d_cam = torch.stack((-torch.sin(theta) * torch.sin(phi), torch.cos(phi),
                                 -torch.cos(theta) * torch.sin(phi)), dim=-1)
        elif self.model == "fisheye":
            theta_d = torch.sqrt(x * x + y * y)
            theta = fisheye_angle(theta_d, self.distortion[camera])
            ratio = torch.where(theta_d > 1e-9, torch.sin(theta) / theta_d.clamp_min(1e-9),
                                torch.ones_like(theta_d))
            d_cam = torch.stack((x * ratio, -y * ratio, -torch.cos(theta)), dim=-1)
        else:
            if self.has_distortion:
                x, y = undistort(x, y, self.distortion[camera])
            # OpenGL camera frame: +y up, looking down -z
            d_cam = torch.stack((x, -y, -torch.ones_like(x)), dim=-1)
        rot = self.c2w[camera, :, :3]
        d = torch.einsum("rij,rj->ri", rot, d_cam)
        d = d / d.norm(dim=-1, keepdim=True)
        o = self.c2w[camera, :, 3].expand_as(d)
        return o.contiguous(), d.contiguous()

    def pixel_rays(self, camera: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Rays through every pixel centre of one camera, row-major: (H * W, 3) twice."""
        v, u = torch.meshgrid(
            torch.arange(self.height, dtype=torch.float32) + 0.5,
            torch.arange(self.width, dtype=torch.float32) + 0.5,
            indexing="ij",
        )
        idx = torch.full((self.height * self.width,), camera, dtype=torch.long)
        return self.rays(idx, u.reshape(-1), v.reshape(-1))

    def project(self, points: torch.Tensor, camera: int | torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Image coordinates (P, 2) ``(u, v)`` of world points (P, 3) in one camera (an index),
        or each in its own (`camera` (P,) indices), and their depth (P,) along the viewing
        axis (positive in front of the camera)."""
        rot = self.c2w[camera, :, :3]
        if isinstance(camera, torch.Tensor) and camera.dim() == 1:  # (P, 3, 3): per point
            p_cam = torch.einsum("pi,pij->pj", points - self.c2w[camera, :, 3], rot)
        else:
            p_cam = (points - self.c2w[camera, :, 3]) @ rot  # world -> camera (orthonormal)
        depth = -p_cam[:, 2]
        if self.model == "equirectangular":  # depth: the distance; every direction is seen
            depth = p_cam.norm(dim=-1)
            d = p_cam / depth.clamp_min(1e-12)[:, None]
            phi = torch.acos(d[:, 1].clamp(-1.0, 1.0))
            theta = torch.atan2(-d[:, 0], -d[:, 2])
            x, y = -theta / math.pi, phi / math.pi - 0.5
        elif self.model == "fisheye":  # depth: positive within 90 degrees of the axis
            r = torch.sqrt(p_cam[:, 0] ** 2 + p_cam[:, 1] ** 2)
            theta = torch.atan2(r, -p_cam[:, 2])
            k1, k2, k3, k4 = self.distortion[camera].unbind(-1)
            t2 = theta * theta
            theta_d = theta * (1 + t2 * (k1 + t2 * (k2 + t2 * (k3 + t2 * k4))))
            scale = torch.where(r > 1e-12, theta_d / r.clamp_min(1e-12), torch.zeros_like(r))
            x, y = p_cam[:, 0] * scale, -p_cam[:, 1] * scale
        else:
            x = p_cam[:, 0] / depth
            y = -p_cam[:, 1] / depth
            if self.has_distortion:
                x, y = distort(x, y, self.distortion[camera].expand(x.shape[0], 4))
        u = self.fx[camera] * x + self.cx[camera]
        v = self.fy[camera] * y + self.cy[camera]
        return torch.stack((u, v), dim=-1), depth


CAMERA_MODELS = ("perspective", "fisheye", "equirectangular")


def fisheye_angle(theta_d: torch.Tensor, k: torch.Tensor, iterations: int = 20
                  ) -> torch.Tensor:
    """The angle θ from the axis whose fisheye image radius ``θ (1 + k1 θ² + ... + k4 θ⁸)``
    is `theta_d` (R,), k (R, 4): Newton's method from θ = θ_d (as OpenCV's
    fisheye::undistortPoints), over the whole batch at once."""
    k1, k2, k3, k4 = k.unbind(-1)
    theta = theta_d.clone()
    for _ in range(iterations):  # iterations of the whole batch, not a loop over rays
        t2 = theta * theta
        f = theta * (1 + t2 * (k1 + t2 * (k2 + t2 * (k3 + t2 * k4)))) - theta_d
        df = 1 + t2 * (3 * k1 + t2 * (5 * k2 + t2 * (7 * k3 + t2 * 9 * k4)))
        theta = (theta - f / df.clamp_min(1e-6)).clamp(0.0, math.pi)
    return theta


def distort(x: torch.Tensor, y: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """OpenCV radial-tangential distortion of normalised coordinates x, y (R,), k (R, 4)."""
    k1, k2, p1, p2 = k.unbind(-1)
    r2 = x * x + y * y
    radial = 1 + r2 * (k1 + r2 * k2)
    xd = x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
    yd = y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
    return xd, yd


def undistort(
    xd: torch.Tensor, yd: torch.Tensor, k: torch.Tensor, iterations: int = 20
) -> tuple[torch.Tensor, ...]:
    """Inverts `distort` by fixed-point iteration (as OpenCV's undistortPoints)."""
    k1, k2, p1, p2 = k.unbind(-1)
    x, y = xd.clone(), yd.clone()
    for _ in range(iterations):  # iterations of the whole batch, not a loop over rays
        r2 = x * x + y * y
        radial = 1 + r2 * (k1 + r2 * k2)
        dx = 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
        dy = p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
        x = (xd - dx) / radial
        y = (yd - dy) / radial
    return x, y


def check_transform(value: object, where: str) -> dict[str, Any]:
    """A scene transform ``{"rotation": 3x3, "centre": 3, "scale": > 0}`` (``x_scene = scale *
    rotation @ (x_capture - centre)``) as plain lists, checked; ValueError naming `where`."""
    if not isinstance(value, dict):
        raise ValueError(f"{where}: expected an object with rotation, centre and scale")
    try:
        r = np.asarray(value["rotation"], dtype=np.float64)
        c = np.asarray(value["centre"], dtype=np.float64)
        s = float(value["scale"])
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{where}: expected rotation (3x3), centre (3) and scale numbers "
                         f"({type(e).__name__}: {e})") from None
    if r.shape != (3, 3) or not np.allclose(r @ r.T, np.eye(3), atol=1e-4):
        raise ValueError(f"{where}.rotation: expected a 3x3 rotation matrix")
    if c.shape != (3,) or not np.isfinite(c).all():
        raise ValueError(f"{where}.centre: expected 3 finite numbers")
    if not (np.isfinite(s) and s > 0):
        raise ValueError(f"{where}.scale is {s}: expected a finite number > 0")
    return {**value, "rotation": r.tolist(), "centre": c.tolist(), "scale": s}


def to_capture(points: np.ndarray, transform: dict[str, Any]) -> np.ndarray:
    """Scene points (N, 3) back in the capture's own coordinates (inverse of `transform`)."""
    r, c = np.asarray(transform["rotation"]), np.asarray(transform["centre"])
    return np.asarray(points, np.float64) @ r / transform["scale"] + c


def cameras_to_capture(c2w: np.ndarray, transform: dict[str, Any]) -> np.ndarray:
    """Camera-to-world matrices (N, 3, 4) of the scene in the capture's own coordinates (the
    rotation undone on the axes, the centres mapped by `to_capture`)."""
    r = np.asarray(transform["rotation"])
    out = np.array(c2w, np.float64)[:, :3, :4].copy()
    out[:, :, :3] = r.T @ out[:, :, :3]
    out[:, :, 3] = to_capture(out[:, :, 3], transform)
    return out


def look_at(
    eye: torch.Tensor, target: torch.Tensor, up: torch.Tensor | None = None
) -> torch.Tensor:
    """(N, 3, 4) OpenGL camera-to-world matrices of cameras at eye (N, 3) looking at target
    (N, 3) or (3,), with `up` (default +z, the Blender world's up)."""
    eye = torch.as_tensor(eye, dtype=torch.float32).reshape(-1, 3)
    target = torch.as_tensor(target, dtype=torch.float32).expand_as(eye)
    up = torch.tensor([0.0, 0.0, 1.0]) if up is None else torch.as_tensor(up, dtype=torch.float32)
    back = eye - target
    back = back / back.norm(dim=-1, keepdim=True)  # camera +z points away from the target
    right = torch.linalg.cross(up.expand_as(back), back, dim=-1)
    small = right.norm(dim=-1) < 1e-6  # looking along up: pick another up
    if small.any():
        alt = torch.tensor([0.0, 1.0, 0.0]).expand_as(back)
        right = torch.where(small[:, None], torch.linalg.cross(alt, back, dim=-1), right)
    right = right / right.norm(dim=-1, keepdim=True)
    true_up = torch.linalg.cross(back, right, dim=-1)
    rot = torch.stack((right, true_up, back), dim=-1)  # columns: camera axes in world
    return torch.cat((rot, eye[:, :, None]), dim=-1)


# -- validation of cameras read from files --

#: how far a pose's rotation part may be from orthonormal (max |R^T R - I| after removing a
#: uniform scale) before a reader refuses it; within it, the rotation is re-orthonormalised.
ROTATION_TOLERANCE = 1e-2
#: the most a lens's radial distortion may scale a radius (or its inverse, the least) inside
#: the image before a reader refuses the coefficients as not those of a real lens
MAX_RADIAL_FACTOR = 10.0


def plain_numbers(values: object, sep: str = " ", digits: int = 6) -> str:
    """Numbers as plain text for error messages, ``nan 1 2.5`` (`digits` significant digits,
    joined by `sep`): no brackets, which a renderer reading ``[...]`` as markup would drop."""
    flat = np.asarray(values, dtype=np.float64).reshape(-1)
    return sep.join(f"{v:.{digits}g}" for v in flat)


def _rows(m: np.ndarray) -> str:
    """A matrix as plain text, rows separated by commas: ``1 0 0, 0 1 0, 0 0 1``."""
    return ", ".join(plain_numbers(r) for r in np.asarray(m))


def checked_rotations(c2w: object, labels: Sequence[str]) -> np.ndarray:
    """(N, 3, 4) float64 camera-to-world matrices whose rotation parts are exact rotations.

    Args:
        c2w: (N, 3, 4) or (N, 4, 4) matrices (numpy or torch).
        labels: N strings naming each matrix in errors, e.g.
            ``"scene/transforms.json: frames[3].transform_matrix"``.
    Returns:
        the matrices with each rotation part ``R`` replaced by the nearest rotation (polar
        decomposition) after removing a uniform scale ``|det R|^(1/3)`` (some formats store
        scaled rotations; rays only need the directions), translations unchanged.
    Raises:
        ValueError naming the label when a matrix has non-finite values, a singular rotation
        part (e.g. all zeros), or one that is not a (uniformly scaled) rotation within
        `ROTATION_TOLERANCE`. Reflections (det -1) are kept, as some data sets use a
        left-handed world."""
    m = np.array(c2w, dtype=np.float64)[:, :3, :4]
    if len(labels) != len(m):
        raise AssertionError("checked_rotations: one label per matrix")
    finite = np.isfinite(m).all(axis=(1, 2))
    if not finite.all():
        i = int(np.argmin(finite))
        raise ValueError(f"{labels[i]}: has non-finite values ({plain_numbers(m[i])}); expected a "
                         "finite camera-to-world matrix")
    rot = m[:, :, :3]
    with np.errstate(all="ignore"):
        det = np.linalg.det(rot)
        scale = np.cbrt(np.abs(det))
        singular = ~(scale > 1e-12)
        if singular.any():
            i = int(np.argmax(singular))
            raise ValueError(f"{labels[i]}: the rotation part (first 3 columns) is singular "
                             f"(det {det[i]:.3g}; rows {_rows(rot[i])}); expected a rotation")
        unit = rot / scale[:, None, None]
        err = np.abs(np.einsum("nji,njk->nik", unit, unit) - np.eye(3)).max(axis=(1, 2))
    bad = ~(err <= ROTATION_TOLERANCE)
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(
            f"{labels[i]}: the rotation part (first 3 columns; rows {_rows(rot[i])}) is not a "
            f"rotation (its columns are {err[i]:.3g} from orthonormal, after dividing by "
            f"|det|^(1/3) = {scale[i]:.3g}; expected orthonormal columns within "
            f"{ROTATION_TOLERANCE:g})"
        )
    u, _, vt = np.linalg.svd(unit)
    out = m.copy()
    out[:, :, :3] = u @ vt
    return out


def check_cameras(
    cameras: Cameras,
    labels: Sequence[str],
    names: Mapping[str, str] | None = None,
) -> None:
    """Checks the poses, intrinsics and distortion of cameras read from a file.

    Rules (each error names the camera's label, the field and the rule):

    * the camera-to-world matrices are finite in float32 (rotations are checked where the
      reader reads them, `checked_rotations`; a position can still leave float32's range
      after a format's scaling);
    * fx, fy, cx, cy and the distortion coefficients are finite, fx and fy > 0;
    * the principal point lies in [-0.5 W, 1.5 W] x [-0.5 H, 1.5 H] (an image's own centre
      is at (W / 2, H / 2); further out is a unit mix-up, not a lens);
    * the radial distortion ``r (1 + k1 r^2 + k2 r^4)`` increases with r up to the normalised
      radius R of the image corner farthest from the principal point: its derivative
      ``1 + 3 k1 r^2 + 5 k2 r^4`` stays > 0 for r in [0, R]; otherwise two image radii come
      from the same ray and rays cannot be made by inverting the model;
    * the radial factor ``1 + k1 r^2 + k2 r^4`` stays within [1 / `MAX_RADIAL_FACTOR`,
      `MAX_RADIAL_FACTOR`] for r in [0, R] (huge coefficients are no lens);
    * with tangential terms, the distortion map (`distort`) keeps a positive Jacobian
      determinant at the image's corners and edge midpoints (it does not fold the image).

    Args:
        cameras: the cameras, intrinsics in pixels of their ``width`` x ``height`` images.
        labels: one string per camera naming it in errors (``"cameras.txt:3"``).
        names: the format's names of the fields ``fx fy cx cy k1 k2 p1 p2`` (default: those).
    Raises:
        ValueError ``"<label>: <field> ... (expected ...)"``."""
    nm = {k: k for k in ("fx", "fy", "cx", "cy", "k1", "k2", "p1", "p2")}
    nm.update(names or {})
    n = len(cameras)
    if len(labels) != n:
        raise AssertionError("check_cameras: one label per camera")
    w, h = cameras.width, cameras.height
    finite = torch.isfinite(cameras.c2w).all(dim=2).all(dim=1).numpy()
    if not finite.all():
        i = int(np.argmin(finite))
        raise ValueError(f"{labels[i]}: the camera's pose is out of range after the format's "
                         f"scaling ({plain_numbers(cameras.c2w[i].double().numpy())}; expected "
                         "positions within float32's range, about 3e38)")
    vals = {k: getattr(cameras, k).double().numpy() for k in ("fx", "fy", "cx", "cy")}
    dist = cameras.distortion.double().numpy().reshape(n, 4)
    for j, k in enumerate(("k1", "k2", "p1", "p2")):
        vals[k] = dist[:, j]
    for k, v in vals.items():
        bad = ~np.isfinite(v)
        if bad.any():
            i = int(np.argmax(bad))
            raise ValueError(f"{labels[i]}: {nm[k]} is {v[i]} (expected a finite number, within "
                             "float32's range of about 3e38)")
    for k in ("fx", "fy"):
        bad = vals[k] <= 0
        if bad.any():
            i = int(np.argmax(bad))
            raise ValueError(f"{labels[i]}: {nm[k]} is {vals[k][i]:g} (expected a focal length "
                             "> 0 pixels)")
    for k, size, axis in (("cx", w, "W"), ("cy", h, "H")):
        v = vals[k]
        bad = (v < -0.5 * size) | (v > 1.5 * size)
        if bad.any():
            i = int(np.argmax(bad))
            raise ValueError(
                f"{labels[i]}: principal point {nm[k]} is {v[i]:g} pixels, outside "
                f"[-0.5 {axis}, 1.5 {axis}] = [{-0.5 * size:g}, {1.5 * size:g}] for an image "
                f"{w}x{h} (expected near the image centre {0.5 * size:g}; are the intrinsics "
                "for another image size?)"
            )
    if not dist.any() or cameras.model != "perspective":  # the rest: radial-tangential only
        return
    # normalised coordinates of the image's corners and edge midpoints
    us = np.array([0.0, 0.5, 1.0, 0.0, 1.0, 0.0, 0.5, 1.0]) * w
    vs = np.array([0.0, 0.0, 0.0, 0.5, 0.5, 1.0, 1.0, 1.0]) * h
    x = (us[None] - vals["cx"][:, None]) / vals["fx"][:, None]  # (N, 8)
    y = (vs[None] - vals["cy"][:, None]) / vals["fy"][:, None]
    r2_max = (x * x + y * y).max(axis=1)  # the farthest corner's r^2
    k1, k2, p1, p2 = (vals[k] for k in ("k1", "k2", "p1", "p2"))
    # g(s) = 1 + 3 k1 s + 5 k2 s^2 with s = r^2 in [0, r2_max]: its minimum is at an end or
    # at the parabola's vertex s = -3 k1 / (10 k2)
    with np.errstate(divide="ignore", invalid="ignore"):
        vertex = np.where(k2 != 0, -3 * k1 / (10 * k2), 0.0)
    s = np.stack((r2_max, np.clip(vertex, 0.0, r2_max)), axis=1)
    g = (1 + 3 * k1[:, None] * s + 5 * k2[:, None] * s * s).min(axis=1)
    bad = ~(g > 0)
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(
            f"{labels[i]}: radial distortion {nm['k1']} = {k1[i]:g}, {nm['k2']} = {k2[i]:g} is "
            "not monotonic over the image: r (1 + k1 r^2 + k2 r^4) must increase with r up to "
            f"the image corner's normalised radius {math.sqrt(r2_max[i]):.4g} (its derivative "
            "1 + 3 k1 r^2 + 5 k2 r^4 must stay > 0), else two image points see the same ray "
            "(expected the coefficients of a real lens for this image)"
        )
    # the radial factor 1 + k1 s + k2 s^2 over s in [0, r2_max]: extremes at the ends and vertex
    with np.errstate(divide="ignore", invalid="ignore"):
        vertex = np.where(k2 != 0, -k1 / (2 * k2), 0.0)
    s = np.stack((np.zeros_like(r2_max), r2_max, np.clip(vertex, 0.0, r2_max)), axis=1)
    factor = 1 + k1[:, None] * s + k2[:, None] * s * s
    bad = ~((factor >= 1 / MAX_RADIAL_FACTOR) & (factor <= MAX_RADIAL_FACTOR)).all(axis=1)
    if bad.any():
        i = int(np.argmax(bad))
        lo, hi = factor[i].min(), factor[i].max()
        raise ValueError(
            f"{labels[i]}: radial distortion {nm['k1']} = {k1[i]:g}, {nm['k2']} = {k2[i]:g} "
            f"scales radii by {lo:.3g} to {hi:.3g} over the image: the factor "
            "1 + k1 r^2 + k2 r^4 must stay within "
            f"[1/{MAX_RADIAL_FACTOR:g}, {MAX_RADIAL_FACTOR:g}] for r up to the image corner's "
            f"normalised radius {math.sqrt(r2_max[i]):.4g} (expected the coefficients of a "
            "real lens for this image; are they for normalised coordinates?)"
        )
    # the whole map's Jacobian determinant at the sample points
    r2 = x * x + y * y
    rad = 1 + k1[:, None] * r2 + k2[:, None] * r2 * r2
    drad = 2 * k1[:, None] + 4 * k2[:, None] * r2  # d rad / d(r^2) * 2
    a, b = p1[:, None], p2[:, None]
    dxx = rad + x * x * drad + 2 * a * y + 6 * b * x
    dxy = x * y * drad + 2 * a * x + 2 * b * y
    dyx = x * y * drad + 2 * a * x + 2 * b * y
    dyy = rad + y * y * drad + 6 * a * y + 2 * b * x
    det = dxx * dyy - dxy * dyx
    bad = ~(det > 0).all(axis=1)
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(
            f"{labels[i]}: distortion {nm['k1']} {nm['k2']} {nm['p1']} {nm['p2']} = "
            f"{plain_numbers(dist[i])} folds the image over itself (the distortion map's Jacobian "
            "determinant is <= 0 at an image corner or edge; expected the coefficients of a "
            "real lens for this image)"
        )
