"""Multi-view video in the DyNeRF / Neural 3D Video layout: one video per camera plus
``poses_bounds.npy``.

A scene folder holds ``poses_bounds.npy`` (LLFF's (N, 17) array, one row per camera, in the
sorted order of the camera names; see `fields.data.llff`) and N videos ``cam00.mp4``,
``cam01.mp4``, ... (any suffix imageio reads; a folder ``cam00/`` of frames, sorted by name,
works too). Every video has the same number of frames T; frame k is at time ``k / (T - 1)``.
DyNeRF's convention holds out camera 0 (``cam00``) as the test view.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from fields.data.blender import area_downsample, check_downscale, downscaled_size
from fields.data.dataset import SceneData, Split
from fields.data.llff import checked_poses_bounds, llff_geometry
from fields.render.cameras import Cameras, check_cameras

VIDEO_SUFFIXES = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v")


def camera_videos(root: Path) -> list[Path]:
    """The camera videos (``cam*`` files with a video suffix, or ``cam*/`` frame folders) in
    `root`, sorted by name."""
    return sorted((p for p in root.iterdir() if p.name.lower().startswith("cam") and (
        p.is_dir() or p.suffix.lower() in VIDEO_SUFFIXES)), key=lambda p: p.name)


def is_dynerf(root: Path) -> bool:
    """Whether `root` looks like a DyNeRF scene: ``poses_bounds.npy`` and camera videos, no
    ``images/`` folder (that is LLFF)."""
    return (root / "poses_bounds.npy").is_file() and not (root / "images").is_dir() and \
        bool(camera_videos(root))


def read_dynerf(path: str | os.PathLike, downscale: int = 1, max_frames: int | None = None,
                test_camera: int = 0) -> SceneData:
    """Reads a DyNeRF scene folder (see the module docstring).

    Args:
        path: the folder.
        downscale: integer factor; frames are area-averaged to ``(H // d, W // d)``.
        max_frames: read at most this many frames of each video (None: all).
        test_camera: the held-out camera (DyNeRF's: 0); -1 holds none out.
    Returns:
        SceneData: "train" (every other camera at every frame) and "test" (the held-out camera
        at every frame), each image with its time; LLFF's cameras and bounds (unbounded).
    Raises:
        ValueError naming the file when the videos and poses disagree in number, or the
        videos in frame count or size.
    """
    from fields.data.signals import read_video

    root = Path(path)
    npy = root / "poses_bounds.npy"
    if not npy.is_file():
        raise FileNotFoundError(f"{npy}: no such file; not a DyNeRF scene folder")
    d = check_downscale(downscale)
    poses, bounds, rot = checked_poses_bounds(npy)
    videos = camera_videos(root)
    if len(videos) != len(poses):
        raise ValueError(f"{root}: {len(videos)} camera videos (cam*.mp4 or cam*/) but {npy} "
                         f"has {len(poses)} rows (expected one video per row, in sorted name "
                         "order)")
    frames, size, count = [], None, None
    for v in videos:
        clip = read_video(v, max_frames)[..., :3]  # (T, H, W, 3)
        if clip.shape[-1] != 3:
            raise ValueError(f"{v}: frames have {clip.shape[-1]} channels (expected RGB)")
        if count is None:
            count, size = clip.shape[0], tuple(clip.shape[1:3])
            target = downscaled_size(size, d, v)
        if clip.shape[0] != count:
            raise ValueError(f"{v}: {clip.shape[0]} frames but {videos[0]} has {count} "
                             "(expected every camera's video to have the same frames)")
        if tuple(clip.shape[1:3]) != size:
            raise ValueError(f"{v}: frames are {clip.shape[2]}x{clip.shape[1]} but "
                             f"{videos[0]}'s are {size[1]}x{size[0]} (expected one size)")
        frames.append(area_downsample(clip, target) if d > 1 else clip)
    if count is None or count < 2:
        raise ValueError(f"{videos[0]}: {count} frame(s); a video needs at least 2")
    h, w = frames[0].shape[1:3]
    geo = llff_geometry(poses, bounds, rot, w, h)
    c2w = torch.from_numpy(geo["c2w"]).float()
    focal = torch.from_numpy(geo["focal"]).float()
    times = torch.arange(count, dtype=torch.float32) / (count - 1)
    splits = {}
    cams_of = {"train": [c for c in range(len(videos)) if c != test_camera],
               "test": [c for c in range(len(videos)) if c == test_camera]}
    for name, cams in cams_of.items():
        if not cams:
            continue
        idx = [(c, k) for k in range(count) for c in cams]  # frame-major
        sel = torch.tensor([c for c, _ in idx])
        cameras = Cameras(c2w[sel], focal[sel], focal[sel], 0.5 * w, 0.5 * h, w, h)
        check_cameras(cameras, [f"{npy}: row {c}" for c, _ in idx],
                      {"fx": "focal (column 14)", "fy": "focal (column 14)"})
        splits[name] = Split(torch.stack([frames[c][k] for c, k in idx]), cameras,
                             [f"{videos[c].name}#{k}" for c, k in idx],
                             times=times[[k for _, k in idx]])
    b = geo["bounds"]
    return SceneData(
        name=root.resolve().name, splits=splits, aabb=torch.from_numpy(geo["aabb"]).float(),
        unbounded=True, near=float(0.9 * b[:, 0].min()), far=float(b[:, 1].max()),
        meta={"format": "dynerf", "path": str(root), "downscale": d, "frames": count},
    )
