"""Dataset readers: each format once, errors naming the file and the field (the built-in
scenes that the project renders itself are in `fields.scenes`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fields.data.dataset import SceneData

FORMATS = ("blender", "ngp", "llff", "dynerf", "colmap", "neus")
_LOOKED_FOR = (
    "transforms_train.json (Blender), transforms.json (instant-ngp), poses_bounds.npy (LLFF; "
    "with cam*.mp4 videos: DyNeRF), "
    "sparse/ or cameras.txt + images.txt / .bin (COLMAP), cameras_sphere.npz (NeuS / IDR)"
)
_PHOTOS = (".jpg", ".jpeg", ".png")
_VIDEOS = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v")


def format_of(path: str | os.PathLike) -> str:
    """The format of a scene folder, one of `FORMATS`, by the files it holds (first match):
    ``transforms_train.json`` -> "blender", ``transforms.json`` -> "ngp",
    ``poses_bounds.npy`` -> "llff" (with ``cam*`` videos and no ``images/``: "dynerf",
    multi-view video), ``sparse/`` or ``cameras.txt`` + ``images.txt`` ->
    "colmap", ``cameras_sphere.npz`` -> "neus". A path to a ``.json`` file (other than
    ``transforms_<split>.json``, whose folder is the scene) is "ngp". Raises ValueError when
    nothing matches."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such file or folder")
    if p.is_file():
        if p.suffix == ".json" and not p.name.startswith("transforms_"):
            return "ngp"
        if p.suffix.lower() in _VIDEOS:
            raise ValueError(f"{p}: a video, not a scene: turn it into one (cameras by structure "
                             f"from motion) with: fields process video {p} --output SCENE")
        raise ValueError(f"{p}: not a scene folder (expected a folder holding {_LOOKED_FOR})")
    if (p / "transforms_train.json").is_file():
        return "blender"
    if (p / "transforms.json").is_file():
        return "ngp"
    if (p / "poses_bounds.npy").is_file():
        from fields.data.dynerf import is_dynerf

        return "dynerf" if is_dynerf(p) else "llff"
    if (p / "sparse").is_dir() or ((p / "cameras.txt").is_file() and (p / "images.txt").is_file()):
        return "colmap"
    if (p / "cameras_sphere.npz").is_file():
        return "neus"
    if any(f.suffix.lower() in _PHOTOS for f in p.iterdir() if f.is_file()):
        raise ValueError(f"{p}: photos without cameras (looked for {_LOOKED_FOR}): find the "
                         f"cameras with: fields process images {p} --output SCENE")
    raise ValueError(f"{p}: unknown scene format (looked for {_LOOKED_FOR})")


def load_scene(path: str | os.PathLike, **kw: Any) -> SceneData:
    """Reads a scene in whichever format `format_of` detects; keyword arguments go to the
    reader (`read_blender`, `read_ngp`, `read_llff`, `read_dynerf`, `read_colmap`,
    `read_neus`). Returns a
    SceneData."""
    fmt = format_of(path)
    if fmt == "blender":
        from fields.data.blender import read_blender as reader
    elif fmt == "ngp":
        from fields.data.ngp import read_ngp as reader
    elif fmt == "llff":
        from fields.data.llff import read_llff as reader
    elif fmt == "dynerf":
        from fields.data.dynerf import read_dynerf as reader
    elif fmt == "neus":
        from fields.data.neus import read_neus as reader
    else:
        from fields.data.colmap import read_colmap as reader
    return reader(path, **kw)
