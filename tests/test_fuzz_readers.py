"""Fuzzing every reader (issue 21): valid inputs, mutated by hypothesis, must either load into
something sane or fail with a ValueError (FileNotFoundError for a missing file) whose message
names the file (for configs from dicts: the field); never another exception, never a hang.

Inputs are written by the project's own writers and test helpers (`tests/test_readers.py`,
`fields.data.pointclouds.write_points`, `fields.mesh.save_mesh`, ...) once per module, then
each example copies the one it mutates into a fresh folder. Mutations: truncation at a random
byte, random bytes written over or inserted, binary header integers overwritten, the whole
file replaced or deleted, and, by format, JSON keys deleted or set to wrong types / NaN / Inf /
huge values, arrays reshaped, retyped or filled with NaN / Inf / huge values, text tokens
replaced with bad numbers and lines deleted or duplicated.

The default run tries a few examples per input with fixed seeds (`derandomize`); the
``slow``-marked twin tries many more (``pytest -m slow tests/test_fuzz_readers.py``). Crashes
found so far are pinned as plain regression tests at the end of the file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import io
import json
import math
import shutil
import signal
import struct
import tempfile
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fields.data.blender import read_blender
from fields.data.colmap import read_colmap
from fields.data.dataset import SceneData
from fields.data.images import read_image, write_image
from fields.data.llff import read_llff
from fields.data.neus import read_neus
from fields.data.ngp import read_ngp
from fields.data.pointclouds import read_points, write_points
from fields.data.signals import read_audio, synthetic_audio, write_audio
from fields.mesh import load_mesh, save_mesh

FAST_EXAMPLES = 50
SLOW_EXAMPLES = 400
#: a hard limit per example, far above what any takes: only a hang reaches it
HANG_SECONDS = 30


def _settings(n: int) -> settings:
    return settings(max_examples=n, derandomize=True, database=None,
                    deadline=timedelta(seconds=10),
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


class Hang(BaseException):  # not an Exception: a reader's `except Exception` must not eat it
    """Raised by the per-example timer: the reader ran for `HANG_SECONDS`."""


@contextlib.contextmanager
def _time_limit(seconds: float) -> Iterator[None]:
    def stop(signum: int, frame: Any) -> None:
        raise Hang(f"no result after {seconds} s")

    old = signal.signal(signal.SIGALRM, stop)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


# ------------------------------------------------------------------------------ valid inputs


def _scene_helpers() -> Any:
    """tests/test_readers.py: its writers of tiny scenes in each format."""
    return importlib.import_module("test_readers")


def _write_point_clouds(root: Path) -> None:
    rng = np.random.default_rng(0)
    pts = rng.normal(size=(6, 3)).astype(np.float32)
    inten = rng.random(6).astype(np.float32)
    colours = rng.integers(0, 256, (6, 3)).astype(np.uint8)
    for suffix in (".ply", ".npy", ".pcd", ".bin"):
        write_points(root / f"cloud{suffix}", pts, {"intensity": inten, "colors": colours}
                     if suffix != ".npy" else {"intensity": inten})
    rows = "\n".join(f"{x:.6f} {y:.6f} {z:.6f} {i:.4f}" for (x, y, z), i in zip(pts, inten,
                                                                                  strict=True))
    (root / "ascii.ply").write_text(
        "ply\nformat ascii 1.0\ncomment fuzz\nelement vertex 6\nproperty float x\n"
        "property float y\nproperty float z\nproperty float intensity\nelement face 2\n"
        "property list uchar int vertex_indices\nend_header\n" + rows + "\n3 0 1 2\n4 2 3 4 5\n")
    rec = np.zeros(6, np.dtype([("x", ">f4"), ("y", ">f4"), ("z", ">f4"), ("i", ">u2")]))
    rec["x"], rec["y"], rec["z"], rec["i"] = pts[:, 0], pts[:, 1], pts[:, 2], np.arange(6)
    (root / "big_endian.ply").write_bytes(
        b"ply\nformat binary_big_endian 1.0\nelement vertex 6\nproperty float x\n"
        b"property float y\nproperty float z\nproperty ushort i\nend_header\n" + rec.tobytes())
    (root / "ascii.pcd").write_text(
        "# .PCD v0.7\nVERSION 0.7\nFIELDS x y z intensity\nSIZE 4 4 4 4\nTYPE F F F F\n"
        "COUNT 1 1 1 1\nWIDTH 6\nHEIGHT 1\nVIEWPOINT 0 0 0 1 0 0 0\nPOINTS 6\nDATA ascii\n"
        + rows + "\n")
    (root / "cloud.txt").write_text("# x y z i\n" + rows + "\n")
    (root / "cloud.xyz").write_text("\n".join(f"{x} {y} {z}" for x, y, z in pts) + "\n")
    (root / "cloud.csv").write_text("x,y,z,i\n" + rows.replace(" ", ",") + "\n")


def _write_meshes(root: Path) -> None:
    verts = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], np.float32)
    faces = np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]], np.int64)
    for suffix in (".obj", ".ply", ".off", ".stl"):
        save_mesh(root / f"tet{suffix}", verts, faces)


def _write_images_and_audio(root: Path) -> None:
    g = torch.Generator().manual_seed(0)
    write_image(root / "rgba.png", torch.rand(5, 7, 4, generator=g))
    write_image(root / "grey.png", torch.rand(4, 3, 1, generator=g))
    write_image(root / "photo.jpg", torch.rand(8, 8, 3, generator=g))
    write_audio(root / "tone.wav", synthetic_audio(0.01, 8000), 8000)


@pytest.fixture(scope="module")
def valid(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of valid inputs: one folder per scene format, point clouds, meshes, images,
    audio; every reader is run once on them (so the first example pays no import)."""
    helpers = _scene_helpers()
    root = tmp_path_factory.mktemp("valid")
    for name in ("blender", "ngp", "llff", "colmap", "colmap_bin", "neus", "files"):
        (root / name).mkdir()
    helpers._blender_scene(root / "blender", n=2)
    helpers._ngp_scene(root / "ngp", n=2)
    helpers._llff_scene(root / "llff", n=2)
    helpers._colmap_scene(root / "colmap", n=2)
    helpers._binary_scene(root / "colmap_bin", n=2)
    shutil.rmtree(root / "neus")
    helpers.write_neus_scene(root / "neus", helpers._scene_for_writing(n=2))
    _write_point_clouds(root / "files")
    _write_meshes(root / "files")
    _write_images_and_audio(root / "files")
    for target in TARGETS:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            target.check_valid(root / target.folder)
    return root


# ------------------------------------------------------------------------------ mutations

BAD_TOKENS = ("nan", "inf", "-inf", "1e400", "-1", "0", "abc", "", "1e-320", "3.5", "-0",
              "99999999999999999999999", "0x10", "1,5", "\x00", "#", "[1]")
BAD_JSON = st.one_of(
    st.sampled_from(["abc", "", "0.5", None, True, False, [], {}, [1, 2], [[1, "a"]], {"a": 1},
                     math.nan, math.inf, -math.inf, 1e308, -1e308, 10**30, 10**400, 0, -1,
                     1e-300, 0.0]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(),
    st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=5),
)
BAD_NUMBERS = (np.nan, np.inf, -np.inf, 0.0, -1.0, 1e308, -1e308, 1e-308, 1e30, 3e38, 7.0)


def mutate_bytes(data: st.DataObject, blob: bytes) -> bytes | None:
    """A byte-level mutation of `blob`; None deletes the file."""
    op = data.draw(st.sampled_from(["truncate", "overwrite", "insert", "int", "replace",
                                    "delete", "empty"]), label="byte op")
    n = len(blob)
    if op == "truncate":
        return blob[: data.draw(st.integers(0, max(n - 1, 0)), label="cut at")]
    if op == "overwrite":
        at = data.draw(st.integers(0, max(n - 1, 0)), label="at")
        junk = data.draw(st.binary(min_size=1, max_size=16), label="junk")
        return blob[:at] + junk + blob[at + len(junk):]
    if op == "insert":
        at = data.draw(st.integers(0, n), label="at")
        return blob[:at] + data.draw(st.binary(min_size=1, max_size=16), label="junk") + blob[at:]
    if op == "int":  # a binary header's count, size or rate: 0, -1, huge
        at = data.draw(st.integers(0, max(min(n, 128) - 4, 0)), label="at")
        value = data.draw(st.sampled_from([0, 1, 0xFFFFFFFF, 0x7FFFFFFF, 0x80000000, 3, 255,
                                           65535]), label="value")
        return blob[:at] + struct.pack("<I", value) + blob[at + 4:]
    if op == "replace":
        return data.draw(st.binary(max_size=256), label="whole file")
    if op == "empty":
        return b""
    return None


def _json_paths(obj: Any, path: tuple = ()) -> list[tuple]:
    out = [path] if path else []
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _json_paths(v, (*path, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out += _json_paths(v, (*path, i))
    return out


def mutate_json(data: st.DataObject, blob: bytes) -> bytes | None:
    """Deletes a key (or list item) anywhere in the JSON, or sets it to a wrong value."""
    obj = json.loads(blob)
    path = data.draw(st.sampled_from(_json_paths(obj)), label="json path")
    parent = obj
    for k in path[:-1]:
        parent = parent[k]
    if data.draw(st.booleans(), label="delete"):
        del parent[path[-1]]
    else:
        parent[path[-1]] = data.draw(BAD_JSON, label="json value")
    try:
        return json.dumps(obj).encode()
    except ValueError:  # an integer too long to write: keep the file as it was
        return blob


def _mutate_array(data: st.DataObject, a: np.ndarray) -> np.ndarray:
    op = data.draw(st.sampled_from(["value", "values", "shape", "dtype", "scalar"]),
                   label="array op")
    if op in ("value", "values") and a.size:
        a = a.astype(np.float64)
        flat = a.reshape(-1)
        idx = (slice(None) if op == "values" else
               data.draw(st.integers(0, flat.size - 1), label="index"))
        flat[idx] = data.draw(st.sampled_from(BAD_NUMBERS), label="number")
        return a
    if op == "shape":
        shape = data.draw(st.lists(st.integers(0, 20), min_size=0, max_size=3), label="shape")
        return np.resize(a, shape)
    if op == "dtype":
        dtype = data.draw(st.sampled_from(["<U3", "?", "i1", "f2", "c8", "u8", ">f8"]),
                          label="dtype")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return a.astype(dtype) if dtype != "<U3" else a.astype(str).astype("<U3")
    return np.asarray(data.draw(st.sampled_from(BAD_NUMBERS), label="scalar"))


def mutate_npy(data: st.DataObject, blob: bytes) -> bytes | None:
    a = _mutate_array(data, np.load(io.BytesIO(blob)))
    out = io.BytesIO()
    np.save(out, a, allow_pickle=False)
    return out.getvalue()


def mutate_npz(data: st.DataObject, blob: bytes) -> bytes | None:
    arrays = dict(np.load(io.BytesIO(blob)))
    key = data.draw(st.sampled_from(sorted(arrays)), label="npz key")
    if data.draw(st.booleans(), label="delete key"):
        del arrays[key]
    else:
        arrays[key] = _mutate_array(data, arrays[key])
    out = io.BytesIO()
    np.savez(out, **arrays)
    return out.getvalue()


def mutate_text(data: st.DataObject, blob: bytes) -> bytes | None:
    """Replaces, deletes or adds a token of a line, or deletes / duplicates a line."""
    lines = blob.decode("latin-1").split("\n")
    i = data.draw(st.integers(0, len(lines) - 1), label="line")
    op = data.draw(st.sampled_from(["token", "drop token", "add token", "drop line",
                                    "dup line"]), label="text op")
    tokens = lines[i].split(" ")
    if op == "drop line":
        del lines[i]
    elif op == "dup line":
        lines.insert(i, lines[i])
    elif op == "add token":
        tokens.insert(data.draw(st.integers(0, len(tokens)), label="at"),
                      data.draw(st.sampled_from(BAD_TOKENS), label="token"))
        lines[i] = " ".join(tokens)
    else:
        j = data.draw(st.integers(0, len(tokens) - 1), label="token index")
        if op == "drop token":
            del tokens[j]
        else:
            tokens[j] = data.draw(st.sampled_from(BAD_TOKENS), label="token")
        lines[i] = " ".join(tokens)
    return "\n".join(lines).encode("latin-1")


# ------------------------------------------------------------------------------ sanity of loads


def _sane_scene(scene: SceneData) -> None:
    """What a reader returns is usable: finite images, finite rays through every camera's
    corners and centre, a finite box of positive size."""
    assert torch.isfinite(scene.aabb).all() and (scene.aabb[1] > scene.aabb[0]).all()
    for split in scene.splits.values():
        assert torch.isfinite(split.images).all()
        cams = split.cameras
        w, h = cams.width, cams.height
        u = torch.tensor([0.0, w, 0.0, w, 0.5 * w]).repeat(len(cams))
        v = torch.tensor([0.0, 0.0, h, h, 0.5 * h]).repeat(len(cams))
        idx = torch.arange(len(cams)).repeat_interleave(5)
        o, d = cams.rays(idx, u, v)
        assert torch.isfinite(o).all() and torch.isfinite(d).all()


def _sane_points(path: Path) -> None:
    xyz, fields = read_points(path, with_fields=True)
    assert xyz.ndim == 2 and xyz.shape[1] == 3 and len(xyz) and np.isfinite(xyz).all()
    assert all(len(f) == len(xyz) for f in fields.values())


def _sane_mesh(path: Path) -> None:
    v, f = load_mesh(path)
    assert np.isfinite(v).all() and len(f) and f.min() >= 0 and f.max() < len(v)


def _sane_image(path: Path) -> None:
    img = read_image(path)
    assert img.ndim == 3 and img.shape[-1] in (1, 3, 4) and torch.isfinite(img).all()


def _sane_audio(path: Path) -> None:
    samples, rate = read_audio(path)
    assert rate > 0 and samples.ndim == 2 and torch.isfinite(samples).all()


# ------------------------------------------------------------------------------ targets


@dataclass
class Target:
    """One file to mutate: `file` inside `folder` (of the valid inputs), read by `read` of the
    folder's copy (`per_file`: of the file's copy), mutated by any of `mutations`."""

    name: str
    folder: str
    file: str
    read: Callable[[Path], None]
    mutations: tuple[Callable[[st.DataObject, bytes], bytes | None], ...] = (mutate_bytes,)
    per_file: bool = False

    def check_valid(self, folder: Path) -> None:
        self.read(folder / self.file if self.per_file else folder)


def _scene(reader: Callable[..., SceneData]) -> Callable[[Path], None]:
    return lambda folder: _sane_scene(reader(folder))


TARGETS = [
    Target("blender json", "blender", "transforms_train.json", _scene(read_blender),
           (mutate_json, mutate_json, mutate_bytes)),
    Target("blender image", "blender", "train/r_1.png", _scene(read_blender)),
    Target("ngp json", "ngp", "transforms.json", _scene(read_ngp),
           (mutate_json, mutate_json, mutate_bytes)),
    Target("llff npy", "llff", "poses_bounds.npy", _scene(read_llff), (mutate_npy, mutate_bytes)),
    Target("colmap cameras", "colmap", "sparse/0/cameras.txt", _scene(read_colmap),
           (mutate_text, mutate_text, mutate_bytes)),
    Target("colmap images", "colmap", "sparse/0/images.txt", _scene(read_colmap),
           (mutate_text, mutate_text, mutate_bytes)),
    Target("colmap points", "colmap", "sparse/0/points3D.txt", _scene(read_colmap),
           (mutate_text, mutate_bytes)),
    *[Target(f"colmap {f}", "colmap_bin", f"sparse/0/{f}", _scene(read_colmap))
      for f in ("cameras.bin", "images.bin", "points3D.bin")],
    Target("neus npz", "neus", "cameras_sphere.npz", _scene(read_neus),
           (mutate_npz, mutate_npz, mutate_bytes)),
    *[Target(f"points {f}", "files", f, _sane_points, (mutate_bytes,), per_file=True)
      for f in ("cloud.ply", "big_endian.ply", "cloud.pcd", "cloud.bin")],
    Target("points npy", "files", "cloud.npy", _sane_points, (mutate_npy, mutate_bytes),
           per_file=True),
    *[Target(f"points {f}", "files", f, _sane_points, (mutate_text, mutate_bytes), per_file=True)
      for f in ("ascii.ply", "ascii.pcd", "cloud.txt", "cloud.xyz", "cloud.csv")],
    *[Target(f"mesh {f}", "files", f, _sane_mesh, (mutate_bytes,), per_file=True)
      for f in ("tet.ply", "tet.stl")],
    *[Target(f"mesh {f}", "files", f, _sane_mesh, (mutate_text, mutate_bytes), per_file=True)
      for f in ("tet.obj", "tet.off")],
    *[Target(f"image {f}", "files", f, _sane_image, (mutate_bytes,), per_file=True)
      for f in ("rgba.png", "grey.png", "photo.jpg")],
    Target("audio wav", "files", "tone.wav", _sane_audio, (mutate_bytes,), per_file=True),
]


def _fuzz_file(valid: Path, target: Target, data: st.DataObject) -> None:
    """Copies the target's folder, mutates its file, reads it: a sane result, or a ValueError
    / FileNotFoundError naming the file."""
    mutate = data.draw(st.sampled_from(target.mutations), label="mutation")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / target.folder
        src = valid / target.folder
        if target.per_file:
            folder.mkdir()
            shutil.copy(src / target.file, folder / target.file)
        else:
            shutil.copytree(src, folder)
        path = folder / target.file
        blob = mutate(data, path.read_bytes())
        if blob is None:
            path.unlink()
        else:
            path.write_bytes(blob)
        name = Path(target.file).name
        with warnings.catch_warnings(), _time_limit(HANG_SECONDS):
            warnings.simplefilter("ignore")
            try:
                target.check_valid(folder)
            except (ValueError, FileNotFoundError) as e:
                assert name in str(e), f"the error does not name {name}: {e}"


@pytest.mark.parametrize("target", TARGETS, ids=lambda t: t.name)
@_settings(FAST_EXAMPLES)
@given(data=st.data())
def test_fuzz_readers(valid: Path, target: Target, data: st.DataObject) -> None:
    _fuzz_file(valid, target, data)


@pytest.mark.slow
@pytest.mark.parametrize("target", TARGETS, ids=lambda t: t.name)
@_settings(SLOW_EXAMPLES)
@given(data=st.data())
def test_fuzz_readers_many(valid: Path, target: Target, data: st.DataObject) -> None:
    _fuzz_file(valid, target, data)


# ------------------------------------------------------------------------------ configs

CONFIGS = ["fields.nerf.NerfConfig", "fields.sdf.field.SDFConfig", "fields.sdf.neus.NeusConfig",
           "fields.flow.model.FlowConfig", "fields.inr.model.INRConfig",
           "fields.pinn.strategy.Strategy"]


def _config_class(path: str) -> type:
    module, name = path.rsplit(".", 1)
    return getattr(importlib.import_module(module), name)


def _fuzz_config(path: str, data: st.DataObject) -> None:
    """A config's valid dict with one key deleted, set to a wrong value, or added: the config,
    or a ValueError naming the key."""
    cls = _config_class(path)
    d = dataclasses.asdict(cls())
    key = data.draw(st.sampled_from([*sorted(d), "no_such_field"]), label="key")
    if key in d and data.draw(st.booleans(), label="delete"):
        del d[key]
    else:
        d[key] = data.draw(BAD_JSON, label="value")
    with _time_limit(HANG_SECONDS):
        try:
            cls.from_dict(d)
        except ValueError as e:
            assert key in str(e), f"the error does not name {key!r}: {e}"


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.rsplit(".", 1)[1])
@_settings(4 * FAST_EXAMPLES)
@given(data=st.data())
def test_fuzz_configs(path: str, data: st.DataObject) -> None:
    _fuzz_config(path, data)


@pytest.mark.slow
@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.rsplit(".", 1)[1])
@_settings(SLOW_EXAMPLES)
@given(data=st.data())
def test_fuzz_configs_many(path: str, data: st.DataObject) -> None:
    _fuzz_config(path, data)


# ------------------------------------------------------------------------------ regressions
# What the fuzzer found in the readers as they were (each crashed, or loaded into NaN rays),
# pinned as plain tests: the mutation as hypothesis reported it, then the error now given.


def _read_edited(valid: Path, target_name: str, edit: Callable[[bytes], bytes]) -> str:
    """The ValueError message of reading the target's input after `edit` of its file."""
    target = next(t for t in TARGETS if t.name == target_name)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / target.folder
        if target.per_file:
            folder.mkdir()
            shutil.copy(valid / target.folder / target.file, folder / target.file)
        else:
            shutil.copytree(valid / target.folder, folder)
        path = folder / target.file
        path.write_bytes(edit(path.read_bytes()))
        with pytest.raises(ValueError) as info, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            target.check_valid(folder)
    msg = str(info.value)
    assert Path(target.file).name in msg, msg
    return msg


def _json_edit(edit: Callable[[Any], None]) -> Callable[[bytes], bytes]:
    def apply(blob: bytes) -> bytes:
        obj = json.loads(blob)
        edit(obj)
        return json.dumps(obj).encode()

    return apply


def _array_edit(edit: Callable[[np.ndarray], None]) -> Callable[[bytes], bytes]:
    def apply(blob: bytes) -> bytes:
        a = np.load(io.BytesIO(blob)).astype(np.float64)
        edit(a)
        out = io.BytesIO()
        np.save(out, a)
        return out.getvalue()

    return apply


def _npz_edit(key: str, edit: Callable[[np.ndarray], None]) -> Callable[[bytes], bytes]:
    def apply(blob: bytes) -> bytes:
        arrays = dict(np.load(io.BytesIO(blob)))
        arrays[key] = arrays[key].astype(np.float64)
        edit(arrays[key])
        out = io.BytesIO()
        np.savez(out, **arrays)
        return out.getvalue()

    return apply


def test_regression_huge_matrix_entry_gave_nan_rays(valid: Path) -> None:
    """frames[0].transform_matrix[0][0] = 1e308 loaded, and its rays were NaN."""
    msg = _read_edited(valid, "blender json", _json_edit(
        lambda d: d["frames"][0]["transform_matrix"][0].__setitem__(0, 1e308)))
    assert "frames[0].transform_matrix: the rotation part" in msg and "not a rotation" in msg


def test_regression_huge_principal_point_gave_nan_rays(valid: Path) -> None:
    """ngp "cx": 1e308 and a COLMAP cx of 99999999999999999999999 loaded into NaN rays."""
    msg = _read_edited(valid, "ngp json", _json_edit(lambda d: d.__setitem__("cx", 1e308)))
    assert "frames[0]: 'cx' is inf (expected a finite number" in msg

    def cx(blob: bytes) -> bytes:
        lines = blob.decode().split("\n")
        tokens = lines[1].split(" ")
        tokens[6] = "99999999999999999999999"
        lines[1] = " ".join(tokens)
        return "\n".join(lines).encode()

    msg = _read_edited(valid, "colmap cameras", cx)
    assert "cameras.txt:2 (camera 1 of frame_02.png): principal point cx is 1e+23" in msg


def test_regression_integers_beyond_float_range_raised_overflow_error(valid: Path) -> None:
    """JSON integers of 400 digits (Python reads them exactly) raised OverflowError from
    float() for a transform_matrix and for fl_x."""
    msg = _read_edited(valid, "ngp json", _json_edit(
        lambda d: d["frames"][0].__setitem__("transform_matrix", 10**400)))
    assert "frames[0].transform_matrix is 1000" in msg and "too large for a float" in msg
    msg = _read_edited(valid, "ngp json", _json_edit(lambda d: d.__setitem__("fl_x", 10**400)))
    assert "frames[0]: 'fl_x' is 1000" in msg and "expected a finite number" in msg


def test_regression_llff_huge_values_and_empty_file(valid: Path) -> None:
    """A value of 1e308 raised numpy's LinAlgError "Singular matrix" (no file named), all
    values 1e308 gave NaN rays, an empty file numpy's EOFError."""
    msg = _read_edited(valid, "llff npy", _array_edit(lambda a: a.reshape(-1).__setitem__(0,
                                                                                         1e308)))
    assert "poses_bounds.npy: row 0: rotation (columns 0-2, 5-7, 10-12)" in msg
    msg = _read_edited(valid, "llff npy", _array_edit(lambda a: a.fill(1e308)))
    assert "is singular" in msg
    msg = _read_edited(valid, "llff npy", lambda blob: b"")
    assert "poses_bounds.npy: not a .npy array (EOFError" in msg


def test_regression_neus_huge_scale_and_damaged_archive(valid: Path) -> None:
    """scale_mat_0 entries of 3e38 gave NaN rays, of 1e308 scipy's "array must not contain
    infs or NaNs"; damaged archive members raised EOFError / BadZipFile on access."""
    msg = _read_edited(valid, "neus npz", _npz_edit("scale_mat_0",
                                                    lambda a: a.reshape(-1).__setitem__(0, 3e38)))
    assert "world_mat_0 @ scale_mat_0 is singular or ill-conditioned" in msg
    msg = _read_edited(valid, "neus npz", _npz_edit("scale_mat_0", lambda a: a.fill(1e308)))
    assert "world_mat_0 @ scale_mat_0 overflows" in msg
    for edit in (lambda b: b[:4] + b"\x00" + b[4:], lambda b: b[:28] + b"\x00\x05" + b[30:],
                 lambda b: b[:25] + b"\x00\x00" + b[27:]):
        msg = _read_edited(valid, "neus npz", edit)
        assert "cameras_sphere.npz: field 'world_mat_0' cannot be read" in msg, msg


def test_regression_obj_with_two_coordinates_raised_axis_error(valid: Path) -> None:
    """A newline written over a vertex line's last coordinate: numpy's AxisError."""
    msg = _read_edited(valid, "mesh tet.obj", lambda b: b[:50] + b"\n" + b[51:])
    assert "tet.obj: no triangles in the mesh (vertices of shape (3, 2)" in msg


@pytest.mark.parametrize(("path", "key", "value"), [
    ("fields.inr.model.INRConfig", "model", []),  # TypeError: unhashable type: 'list'
    ("fields.inr.model.INRConfig", "lr", 10**400),  # OverflowError from float()
    ("fields.pinn.strategy.Strategy", "weight_momentum", "abc"),  # TypeError from '<='
    ("fields.pinn.strategy.Strategy", "total_steps", "abc"),  # int()'s message, no field
    ("fields.pinn.strategy.Strategy", "history", None),  # TypeError from int(None)
    ("fields.pinn.strategy.Strategy", "max_seconds", "abc"),  # TypeError from '>'
])
def test_regression_config_wrong_types(path: str, key: str, value: Any) -> None:
    cls = _config_class(path)
    with pytest.raises(ValueError, match=rf"^{cls.__name__}: field '{key}': expected "):
        cls.from_dict({key: value})
