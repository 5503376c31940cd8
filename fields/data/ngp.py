"""instant-ngp scenes: one ``transforms.json`` (as written by instant-ngp's colmap2nerf.py).

Keys read (each intrinsic key at the top level or per frame, the frame's value winning):

* ``fl_x``, ``fl_y``, ``cx``, ``cy``, ``w``, ``h``: intrinsics in pixels; ``camera_angle_x`` /
  ``camera_angle_y`` (field of view in radians) when ``fl_x`` / ``fl_y`` are missing,
  ``fl_y = fl_x`` when neither is given, the principal point defaults to the image centre;
* ``k1``, ``k2``, ``p1``, ``p2``: OpenCV radial-tangential distortion (``Cameras.distortion``);
* ``aabb_scale`` (default 1), ``scale`` (default 0.33), ``offset`` (default [0.5, 0.5, 0.5]);
* ``frames[i].file_path`` (relative to the json) and ``frames[i].transform_matrix`` (4x4
  camera-to-world, NeRF / OpenGL convention).

Coordinates. instant-ngp maps a camera translation ``t`` of the json to ``t * scale + offset``
(then cycles the axes, which does not matter here) and renders the box of half-size
``aabb_scale / 2`` centred at its unit cube's centre ``(0.5, 0.5, 0.5)``. We keep the json's
axes and put that centre at the origin::

    world = t * scale + (offset - 0.5)        # = t * scale with the default offset
    aabb  = [-aabb_scale / 2, +aabb_scale / 2]^3

so instant-ngp's unit cube [0, 1]^3 becomes [-0.5, 0.5]^3; rotations are unchanged. The scene
is unbounded when ``aabb_scale > 1``.

nerfstudio's files (``camera_model`` or ``applied_transform``, and no ``aabb_scale``) keep
poses in the capture's own units and place: nerfstudio's data parser orients and scales them
on loading, and so does this reader (`fields.data.colmap.capture_transform`: up to +z, the
cameras' focus at the origin, the region they see filling the box [-1, 1]^3, unbounded; the
transform in ``meta["transform"]``). Their ``camera_model`` must be a pinhole or OpenCV one
(``OPENCV_FISHEYE`` and ``EQUIRECTANGULAR`` are refused, naming the field, rather than read
with the wrong lens). Files written by ``fields process`` (``fields_transform``) are already
in the box and read as instant-ngp's.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fields.data.blender import (
    check_downscale,
    frame_file,
    frame_matrix,
    frame_times,
    hold_out_splits,
    json_snippet,
    load_images,
    number,
    numeric_array,
    read_json,
)
from fields.data.dataset import SceneData
from fields.render.cameras import Cameras, check_cameras, check_transform, checked_rotations

NGP_SCALE = 0.33
NGP_OFFSET = (0.5, 0.5, 0.5)
HOLD_EVERY = 8
_INTRINSICS = ("fl_x", "fl_y", "cx", "cy", "w", "h", "camera_angle_x", "camera_angle_y",
               "k1", "k2", "p1", "p2", "k3", "k4")


def _intrinsics(
    keys: dict[str, Any], where: str, w: int, h: int, model: str = "perspective"
) -> tuple[float, float, float, float, list[float]]:
    """fx, fy, cx, cy (pixels at the file's size w x h) and [k1, k2, p1, p2] of one frame
    ([k1, k2, k3, k4] for a fisheye; an equirectangular frame's intrinsics default to
    nerfstudio's fx = w / 2, fy = h, centred)."""
    def get(k: str, expected: str) -> float | None:
        return None if keys.get(k) is None else number(keys, k, where, expected)

    if model == "equirectangular":
        keys = {"fl_x": w / 2, "fl_y": h, "cx": w / 2, "cy": h / 2, "w": w, "h": h, **keys}

    jw, jh = get("w", "the image width in pixels"), get("h", "the image height in pixels")
    for k, v in (("w", jw), ("h", jh)):
        if v is not None and v <= 0:
            raise ValueError(f"{where}: {k!r} is {v:g} (expected an image size in pixels > 0)")
    # intrinsics are given for a w x h image: scale them to the file's size
    if jw is not None and jh is not None and (jw, jh) != (w, h):
        if abs(jh * w / jw - h) > 1 and abs(jw * h / jh - w) > 1:  # beyond rounding
            raise ValueError(
                f"{where}: 'w' x 'h' is {jw:g}x{jh:g} but the image is {w}x{h} "
                "(expected the image size, or one of the same aspect ratio)"
            )
    sx = w / jw if jw else 1.0
    sy = h / jh if jh else sx
    jw, jh = w / sx, h / sy  # the size the intrinsics refer to
    fx = get("fl_x", "the focal length in pixels")
    if fx is None:
        ax = get("camera_angle_x", "the horizontal field of view in radians")
        if ax is None:
            raise ValueError(
                f"{where}: no 'fl_x' or 'camera_angle_x' (expected the focal length in pixels "
                "or the horizontal field of view in radians)"
            )
        _check_angle(ax, "camera_angle_x", where)
        fx = 0.5 * jw / math.tan(0.5 * ax)
    fy = get("fl_y", "the focal length in pixels")
    if fy is None:
        ay = get("camera_angle_y", "the vertical field of view in radians")
        if ay is not None:
            _check_angle(ay, "camera_angle_y", where)
        fy = fx if ay is None else 0.5 * jh / math.tan(0.5 * ay)
    cx = get("cx", "the principal point in pixels")
    cy = get("cy", "the principal point in pixels")
    cx = 0.5 * jw if cx is None else cx
    cy = 0.5 * jh if cy is None else cy
    names = ("k1", "k2", "k3", "k4") if model == "fisheye" else ("k1", "k2", "p1", "p2")
    for k in sorted({"k1", "k2", "k3", "k4", "p1", "p2"} - set(names)):
        if get(k, "a distortion coefficient"):
            raise ValueError(f"{where}: {k!r} is non-zero (expected only "
                             f"{' '.join(names)} for a {model} camera)")
    dist = [get(k, "a distortion coefficient") or 0.0 for k in names]
    if model == "equirectangular" and any(dist):
        raise ValueError(f"{where}: distortion coefficients given for an equirectangular "
                         "camera (expected none)")
    for k, v in (("fl_x", fx), ("fl_y", fy)):
        if v <= 0:
            raise ValueError(f"{where}: {k!r} is {v:g} (expected a focal length > 0 pixels)")
    return fx * sx, fy * sy, cx * sx, cy * sy, dist


def _check_angle(angle: float, key: str, where: str) -> None:
    if not 0 < angle < math.pi:
        raise ValueError(f"{where}: {key!r} is {angle:g} (expected a field of view in radians, "
                         "in (0, pi))")


#: nerfstudio camera models, and the `Cameras.model` each one is read as
NERFSTUDIO_MODELS = {"PINHOLE": "perspective", "SIMPLE_PINHOLE": "perspective",
                     "SIMPLE_RADIAL": "perspective", "RADIAL": "perspective",
                     "OPENCV": "perspective", "OPENCV_FISHEYE": "fisheye",
                     "EQUIRECTANGULAR": "equirectangular"}


def _is_nerfstudio(data: dict[str, Any]) -> bool:
    """A nerfstudio ``transforms.json`` (``camera_model`` or ``applied_transform``, no
    ``aabb_scale``), not one of ours (`fields process` writes ``fields_transform``)."""
    return (("camera_model" in data or "applied_transform" in data)
            and "aabb_scale" not in data and "fields_transform" not in data)


def _check_camera_model(data: dict[str, Any], json_path: Path) -> str:
    """The `Cameras.model` of a nerfstudio file's ``camera_model`` (every frame's the same)."""
    model = data.get("camera_model", "OPENCV")
    if not isinstance(model, str) or model not in NERFSTUDIO_MODELS:
        raise ValueError(
            f"{json_path}: 'camera_model' is {json_snippet(model)}: not supported (expected one "
            f"of {', '.join(NERFSTUDIO_MODELS)})")
    ours = NERFSTUDIO_MODELS[model]
    for i, fr in enumerate(data.get("frames") or []):
        if not isinstance(fr, dict) or "camera_model" not in fr:
            continue
        other = fr["camera_model"]
        if not isinstance(other, str) or NERFSTUDIO_MODELS.get(other) != ours:
            raise ValueError(f"{json_path}: frames[{i}].camera_model is "
                             f"{json_snippet(other)}: expected the file's camera model, "
                             f"{model} (one camera model per scene)")
    return ours


def _nerfstudio_transform(c2w: np.ndarray, half_fov: float
                          ) -> tuple[np.ndarray, dict[str, Any]]:
    """nerfstudio's poses are in the capture's own units and place (its data parser orients
    and scales them when it loads them): the same here, by `capture_transform` (up to +z,
    the cameras' focus at the origin, the region they see filling [-1, 1]^3)."""
    from fields.data.colmap import capture_transform

    cv = c2w[:, :3, :4].copy()
    cv[:, :, 1:3] *= -1  # OpenGL -> OpenCV camera axes
    r, centre, scale, how = capture_transform(cv, np.zeros((0, 3)), half_fov)
    out = c2w.copy()
    out[:, :3, :3] = r @ c2w[:, :3, :3]
    out[:, :3, 3] = scale * (c2w[:, :3, 3] - centre) @ r.T
    return out, {"rotation": r.tolist(), "centre": centre.tolist(), "scale": scale,
                 "meaning": "x_scene = scale * rotation @ (x_file - centre)", "centre_from": how}


def _read_masks(frames: list[Any], kept: list[int], json_path: Path, size: tuple[int, int],
                small: tuple[int, int]) -> torch.Tensor | None:
    """The frames' nerfstudio masks (``mask_path``, relative to the json; white: train on
    it, black: ignore it), area-downsampled like the images and kept where at least half
    white: (N, h, w, 1) bool, all True for frames without one; None when no frame has one."""
    from fields.data.blender import area_downsample
    from fields.data.images import read_image

    if not any(isinstance(frames[i], dict) and "mask_path" in frames[i] for i in kept):
        return None
    out = []
    for i in kept:
        mp = frames[i].get("mask_path")
        if mp is None:
            out.append(torch.ones(*small, 1, dtype=torch.bool))
            continue
        where = f"{json_path}: frames[{i}].mask_path"
        if not isinstance(mp, str) or not mp:
            raise ValueError(f"{where} is {json_snippet(mp)} (expected an image path relative "
                             "to the json file)")
        path = json_path.parent / mp
        if not path.is_file():
            raise ValueError(f"{where} {mp!r}: no such file ({path})")
        try:
            m = read_image(path)
        except (OSError, ValueError) as e:
            raise ValueError(f"{where} {mp!r}: not a readable image: {e}") from e
        if tuple(m.shape[:2]) != size:
            raise ValueError(f"{where} {mp!r}: the mask is {m.shape[1]}x{m.shape[0]} but the "
                             f"image is {size[1]}x{size[0]} (expected the same size)")
        m = m[..., :1] if m.shape[-1] < 3 else m[..., :3].mean(-1, keepdim=True)
        out.append(area_downsample(m[None], small)[0] >= 0.5)
    mask = torch.stack(out)
    if not mask.any():
        raise ValueError(f"{json_path}: the masks ('mask_path') leave no pixel to train on "
                         "(white marks the pixels to keep)")
    return mask


def read_ngp(
    path: str | os.PathLike,
    downscale: int = 1,
    background: Sequence[float] | torch.Tensor = (1.0, 1.0, 1.0),
) -> SceneData:
    """Reads an instant-ngp scene (see the module docstring for keys and coordinates).

    Args:
        path: the folder holding ``transforms.json``, or the json file itself.
        downscale: integer factor; images are area-averaged to ``(H // d, W // d)`` and the
            intrinsics scaled with them.
        background: RGB that RGBA images are composited on (alpha kept in Split.alpha).
    Returns:
        SceneData: every frame in "train", except that with more than 8 frames every 8th frame
        (indices 0, 8, 16, ..., LLFF's convention) is held out as "test". Images
        (N, H, W, 3), cameras (N) with distortion, aabb [-aabb_scale/2, aabb_scale/2]^3,
        unbounded when aabb_scale > 1, near 0, far 1e10; meta has scale and offset.
    Raises:
        ValueError for malformed json (naming the file and field) or when no frame has an
        image file; frames whose image is missing are skipped with a warning.
    """
    p = Path(path)
    json_path = p if p.suffix == ".json" else p / "transforms.json"
    data = read_json(json_path)
    d = check_downscale(downscale)
    bg = torch.as_tensor(background, dtype=torch.float32).reshape(3)
    frames = data.get("frames")
    if not isinstance(frames, list) or not frames:
        raise ValueError(f"{json_path}: no 'frames' (expected a non-empty list of frames)")
    scale = number(data, "scale", str(json_path), "a number") if "scale" in data else NGP_SCALE
    if scale <= 0:
        raise ValueError(f"{json_path}: 'scale' is {scale} (expected > 0)")
    offset = np.asarray(NGP_OFFSET, dtype=np.float64)
    if "offset" in data:
        offset = numeric_array(data["offset"], f"{json_path}: 'offset'",
                               "3 finite numbers x, y, z")
        if offset.shape != (3,) or not np.isfinite(offset).all():
            raise ValueError(f"{json_path}: 'offset' is {json_snippet(data['offset'])} "
                             "(expected 3 finite numbers x, y, z)")
    aabb_scale = 1.0
    if "aabb_scale" in data:
        aabb_scale = number(data, "aabb_scale", str(json_path), "a positive number")
        if aabb_scale <= 0:
            raise ValueError(f"{json_path}: 'aabb_scale' is {aabb_scale} (expected > 0)")
    top = {k: data[k] for k in _INTRINSICS if k in data}
    nerfstudio = _is_nerfstudio(data)
    model = "perspective"
    ours = (check_transform(data["fields_transform"], f"{json_path}: 'fields_transform'")
            if "fields_transform" in data else None)
    if nerfstudio:
        model = _check_camera_model(data, json_path)
        aabb_scale = 2.0

    all_times = frame_times(frames, json_path)
    mats, files, names, keys = [], [], [], []
    all_mats = [frame_matrix(fr, i, json_path) for i, fr in enumerate(frames)]
    all_mats = list(checked_rotations(
        np.stack(all_mats), [f"{json_path}: frames[{i}].transform_matrix"
                             for i in range(len(frames))]))
    for i, fr in enumerate(frames):
        m = all_mats[i]
        try:
            f = frame_file(fr, i, json_path, ("", ".png", ".jpg"))
        except FileNotFoundError as e:
            warnings.warn(f"skipping a frame: {e}", stacklevel=2)
            continue
        mats.append(m)
        files.append(f)
        names.append(fr["file_path"])
        keys.append((i, top | {k: fr[k] for k in _INTRINSICS if k in fr}))
    if not files:
        raise ValueError(f"{json_path}: none of the {len(frames)} frames has an image file")

    images, alpha, (h0, w0) = load_images(files, d, bg, json_path)
    h, w = images.shape[1:3]
    mask = _read_masks(frames, [i for i, _ in keys], json_path, (h0, w0), (h, w))
    intr = [_intrinsics(k, f"{json_path}: frames[{i}]", w0, h0, model) for i, k in keys]
    fx, fy, cx, cy = (torch.tensor([v[j] for v in intr], dtype=torch.float64) for j in range(4))
    sx, sy = w / w0, h / h0
    c2w = np.stack(mats)
    transform = None
    if nerfstudio:
        half_fov = float(np.median(np.minimum(np.arctan(0.5 * w0 / fx.numpy()),
                                              np.arctan(0.5 * h0 / fy.numpy()))))
        if model == "fisheye":  # the image radius is the angle itself (plus distortion)
            half_fov = float(np.median(np.minimum(0.5 * w0 / fx.numpy(),
                                                  0.5 * h0 / fy.numpy())))
        elif model == "equirectangular":  # every direction: a moderate focus region
            half_fov = math.radians(35.0)
        c2w, transform = _nerfstudio_transform(c2w, min(half_fov, math.radians(80.0)))
    else:
        c2w[:, :, 3] = c2w[:, :, 3] * scale + (offset - 0.5)
    cams = Cameras(
        torch.from_numpy(c2w).float(), fx * sx, fy * sy, cx * sx, cy * sy, w, h,
        torch.tensor([v[4] for v in intr], dtype=torch.float32), model,
    )

    check_cameras(cams, [f"{json_path}: frames[{i}]" for i, _ in keys],
                  {"fx": "'fl_x'", "fy": "'fl_y'", "cx": "'cx'", "cy": "'cy'", "k1": "'k1'",
                   "k2": "'k2'", "p1": "'p1'", "p2": "'p2'"})
    times = None if all_times is None else all_times[[i for i, _ in keys]]
    splits = hold_out_splits(images, cams, names, HOLD_EVERY, alpha, mask, times)
    half = 0.5 * aabb_scale
    return SceneData(
        name=(json_path.parent.resolve().name), splits=splits,
        aabb=torch.tensor([[-half] * 3, [half] * 3]), background=bg,
        unbounded=aabb_scale > 1, near=0.0, far=1e10,
        meta={"format": "nerfstudio" if nerfstudio else "ngp", "path": str(json_path),
              "downscale": d, "scale": scale, "offset": offset.tolist(),
              "aabb_scale": aabb_scale,
              **({"transform": transform or ours} if (transform or ours) else {})},
    )
