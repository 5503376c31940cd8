"""Posed-image data sets as every reader returns them.

A `SceneData` holds named splits (``"train"``, ``"val"``, ``"test"``), each a stack of images
with their `Cameras`, plus what a renderer needs to know about the scene: the box that holds
it (`aabb`), whether it is unbounded (then the renderer contracts space outside the box), the
background colour the images were composited on, and near / far planes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from fields.render.cameras import Cameras


@dataclass
class Split:
    """One split of a data set.

    Attributes:
        images: (N, H, W, 3) float32 in [0, 1], composited on the data set's background.
        cameras: N cameras of size W x H.
        names: N image names (file paths as the data set wrote them).
        alpha: (N, H, W, 1) float32 in [0, 1] when the images had an alpha channel, else None
            (lets a trainer composite on random backgrounds).
        mask: (N, H, W, 1) bool, the pixels to train on (nerfstudio's per-frame `mask_path`:
            moving people, the capture rig), or None for all of them.
        times: (N,) float32 in [0, 1], when each image was taken (multi-view video: D-NeRF's
            and nerfstudio's per-frame ``time``), or None for a static scene.
    """

    images: torch.Tensor
    cameras: Cameras
    names: list[str]
    alpha: torch.Tensor | None = None
    mask: torch.Tensor | None = None
    times: torch.Tensor | None = None

    def __post_init__(self) -> None:
        n = self.images.shape[0]
        if self.images.dim() != 4 or self.images.shape[-1] != 3:
            raise ValueError(f"Split: images must be (N, H, W, 3), got {tuple(self.images.shape)}")
        if len(self.cameras) != n or len(self.names) != n:
            raise ValueError(
                f"Split: {n} images but {len(self.cameras)} cameras and {len(self.names)} names"
            )
        h, w = self.images.shape[1:3]
        if (self.cameras.height, self.cameras.width) != (h, w):
            raise ValueError(
                f"Split: images are {w}x{h} but the cameras are "
                f"{self.cameras.width}x{self.cameras.height}"
            )
        if self.mask is not None and tuple(self.mask.shape) != (n, h, w, 1):
            raise ValueError(f"Split: mask must be ({n}, {h}, {w}, 1), got "
                             f"{tuple(self.mask.shape)}")
        if self.times is not None:
            self.times = torch.as_tensor(self.times, dtype=torch.float32).reshape(-1)
            if self.times.shape[0] != n:
                raise ValueError(f"Split: {n} images but {self.times.shape[0]} times")
            if not bool(((self.times >= 0) & (self.times <= 1)).all()):
                raise ValueError("Split: times must lie in [0, 1], got "
                                 f"[{float(self.times.min()):g}, {float(self.times.max()):g}]")

    def __len__(self) -> int:
        return self.images.shape[0]


@dataclass
class SceneData:
    """A posed-image data set.

    Attributes:
        name: the scene's name (folder name for data read from disk).
        splits: {"train": Split, ...}; "train" is always present, "val" and "test" may be.
        aabb: (2, 3) float32 min and max corner of the box that holds the scene (the whole
            scene for a bounded one, the foreground for an unbounded one).
        background: (3,) float32 colour the images were composited on (white for Blender).
        unbounded: True when content extends beyond `aabb` (forward-facing or 360° captures
            of real scenes); the renderer then contracts space outside the box.
        near, far: distances along rays between which content can lie.
        meta: anything else a reader wants to keep (format, source path, scale, ...).
    """

    name: str
    splits: dict[str, Split]
    aabb: torch.Tensor
    background: torch.Tensor = field(default_factory=lambda: torch.ones(3))
    unbounded: bool = False
    near: float = 0.0
    far: float = 1e10
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if "train" not in self.splits:
            raise ValueError(f"SceneData {self.name!r}: no 'train' split")
        self.aabb = torch.as_tensor(self.aabb, dtype=torch.float32).reshape(2, 3)
        self.background = torch.as_tensor(self.background, dtype=torch.float32).reshape(3)

    @property
    def train(self) -> Split:
        return self.splits["train"]

    def eval_split(self) -> Split:
        """The held-out split: "test" if present, else "val", else "train"."""
        for name in ("test", "val", "train"):
            if name in self.splits:
                return self.splits[name]
        raise AssertionError("unreachable")
