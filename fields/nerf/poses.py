"""What a real capture needs besides the field: camera pose refinement and per-image colour.

Pose refinement (BARF, Lin et al. 2021): every training camera gets a correction in SE(3),
optimised with the field by the photometric loss, in its own frame: a turn about its centre,
an orbit about the point on its optical axis at its distance D to the scene's centre, and a
dolly along the axis in units of D (`PoseRefinement`), so that one learning rate suits all
six numbers. The corrected camera is ``c2w · [R | t]``; a ray of camera c, origin o and
direction d, becomes ``o + R_c t`` and ``R_c R R_cᵀ d``. It converges only if the field
starts smooth: BARF's coarse-to-fine mask on the position encoding's levels
(`fields.nn.progressive`), revealed from `start_levels` to all between two fractions of the
training budget (`coarse_to_fine_alpha`).

The fitted poses live in a frame that may drift from the given one by a similarity. Held-out
views are evaluated after test-time pose alignment, as BARF does: the similarity
that maps the given training centres onto the refined ones (`similarity_between`) is applied
to the held-out cameras (`apply_similarity`), and then each held-out camera's pose may be
refined against its own image with the field frozen (`refine_view`).

Appearance (`ColourCorrection`): each training image gets an affine colour transform
``rgb' = A_i rgb + b_i`` (3×3 + 3, starting at the identity) applied to the rendered colour
before the loss: the exposure and white-balance changes of a real capture are absorbed there,
not baked into the field as floaters. A held-out image has no transform of its own: renders
use the identity, and evaluation may fit one per view in closed form (least squares), the
colour-corrected PSNR of mip-NeRF 360 / Zip-NeRF (`fit_colour`).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from torch import nn


def skew(w: torch.Tensor) -> torch.Tensor:
    """(..., 3) vectors -> (..., 3, 3) cross-product matrices."""
    z = torch.zeros_like(w[..., 0])
    return torch.stack((
        torch.stack((z, -w[..., 2], w[..., 1]), -1),
        torch.stack((w[..., 2], z, -w[..., 0]), -1),
        torch.stack((-w[..., 1], w[..., 0], z), -1),
    ), -2)


def so3_exp(w: torch.Tensor) -> torch.Tensor:
    """Rotation matrices (..., 3, 3) of rotation vectors w (..., 3) (Rodrigues; Taylor series
    near zero, so that values and gradients are finite at w = 0)."""
    t2 = (w * w).sum(-1, keepdim=True)[..., None]  # (..., 1, 1)
    small = t2 < 1e-8
    theta = t2.clamp_min(1e-8).sqrt()
    a = torch.where(small, 1.0 - t2 / 6.0, torch.sin(theta) / theta)
    b = torch.where(small, 0.5 - t2 / 24.0, (1.0 - torch.cos(theta)) / theta.square())
    k = skew(w)
    eye = torch.eye(3, dtype=w.dtype, device=w.device).expand_as(k)
    return eye + a * k + b * (k @ k)


def so3_log(r: np.ndarray) -> np.ndarray:
    """Rotation vectors (..., 3) of rotation matrices (..., 3, 3) (angles below pi)."""
    r = np.asarray(r, np.float64)
    cos = np.clip((np.trace(r, axis1=-2, axis2=-1) - 1.0) / 2.0, -1.0, 1.0)
    theta = np.arccos(cos)
    v = np.stack((r[..., 2, 1] - r[..., 1, 2], r[..., 0, 2] - r[..., 2, 0],
                  r[..., 1, 0] - r[..., 0, 1]), -1)
    s = np.sin(theta)
    factor = np.where(s > 1e-8, theta / (2.0 * np.maximum(s, 1e-12)), 0.5)
    return v * factor[..., None]


class PoseRefinement(nn.Module):
    """Per-camera SE(3) corrections of `c2w` (N, 3, 4) (see the module docstring).

    `delta` (N, 6), zeros at the start, in each camera's own frame (OpenGL: looking down -z):
    a rotation vector about the camera's centre (3, radians), an orbit about the pivot on
    the optical axis at the camera's distance D to `centre` (2 angles, about the camera's x
    and y axes) and a move along the viewing axis (1, in units of D). The parameterisation
    separates what the images pin down at once (turning, which shifts the whole image) from
    what only parallax reveals (orbiting about the scene: the pivot stays put, nearer and
    farther content shift apart): a correction in camera-centre rotation plus translation
    mixes the two, and per-coordinate steps such as Adam's then crawl along the weak mode.
    """

    def __init__(self, c2w: torch.Tensor, centre: torch.Tensor) -> None:
        super().__init__()
        c2w = torch.as_tensor(c2w, dtype=torch.float32)[:, :3, :4]
        self.register_buffer("c2w", c2w.clone())
        dist = (c2w[:, :, 3] - torch.as_tensor(centre, dtype=torch.float32)).norm(dim=-1)
        self.register_buffer("distance", dist.clamp_min(1e-6))
        self.delta = nn.Parameter(torch.zeros(c2w.shape[0], 6))

    def __len__(self) -> int:
        return self.c2w.shape[0]

    def local(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Each correction as a rotation (N, 3, 3) and translation (N, 3) in its camera's
        frame: corrected c2w = c2w · [R | t]."""
        dl = self.delta
        zero = torch.zeros_like(dl[:, :1])
        orbit = so3_exp(torch.cat((dl[:, 3:5], zero), -1))
        turn = so3_exp(dl[:, :3])
        pivot = torch.stack((zero[:, 0], zero[:, 0], -self.distance), -1)  # (N, 3)
        rot = orbit @ turn
        t = pivot - (orbit @ pivot[..., None])[..., 0] \
            - rot[:, :, 2] * (dl[:, 5:6] * self.distance[:, None])
        return rot, t

    def corrected(self) -> torch.Tensor:
        """The corrected cameras (N, 3, 4)."""
        r, t = self.local()
        rot = self.c2w[:, :, :3]
        centre = self.c2w[:, :, 3] + (rot @ t[..., None])[..., 0]
        return torch.cat((rot @ r, centre[..., None]), -1)

    def forward(self, camera: torch.Tensor, origins: torch.Tensor, directions: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Rays (R, 3) + (R, 3) of cameras `camera` (R,) int64, made with the given poses,
        moved by the corrections (differentiable in `delta`)."""
        r, t = self.local()
        rot = self.c2w[:, :, :3]
        turn = rot @ r @ rot.transpose(1, 2)  # (N, 3, 3), in the world frame
        shift = (rot @ t[..., None])[..., 0]  # (N, 3)
        d = torch.einsum("rij,rj->ri", turn[camera], directions)
        return origins + shift[camera], d


def coarse_to_fine_alpha(progress: float, n_levels: int, start: float, end: float,
                         start_levels: float) -> float | None:
    """BARF's schedule as a fraction of the budget: `start_levels` until `start`, all
    `n_levels` from `end` on (None: nothing masked), linear between."""
    if progress >= end:
        return None
    t = min(max((progress - start) / max(end - start, 1e-9), 0.0), 1.0)
    return start_levels + (n_levels - start_levels) * t


class ColourCorrection(nn.Module):
    """Per-image affine colour transforms: `matrix` (N, 3, 3) and `offset` (N, 3), starting at
    the identity; ``forward(image, rgb)`` applies image i's to colours (R, 3)."""

    def __init__(self, n_images: int) -> None:
        super().__init__()
        self.matrix = nn.Parameter(torch.eye(3).repeat(n_images, 1, 1))
        self.offset = nn.Parameter(torch.zeros(n_images, 3))

    def forward(self, image: torch.Tensor, rgb: torch.Tensor) -> torch.Tensor:
        return torch.einsum("rij,rj->ri", self.matrix[image], rgb) + self.offset[image]


def fit_colour(rendered: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """`rendered` (..., 3) mapped by the affine colour transform that best fits `target` (least
    squares, clipped to [0, 1]): the colour-corrected render of mip-NeRF 360 / Zip-NeRF."""
    x = rendered.reshape(-1, 3).double()
    y = target.reshape(-1, 3).double()
    a = torch.cat((x, torch.ones_like(x[:, :1])), 1)
    sol = torch.linalg.lstsq(a.T @ a + 1e-6 * torch.eye(4, dtype=a.dtype), a.T @ y).solution
    return (a @ sol).clamp(0, 1).float().reshape(rendered.shape)


def similarity_between(src: np.ndarray, dst: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """The similarity (s, R, t) with ``dst centre ≈ s R src centre + t`` for cameras src, dst
    (N, 3, 4): Umeyama on the centres when they span a plane or more, else (fewer than 3
    cameras, or all on a line) the mean rotation and the centroid shift, scale 1."""
    from fields.capture.align import umeyama

    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    a, b = src[:, :, 3], dst[:, :, 3]
    if len(a) >= 3 and np.linalg.matrix_rank(a - a.mean(0), tol=1e-6) >= 2:
        return umeyama(a, b)
    m = (dst[:, :, :3] @ np.swapaxes(src[:, :, :3], 1, 2)).sum(0)
    u, _, vt = np.linalg.svd(m)
    r = u @ np.diag([1.0, 1.0, np.sign(np.linalg.det(u @ vt))]) @ vt
    return 1.0, r, b.mean(0) - a.mean(0) @ r.T


def apply_similarity(c2w: np.ndarray, s: float, r: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Cameras (N, 3, 4) moved by the similarity: centres to s R c + t, rotations R · rot."""
    c2w = np.asarray(c2w, np.float64)
    out = np.empty_like(c2w)
    out[:, :, :3] = r[None] @ c2w[:, :, :3]
    out[:, :, 3] = s * c2w[:, :, 3] @ r.T + t
    return out


def refine_view(
    render: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    rays: Callable[[int], tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
    c2w: torch.Tensor,
    centre: torch.Tensor,
    steps: int = 100,
    n_rays: int = 2048,
    lr: float = 1e-3,
) -> torch.Tensor:
    """Test-time pose alignment of one held-out camera `c2w` (3, 4) with the field frozen:
    `steps` Adam steps on its SE(3) correction (learning rate decaying to lr / 10) against
    its own image. `rays(n)` draws n random pixels of the image: world origins
    (n, 3), unit directions (n, 3) made with `c2w`, target colours (n, 3); `render(o, d)` gives
    colours (n, 3). Returns the corrected (3, 4)."""
    refine = PoseRefinement(c2w[None], centre)
    opt = torch.optim.Adam(refine.parameters(), lr=lr)
    zero = torch.zeros(n_rays, dtype=torch.long)
    for step in range(steps):  # steps of one camera's pose; its rays are batched
        for g in opt.param_groups:
            g["lr"] = lr * 0.1 ** (step / max(steps - 1, 1))
        o, d, target = rays(n_rays)
        o2, d2 = refine(zero[: o.shape[0]], o, d)
        loss = (render(o2, d2) - target).square().mean()
        opt.zero_grad(set_to_none=True)
        if loss.requires_grad:
            loss.backward()
            opt.step()
    with torch.no_grad():
        return refine.corrected()[0]


def perturb_poses(c2w: torch.Tensor, degrees: float, distance: float, seed: int = 0
                  ) -> torch.Tensor:
    """Every camera of c2w (N, 3, 4) turned by exactly `degrees` about a random axis through
    its centre and moved by exactly `distance` in a random direction (the pose noise of
    BARF's experiments, with fixed magnitudes)."""
    g = torch.Generator().manual_seed(seed)
    n = c2w.shape[0]
    axis = torch.randn(n, 3, generator=g, dtype=torch.float64)
    axis = axis / axis.norm(dim=-1, keepdim=True)
    move = torch.randn(n, 3, generator=g, dtype=torch.float64)
    move = move / move.norm(dim=-1, keepdim=True)
    c = c2w.double()
    rot = so3_exp(axis * math.radians(degrees)) @ c[:, :, :3]
    centre = c[:, :, 3] + distance * move
    return torch.cat((rot, centre[..., None]), -1).float()
