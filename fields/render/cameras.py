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

from dataclasses import dataclass

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
        distortion: (N, 4) float32 OpenCV ``(k1, k2, p1, p2)``; zeros for a pinhole.
    """

    c2w: torch.Tensor
    fx: torch.Tensor
    fy: torch.Tensor
    cx: torch.Tensor
    cy: torch.Tensor
    width: int
    height: int
    distortion: torch.Tensor | None = None

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

    def project(self, points: torch.Tensor, camera: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Image coordinates (P, 2) ``(u, v)`` of world points (P, 3) in one camera, and their
        depth (P,) along the viewing axis (positive in front of the camera)."""
        rot = self.c2w[camera, :, :3]
        p_cam = (points - self.c2w[camera, :, 3]) @ rot  # world -> camera (rot orthonormal)
        depth = -p_cam[:, 2]
        x = p_cam[:, 0] / depth
        y = -p_cam[:, 1] / depth
        if self.has_distortion:
            x, y = distort(x, y, self.distortion[camera].expand(x.shape[0], 4))
        u = self.fx[camera] * x + self.cx[camera]
        v = self.fy[camera] * y + self.cy[camera]
        return torch.stack((u, v), dim=-1), depth


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
