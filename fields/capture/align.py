"""Similarity alignment of two sets of points (Umeyama 1991) and the errors of recovered
cameras against true ones after it (as BARF and nerfstudio score poses)."""

from __future__ import annotations

import numpy as np


def umeyama(src: np.ndarray, dst: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """The similarity ``dst ≈ s R src + t`` minimising the squared error over point pairs
    src, dst (N, 3), N >= 3 and not all on a line: (s, R (3, 3), t (3,))."""
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 3 or len(src) < 3:
        raise ValueError(f"umeyama: expected two (N, 3) arrays with N >= 3, got {src.shape} "
                         f"and {dst.shape}")
    mu_s, mu_d = src.mean(0), dst.mean(0)
    a, b = src - mu_s, dst - mu_d
    var = (a * a).sum() / len(src)
    cov = b.T @ a / len(src)
    u, d, vt = np.linalg.svd(cov)
    e = np.eye(3)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        e[2, 2] = -1
    r = u @ e @ vt
    if var <= 0:
        raise ValueError("umeyama: the source points coincide")
    s = float(np.trace(np.diag(d) @ e) / var)
    t = mu_d - s * r @ mu_s
    return s, r, t


def rotation_angle(r: np.ndarray) -> np.ndarray:
    """Angle (radians) of rotation matrices (..., 3, 3), by atan2 of the sine (from the
    skew-symmetric part) and the cosine (from the trace): accurate near 0, where arccos of the
    trace loses half the digits."""
    c = (np.trace(r, axis1=-2, axis2=-1) - 1) / 2
    w = np.stack((r[..., 2, 1] - r[..., 1, 2], r[..., 0, 2] - r[..., 2, 0],
                  r[..., 1, 0] - r[..., 0, 1]), -1)
    return np.arctan2(np.linalg.norm(w, axis=-1) / 2, c)


def camera_errors(c2w: np.ndarray, true_c2w: np.ndarray) -> dict[str, np.ndarray | float]:
    """Errors of cameras c2w (N, 3, 4) against the true true_c2w (N, 3, 4) (the same camera
    convention) after the similarity that best maps the recovered centres onto the true ones:
    ``rotation_deg`` (N,), ``centre`` (N,) in the true cameras' units, and the similarity
    (``scale``, ``R``, ``t``)."""
    s, r, t = umeyama(c2w[:, :, 3], true_c2w[:, :, 3])
    centres = s * c2w[:, :, 3] @ r.T + t
    rot = r[None] @ c2w[:, :, :3]
    rel = np.swapaxes(rot, 1, 2) @ true_c2w[:, :, :3]
    return {"rotation_deg": np.degrees(rotation_angle(rel)),
            "centre": np.linalg.norm(centres - true_c2w[:, :, 3], axis=1),
            "scale": s, "R": r, "t": t}
