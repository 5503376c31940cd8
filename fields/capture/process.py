"""Photos or a video -> a scene folder with cameras (`fields process images|video`).

The folder written (``--output``)::

    images/            the photos (or the kept video frames), the longest side at most
                       `max_size` (EXIF rotation applied); images_2/, images_4/ halved again
    sparse/0/          COLMAP's binary model (cameras.bin, images.bin, points3D.bin, ...)
    transforms.json    instant-ngp / nerfstudio conventions (read by `fields.data.ngp`):
                       OpenGL camera-to-world matrices, intrinsics, the box, the transform
    sparse_points.ply  COLMAP's 3D points in the scene's (normalised) coordinates
    report.json        images given / registered, reprojection error, points, seconds
    cameras.png        the cameras and points, from above and from the side
    colmap.log         what COLMAP said

Coordinates (``transforms.json``'s ``fields_transform``): ``x = scale * R (x_colmap - centre)``
with R turning the cameras' mean up vector to +z, ``centre`` the point nearest every optical
axis (an object capture) or the median of the points (otherwise), and ``scale`` making the
region the cameras look at fill the box [-1, 1]^3 (``aabb_scale`` 2; the scene beyond it is
the contracted background).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fields.io import atomic_write, write_json

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
#: flag value -> COLMAP camera model
CAMERA_MODELS = {"pinhole": "PINHOLE", "opencv": "OPENCV", "fisheye": "OPENCV_FISHEYE"}
MATCHERS = ("auto", "exhaustive", "sequential")
#: up to this many images, `auto` matches every pair; beyond, neighbours in name order
EXHAUSTIVE_UP_TO = 200


class CaptureError(ValueError):
    """A capture that cannot become a scene (too few images registered, SfM failed): the
    message says why and what to try."""


@dataclass
class ProcessOptions:
    """How `process_images` works.

    Attributes:
        camera_model: "pinhole", "opencv" (radial-tangential distortion) or "fisheye"
            (COLMAP's OPENCV_FISHEYE; the images are then undistorted to pinhole ones).
        matcher: "exhaustive" (every pair), "sequential" (neighbours in name order: a video),
            or "auto" (exhaustive up to `EXHAUSTIVE_UP_TO` images).
        max_size: longest image side after the automatic downscale (0: keep the size).
        threads: threads for COLMAP (-1: all).
        max_features: SIFT features per image.
        min_registered: the fraction of images that must register.
        seed: COLMAP's random seed.
    """

    camera_model: str = "opencv"
    matcher: str = "auto"
    max_size: int = 1600
    threads: int = -1
    max_features: int = 8192
    min_registered: float = 0.5
    seed: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def check(self) -> None:
        if self.camera_model not in CAMERA_MODELS:
            raise ValueError(f"--camera-model {self.camera_model!r}: expected one of "
                             f"{', '.join(CAMERA_MODELS)}")
        if self.matcher not in MATCHERS:
            raise ValueError(f"--matcher {self.matcher!r}: expected one of {', '.join(MATCHERS)}")
        if self.max_size < 0 or 0 < self.max_size < 64:
            raise ValueError(f"--max-size {self.max_size}: expected 0 (keep) or >= 64 pixels")


Progress = Callable[[str, int, int], None]


def _no_progress(stage: str, done: int, total: int) -> None:
    pass


def list_images(folder: str | os.PathLike) -> list[Path]:
    """The photos of a folder (.jpg, .jpeg, .png, any case), sorted by name; errors name the
    folder and what was expected."""
    root = Path(folder)
    if not root.exists():
        raise FileNotFoundError(f"{root}: no such folder")
    if not root.is_dir():
        raise ValueError(f"{root}: not a folder (expected a folder of photos; for a video use "
                         "fields process video)")
    files = sorted(p for p in root.iterdir() if p.is_file()
                   and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))
    if len(files) < 3:
        raise ValueError(f"{root}: {len(files)} photo(s) (expected at least 3 .jpg / .jpeg / "
                         ".png files, overlapping views of one scene)")
    return files


def _load_rgb(path: Path) -> tuple[Any, bool]:
    """The photo as an RGB PIL image, turned upright by its EXIF orientation (phones store
    the rotation there), and whether the file needs re-encoding to be that image."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            rotated = im.getexif().get(0x0112, 1) not in (None, 1)
            plain = im.mode == "RGB" and not rotated
            return ImageOps.exif_transpose(im).convert("RGB"), not plain
    except (UnidentifiedImageError, OSError) as e:
        raise ValueError(f"{path}: not an image PIL can read ({e})") from None


def copy_images(files: list[Path], out: Path, max_size: int, progress: Progress
                ) -> tuple[int, int]:
    """Writes the photos into ``out/images`` (longest side at most `max_size`, EXIF rotation
    applied; copied byte for byte when nothing changes) and halved copies into ``images_2``,
    ``images_4``. Returns the (width, height) of the first; all must have one size."""
    from PIL import Image

    size = None
    for k, f in enumerate(files):
        im, changed = _load_rgb(f)
        if max_size and max(im.size) > max_size:
            s = max_size / max(im.size)
            im = im.resize((max(1, round(im.width * s)), max(1, round(im.height * s))),
                           Image.Resampling.LANCZOS)
            changed = True
        if size is None:
            size = im.size
        elif im.size != size:
            raise ValueError(f"{f}: {im.width}x{im.height}, but {files[0].name} is "
                             f"{size[0]}x{size[1]} (expected photos of one size: one camera)")
        if changed:
            _save(im, out / "images" / f.name)
        else:
            atomic_write(out / "images" / f.name, lambda tmp, f=f: shutil.copyfile(f, tmp))
        for d in (2, 4):
            small = im.resize((max(1, im.width // d), max(1, im.height // d)),
                              Image.Resampling.BOX)
            _save(small, out / f"images_{d}" / f.name)
        progress("images", k + 1, len(files))
    assert size is not None
    return size


def _save(im: Any, path: Path) -> None:
    fmt = "JPEG" if path.suffix.lower() in (".jpg", ".jpeg") else "PNG"
    opts = {"quality": 95} if fmt == "JPEG" else {}
    atomic_write(path, lambda tmp: im.save(tmp, format=fmt, **opts))


def run_sfm(images: Path, work: Path, options: ProcessOptions, n_images: int,
            progress: Progress, log: Path) -> dict[str, Any]:
    """COLMAP (pycolmap) on the folder `images`, in a process of its own (`_colmap_worker`):
    the worker's result, with each stage's seconds. CaptureError naming the stage on failure."""
    try:
        import importlib.util

        if importlib.util.find_spec("pycolmap") is None:
            raise ImportError
    except ImportError:
        raise CaptureError("structure from motion needs pycolmap (pip install pycolmap; "
                           "`make setup` installs it)") from None
    matcher = options.matcher
    if matcher == "auto":
        matcher = "exhaustive" if n_images <= EXHAUSTIVE_UP_TO else "sequential"
    work.mkdir(parents=True, exist_ok=True)
    args = {"database": str(work / "database.db"), "images": str(images),
            "output": str(work / "models"), "camera_model": CAMERA_MODELS[options.camera_model],
            "matcher": matcher, "threads": options.threads, "max_features": options.max_features,
            "seed": options.seed, "overlap": options.extra.get("overlap", 10),
            "undistort": str(work / "undistorted") if options.camera_model == "fisheye" else ""}
    (work / "database.db").unlink(missing_ok=True)
    (work / "args.json").write_text(json.dumps(args))
    worker = Path(__file__).with_name("_colmap_worker.py")
    stages = ("features", "matching", "mapping") + (("undistort",) if args["undistort"] else ())
    seconds: dict[str, float] = {}
    result: dict[str, Any] | None = None
    failure = None
    stage = "start"
    with open(log, "a") as err:
        proc = subprocess.Popen([sys.executable, str(worker), str(work / "args.json")],
                                stdout=subprocess.PIPE, stderr=err, text=True)
        assert proc.stdout is not None
        try:
            for line in proc.stdout:
                try:
                    msg = json.loads(line)
                except ValueError:
                    continue
                if "stage" in msg:
                    stage = msg["stage"]
                    if msg.get("done"):
                        seconds[stage] = float(msg["seconds"])
                    progress("sfm", stages.index(stage) + (1 if msg.get("done") else 0),
                             len(stages))
                elif "result" in msg:
                    result = msg["result"]
                elif "error" in msg:
                    failure = msg["error"]
            code = proc.wait()
        except BaseException:
            proc.kill()
            proc.wait()
            raise
    if failure is not None or code != 0 or result is None:
        why = failure or f"the COLMAP process ended with code {code}"
        raise CaptureError(f"structure from motion failed in its {stage} stage: {why} "
                           f"(COLMAP's log: {log})")
    result["seconds"] = seconds
    result["matcher"] = matcher
    return result


def _opengl(c2w_cv: np.ndarray) -> np.ndarray:
    out = c2w_cv.copy()
    out[:, :, 1:3] *= -1
    return out


def write_scene(out: Path, model: Path, sfm: dict[str, Any], given: int,
                options: ProcessOptions, source: str) -> dict[str, Any]:
    """transforms.json, sparse_points.ply, report.json and cameras.png of a model; returns
    the report."""
    from fields.data.colmap import (
        capture_transform,
        read_cameras_bin,
        read_images_bin,
        read_points_bin,
    )
    from fields.data.pointclouds import write_points

    cams = read_cameras_bin(model / "cameras.bin")
    entries = sorted(read_images_bin(model / "images.bin"), key=lambda e: e["name"])
    pts = read_points_bin(model / "points3D.bin") if (model / "points3D.bin").is_file() \
        else np.zeros((0, 3))
    rot = np.stack([e["R"] for e in entries])
    t = np.stack([e["t"] for e in entries])
    c2w_cv = np.concatenate((rot.transpose(0, 2, 1), -np.einsum("nji,nj->ni", rot, t)[:, :, None]),
                            axis=2)
    first = cams[entries[0]["camera"]]
    (w, h), prm = first["size"], first["params"]
    half_fov = min(math.atan(0.5 * w / prm[0]), math.atan(0.5 * h / prm[1]))
    r, centre, scale, how = capture_transform(c2w_cv, pts, half_fov)
    c2w = c2w_cv.copy()
    c2w[:, :, :3] = r @ c2w_cv[:, :, :3]
    c2w[:, :, 3] = scale * (c2w_cv[:, :, 3] - centre) @ r.T
    c2w = _opengl(c2w)
    pts_n = scale * (pts - centre) @ r.T

    def intrinsics(c: dict) -> dict[str, float]:
        (cw, ch), p = c["size"], c["params"]
        d = {"fl_x": p[0], "fl_y": p[1], "cx": p[2], "cy": p[3], "w": cw, "h": ch}
        if any(p[4:]):
            d |= {"k1": p[4], "k2": p[5], "p1": p[6], "p2": p[7]}
        return d

    single = len({e["camera"] for e in entries}) == 1
    frames = []
    for i, e in enumerate(entries):
        fr: dict[str, Any] = {"file_path": f"images/{e['name']}",
                              "transform_matrix": np.vstack((c2w[i], [0, 0, 0, 1])).tolist()}
        if not single:
            fr |= intrinsics(cams[e["camera"]])
        frames.append(fr)
    model_name = "OPENCV" if any(any(c["params"][4:]) for c in cams.values()) else "PINHOLE"
    data: dict[str, Any] = {
        "camera_model": model_name,
        **(intrinsics(first) if single else {}),
        "aabb_scale": 2, "scale": 1.0, "offset": [0.5, 0.5, 0.5],
        "ply_file_path": "sparse_points.ply",
        "fields_transform": {"rotation": r.tolist(), "centre": centre.tolist(), "scale": scale,
                             "meaning": "x_scene = scale * rotation @ (x_colmap - centre)",
                             "centre_from": how},
        "frames": frames,
    }
    write_json(out / "transforms.json", data)
    write_points(out / "sparse_points.ply", pts_n.astype(np.float32))
    report = {
        "source": source, "images_given": given, "images_registered": len(entries),
        "registered_fraction": len(entries) / max(given, 1),
        "points": len(pts), "mean_reprojection_error_px": sfm.get("reprojection_error"),
        "camera_model": CAMERA_MODELS[options.camera_model], "matcher": sfm.get("matcher"),
        "image_size": [w, h], "seconds": sfm.get("seconds", {}), "models": sfm.get("models"),
        "transform": data["fields_transform"],
    }
    write_json(out / "report.json", report)
    _picture(out / "cameras.png", c2w, pts_n, report)
    return report


def _picture(path: Path, c2w: np.ndarray, pts: np.ndarray, report: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 5))
    keep = np.abs(pts).max(1) < 3 if len(pts) else np.zeros(0, bool)
    views = (((0, 1), "from above (x, y)"), ((0, 2), "from the side (x, z)"))
    for ax, ((i, j), title) in zip(axes, views, strict=True):
        if keep.any():
            ax.scatter(pts[keep, i], pts[keep, j], s=0.5, c="0.5")
        c = c2w[:, :, 3]
        look = -c2w[:, :, 2] * 0.3  # OpenGL cameras look down -z
        ax.quiver(c[:, i], c[:, j], look[:, i], look[:, j], color="tab:red", angles="xy",
                  scale_units="xy", scale=1, width=0.004)
        ax.plot(c[:, i], c[:, j], ".", color="tab:red")
        ax.add_patch(plt.Rectangle((-1, -1), 2, 2, fill=False, ls="--", color="tab:blue"))
        ax.set_aspect("equal")
        ax.set_title(title)
    fig.suptitle(f"{report['images_registered']} of {report['images_given']} images registered, "
                 f"{report['points']} points, reprojection error "
                 f"{report['mean_reprojection_error_px'] or float('nan'):.2f} px "
                 "(box: the scene's [-1, 1])")
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
    plt.close(fig)


def _check_registered(result: dict[str, Any], given: int, options: ProcessOptions,
                      source: str) -> dict[str, Any]:
    models = result.get("models") or []
    if not models:
        raise CaptureError(
            f"{source}: no camera could be registered of {given} images: COLMAP found no "
            "initial pair. Likely causes: too little overlap between neighbouring views "
            "(take more photos, closer together), motion blur, or a textureless / reflective "
            "subject (add texture to the scene)")
    best = max(models, key=lambda m: m["registered"])
    n = best["registered"]
    if n < options.min_registered * given:
        split = f" (COLMAP made {len(models)} separate models)" if len(models) > 1 else ""
        raise CaptureError(
            f"{source}: only {n} of {given} images registered{split}; at least "
            f"{options.min_registered:.0%} are needed. Likely causes: too little overlap "
            "between views (more photos, closer together), blur, textureless or repetitive "
            "surfaces, or a moving subject")
    result["reprojection_error"] = best["reprojection_error"]
    return best


def process_images(folder: str | os.PathLike, output: str | os.PathLike,
                   options: ProcessOptions | None = None,
                   progress: Progress | None = None) -> dict[str, Any]:
    """A folder of photos -> a scene folder (module docstring); returns the report."""
    options = options or ProcessOptions()
    options.check()
    files = list_images(folder)
    return _process(files, Path(output), options, progress or _no_progress, str(folder))


def process_video(path: str | os.PathLike, output: str | os.PathLike, frames: int = 150,
                  options: ProcessOptions | None = None,
                  progress: Progress | None = None) -> dict[str, Any]:
    """A video -> a scene folder: about `frames` frames (the sharpest of each window), then as
    `process_images`, with sequential matching unless `options.matcher` says otherwise."""
    from fields.capture.frames import video_frames

    options = options or ProcessOptions(matcher="sequential")
    options.check()
    progress = progress or _no_progress
    out = Path(output)
    kept, index, fps = video_frames(path, frames, lambda k, n: progress("video", k, n))
    with tempfile.TemporaryDirectory(prefix="frames-", dir=out.parent if out.parent.exists()
                                     else None) as tmp:
        from PIL import Image

        files = []
        for f, k in zip(kept, index, strict=True):
            p = Path(tmp) / f"frame_{k:05d}.png"
            Image.fromarray(f).save(p)
            files.append(p)
        report = _process(files, out, options, progress, str(path))
    report["video"] = {"frames_kept": len(kept), "fps": fps, "frame_indices": index}
    write_json(out / "report.json", report)
    return report


def _process(files: list[Path], out: Path, options: ProcessOptions, progress: Progress,
             source: str) -> dict[str, Any]:
    t0 = time.perf_counter()
    subs = ("images", "images_2", "images_4", "sparse", "colmap")
    inputs = {f.parent.resolve() for f in files}
    for sub in subs:
        target = (out / sub).resolve()
        if any(target == p or target in p.parents for p in inputs):
            raise ValueError(f"--output {out}: its {sub}/ would hold the scene's copies, but the "
                             "photos are there: choose another --output")
    ours = (out / "report.json").is_file()
    present = [sub for sub in subs if (out / sub).exists()]
    if present and not ours:
        raise ValueError(f"--output {out}: already holds {', '.join(present)} (not a scene "
                         "of fields process): choose an empty or new folder")
    out.mkdir(parents=True, exist_ok=True)
    for sub in present:  # a scene processed before (--overwrite): made anew
        shutil.rmtree(out / sub)
    copy_images(files, out, options.max_size, progress)
    log = out / "colmap.log"
    log.unlink(missing_ok=True)
    work = out / "colmap"
    result = run_sfm(out / "images", work, options, len(files), progress, log)
    best = _check_registered(result, len(files), options, source)
    model = Path(best["path"])
    if options.camera_model == "fisheye":
        # the worker undistorted the images to pinhole ones: they replace the copies
        und = work / "undistorted"
        shutil.rmtree(out / "images")
        shutil.move(str(und / "images"), str(out / "images"))
        for d in (2, 4):
            shutil.rmtree(out / f"images_{d}", ignore_errors=True)
        model = und / "sparse"
    (out / "sparse").mkdir(exist_ok=True)
    shutil.copytree(model, out / "sparse" / "0")
    shutil.rmtree(work / "models", ignore_errors=True)
    report = write_scene(out, out / "sparse" / "0", result, len(files), options, source)
    report["seconds"]["total"] = time.perf_counter() - t0
    write_json(out / "report.json", report)
    return report
