"""COLMAP models, text (``cameras.txt``, ``images.txt``, optional ``points3D.txt``) or binary
(``cameras.bin``, ``images.bin``, optional ``points3D.bin``: COLMAP's default output).

The model is looked for in ``<path>/sparse/0``, ``<path>/sparse``, then ``<path>``, text
first; images in ``<path>/images`` (or ``<path>/images_<downscale>`` when it exists).

Camera models and their parameters (OpenCV radial-tangential distortion k1 k2 p1 p2):

* ``SIMPLE_PINHOLE f cx cy``          * ``PINHOLE fx fy cx cy``
* ``SIMPLE_RADIAL f cx cy k``          * ``RADIAL f cx cy k1 k2``
* ``OPENCV fx fy cx cy k1 k2 p1 p2``

COLMAP's pixel convention (centre of the top-left pixel at (0.5, 0.5)) is the engine's, so
principal points are taken as they are. ``images.txt`` gives world-to-camera poses in the
OpenCV camera frame: ``x_cam = R(q) x_world + t`` with ``q = (QW, QX, QY, QZ)``. The reader
inverts them (``c2w = [R^T | -R^T t]``) and converts with `opencv_to_opengl`.

Normalisation (recorded in ``meta``): world points are mapped to
``(x - centre) * scale``, with ``centre`` the mean camera centre and ``scale`` one over the
largest camera distance from it, so cameras lie within the unit sphere and at least one on it.
"""

from __future__ import annotations

import math
import os
import struct
import warnings
from pathlib import Path

import numpy as np
import torch

from fields.data.blender import check_downscale, hold_out_splits, load_images
from fields.data.dataset import SceneData
from fields.render.cameras import Cameras, check_cameras, opencv_to_opengl, plain_numbers

#: model name -> its parameters' names
PARAMETER_NAMES = {
    "SIMPLE_PINHOLE": ["f", "cx", "cy"],
    "PINHOLE": ["fx", "fy", "cx", "cy"],
    "SIMPLE_RADIAL": ["f", "cx", "cy", "k"],
    "RADIAL": ["f", "cx", "cy", "k1", "k2"],
    "OPENCV": ["fx", "fy", "cx", "cy", "k1", "k2", "p1", "p2"],
}
#: model name -> (number of params, function params -> (fx, fy, cx, cy, k1, k2, p1, p2))
CAMERA_MODELS = {
    "SIMPLE_PINHOLE": (3, lambda p: (p[0], p[0], p[1], p[2], 0, 0, 0, 0)),
    "PINHOLE": (4, lambda p: (p[0], p[1], p[2], p[3], 0, 0, 0, 0)),
    "SIMPLE_RADIAL": (4, lambda p: (p[0], p[0], p[1], p[2], p[3], 0, 0, 0)),
    "RADIAL": (5, lambda p: (p[0], p[0], p[1], p[2], p[3], p[4], 0, 0)),
    "OPENCV": (8, lambda p: tuple(p)),
}


def _lines(path: Path) -> list[tuple[int, str]]:
    """(1-based line number, line without the newline) of a text file, comments dropped."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        text = path.read_text()
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not a text file ({e})") from e
    return [(i + 1, ln.rstrip("\r")) for i, ln in enumerate(text.split("\n"))
            if not ln.lstrip().startswith("#")]


def _floats(tokens: list[str], where: str, names: list[str], what: str) -> list[float]:
    """The tokens as finite floats; ValueError naming `where`, the field (`names`, one per
    token) and `what` was expected."""
    vals = []
    for tok, name in zip(tokens, names, strict=True):
        try:
            v = float(tok)
        except ValueError:
            raise ValueError(f"{where}: {name} is {tok!r} (expected a number; {what})") from None
        if not np.isfinite(v):
            raise ValueError(f"{where}: {name} is {tok} (expected a finite number; {what})")
        vals.append(v)
    return vals


def _ints(tokens: list[str], where: str, names: list[str], what: str) -> list[int]:
    """The tokens as integers; ValueError naming `where`, the field and `what`."""
    vals = []
    for tok, name in zip(tokens, names, strict=True):
        try:
            vals.append(int(tok))
        except ValueError:
            raise ValueError(f"{where}: {name} is {tok!r} (expected an integer; {what})") \
                from None
    return vals


def read_cameras_txt(path: Path) -> dict[int, dict]:
    """Parses ``cameras.txt``: {camera id: {"size": (W, H), "params": (fx, fy, cx, cy, k1, k2,
    p1, p2), "where": "file:line" for messages}}."""
    cams = {}
    for no, line in _lines(path):
        tok = line.split()
        if not tok:
            continue
        where = f"{path}:{no}"
        if len(tok) < 4:
            raise ValueError(f"{where}: {line!r} (expected CAMERA_ID MODEL WIDTH HEIGHT PARAMS[])")
        model = tok[1]
        if model not in CAMERA_MODELS:
            raise ValueError(
                f"{where}: camera model {model!r} is not supported (expected one of "
                f"{', '.join(CAMERA_MODELS)}; undistort the images with COLMAP first)"
            )
        cid, w, h = _ints([tok[0], tok[2], tok[3]], where, ["CAMERA_ID", "WIDTH", "HEIGHT"],
                          "CAMERA_ID MODEL WIDTH HEIGHT PARAMS[]")
        n, convert = CAMERA_MODELS[model]
        if len(tok) - 4 != n:
            raise ValueError(f"{where}: {model} has {len(tok) - 4} parameters (expected {n}: "
                             f"{' '.join(PARAMETER_NAMES[model])})")
        names = PARAMETER_NAMES[model]
        params = convert(_floats(tok[4:], where, names,
                                 f"{model} parameters {' '.join(names)}"))
        if w < 1 or h < 1:
            raise ValueError(f"{where}: WIDTH x HEIGHT is {w}x{h} (expected an image size > 0)")
        for k in (0, 1):
            if params[k] <= 0:  # fx, fy; f for the models with one focal length
                raise ValueError(f"{where}: {names[k] if params[0] != params[1] else names[0]} "
                                 f"is {params[k]:g} (expected a focal length > 0 pixels)")
        cams[cid] = {"size": (w, h), "params": tuple(float(v) for v in params), "where": where}
    return cams


def qvec_to_rotation(q: np.ndarray) -> np.ndarray:
    """(3, 3) rotation of a quaternion (w, x, y, z) (normalised first)."""
    q = q / np.abs(q).max()  # no overflow in the norm of huge values
    w, x, y, z = q / np.linalg.norm(q)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ])


def read_images_txt(path: Path) -> list[dict]:
    """Parses ``images.txt`` (two lines per image, the second, the 2D points, possibly empty):
    [{"name", "camera", "R" (3, 3), "t" (3,), "where"}], world-to-camera in OpenCV's frame."""
    images = []
    lines = _lines(path)
    i = 0
    while i < len(lines):
        no, line = lines[i]
        tok = line.split()
        i += 1
        if not tok:  # blank lines between entries or at the end
            continue
        where = f"{path}:{no}"
        if len(tok) < 10:
            raise ValueError(
                f"{where}: {line!r} (expected IMAGE_ID QW QX QY QZ TX TY TZ CAMERA_ID NAME)"
            )
        vals = _floats(tok[1:8], where, ["QW", "QX", "QY", "QZ", "TX", "TY", "TZ"],
                       "IMAGE_ID QW QX QY QZ TX TY TZ CAMERA_ID NAME")
        q = np.array(vals[:4])
        if np.abs(q).max() < 1e-8:
            raise ValueError(f"{where}: zero quaternion (expected QW QX QY QZ of a rotation)")
        cam, = _ints(tok[8:9], where, ["CAMERA_ID"],
                     "IMAGE_ID QW QX QY QZ TX TY TZ CAMERA_ID NAME")
        images.append({"name": " ".join(tok[9:]), "camera": cam, "R": qvec_to_rotation(q),
                       "t": np.array(vals[4:]), "where": where})
        # the points line: skip it unless it is missing (then the next line is an image's)
        if i < len(lines):
            nxt = lines[i][1].split()
            if len(nxt) % 3 == 0:
                i += 1
    return images


def read_points_txt(path: Path) -> np.ndarray:
    """(P, 3) positions of ``points3D.txt`` (``POINT3D_ID X Y Z R G B ERROR TRACK[]``)."""
    pts = []
    for no, line in _lines(path):
        tok = line.split(maxsplit=4)
        if not tok:
            continue
        if len(tok) < 4:
            raise ValueError(f"{path}:{no}: {line!r} (expected POINT3D_ID X Y Z R G B ERROR "
                             "TRACK[])")
        pts.append(_floats(tok[1:4], f"{path}:{no}", ["X", "Y", "Z"],
                           "POINT3D_ID X Y Z R G B ERROR TRACK[]"))
    return np.asarray(pts, dtype=np.float64).reshape(-1, 3)


#: COLMAP's camera model ids (``colmap/sensor/models.h``) -> (name, number of parameters)
MODEL_IDS = {
    0: ("SIMPLE_PINHOLE", 3), 1: ("PINHOLE", 4), 2: ("SIMPLE_RADIAL", 4), 3: ("RADIAL", 5),
    4: ("OPENCV", 8), 5: ("OPENCV_FISHEYE", 8), 6: ("FULL_OPENCV", 12), 7: ("FOV", 5),
    8: ("SIMPLE_RADIAL_FISHEYE", 4), 9: ("RADIAL_FISHEYE", 5), 10: ("THIN_PRISM_FISHEYE", 12),
    11: ("RAD_TAN_THIN_PRISM_FISHEYE", 16),
}


class _Binary:
    """A little-endian binary file read front to back; every read names the file, the entry and
    the field when the bytes run out."""

    def __init__(self, path: Path) -> None:
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such file")
        self.path = path
        self.data = path.read_bytes()
        self.pos = 0

    def take(self, fmt: str, what: str) -> tuple:
        size = struct.calcsize("<" + fmt)
        if self.pos + size > len(self.data):
            raise ValueError(f"{self.path}: truncated: {what} needs bytes {self.pos}-"
                             f"{self.pos + size - 1}, the file has {len(self.data)}")
        out = struct.unpack_from("<" + fmt, self.data, self.pos)
        self.pos += size
        return out

    def skip(self, count: int, item: int, what: str) -> None:
        """Skips `count` records of `item` bytes (checked against the file's length)."""
        end = self.pos + count * item
        if count < 0 or end > len(self.data):
            raise ValueError(f"{self.path}: truncated: {what} ({count} records of {item} bytes) "
                             f"need bytes {self.pos}-{end - 1}, the file has {len(self.data)}")
        self.pos = end

    def name(self, what: str) -> str:
        end = self.data.find(b"\0", self.pos)
        if end < 0:
            raise ValueError(f"{self.path}: truncated: {what} has no terminating NUL byte")
        raw = self.data[self.pos:end]
        self.pos = end + 1
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError(f"{self.path}: {what} is not UTF-8 text ({raw[:40]!r})") from None

    def count(self, what: str, record: int) -> int:
        """A uint64 count of records of at least `record` bytes each, checked for plausibility
        (a corrupt count would otherwise ask for terabytes)."""
        (n,) = self.take("Q", what)
        left = len(self.data) - self.pos
        if n * record > left:
            raise ValueError(f"{self.path}: {what} is {n}, but the {left} bytes left hold at most "
                             f"{left // record} (truncated or not a COLMAP model)")
        return n

    def end(self) -> None:
        if self.pos != len(self.data):
            raise ValueError(f"{self.path}: {len(self.data) - self.pos} bytes after the last "
                             "entry (expected the file to end: not a COLMAP model of this "
                             "version?)")


def read_cameras_bin(path: Path) -> dict[int, dict]:
    """Parses ``cameras.bin`` (uint64 count; per camera int32 id, int32 model id, uint64
    width, height, float64 parameters): the same dictionary as `read_cameras_txt`."""
    f = _Binary(path)
    cams = {}
    for k in range(f.count("the number of cameras", 24)):
        cid, model_id, w, h = f.take("iiQQ", f"camera {k}: CAMERA_ID MODEL WIDTH HEIGHT")
        where = f"{path}: camera {k} (CAMERA_ID {cid})"
        if model_id not in MODEL_IDS:
            raise ValueError(f"{where}: MODEL is {model_id} (expected a COLMAP camera model id, "
                             f"0-{max(MODEL_IDS)})")
        model, n = MODEL_IDS[model_id]
        params = f.take(f"{n}d", f"{where}: {model}'s {n} parameters")
        if model not in CAMERA_MODELS:
            raise ValueError(
                f"{where}: camera model {model} is not supported (expected one of "
                f"{', '.join(CAMERA_MODELS)}; undistort the images with COLMAP first)")
        names = PARAMETER_NAMES[model]
        for name, v in zip(names, params, strict=True):
            if not np.isfinite(v):
                raise ValueError(f"{where}: {name} is {v} (expected a finite number)")
        if w < 1 or h < 1 or w > 1 << 20 or h > 1 << 20:
            raise ValueError(f"{where}: WIDTH x HEIGHT is {w}x{h} (expected an image size > 0)")
        params = CAMERA_MODELS[model][1](list(params))
        for i in (0, 1):
            if params[i] <= 0:
                label = names[i] if names[1] == "fy" else names[0]
                raise ValueError(f"{where}: {label} is {params[i]:g} (expected a focal length "
                                 "> 0 pixels)")
        cams[cid] = {"size": (int(w), int(h)), "params": tuple(float(v) for v in params),
                     "where": where}
    f.end()
    return cams


def read_images_bin(path: Path) -> list[dict]:
    """Parses ``images.bin`` (uint64 count; per image int32 id, float64 qw qx qy qz tx ty tz,
    int32 camera id, a NUL-terminated name, uint64 number of 2D points and their x, y, point
    id (24 bytes each), skipped): the same list as `read_images_txt`."""
    f = _Binary(path)
    images = []
    for k in range(f.count("the number of images", 64)):
        head = f.take("i7di", f"image {k}: IMAGE_ID QW QX QY QZ TX TY TZ CAMERA_ID")
        iid, vals, cam = head[0], np.array(head[1:8]), head[8]
        name = f.name(f"image {k} (IMAGE_ID {iid}): NAME")
        where = f"{path}: image {k} (IMAGE_ID {iid}, {name})"
        (npts,) = f.take("Q", f"{where}: the number of 2D points")
        f.skip(npts, 24, f"{where}: its 2D points")
        for label, v in zip(("QW", "QX", "QY", "QZ", "TX", "TY", "TZ"), vals, strict=True):
            if not np.isfinite(v):
                raise ValueError(f"{where}: {label} is {v} (expected a finite number)")
        q = vals[:4]
        if np.abs(q).max() < 1e-8:
            raise ValueError(f"{where}: zero quaternion (expected QW QX QY QZ of a rotation)")
        if not name:
            raise ValueError(f"{where}: empty NAME (expected the image's file name)")
        images.append({"name": name, "camera": cam, "R": qvec_to_rotation(q), "t": vals[4:],
                       "where": where})
    f.end()
    return images


def read_points_bin(path: Path) -> np.ndarray:
    """(P, 3) positions of ``points3D.bin`` (uint64 count; per point uint64 id, float64 x y z,
    uint8 r g b, float64 error, uint64 track length and its (int32, int32) elements)."""
    f = _Binary(path)
    n = f.count("the number of points", 51)
    pts = np.empty((n, 3))
    for k in range(n):  # a file read once, not a hot path: tracks vary in length
        rec = f.take("Q3d3BdQ", f"point {k}: POINT3D_ID X Y Z R G B ERROR TRACK_LENGTH")
        pts[k] = rec[1:4]
        f.skip(rec[-1], 8, f"point {k} (POINT3D_ID {rec[0]}): its track")
    f.end()
    return pts


def _model_dir(root: Path) -> tuple[Path, str]:
    """The model's folder and its kind, "txt" or "bin" (text first where both are)."""
    candidates = (root / "sparse" / "0", root / "sparse", root)
    for c in candidates:
        for kind in ("txt", "bin"):
            if (c / f"cameras.{kind}").is_file() and (c / f"images.{kind}").is_file():
                return c, kind
    for c in candidates:
        for kind in ("txt", "bin"):
            if (c / f"cameras.{kind}").is_file():
                raise FileNotFoundError(f"{c / f'cameras.{kind}'}: no images.{kind} beside it "
                                        "(a COLMAP model needs both)")
    raise FileNotFoundError(
        f"{root}: no COLMAP model (expected cameras.txt and images.txt, or cameras.bin and "
        "images.bin, in " + ", ".join(str(c) for c in candidates) + ")"
    )


def _box(pts: np.ndarray) -> np.ndarray:
    """(2, 3) box of points, each axis at least 5% of the largest extent (1 if all are 0)."""
    lo, hi = pts.min(0), pts.max(0)
    centre, half = 0.5 * (lo + hi), 0.5 * (hi - lo)
    big = half.max()
    half = np.maximum(half, 0.05 * big) if big > 1e-9 else np.ones(3)
    return np.stack((centre - half, centre + half))


def focus_of_cameras(centres: np.ndarray, axes: np.ndarray) -> np.ndarray | None:
    """The point (3,) closest, in least squares, to every optical axis of cameras that look
    inward at it (centres (N, 3), unit axes (N, 3) pointing into the scene); None when they do
    not (axes nearly parallel, as in a forward-facing capture, or the point behind more than a
    quarter of the cameras, as in a panorama)."""
    n = len(centres)
    if n < 2:
        return None
    proj = np.eye(3)[None] - axes[:, :, None] * axes[:, None, :]  # (N, 3, 3)
    a = proj.sum(0)
    b = np.einsum("nij,nj->i", proj, centres)
    spread = np.linalg.eigvalsh(a / n)[0]  # ~ the mean sin^2 between the axes
    if not spread > 0.02:
        return None
    p = np.linalg.solve(a, b)
    depth = np.einsum("ni,ni->n", p - centres, axes)
    if (depth > 0).mean() < 0.75 or not np.isfinite(p).all():
        return None
    return p


def _rotation_to_z(u: np.ndarray) -> np.ndarray:
    """The rotation (3, 3) taking the unit vector u to +z (the shortest arc)."""
    z = np.array([0.0, 0.0, 1.0])
    v, c = np.cross(u, z), float(u @ z)
    if c < -1 + 1e-9:
        return np.diag([1.0, -1.0, -1.0])
    vx = np.array([[0, -v[2], v[1]], [v[2], 0, -v[0]], [-v[1], v[0], 0]])
    return np.eye(3) + vx + vx @ vx / (1 + c)


def capture_transform(c2w_cv: np.ndarray, points: np.ndarray, half_fov: float
                      ) -> tuple[np.ndarray, np.ndarray, float, str]:
    """The scene transform ``x = scale * R (x - centre)`` of a capture.

    R turns the cameras' mean up vector to +z. An object capture (`focus_of_cameras` finds a
    point): that point is the centre, and the scale makes the region the cameras see from
    there fill [-1, 1]^3. Otherwise (forward-facing): the median of the points and their
    90th-percentile distance (without points, the camera centres).

    Args:
        c2w_cv: (N, 3, 4) OpenCV camera-to-world matrices (y down, z forward).
        points: (P, 3) scene points (may be empty).
        half_fov: half the narrower field of view, radians.
    Returns:
        (R (3, 3), centre (3,), scale, how the centre was found).
    """
    centres, axes = c2w_cv[:, :, 3], c2w_cv[:, :, 2]
    up = -c2w_cv[:, :, 1].mean(0)  # OpenCV's y points down the image
    r = _rotation_to_z(up / max(np.linalg.norm(up), 1e-12))
    focus = focus_of_cameras(centres, axes)
    if focus is not None:
        radius = float(np.median(np.linalg.norm(centres - focus, axis=1)) * math.sin(half_fov))
        return r, focus, 1.0 / max(radius, 1e-9), "object: the point nearest the optical axes"
    if len(points):
        centre = np.median(points, axis=0)
        radius = float(np.percentile(np.linalg.norm(points - centre, axis=1), 90))
    else:
        centre = centres.mean(0)
        radius = float(np.linalg.norm(centres - centre, axis=1).max())
    return r, centre, 1.0 / max(radius, 1e-9), "forward-facing: the median of the points"


def bounds_from_cameras(
    centres: np.ndarray, axes: np.ndarray, half_fov: np.ndarray
) -> tuple[np.ndarray, str]:
    """A box for the content of a scene without 3D points, from its cameras alone.

    Cameras that look inward at an object (their optical axes nearly meet): the centre is the
    point closest, in least squares, to every optical axis, and the half-size the median over
    cameras of ``distance to the centre * sin(half field of view)`` (the sphere that fills
    each camera's narrower field of view). Otherwise (forward-facing or outward-looking
    captures: axes nearly parallel, or the point behind most cameras) the box of the camera
    centres (`_box`).

    Args:
        centres: (N, 3) camera centres.
        axes: (N, 3) unit viewing directions (optical axes, pointing into the scene).
        half_fov: (N,) half of each camera's narrower field of view, radians.
    Returns:
        the (2, 3) box and a note saying how it was estimated.
    """
    p = focus_of_cameras(centres, axes)
    if p is not None:
        dist = np.linalg.norm(p - centres, axis=1)
        r = float(np.median(dist * np.sin(half_fov)))
        if np.isfinite(r) and r > 0:
            return np.stack((p - r, p + r)), (
                "scene bounds estimated from the cameras (no points3D.txt or .bin): the "
                "point nearest every optical axis, and the radius that fills the "
                "cameras' view from their distance")
    return _box(centres), ("scene bounds estimated from the cameras (no points3D.txt or .bin): the "
                           "cameras do not look at a common centre (forward-facing?), so the "
                           "box of the camera centres")


def read_colmap(path: str | os.PathLike, downscale: int = 1, hold_every: int = 8) -> SceneData:
    """Reads a COLMAP scene folder (text or binary model; see the module docstring for
    conventions).

    Args:
        path: the scene folder (model in ``sparse/0``, ``sparse`` or the folder itself; images
            in ``images/``).
        downscale: integer factor. Images come from ``images_<downscale>/`` when it exists,
            else from ``images/`` area-averaged to ``(H // d, W // d)``; intrinsics follow.
        hold_every: with more than `hold_every` images (sorted by name), images 0, hold_every,
            2 hold_every, ... are "test", the rest "train"; 0 keeps all in "train".
    Returns:
        SceneData: images (N, H, W, 3), cameras with the model's intrinsics and distortion,
        poses normalised (module docstring); unbounded; aabb the 2nd-98th percentile box of
        the normalised ``points3D`` points, or without points one estimated from the
        cameras (`bounds_from_cameras`; a warning and ``meta["notes"]`` say so); near 0,
        far 1e10. meta has "centre" (3,) and "scale" of the normalisation.
    Raises:
        ValueError naming the file and line for malformed or unsupported input, or images of
        different sizes; FileNotFoundError for missing files.
    """
    root = Path(path)
    d = check_downscale(downscale)
    model, kind = _model_dir(root)
    cams_txt, images_txt = model / f"cameras.{kind}", model / f"images.{kind}"
    if kind == "txt":
        cameras = read_cameras_txt(cams_txt)
        entries = sorted(read_images_txt(images_txt), key=lambda e: e["name"])
    else:
        cameras = read_cameras_bin(cams_txt)
        entries = sorted(read_images_bin(images_txt), key=lambda e: e["name"])
    if not entries:
        raise ValueError(f"{images_txt}: no images")
    for e in entries:
        if e["camera"] not in cameras:
            raise ValueError(f"{e['where']}: CAMERA_ID {e['camera']} is not in "
                             f"{cams_txt}")
    sizes = {cameras[e["camera"]]["size"] for e in entries}
    if len(sizes) > 1:
        raise ValueError(f"{cams_txt}: the images use cameras of sizes "
                         f"{sorted(sizes)} (expected one size for all images)")
    (cw, ch), = sizes

    folder = root / f"images_{d}"
    pre_shrunk = d > 1 and folder.is_dir()
    if not pre_shrunk:
        folder = root / "images"
    files = []
    for e in entries:
        f = folder / e["name"]
        if not f.is_file():
            raise FileNotFoundError(f"{f}: no such image (listed in {e['where']})")
        files.append(f)
    images, _, (h0, w0) = load_images(files, 1 if pre_shrunk else d, source=images_txt)
    f0 = d if pre_shrunk else 1
    if abs(w0 - cw / f0) > 1 or abs(h0 - ch / f0) > 1:
        raise ValueError(
            f"{files[0]}: image is {w0}x{h0} but its camera in {cams_txt} is {cw}x{ch} "
            f"(expected {cw // f0}x{ch // f0})"
        )
    h, w = images.shape[1:3]
    sx, sy = w / cw, h / ch

    rot = np.stack([e["R"] for e in entries])
    t = np.stack([e["t"] for e in entries])
    with np.errstate(over="ignore", invalid="ignore"):
        centres = -np.einsum("nji,nj->ni", rot, t)  # -R^T t
        centre = centres.mean(0)
        radius = np.linalg.norm(centres - centre, axis=1).max()
    if not (np.isfinite(centres).all() and np.isfinite(radius)):
        i = int(np.argmin(np.isfinite(centres).all(axis=1)))
        e = entries[i]
        raise ValueError(f"{e['where']}: TX TY TZ {plain_numbers(e['t'])} put the "
                         "camera out of floating-point range (expected finite camera "
                         "positions)")
    scale = 1.0 / radius if radius > 1e-9 else 1.0
    c2w = np.concatenate((rot.transpose(0, 2, 1), ((centres - centre) * scale)[:, :, None]),
                         axis=2)
    c2w = opencv_to_opengl(torch.from_numpy(c2w)).float()

    params = np.array([cameras[e["camera"]]["params"] for e in entries])  # (N, 8)
    cams = Cameras(
        c2w, params[:, 0] * sx, params[:, 1] * sy, params[:, 2] * sx, params[:, 3] * sy, w, h,
        torch.from_numpy(params[:, 4:]).float(),
    )
    check_cameras(cams, [f"{cameras[e['camera']]['where']} (camera "
                         f"{e['camera']} of {e['name']})" for e in entries])

    points_file = model / f"points3D.{kind}"
    if not points_file.is_file():
        pts = np.zeros((0, 3))
    else:
        pts = read_points_txt(points_file) if kind == "txt" else read_points_bin(points_file)
    notes = []
    if len(pts):
        with np.errstate(over="ignore", invalid="ignore"):
            pts = (pts - centre) * scale
        pts = pts[np.isfinite(pts).all(axis=1)]
    if len(pts):
        aabb = _box(np.percentile(pts, [2.0, 98.0], axis=0))
    else:
        fx, fy = params[:, 0], params[:, 1]
        half_fov = np.minimum(np.arctan(0.5 * cw / fx), np.arctan(0.5 * ch / fy))
        box, note = bounds_from_cameras((centres - centre) * scale, rot[:, 2, :], half_fov)
        aabb = box
        notes.append(note)
        warnings.warn(f"{model}: {note}", stacklevel=2)

    names = [e["name"] for e in entries]
    splits = hold_out_splits(images, cams, names, hold_every)
    return SceneData(
        name=root.resolve().name, splits=splits, aabb=torch.from_numpy(aabb).float(),
        unbounded=True, near=0.0, far=1e10,
        meta={"format": "colmap", "path": str(root), "model": str(model), "downscale": d,
              "centre": centre.tolist(), "scale": scale, "images": str(folder),
              "notes": notes},
    )
