"""The browser's camera in the engine's convention.

viser reports a client's camera as ``T_world_camera`` in the OpenCV convention (looks down
``+z``, ``+y`` down in the image): a unit quaternion ``wxyz`` (the rotation R in
``p_world = R p_camera + t``), the position ``t``, a *vertical* field of view in radians and
the canvas size in pixels. The engine's cameras (`fields.render.cameras`) are OpenGL (looks
down ``-z``, ``+y`` up): the same matrix with its y and z axes flipped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from fields.render.cameras import Cameras, opencv_to_opengl


def quaternion_to_matrix(wxyz: np.ndarray | tuple[float, ...]) -> np.ndarray:
    """(3, 3) rotation matrix of a quaternion (w, x, y, z); normalises it first."""
    q = np.asarray(wxyz, dtype=np.float64)
    n = float(np.linalg.norm(q))
    if q.shape != (4,) or not math.isfinite(n) or n == 0.0:
        raise ValueError(f"quaternion_to_matrix: expected a non-zero (w, x, y, z), got {q}")
    w, x, y, z = q / n
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ])


def viser_to_c2w(wxyz: np.ndarray | tuple[float, ...],
                 position: np.ndarray | tuple[float, ...]) -> torch.Tensor:
    """(3, 4) OpenGL camera-to-world matrix of a viser (OpenCV) camera pose."""
    c2w = np.concatenate([quaternion_to_matrix(wxyz),
                          np.asarray(position, dtype=np.float64).reshape(3, 1)], axis=1)
    return opencv_to_opengl(torch.from_numpy(c2w).float())


@dataclass(frozen=True)
class ViewCamera:
    """One browser camera: pose (viser convention), vertical field of view (radians) and the
    canvas size it is shown on."""

    wxyz: tuple[float, float, float, float]
    position: tuple[float, float, float]
    fov: float
    width: int
    height: int

    @property
    def aspect(self) -> float:
        return self.width / max(self.height, 1)

    def image_size(self, pixels: float) -> tuple[int, int]:
        """(width, height) with about `pixels` pixels in all and this camera's aspect ratio
        (at least 8 pixels on each side, at most the canvas size)."""
        h = math.sqrt(max(pixels, 1.0) / self.aspect)
        h = int(min(max(round(h), 8), self.height))
        w = int(min(max(round(h * self.aspect), 8), self.width))
        return w, h

    def cameras(self, width: int, height: int) -> Cameras:
        """The engine's `Cameras` (one, OpenGL, pinhole) rendering this view at width x height:
        the vertical field of view over the image height and the canvas's horizontal field of
        view over its width (the browser stretches the image over the canvas)."""
        tan_half = math.tan(0.5 * self.fov)
        fy = 0.5 * height / tan_half
        fx = 0.5 * width / (tan_half * self.aspect)
        return Cameras(viser_to_c2w(self.wxyz, self.position)[None], fx, fy,
                       0.5 * width, 0.5 * height, width, height)
