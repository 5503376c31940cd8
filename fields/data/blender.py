"""NeRF-synthetic ("Blender") scenes: `transforms_{train,val,test}.json` plus images.

Layout (as in the NeRF paper's synthetic data set)::

    scene/
      transforms_train.json   {"camera_angle_x": fov_x, "frames": [{"file_path": "./train/r_0",
                                                                   "transform_matrix": 4x4}]}
      transforms_val.json     (optional)
      transforms_test.json    (optional)
      train/r_0.png ...

``transform_matrix`` is a camera-to-world matrix already in the engine's OpenGL convention
(looks down -z, +y up), ``file_path`` is relative to the json file and usually has no
extension. Images are RGBA, composited here on a background colour.

This module also holds the image-stack helpers the other readers share (`load_images`,
`area_downsample`, `hold_out`).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fields.data.dataset import SceneData, Split
from fields.data.images import read_image, write_image
from fields.io import WriteError, atomic_write, cache_root, write_text_atomic
from fields.render.cameras import Cameras, check_cameras, checked_rotations

#: NeRF-synthetic's standard scene box.
BLENDER_AABB = ((-1.5, -1.5, -1.5), (1.5, 1.5, 1.5))
SPLITS = ("train", "val", "test")


# ---------------------------------------------------------------------------------------------
# helpers shared by the readers


def check_downscale(downscale: int) -> int:
    """Validates an integer downscale factor (``--downscale``) >= 1."""
    ok = not isinstance(downscale, bool)
    try:
        ok = ok and int(downscale) == downscale and downscale >= 1
    except (TypeError, ValueError, OverflowError):
        ok = False
    if not ok:
        raise ValueError(f"--downscale must be an integer >= 1, got {downscale!r}")
    return int(downscale)


def downscaled_size(size: tuple[int, int], downscale: int, where: object) -> tuple[int, int]:
    """``(H // d, W // d)`` of images of `size` (H, W); ValueError naming `where` (the folder
    or file of the images) and ``--downscale`` when that is below one pixel."""
    d = check_downscale(downscale)
    h, w = size[0] // d, size[1] // d
    if h < 1 or w < 1:
        raise ValueError(
            f"{where}: --downscale {d} would shrink the {size[1]}x{size[0]} images below one "
            f"pixel (expected --downscale <= {min(size)}, the smaller image side)"
        )
    return h, w


def area_downsample(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Area-averages (N, H, W, C) images to (N, h, w, C), size = (h, w)."""
    if tuple(images.shape[1:3]) == tuple(size):
        return images
    x = images.permute(0, 3, 1, 2)
    x = torch.nn.functional.interpolate(x, size=size, mode="area")
    return x.permute(0, 2, 3, 1).contiguous()


IMAGE_CACHE_VERSION = 1


def _image_cache_path(path: Path, downscale: int, bg: torch.Tensor) -> Path | None:
    """Where the decoded, downscaled image of `path` is cached (keyed by the file's path,
    size and modification time, the factor and the background), or None when it is not
    (no downscale: the cache would only copy the decoded file)."""
    if downscale <= 1:
        return None
    try:
        st = path.stat()
    except OSError:
        return None
    key = json.dumps([IMAGE_CACHE_VERSION, str(path.resolve()), st.st_size, st.st_mtime_ns,
                      downscale, [round(float(v), 6) for v in bg]])
    return cache_root() / "images" / f"{hashlib.sha1(key.encode()).hexdigest()}.npz"


def _load_one(path: Path, downscale: int, bg: torch.Tensor
              ) -> tuple[torch.Tensor, torch.Tensor | None, tuple[int, int]]:
    """One image: (rgb (h, w, 3) composited on bg and area-downsampled, alpha (h, w, 1) or
    None, the file's (H, W)), from the cache when it holds it."""
    cached = _image_cache_path(path, downscale, bg)
    if cached is not None and cached.is_file():
        try:
            with np.load(cached) as z:
                alpha = torch.from_numpy(z["alpha"]) if "alpha" in z.files else None
                return torch.from_numpy(z["rgb"]), alpha, (int(z["size"][0]), int(z["size"][1]))
        except (OSError, ValueError, KeyError, EOFError):
            pass  # unreadable: decode again and rewrite it
    img = read_image(path)
    size = (int(img.shape[0]), int(img.shape[1]))
    c = img.shape[-1]
    rgb = img[..., :3] if c >= 3 else img[..., :1].expand(*img.shape[:2], 3)
    alpha = img[..., 3:4] if c == 4 else None
    if alpha is not None:
        rgb = rgb * alpha + bg * (1.0 - alpha)
    if downscale > 1:
        small = (size[0] // downscale, size[1] // downscale)
        if min(small) >= 1:
            rgb = area_downsample(rgb[None], small)[0]
            if alpha is not None:
                alpha = area_downsample(alpha[None], small)[0]
    rgb = rgb.contiguous()
    if cached is not None and min(rgb.shape[:2]) >= 1:
        arrays = {"rgb": rgb.numpy(), "size": np.array(size)}
        if alpha is not None:
            alpha = alpha.contiguous()
            arrays["alpha"] = alpha.numpy()
        try:
            atomic_write(cached, lambda tmp: np.savez(tmp, **arrays))
        except WriteError:
            pass  # a cache that cannot be written is only slower
    return rgb, alpha, size


def load_images(
    paths: Sequence[Path],
    downscale: int = 1,
    background: torch.Tensor | Sequence[float] = (1.0, 1.0, 1.0),
    source: str | os.PathLike | None = None,
    workers: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None, tuple[int, int]]:
    """Reads images that must all share one size, composites RGBA ones on `background` and
    area-downsamples them by the integer `downscale` (to ``(H // d, W // d)``).

    Images are decoded and downscaled one by one on `workers` threads (default: the CPU
    count, at most 8), so only the small images are ever held together; with a downscale,
    each result is cached under `fields.io.cache_root()`/images, keyed by the file's path,
    size and modification time, the factor and the background, and read from there the
    next time (a capture's set-up is then file reads).

    Returns:
        images (N, h, w, 3) float32 in [0, 1], composited;
        alpha (N, h, w, 1) when any image has an alpha channel (1 for those without), else None;
        (H, W) the size of the files before downsampling.
    Raises:
        ValueError naming the first file whose size differs from the first image's (and
        `source`, the file that listed the images, when given).
    """
    if not paths:
        raise ValueError(f"{source}: no images" if source else "no images")
    d = check_downscale(downscale)
    bg = torch.as_tensor(background, dtype=torch.float32).reshape(3)
    n_workers = workers or min(8, os.cpu_count() or 1)
    paths = [Path(p) for p in paths]
    if n_workers > 1 and len(paths) > 1:
        with ThreadPoolExecutor(n_workers) as pool:
            loaded = list(pool.map(lambda p: _load_one(p, d, bg), paths))
    else:
        loaded = [_load_one(p, d, bg) for p in paths]
    size = loaded[0][2]
    for p, (_, _, s) in zip(paths, loaded, strict=True):
        if s != size:
            where = f" (listed in {source})" if source else ""
            raise ValueError(
                f"{p}{where}: image is {s[1]}x{s[0]} but {paths[0]} is "
                f"{size[1]}x{size[0]} (expected all images of a split to share one size)"
            )
    small = downscaled_size(size, d, source if source else paths[0])
    images = torch.stack([rgb for rgb, _, _ in loaded])
    alpha = None
    if any(a is not None for _, a, _ in loaded):
        alpha = torch.stack([torch.ones(*small, 1) if a is None else a for _, a, _ in loaded])
    return images.clamp(0, 1), alpha, size


def hold_out(n: int, every: int | None) -> tuple[list[int], list[int]]:
    """LLFF's hold-out rule: with more than `every` images, indices 0, every, 2 * every, ...
    are test images and the rest train; otherwise (or with every None / 0) all are train.
    Returns (train indices, test indices)."""
    if not every or n <= every:
        return list(range(n)), []
    test = list(range(0, n, every))
    return [i for i in range(n) if i % every], test


def hold_out_splits(
    images: torch.Tensor,
    cameras: Cameras,
    names: Sequence[str],
    every: int | None,
    alpha: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    times: torch.Tensor | None = None,
) -> dict[str, Split]:
    """{"train": Split, "test": Split} by `hold_out` (no "test" when nothing is held out)."""
    train, test = hold_out(len(names), every)
    splits = {}
    for name, idx in (("train", train), ("test", test)):
        if idx:
            ix = torch.tensor(idx)
            splits[name] = Split(
                images[ix], cameras[ix], [names[i] for i in idx],
                None if alpha is None else alpha[ix],
                None if mask is None else mask[ix],
                None if times is None else times[ix],
            )
    return splits


def read_json(path: Path) -> dict[str, Any]:
    """Parses a json object, with errors that name the file."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        data = json.loads(path.read_bytes())
    except RecursionError:
        raise ValueError(f"{path}: not valid json (nested too deeply)") from None
    except (ValueError, UnicodeDecodeError) as e:  # JSONDecodeError, over-long integers
        raise ValueError(f"{path}: not valid json ({e})") from e
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a json object at the top level")
    return data


def numeric_array(value: Any, where: str, expected: str) -> np.ndarray:
    """`value` (nested JSON lists of numbers) as a float64 array; ValueError naming `where`
    and `expected` for anything else (strings, booleans, null, ragged lists, numbers too
    large for a float)."""
    def bad(detail: str) -> ValueError:
        return ValueError(f"{where} is {json_snippet(value)} ({detail}; expected {expected})")

    try:
        raw = np.asarray(value)
    except (ValueError, TypeError, OverflowError, RecursionError):
        raise bad("not a rectangular array of numbers") from None
    if raw.dtype.kind == "O":  # None, objects, or integers beyond 64 bits among numbers
        if not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in raw.flat):
            raise bad("not all numbers")
        try:
            return raw.astype(np.float64)
        except OverflowError:
            raise bad("a number too large for a float") from None
    if raw.dtype.kind not in "iuf":
        what = {"b": "booleans", "U": "strings", "S": "strings"}.get(raw.dtype.kind, "values")
        raise bad(f"{what}, not numbers")
    return raw.astype(np.float64)


def json_snippet(value: Any, limit: int = 80) -> str:
    """A JSON value as short text for an error message (at most `limit` characters)."""
    try:
        text = json.dumps(value)
    except (TypeError, ValueError, RecursionError):
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def frame_matrix(frame: Any, i: int, source: Path) -> np.ndarray:
    """The (3, 4) camera-to-world matrix of ``frames[i]`` of a transforms json, checked to be
    finite (its rotation part is checked by `fields.render.cameras.checked_rotations`)."""
    if not isinstance(frame, dict):
        raise ValueError(f"{source}: frames[{i}] is not an object (expected {{file_path, "
                         "transform_matrix}})")
    if "transform_matrix" not in frame:
        raise ValueError(
            f"{source}: frames[{i}] has no 'transform_matrix' "
            "(expected a 4x4 camera-to-world matrix)"
        )
    m = numeric_array(frame["transform_matrix"], f"{source}: frames[{i}].transform_matrix",
                      "a 4x4 camera-to-world matrix of numbers")
    if m.shape not in ((4, 4), (3, 4)):
        raise ValueError(
            f"{source}: frames[{i}].transform_matrix has shape {m.shape} "
            "(expected a 4x4 camera-to-world matrix)"
        )
    if not np.isfinite(m).all():
        raise ValueError(f"{source}: frames[{i}].transform_matrix has non-finite values "
                         "(expected a finite 4x4 camera-to-world matrix)")
    return m[:3, :4]


def frame_times(frames: Sequence[Any], source: Path) -> torch.Tensor | None:
    """The frames' ``time`` keys (multi-view video: D-NeRF's and nerfstudio's convention,
    each a number in [0, 1]) as an (N,) tensor, or None when no frame has one; ValueError
    naming the file and frame when some frames have one and others not, or one is not a
    number in [0, 1]."""
    has = [isinstance(fr, dict) and "time" in fr for fr in frames]
    if not any(has):
        return None
    out = []
    for i, fr in enumerate(frames):
        if not has[i]:
            raise ValueError(f"{source}: frames[{i}] has no 'time' but frames[{has.index(True)}] "
                             "has one (expected a time in [0, 1] on every frame of a video, "
                             "or on none)")
        t = fr["time"]
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t) \
                or not 0.0 <= t <= 1.0:
            raise ValueError(f"{source}: frames[{i}].time is {json_snippet(t)} (expected a "
                             "number in [0, 1]: the frame's time in the video, 0 first, 1 last)")
        out.append(float(t))
    return torch.tensor(out, dtype=torch.float32)


def frame_file(frame: dict[str, Any], i: int, source: Path, suffixes: Sequence[str]) -> Path:
    """The image file of ``frames[i]``: ``file_path`` relative to the json's folder, tried
    with each of `suffixes` appended in turn ('' = as written). Raises FileNotFoundError."""
    fp = frame.get("file_path")
    if not isinstance(fp, str) or not fp:
        raise ValueError(f"{source}: frames[{i}] has no 'file_path' (expected an image path "
                         "relative to the json file)")
    base = source.parent / fp
    tried = [Path(str(base) + s) for s in suffixes]
    for p in tried:
        try:
            if p.is_file():
                return p
        except (OSError, ValueError):  # a name too long, or with a NUL, is no file either
            continue
    raise FileNotFoundError(
        f"{source}: frames[{i}].file_path {fp!r}: no image file (tried "
        + ", ".join(str(p) for p in tried) + ")"
    )


def json_aabb(data: dict[str, Any], source: Path, default: Any) -> torch.Tensor:
    """The optional ``aabb`` key ([[min x, y, z], [max x, y, z]]) of a json, checked."""
    if "aabb" not in data:
        return torch.tensor(default, dtype=torch.float32)
    expected = "two corners, min x y z then max x y z, finite, with max > min"
    box = numeric_array(data["aabb"], f"{source}: 'aabb'", expected)
    if box.shape != (2, 3) or not np.isfinite(box).all() or (box[1] <= box[0]).any():
        raise ValueError(f"{source}: 'aabb' is {json_snippet(data['aabb'])} "
                         f"(expected {expected})")
    return torch.from_numpy(box).float()


def number(data: dict[str, Any], key: str, source: str, expected: str) -> float:
    """``data[key]`` as a finite float, with an error naming `source`, the key and the
    expected type: JSON numbers only (a string such as ``"0.5"``, a boolean or null is
    refused, as is a number too large for a float)."""
    v = data[key]
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ValueError(f"{source}: {key!r} is {json_snippet(v)} of type {_json_type(v)} "
                         f"(expected a number: {expected})")
    try:
        f = float(v)
    except OverflowError:
        f = math.inf
    if not math.isfinite(f):
        raise ValueError(f"{source}: {key!r} is {json_snippet(v)} (expected a finite number: "
                         f"{expected})")
    return f


def _json_type(v: Any) -> str:
    """The JSON name of a value's type."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, (int, float)):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "array"
    if isinstance(v, dict):
        return "object"
    return type(v).__name__


# ---------------------------------------------------------------------------------------------
# Blender


def _read_split(
    json_path: Path, downscale: int, background: torch.Tensor
) -> tuple[Split, dict[str, Any]]:
    data = read_json(json_path)
    if "camera_angle_x" not in data:
        raise ValueError(
            f"{json_path}: no 'camera_angle_x' (expected the horizontal field of view in radians)"
        )
    angle_x = number(data, "camera_angle_x", str(json_path), "a field of view in radians")
    if not 0 < angle_x < math.pi:
        raise ValueError(f"{json_path}: 'camera_angle_x' is {angle_x} (expected radians in "
                         "(0, pi))")
    angle_y = None
    if data.get("camera_angle_y") is not None:
        angle_y = number(data, "camera_angle_y", str(json_path), "a field of view in radians")
        if not 0 < angle_y < math.pi:
            raise ValueError(f"{json_path}: 'camera_angle_y' is {angle_y} (expected radians in "
                             "(0, pi))")
    frames = data.get("frames")
    if not isinstance(frames, list) or not frames:
        raise ValueError(f"{json_path}: no 'frames' (expected a non-empty list of frames)")
    mats, files, names = [], [], []
    for i, fr in enumerate(frames):
        mats.append(frame_matrix(fr, i, json_path))
        files.append(frame_file(fr, i, json_path, (".png", "", ".jpg")))
        names.append(fr["file_path"])
    labels = [f"{json_path}: frames[{i}]" for i in range(len(frames))]
    c2w = checked_rotations(np.stack(mats), [f"{lb}.transform_matrix" for lb in labels])
    times = frame_times(frames, json_path)
    images, alpha, (h0, w0) = load_images(files, downscale, background, json_path)
    h, w = images.shape[1:3]
    fx = 0.5 * w0 / math.tan(0.5 * angle_x)
    fy = fx if angle_y is None else 0.5 * h0 / math.tan(0.5 * angle_y)
    sx, sy = w / w0, h / h0
    cams = Cameras(torch.from_numpy(c2w).float(), fx * sx, fy * sy, 0.5 * w, 0.5 * h, w, h)
    check_cameras(cams, labels, {"fx": "'camera_angle_x'", "fy": "'camera_angle_y'"})
    return Split(images, cams, names, alpha, times=times), data


def read_blender(
    path: str | os.PathLike,
    background: Sequence[float] | torch.Tensor = (1.0, 1.0, 1.0),
    downscale: int = 1,
) -> SceneData:
    """Reads a NeRF-synthetic scene folder.

    Args:
        path: folder holding ``transforms_train.json`` (and optionally ``_val`` / ``_test``).
        background: RGB the RGBA images are composited on (white, as in the NeRF paper).
        downscale: integer factor; images are area-averaged to ``(H // d, W // d)`` and the
            intrinsics scaled with them.
    Returns:
        SceneData with splits "train" (+ "val", "test" when their json exists): images
        (N, H, W, 3) composited, alpha (N, H, W, 1) for RGBA images, cameras with
        ``fx = 0.5 W / tan(0.5 camera_angle_x)``, ``fy = fx`` (or from ``camera_angle_y``),
        principal point at the image centre; aabb the json's ``aabb`` key or NeRF-synthetic's
        standard [-1.5, 1.5]^3; bounded; near 0, far 1e10; each split's ``times`` from the
        frames' ``time`` keys (D-NeRF's dynamic scenes), None without them.
    """
    root = Path(path)
    train = root / "transforms_train.json"
    if not train.is_file():
        hint = ""
        if (root / "transforms.json").is_file():
            hint = " (there is a transforms.json: that is an instant-ngp scene, use read_ngp)"
        raise FileNotFoundError(f"{train}: no such file; not a Blender scene folder{hint}")
    bg = torch.as_tensor(background, dtype=torch.float32).reshape(3)
    d = check_downscale(downscale)
    splits, aabb = {}, None
    for name in SPLITS:
        jp = root / f"transforms_{name}.json"
        if not jp.is_file():
            continue
        splits[name], data = _read_split(jp, d, bg)
        if name == "train":
            aabb = json_aabb(data, jp, BLENDER_AABB)
    return SceneData(
        name=root.resolve().name, splits=splits, aabb=aabb, background=bg, unbounded=False,
        near=0.0, far=1e10, meta={"format": "blender", "path": str(root), "downscale": d},
    )


def write_blender(path: str | os.PathLike, scene: SceneData) -> Path:
    """Writes `scene` as a NeRF-synthetic folder: ``transforms_<split>.json`` and
    ``<split>/r_<i>.png`` for each split, every file written atomically.

    Images with ``split.alpha`` are written RGBA with the colour un-composited from
    ``scene.background`` (``(image - (1 - alpha) * background) / alpha`` where alpha > 0,
    0 elsewhere), others as RGB. The json gets ``camera_angle_x`` (and ``camera_angle_y`` when
    fy != fx), ``frames`` (with D-NeRF's ``time`` where the split has times) and an ``aabb``
    key.

    Raises:
        ValueError if a split's cameras do not fit the format: fx or fy differing between
        cameras, a principal point off the image centre, or lens distortion.
    Returns:
        the folder.
    """
    root = Path(path)
    bg = scene.background.float().reshape(1, 1, 1, 3)
    for name, split in scene.splits.items():
        cams = split.cameras
        w, h = cams.width, cams.height
        where = f"write_blender({root}): split {name!r}"
        if (cams.fx - cams.fx[0]).abs().max() > 1e-4 * cams.fx[0].abs():
            raise ValueError(f"{where}: fx differs between cameras (the format stores one "
                             "camera_angle_x)")
        if (cams.fy - cams.fy[0]).abs().max() > 1e-4 * cams.fy[0].abs():
            raise ValueError(f"{where}: fy differs between cameras (the format stores one "
                             "camera_angle_y)")
        if ((cams.cx - 0.5 * w).abs().max() > 1e-3) or ((cams.cy - 0.5 * h).abs().max() > 1e-3):
            raise ValueError(f"{where}: principal point is not the image centre "
                             f"({w / 2}, {h / 2}), which the format assumes")
        if cams.has_distortion:
            raise ValueError(f"{where}: cameras have lens distortion, which the format cannot "
                             "store")
        fx, fy = float(cams.fx[0]), float(cams.fy[0])
        data: dict[str, Any] = {"camera_angle_x": 2.0 * math.atan(0.5 * w / fx)}
        if abs(fy - fx) > 1e-4 * abs(fx):
            data["camera_angle_y"] = 2.0 * math.atan(0.5 * h / fy)
        images = split.images.float()
        if split.alpha is not None:
            a = split.alpha.float()
            colour = torch.where(a > 0, (images - (1 - a) * bg) / a.clamp(min=1e-8),
                                 torch.zeros_like(images))
            images = torch.cat((colour.clamp(0, 1), a), dim=-1)
        frames = []
        for i in range(len(split)):
            write_image(root / name / f"r_{i}.png", images[i])
            c2w = torch.cat((cams.c2w[i].double(), torch.tensor([[0.0, 0.0, 0.0, 1.0]],
                                                                 dtype=torch.float64)))
            frames.append({"file_path": f"./{name}/r_{i}", "transform_matrix": c2w.tolist()})
            if split.times is not None:
                frames[-1]["time"] = float(split.times[i])
        data["frames"] = frames
        data["aabb"] = scene.aabb.double().tolist()
        write_text_atomic(root / f"transforms_{name}.json", json.dumps(data, indent=2) + "\n")
    return root
