"""Point-cloud files (``fields fit flow a.ply b.ply``, ``fields fit sdf cloud.ply``): readers and
a writer; and the one PLY codec of the engine, for point clouds and meshes alike (`read_ply`,
`write_ply`: `fields.mesh` writes and reads its PLY meshes through them).

Formats, chosen by suffix (case-insensitive):

* ``.ply``  ASCII, ``binary_little_endian`` and ``binary_big_endian``. The ``vertex`` element
  must have scalar ``x``, ``y``, ``z`` properties of any numeric PLY type; its other scalar
  properties (``intensity``, ``nx ny nz``, ``red green blue``, ...) are the fields. Other
  elements (``face`` ...) are skipped by `read_points`, before or after ``vertex``; binary list
  properties are walked. ASCII bodies are read one record per line, as every writer lays them
  out. `read_ply` also reads the ``face`` element's ``vertex_indices`` lists as triangles
  (polygons are split into fans).
* ``.npy``  an (N, >=3) real array; columns 0-2 are xyz, further columns the fields
  ``c3``, ``c4``, ...
* ``.pcd``  PCL, ``DATA ascii`` and ``DATA binary`` (``binary_compressed`` is refused, with
  the command that converts it). Fields with ``COUNT k > 1`` come back as (N, k) arrays; the
  packed ``rgb``/``rgba`` field is unpacked into ``red``, ``green``, ``blue`` (``alpha``)
  uint8 fields, as PLY names them. Padding fields named ``_`` are dropped.
* ``.bin``  KITTI velodyne scans: little-endian float32 records (x, y, z, reflectance); the
  reflectance is the field ``intensity``.
* ``.txt``, ``.xyz``, ``.csv`` (read only)  rows of >= 3 numbers separated by whitespace
  and/or commas; ``#`` and ``//`` lines are comments. A first row of names (``x,y,z,i``) names
  the columns (xyz are the columns named x, y, z when there are, else the first three);
  without one, columns after the third are the fields ``c3``, ``c4``, ...

Every reader returns xyz as an (N, 3) float32 array and fields in their stored type (native
byte order); a cloud with no points, or with non-finite xyz, is an error. Malformed files raise
`PointCloudError` (a ValueError) naming the file, the header line or data line where there is
one, and what was expected.
"""

from __future__ import annotations

import os
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, overload

import numpy as np

from fields.io import atomic_write
from fields.render.cameras import plain_numbers

__all__ = [
    "READ_SUFFIXES",
    "WRITE_SUFFIXES",
    "PointCloudError",
    "read_ply",
    "read_points",
    "write_ply",
    "write_points",
]

READ_SUFFIXES = (".ply", ".npy", ".pcd", ".bin", ".txt", ".xyz", ".csv")
WRITE_SUFFIXES = (".ply", ".npy", ".pcd", ".bin")

Fields = dict[str, np.ndarray]
#: list properties of a PLY element by name: (lengths (n,) int64, the items one after another)
Lists = dict[str, tuple[np.ndarray, np.ndarray]]


class PointCloudError(ValueError):
    """A point-cloud file that cannot be read (or points that cannot be written); the message
    names the file, the line or field when there is one, and what was expected."""


# --------------------------------------------------------------------------------------------
# entry points


@overload
def read_points(path: str | os.PathLike, *, with_fields: Literal[False] = ...) -> np.ndarray: ...


@overload
def read_points(
    path: str | os.PathLike, *, with_fields: Literal[True]
) -> tuple[np.ndarray, Fields]: ...


@overload
def read_points(
    path: str | os.PathLike, *, with_fields: bool = ...
) -> np.ndarray | tuple[np.ndarray, Fields]: ...


def read_points(
    path: str | os.PathLike, *, with_fields: bool = False
) -> np.ndarray | tuple[np.ndarray, Fields]:
    """Reads a point cloud: (N, 3) float32 xyz, or ``(xyz, fields)`` when `with_fields`, with
    fields the other per-point values by name (arrays of N rows). The format is chosen by
    suffix, case-insensitive: ``.ply`` (ASCII and both binary byte orders), ``.npy``,
    ``.pcd`` (ASCII and binary), ``.bin`` (KITTI velodyne), ``.txt``/``.xyz``/``.csv``; see the
    module docstring for what each holds.

    Raises FileNotFoundError for a missing file, and PointCloudError for an unknown suffix, a
    malformed or truncated file, a cloud without points, or points with non-finite xyz."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such file")
    if p.is_dir():
        raise PointCloudError(f"{p}: is a folder; expected a point-cloud file")
    suffix = p.suffix.lower()
    reader = _READERS.get(suffix)
    if reader is None:
        raise PointCloudError(
            f"{p}: unknown point-cloud suffix {p.suffix or '(none)'!r}; "
            f"expected one of {', '.join(READ_SUFFIXES)}"
        )
    xyz, fields = reader(p)
    xyz = _check_xyz(p, xyz)
    return (xyz, fields) if with_fields else xyz


def write_points(path: str | os.PathLike, points: np.ndarray, fields: Fields | None = None) -> Path:
    """Writes (N, 3) points and optional per-point fields, atomically; returns the path.

    By suffix: ``.ply`` (binary_little_endian), ``.npy``, ``.pcd`` (DATA binary), ``.bin``
    (KITTI). Each field is an array of N rows, shape (N,) or (N, k):

    * ``.ply``: a field keeps its numeric type (int64 becomes int/uint when its values fit,
      else double; bool becomes uchar; float16 float). (N, k) fields become properties
      ``{name}_{i}``, except colours (``colors``/``color``/``rgb``/``rgba``, k = 3 or 4) which
      become ``red green blue (alpha)`` and normals (``normals``/``normal``, k = 3) which become
      ``nx ny nz``.
    * ``.pcd``: (N, k) fields keep their name with ``COUNT k``; uint8 colours (N, 3) named
      ``colors``/``color``/``rgb`` are packed into PCL's float ``rgb`` field.
    * ``.npy``: an (N, 3 + K) float32 array, the fields' columns after xyz in the given order
      (they read back as ``c3``, ``c4``, ...).
    * ``.bin``: records (x, y, z, intensity) from the ``intensity`` field, zeros without one;
      other fields are dropped, as KITTI scans hold nothing else.

    Raises PointCloudError for an unknown suffix, points that are not a non-empty finite
    (N, 3) array, or fields of the wrong length or type."""
    p = Path(path)
    suffix = p.suffix.lower()
    writer = _WRITERS.get(suffix)
    if writer is None:
        raise PointCloudError(
            f"{p}: cannot write suffix {p.suffix or '(none)'!r}; "
            f"expected one of {', '.join(WRITE_SUFFIXES)}"
        )
    xyz = _points_to_write(p, points)
    cols = _fields_to_write(p, fields or {}, len(xyz))
    write_fn = writer(p, xyz, cols)
    return atomic_write(p, write_fn)


@overload
def read_ply(
    path: str | os.PathLike, *, with_fields: Literal[False] = ...
) -> tuple[np.ndarray, np.ndarray | None]: ...


@overload
def read_ply(
    path: str | os.PathLike, *, with_fields: Literal[True]
) -> tuple[np.ndarray, np.ndarray | None, Fields]: ...


def read_ply(
    path: str | os.PathLike, *, with_fields: bool = False
) -> tuple[np.ndarray, np.ndarray | None] | tuple[np.ndarray, np.ndarray | None, Fields]:
    """Reads a PLY mesh or point cloud (ASCII or binary, either byte order): vertices (V, 3)
    float32 and triangles (F, 3) int64 (None without a ``face`` element; polygons are split
    into fans), and with `with_fields` the other per-vertex properties by name, as
    `read_points` gives them (colours as ``red``, ``green``, ``blue``).

    Raises FileNotFoundError for a missing file and PointCloudError (naming the file, the
    header line or record, and what was expected) for a malformed or truncated file, a face
    element without ``vertex_indices``, faces of fewer than 3 vertices or indices outside the
    vertices, and non-finite vertices. A mesh may have no vertices; a point cloud may not."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such file")
    xyz, fields, faces = _read_ply_mesh(p, with_faces=True)
    xyz = _check_xyz(p, xyz, allow_empty=faces is not None, mesh=faces is not None)
    return (xyz, faces, fields) if with_fields else (xyz, faces)


def write_ply(
    path: str | os.PathLike,
    vertices: np.ndarray,
    faces: np.ndarray | None = None,
    colors: np.ndarray | None = None,
    *,
    fields: Fields | None = None,
) -> Path:
    """Writes a binary little-endian PLY atomically and returns its path: vertices (V, 3)
    (stored as float32), optional triangles (F, 3) (a ``face`` element of ``vertex_indices``
    lists: a mesh), optional colours (V, 3) or (V, 4) uint8 (``red green blue [alpha]``) and
    optional further per-vertex fields (stored as `write_points` stores them).

    Raises PointCloudError for vertices that are not a finite (V, 3) array (empty only with
    faces), faces that are not (F, 3) integers in [0, V), colours that are not (V, 3) or
    (V, 4) values in [0, 255], and fields as `write_points`."""
    p = Path(path)
    xyz = _points_to_write(p, vertices, allow_empty=faces is not None)
    extra: Fields = dict(fields or {})
    if colors is not None:
        if any(k.lower() in _COLOR_NAMES for k in extra):
            raise PointCloudError(f"{p}: colours given twice (as `colors` and as a field); "
                                  "expected one of them")
        extra["colors"] = _colors_to_write(p, colors, len(xyz))
    cols = _fields_to_write(p, extra, len(xyz))
    tris = None if faces is None else _faces_to_write(p, faces, len(xyz))
    return atomic_write(p, _write_ply(p, xyz, cols, tris))


# --------------------------------------------------------------------------------------------
# shared checks and text parsing


def _check_xyz(
    path: Path, xyz: np.ndarray, allow_empty: bool = False, mesh: bool = False
) -> np.ndarray:
    """(N, 3) float32 xyz, checked: at least one point (unless `allow_empty`) and finite.
    Errors show the offending values as plain text, ``row 10: nan 1 2`` (for a `mesh`:
    ``vertex 10 is not finite (nan, 1, 2)``)."""
    with np.errstate(over="ignore", invalid="ignore"):  # overflow to inf is reported below
        xyz = np.ascontiguousarray(xyz, dtype=np.float32)
    if len(xyz) == 0 and not allow_empty:
        raise PointCloudError(f"{path}: the cloud has no points; expected at least one")
    bad = ~np.isfinite(xyz).all(axis=1)
    if bad.any():
        first = int(np.argmax(bad))
        if mesh:
            raise PointCloudError(
                f"{path}: vertex {first} is not finite ({plain_numbers(xyz[first], ', ', 9)}); "
                f"{int(bad.sum())} of {len(xyz)} vertices have non-finite x, y or z; expected "
                "finite coordinates"
            )
        raise PointCloudError(
            f"{path}: {int(bad.sum())} of {len(xyz)} points have non-finite x, y or z "
            f"(first at row {first}: {plain_numbers(xyz[first], ' ', 9)}); expected finite "
            "coordinates"
        )
    return xyz


def _to_native(a: np.ndarray) -> np.ndarray:
    """A contiguous copy in native byte order (owning its memory, writable)."""
    return np.array(a, dtype=a.dtype.newbyteorder("="), order="C", copy=True)


def _parse_rows(path: Path, rows: list[tuple[int, str]], ncols: int, what: str) -> np.ndarray:
    """(len(rows), ncols) float64 from text rows of whitespace-separated numbers, each
    (line number, text); errors name the first bad line."""
    if not rows:
        return np.zeros((0, ncols))
    tokens = " ".join(text for _, text in rows).split()
    if len(tokens) != len(rows) * ncols:
        for ln, text in rows:
            n = len(text.split())
            if n != ncols:
                raise PointCloudError(f"{path}: line {ln}: {n} values; expected {ncols} ({what})")
    try:
        values = np.array(tokens, dtype=np.float64)
    except ValueError:
        for ln, text in rows:
            for tok in text.split():
                try:
                    float(tok)
                except ValueError:
                    raise PointCloudError(
                        f"{path}: line {ln}: {tok!r} is not a number; expected {ncols} "
                        f"numbers ({what})"
                    ) from None
        raise
    return values.reshape(len(rows), ncols)


def _text_lines(data: bytes, first_line: int) -> list[tuple[int, str]]:
    """The non-blank lines of `data` with their 1-based line numbers, counted from
    `first_line`."""
    text = data.decode("latin-1")
    return [(i, s) for i, s in enumerate(text.split("\n"), start=first_line) if s.strip()]


# --------------------------------------------------------------------------------------------
# PLY

#: PLY type name -> numpy type code (byte order added later)
_PLY_TYPES = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1",
    "short": "i2", "int16": "i2", "ushort": "u2", "uint16": "u2",
    "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4", "double": "f8", "float64": "f8",
}  # fmt: skip
_PLY_FORMATS = {"ascii": "", "binary_little_endian": "<", "binary_big_endian": ">"}
_STRUCT = {"i1": "b", "u1": "B", "i2": "h", "u2": "H", "i4": "i", "u4": "I", "f4": "f", "f8": "d"}
_MAX_HEADER_LINES = 10_000


@dataclass
class _PlyProp:
    name: str
    code: str  # numpy type code of the value (of the items, for a list)
    count_code: str | None = None  # numpy type code of the count, for a list property


@dataclass
class _PlyElement:
    name: str
    count: int
    line: int
    props: list[_PlyProp] = field(default_factory=list)

    @property
    def has_lists(self) -> bool:
        return any(p.count_code is not None for p in self.props)


def _ply_type(path: Path, ln: int, name: str) -> str:
    code = _PLY_TYPES.get(name)
    if code is None:
        raise PointCloudError(
            f"{path}: header line {ln}: property type {name!r} unknown; expected one of "
            f"{', '.join(_PLY_TYPES)}"
        )
    return code


def _ply_header(path: Path, buf: bytes) -> tuple[str, list[_PlyElement], int, int]:
    """Parses the header: (format, elements, byte offset of the body, number of header
    lines)."""
    first = buf[: buf.find(b"\n")] if b"\n" in buf[:64] else buf[:16]
    if first.rstrip(b"\r") != b"ply":
        raise PointCloudError(
            f"{path}: not a PLY file (starts with {first[:16]!r}); expected the first line 'ply'"
        )
    fmt: str | None = None
    elements: list[_PlyElement] = []
    pos, ln = 0, 0
    while True:
        end = buf.find(b"\n", pos)
        if end < 0 or ln >= _MAX_HEADER_LINES:
            raise PointCloudError(
                f"{path}: the header has no 'end_header' line (read {ln} lines); expected "
                "a header ending in 'end_header'"
            )
        line = buf[pos:end].decode("latin-1").strip()
        pos, ln = end + 1, ln + 1
        words = line.split()
        if ln == 1 or not words or words[0] in ("comment", "obj_info"):
            continue
        key = words[0]
        if key == "end_header":
            break
        if key == "format":
            if len(words) != 3 or words[1] not in _PLY_FORMATS:
                raise PointCloudError(
                    f"{path}: header line {ln}: {line!r}; expected 'format <kind> 1.0' with "
                    f"kind one of {', '.join(_PLY_FORMATS)}"
                )
            fmt = words[1]
        elif key == "element":
            if len(words) != 3 or not words[2].isdigit():
                raise PointCloudError(
                    f"{path}: header line {ln}: {line!r}; expected 'element <name> <count>' "
                    "with a count >= 0"
                )
            elements.append(_PlyElement(words[1], int(words[2]), ln))
        elif key == "property":
            if not elements:
                raise PointCloudError(
                    f"{path}: header line {ln}: property before any element; expected "
                    "'element <name> <count>' first"
                )
            if len(words) == 3:
                elements[-1].props.append(_PlyProp(words[2], _ply_type(path, ln, words[1])))
            elif len(words) == 5 and words[1] == "list":
                count_code = _ply_type(path, ln, words[2])
                if count_code[0] == "f":
                    raise PointCloudError(
                        f"{path}: header line {ln}: list count type {words[2]!r} is not an "
                        "integer type; expected e.g. uchar or int"
                    )
                code = _ply_type(path, ln, words[3])
                elements[-1].props.append(_PlyProp(words[4], code, count_code))
            else:
                raise PointCloudError(
                    f"{path}: header line {ln}: {line!r}; expected 'property <type> <name>' "
                    "or 'property list <count type> <item type> <name>'"
                )
        else:
            raise PointCloudError(
                f"{path}: header line {ln}: unknown keyword {key!r}; expected one of format, "
                "element, property, comment, obj_info, end_header"
            )
    if fmt is None:
        raise PointCloudError(
            f"{path}: the header has no 'format' line; expected e.g. "
            "'format binary_little_endian 1.0'"
        )
    return fmt, elements, pos, ln


def _ply_vertex(path: Path, elements: list[_PlyElement]) -> _PlyElement:
    vertex = next((e for e in elements if e.name == "vertex"), None)
    if vertex is None:
        names = ", ".join(e.name for e in elements) or "none"
        raise PointCloudError(
            f"{path}: no 'vertex' element (elements: {names}); expected a vertex element "
            "with x, y, z properties"
        )
    seen: set[str] = set()
    for p in vertex.props:
        if p.name in seen:
            raise PointCloudError(
                f"{path}: vertex element (header line {vertex.line}) has property "
                f"{p.name!r} twice; expected unique property names"
            )
        seen.add(p.name)
    by_name = {p.name: p for p in vertex.props}
    for axis in "xyz":
        prop = by_name.get(axis)
        if prop is None:
            raise PointCloudError(
                f"{path}: vertex element (header line {vertex.line}) has no {axis!r} property "
                f"(has: {', '.join(by_name) or 'none'}); expected x, y, z"
            )
        if prop.count_code is not None:
            raise PointCloudError(
                f"{path}: vertex property {axis!r} is a list; expected a scalar number"
            )
    return vertex


def _ply_face(path: Path, elements: list[_PlyElement]) -> tuple[_PlyElement, str] | None:
    """The ``face`` element and the name of its vertex-index list, or None without faces."""
    face = next((e for e in elements if e.name == "face"), None)
    if face is None:
        return None
    for p in face.props:
        if p.count_code is not None and p.name in ("vertex_indices", "vertex_index"):
            if p.code[0] == "f":
                raise PointCloudError(
                    f"{path}: face property {p.name!r} (header line {face.line}) holds "
                    "floats; expected integer vertex indices (e.g. 'property list uchar int "
                    "vertex_indices')"
                )
            return face, p.name
    raise PointCloudError(
        f"{path}: face element (header line {face.line}) has no 'vertex_indices' list (has: "
        f"{', '.join(p.name for p in face.props) or 'none'}); expected 'property list uchar "
        "int vertex_indices'"
    )


def _read_ply(path: Path) -> tuple[np.ndarray, Fields]:
    xyz, fields, _ = _read_ply_mesh(path, with_faces=False)
    return xyz, fields


def _read_ply_mesh(path: Path, with_faces: bool) -> tuple[np.ndarray, Fields, np.ndarray | None]:
    """(xyz (N, 3), the vertex element's other scalar properties, triangles (F, 3) int64 or
    None without a face element or `with_faces`)."""
    buf = path.read_bytes()
    fmt, elements, body, nlines = _ply_header(path, buf)
    vertex = _ply_vertex(path, elements)
    face = _ply_face(path, elements) if with_faces else None
    wanted = [vertex] if face is None else [vertex, face[0]]
    if fmt == "ascii":
        got = _ply_ascii(path, buf[body:], nlines + 1, elements, wanted)
    else:
        bo = _PLY_FORMATS[fmt]
        pos = body
        got = {}
        for i, el in enumerate(elements):
            want = any(el is w for w in wanted)
            cols, lists, pos = _ply_binary_element(path, buf, pos, el, bo, want)
            if want:
                got[i] = (cols, lists)
                if len(got) == len(wanted):
                    break
    cols = got[elements.index(vertex)][0]
    xyz = np.stack([cols["x"], cols["y"], cols["z"]], axis=1)
    fields = {
        p.name: _to_native(cols[p.name])
        for p in vertex.props
        if p.count_code is None and p.name not in ("x", "y", "z")
    }
    faces = None
    if face is not None:
        lengths, items = got[elements.index(face[0])][1][face[1]]
        faces = _triangles(path, lengths, items, len(xyz))
    return xyz, fields, faces


def _triangles(path: Path, lengths: np.ndarray, items: np.ndarray, n_vertices: int) -> np.ndarray:
    """(T, 3) int64 triangles of faces with `lengths` (F,) vertices each, their indices one
    after another in `items`: polygons become fans (v0, vk, vk+1), in face order."""
    lengths = np.asarray(lengths, dtype=np.int64)
    items = np.asarray(items).astype(np.int64)
    if len(lengths) == 0:
        return np.zeros((0, 3), np.int64)
    bad = lengths < 3
    if bad.any():
        i = int(np.argmax(bad))
        raise PointCloudError(
            f"{path}: face {i} has {int(lengths[i])} vertices; expected 3 or more"
        )
    if items.size and (items.min() < 0 or items.max() >= n_vertices):
        i = int(np.argmax((items < 0) | (items >= n_vertices)))
        raise PointCloudError(
            f"{path}: face vertex index {int(items[i])} is outside the {n_vertices} vertices; "
            f"expected indices in [0, {n_vertices})"
        )
    if (lengths == 3).all():
        return items.reshape(-1, 3)
    start = np.cumsum(lengths) - lengths
    n_tri = lengths - 2
    face = np.repeat(np.arange(len(lengths)), n_tri)
    k = np.arange(int(n_tri.sum())) - np.repeat(np.cumsum(n_tri) - n_tri, n_tri) + 1
    s0 = start[face]
    return np.stack([items[s0], items[s0 + k], items[s0 + k + 1]], axis=1)


def _truncated(path: Path, el: _PlyElement, detail: str) -> PointCloudError:
    return PointCloudError(
        f"{path}: the file ends {detail} of element {el.name!r} (header line {el.line} "
        f"declares {el.count}); the file is truncated or the header is wrong"
    )


def _ply_binary_element(
    path: Path, buf: bytes, pos: int, el: _PlyElement, bo: str, want: bool
) -> tuple[Fields, Lists, int]:
    """Reads (`want`) or skips the binary element `el` starting at byte `pos`; returns its
    scalar and list properties by name (when `want`) and the byte offset after it."""
    if el.count == 0:
        if not want:
            return {}, {}, pos
        empty = {p.name: np.zeros(0, p.code) for p in el.props if p.count_code is None}
        no_lists = {p.name: (np.zeros(0, np.int64), np.zeros(0, p.code))
                    for p in el.props if p.count_code is not None}
        return empty, no_lists, pos
    if not el.has_lists:
        dt = np.dtype([(f"p{k}", bo + p.code) for k, p in enumerate(el.props)])
        need = el.count * dt.itemsize
        if pos + need > len(buf):
            have = max(len(buf) - pos, 0)
            raise _truncated(
                path, el, f"after {have} of the {need} bytes ({el.count} x {dt.itemsize})"
            )
        if not want:
            return {}, {}, pos + need
        arr = np.frombuffer(buf, dt, el.count, offset=pos)
        return {p.name: arr[f"p{k}"] for k, p in enumerate(el.props)}, {}, pos + need

    # Lists: if every record has the lengths of the first one (triangle meshes), the element
    # is a fixed-size array and numpy reads it; otherwise walk it record by record.
    lengths = _ply_first_lengths(path, buf, pos, el, bo)
    parts: list[tuple] = []
    for k, p in enumerate(el.props):
        if p.count_code is None:
            parts.append((f"p{k}", bo + p.code))
        else:
            parts.append((f"p{k}n", bo + p.count_code))
            parts.append((f"p{k}v", bo + p.code, (lengths[k],)))
    dt = np.dtype(parts)
    need = el.count * dt.itemsize
    if pos + need <= len(buf):
        arr = np.frombuffer(buf, dt, el.count, offset=pos)
        if all(
            (arr[f"p{k}n"] == lengths[k]).all()
            for k, p in enumerate(el.props)
            if p.count_code is not None
        ):
            if not want:
                return {}, {}, pos + need
            cols = {p.name: arr[f"p{k}"] for k, p in enumerate(el.props) if p.count_code is None}
            lists = {
                p.name: (np.full(el.count, lengths[k], np.int64),
                         np.ascontiguousarray(arr[f"p{k}v"]).reshape(-1))
                for k, p in enumerate(el.props)
                if p.count_code is not None
            }
            return cols, lists, pos + need
    return _ply_walk(path, buf, pos, el, bo, want)


def _ply_first_lengths(
    path: Path, buf: bytes, pos: int, el: _PlyElement, bo: str
) -> dict[int, int]:
    """The list lengths of the element's first record, by property index."""
    lengths: dict[int, int] = {}
    for k, p in enumerate(el.props):
        if p.count_code is None:
            pos += np.dtype(p.code).itemsize
            continue
        size = np.dtype(p.count_code).itemsize
        if pos + size > len(buf):
            raise _truncated(path, el, "inside record 0")
        n = struct.unpack_from(bo + _STRUCT[p.count_code], buf, pos)[0]
        if n < 0:
            raise PointCloudError(
                f"{path}: element {el.name!r} record 0: list {p.name!r} has length {n}; "
                "expected a length >= 0"
            )
        lengths[k] = n
        pos += size + n * np.dtype(p.code).itemsize
    return lengths


def _ply_walk(
    path: Path, buf: bytes, pos: int, el: _PlyElement, bo: str, want: bool
) -> tuple[Fields, Lists, int]:
    """Walks a binary element with lists of varying lengths, one record at a time."""
    steps: list[tuple[int, str, int, int]] = []  # (kind 0 scalar / 1 list, fmt, size, item)
    for p in el.props:
        if p.count_code is None:
            steps.append((0, bo + _STRUCT[p.code], np.dtype(p.code).itemsize, 0))
        else:
            steps.append(
                (
                    1,
                    bo + _STRUCT[p.count_code],
                    np.dtype(p.count_code).itemsize,
                    np.dtype(p.code).itemsize,
                )
            )
    values: list[list] = [[] for _ in el.props]
    counts: list[list[int]] = [[] for _ in el.props]
    n = len(buf)
    unpack = struct.unpack_from
    for i in range(el.count):
        for k, (kind, fmt, size, item) in enumerate(steps):
            if pos + size > n:
                raise _truncated(path, el, f"inside record {i}")
            if kind == 0:
                if want:
                    values[k].append(unpack(fmt, buf, pos)[0])
                pos += size
            else:
                length = unpack(fmt, buf, pos)[0]
                if length < 0:
                    raise PointCloudError(
                        f"{path}: element {el.name!r} record {i}: list {el.props[k].name!r} "
                        f"has length {length}; expected a length >= 0"
                    )
                start = pos + size
                pos = start + length * item
                if pos > n:
                    raise _truncated(path, el, f"inside record {i}")
                if want:
                    counts[k].append(length)
                    values[k].append(np.frombuffer(buf, bo + el.props[k].code, length, start))
    if not want:
        return {}, {}, pos
    cols = {
        p.name: np.array(values[k], dtype=p.code)
        for k, p in enumerate(el.props)
        if p.count_code is None
    }
    lists = {
        p.name: (np.array(counts[k], np.int64),
                 np.concatenate(values[k]) if values[k] else np.zeros(0, p.code))
        for k, p in enumerate(el.props)
        if p.count_code is not None
    }
    return cols, lists, pos


def _ply_ascii(
    path: Path, body: bytes, first_line: int, elements: list[_PlyElement],
    wanted: list[_PlyElement],
) -> dict[int, tuple[Fields, Lists]]:
    """The scalar and list properties of the `wanted` elements from an ASCII body (one record
    per line), by the element's index in `elements`."""
    rows = _text_lines(body, first_line)
    idx = 0
    got: dict[int, tuple[Fields, Lists]] = {}
    for i, el in enumerate(elements):
        chunk = rows[idx : idx + el.count]
        idx += el.count
        if len(chunk) < el.count:
            if el.name == "vertex":
                raise PointCloudError(
                    f"{path}: the file ends after {len(chunk)} of the {el.count} vertex lines "
                    f"(header line {el.line}); the file is truncated or the header is wrong"
                )
            raise PointCloudError(
                f"{path}: the file ends inside element {el.name!r} (header line {el.line} "
                f"declares {el.count} lines); the file is truncated or the header is wrong"
            )
        if not any(el is w for w in wanted):
            continue
        names = " ".join(p.name for p in el.props)
        if not el.has_lists:
            table = _parse_rows(path, chunk, len(el.props), f"{el.name} {names}")
            got[i] = ({p.name: table[:, k].astype(p.code) for k, p in enumerate(el.props)}, {})
        else:
            got[i] = _ply_ascii_lists(path, chunk, el)
        if len(got) == len(wanted):
            break
    return got


def _ply_ascii_lists(
    path: Path, rows: list[tuple[int, str]], el: _PlyElement
) -> tuple[Fields, Lists]:
    if len(el.props) == 1 and rows:  # one list per line (faces): numpy when all are as long
        p = el.props[0]
        widths = {len(text.split()) for _, text in rows}
        if len(widths) == 1:
            width = widths.pop()
            table = _parse_rows(path, rows, width, f"{el.name} {p.name}")
            if width >= 1 and (table[:, 0] == width - 1).all():
                return {}, {p.name: (np.full(len(rows), width - 1, np.int64),
                                     table[:, 1:].astype(p.code).reshape(-1))}
    values: list[list[float]] = [[] for _ in el.props]
    counts: list[list[int]] = [[] for _ in el.props]
    for ln, text in rows:
        toks = text.split()
        i = 0
        try:
            for k, p in enumerate(el.props):
                if p.count_code is None:
                    values[k].append(float(toks[i]))
                    i += 1
                else:
                    length = int(toks[i])
                    if length < 0 or i + 1 + length > len(toks):
                        raise ValueError(length)
                    counts[k].append(length)
                    values[k].extend(float(t) for t in toks[i + 1 : i + 1 + length])
                    i += 1 + length
        except (IndexError, ValueError):
            raise PointCloudError(
                f"{path}: line {ln}: cannot read a {el.name} record from {text.strip()!r}; "
                f"expected properties {' '.join(p.name for p in el.props)}"
            ) from None
        if i != len(toks):
            raise PointCloudError(
                f"{path}: line {ln}: {len(toks)} values; expected {i} for element {el.name!r}"
            )
    cols = {
        p.name: np.array(values[k]).astype(p.code)
        for k, p in enumerate(el.props)
        if p.count_code is None
    }
    lists = {
        p.name: (np.array(counts[k], np.int64), np.array(values[k]).astype(p.code))
        for k, p in enumerate(el.props)
        if p.count_code is not None
    }
    return cols, lists


# --------------------------------------------------------------------------------------------
# PCD

_PCD_KEYS = (
    "VERSION",
    "FIELDS",
    "SIZE",
    "TYPE",
    "COUNT",
    "WIDTH",
    "HEIGHT",
    "VIEWPOINT",
    "POINTS",
    "DATA",
)
_PCD_SIZES = {"I": (1, 2, 4, 8), "U": (1, 2, 4, 8), "F": (4, 8)}
_PCD_CONVERT = (
    "convert it to binary or ascii first, e.g. `pcl_convert_pcd_ascii_binary in.pcd out.pcd 1` "
    "(1 = binary, 0 = ascii)"
)


def _pcd_ints(path: Path, ln: int, key: str, words: list[str], lo: int = 0) -> list[int]:
    try:
        vals = [int(w) for w in words]
    except ValueError:
        vals = []
    if not vals or min(vals) < lo:
        raise PointCloudError(
            f"{path}: header line {ln}: {key} {' '.join(words)!r}; expected integers >= {lo}"
        )
    return vals


def _read_pcd(path: Path) -> tuple[np.ndarray, Fields]:
    buf = path.read_bytes()
    header: dict[str, tuple[int, list[str]]] = {}
    pos, ln = 0, 0
    while "DATA" not in header:
        end = buf.find(b"\n", pos)
        if end < 0:
            end = len(buf)
        if pos >= len(buf) or ln >= _MAX_HEADER_LINES:
            raise PointCloudError(
                f"{path}: the header has no DATA line (read {ln} lines); expected a PCD "
                f"header ({' '.join(_PCD_KEYS)})"
            )
        line = buf[pos:end].decode("latin-1").strip()
        pos, ln = end + 1, ln + 1
        if not line or line.startswith("#"):
            continue
        words = line.split()
        key = words[0].upper()
        if key not in _PCD_KEYS:
            raise PointCloudError(
                f"{path}: header line {ln}: unknown key {words[0]!r}; expected one of "
                f"{', '.join(_PCD_KEYS)}" + (" (is this a PCD file?)" if not header else "")
            )
        header[key] = (ln, words[1:])

    def get(key: str) -> tuple[int, list[str]]:
        if key not in header:
            raise PointCloudError(
                f"{path}: the header has no {key} line; expected {' '.join(_PCD_KEYS)}"
            )
        return header[key]

    ln_f, names = get("FIELDS")
    if not names:
        raise PointCloudError(f"{path}: header line {ln_f}: FIELDS is empty; expected x y z ...")
    ln_s, size_w = get("SIZE")
    ln_t, types = get("TYPE")
    sizes = _pcd_ints(path, ln_s, "SIZE", size_w, 1)
    ln_c, count_w = header.get("COUNT", (0, ["1"] * len(names)))
    counts = _pcd_ints(path, ln_c, "COUNT", count_w, 1)
    for key, ln_k, vals in (("SIZE", ln_s, sizes), ("TYPE", ln_t, types), ("COUNT", ln_c, counts)):
        if len(vals) != len(names):
            raise PointCloudError(
                f"{path}: header line {ln_k}: {key} has {len(vals)} values; expected one per "
                f"field ({len(names)}: {' '.join(names)})"
            )
    codes = []
    for name, t, s in zip(names, types, sizes, strict=True):
        t = t.upper()
        if s not in _PCD_SIZES.get(t, ()):
            raise PointCloudError(
                f"{path}: header line {ln_t}: field {name!r} has TYPE {t} SIZE {s}; expected "
                "TYPE I or U with SIZE 1, 2, 4 or 8, or TYPE F with SIZE 4 or 8"
            )
        codes.append({"I": "i", "U": "u", "F": "f"}[t] + str(s))
    for axis in "xyz":
        if axis not in names:
            raise PointCloudError(
                f"{path}: header line {ln_f}: FIELDS has no {axis!r} ({' '.join(names)}); "
                "expected x, y, z"
            )
        if counts[names.index(axis)] != 1:
            raise PointCloudError(
                f"{path}: header line {ln_c}: field {axis!r} has COUNT "
                f"{counts[names.index(axis)]}; expected 1"
            )
    ln_w, width_w = get("WIDTH")
    width = _pcd_ints(path, ln_w, "WIDTH", width_w[:1])[0]
    ln_h, height_w = header.get("HEIGHT", (0, ["1"]))
    height = _pcd_ints(path, ln_h, "HEIGHT", height_w[:1])[0]
    ln_p, points_w = header.get("POINTS", (0, [str(width * height)]))
    npoints = _pcd_ints(path, ln_p, "POINTS", points_w[:1])[0]
    if npoints != width * height:
        raise PointCloudError(
            f"{path}: header line {ln_p}: POINTS {npoints} but WIDTH x HEIGHT is "
            f"{width} x {height} = {width * height}; expected them equal"
        )
    ln_d, data_w = header["DATA"]
    kind = data_w[0].lower() if data_w else ""
    if kind == "binary_compressed":
        raise PointCloudError(
            f"{path}: header line {ln_d}: DATA binary_compressed is not supported; " + _PCD_CONVERT
        )
    if kind not in ("ascii", "binary"):
        raise PointCloudError(
            f"{path}: header line {ln_d}: DATA {' '.join(data_w)!r}; expected ascii or binary"
        )

    cols: Fields = {}
    if kind == "binary":
        dt = np.dtype(
            [
                (f"p{k}", "<" + c, (n,)) if n > 1 else (f"p{k}", "<" + c)
                for k, (c, n) in enumerate(zip(codes, counts, strict=True))
            ]
        )
        need = npoints * dt.itemsize
        have = len(buf) - pos
        if have < need:
            raise PointCloudError(
                f"{path}: DATA binary holds {max(have, 0)} bytes, but POINTS {npoints} "
                f"(header line {ln_p}) x {dt.itemsize}-byte points need {need}; the file is "
                "truncated or the header is wrong"
            )
        arr = np.frombuffer(buf, dt, npoints, offset=pos) if npoints else np.zeros(0, dt)
        for k, name in enumerate(names):
            cols.setdefault(name, arr[f"p{k}"])
    else:
        rows = _text_lines(buf[pos:], ln + 1)
        if len(rows) < npoints:
            raise PointCloudError(
                f"{path}: DATA ascii (header line {ln_d}) holds {len(rows)} lines, but POINTS "
                f"is {npoints}; the file is truncated or the header is wrong"
            )
        table = _parse_rows(path, rows[:npoints], sum(counts), f"fields {' '.join(names)}")
        start = 0
        for name, c, n in zip(names, codes, counts, strict=True):
            block = table[:, start : start + n]
            start += n
            cols.setdefault(name, (block[:, 0] if n == 1 else block).astype(c))

    xyz = np.stack([cols["x"], cols["y"], cols["z"]], axis=1)
    fields: Fields = {}
    for name, code, a in zip(names, codes, (cols[n] for n in names), strict=True):
        if name in ("x", "y", "z", "_") or name in fields:
            continue
        if name.lower() in ("rgb", "rgba") and a.ndim == 1 and code[1:] == "4":
            packed = a.astype(np.float32).view(np.uint32) if code[0] == "f" else a.astype(np.uint32)
            fields["red"] = ((packed >> 16) & 255).astype(np.uint8)
            fields["green"] = ((packed >> 8) & 255).astype(np.uint8)
            fields["blue"] = (packed & 255).astype(np.uint8)
            if name.lower() == "rgba":
                fields["alpha"] = (packed >> 24).astype(np.uint8)
            continue
        fields[name] = _to_native(a)
    return xyz, fields


# --------------------------------------------------------------------------------------------
# npy, KITTI bin, text


def _read_npy(path: Path) -> tuple[np.ndarray, Fields]:
    try:
        arr = np.load(path, allow_pickle=False)
    except Exception as e:  # a corrupt or pickled file
        raise PointCloudError(f"{path}: cannot read as .npy ({e}); expected an (N, 3) array") from e
    if not isinstance(arr, np.ndarray) or arr.dtype.kind not in "iuf":
        raise PointCloudError(
            f"{path}: array of type {getattr(arr, 'dtype', type(arr))}; expected a real "
            "(float or integer) array of shape (N, 3) or (N, >=3)"
        )
    if arr.ndim != 2 or arr.shape[1] < 3:
        raise PointCloudError(
            f"{path}: array of shape {arr.shape}; expected (N, 3) or (N, >=3) with xyz in "
            "the first three columns"
        )
    fields = {f"c{j}": np.ascontiguousarray(arr[:, j]) for j in range(3, arr.shape[1])}
    return arr[:, :3], fields


def _read_kitti(path: Path) -> tuple[np.ndarray, Fields]:
    buf = path.read_bytes()
    if len(buf) % 16:
        raise PointCloudError(
            f"{path}: {len(buf)} bytes, not a multiple of 16; expected KITTI velodyne records "
            "of 4 little-endian float32 (x, y, z, reflectance)"
        )
    rec = np.frombuffer(buf, "<f4").reshape(-1, 4)
    return rec[:, :3], {"intensity": rec[:, 3].astype(np.float32)}


def _read_text(path: Path) -> tuple[np.ndarray, Fields]:
    rows = [
        (ln, text.replace(",", " "))
        for ln, text in _text_lines(path.read_bytes(), 1)
        if not text.lstrip().startswith(("#", "//"))
    ]
    names: list[str] | None = None
    if rows:
        head = rows[0][1].split()
        try:
            [float(t) for t in head]
        except ValueError:
            names = head
            rows = rows[1:]
    ncols = len(names) if names is not None else len(rows[0][1].split()) if rows else 3
    if ncols < 3:
        where = f"line {rows[0][0]}" if names is None else "the header row"
        raise PointCloudError(f"{path}: {where}: {ncols} columns; expected at least 3 (x y z)")
    table = _parse_rows(path, rows, ncols, "x y z ..." if names is None else " ".join(names))
    if names is None:
        names = ["x", "y", "z"] + [f"c{j}" for j in range(3, ncols)]
    lower = [n.lower() for n in names]
    if all(a in lower for a in "xyz"):
        idx = [lower.index(a) for a in "xyz"]
    else:
        idx = [0, 1, 2]
    fields = {names[j]: np.ascontiguousarray(table[:, j]) for j in range(ncols) if j not in idx}
    return table[:, idx], fields


_READERS: dict[str, Callable[[Path], tuple[np.ndarray, Fields]]] = {
    ".ply": _read_ply,
    ".npy": _read_npy,
    ".pcd": _read_pcd,
    ".bin": _read_kitti,
    ".txt": _read_text,
    ".xyz": _read_text,
    ".csv": _read_text,
}


# --------------------------------------------------------------------------------------------
# writing

_NAME_RE = re.compile(r"^[A-Za-z0-9_.\-]+$")
_COLOR_NAMES = ("colors", "color", "rgb", "rgba")
_NORMAL_NAMES = ("normals", "normal")


def _points_to_write(path: Path, points: np.ndarray, allow_empty: bool = False) -> np.ndarray:
    a = np.asarray(points)
    if a.ndim != 2 or a.shape[1] != 3 or a.dtype.kind not in "iuf":
        raise PointCloudError(
            f"{path}: points of shape {a.shape} and type {a.dtype}; expected a real (N, 3) array"
        )
    return _check_xyz(path, a, allow_empty)


def _faces_to_write(path: Path, faces: np.ndarray, n: int) -> np.ndarray:
    """(F, 3) little-endian int32 triangles, checked against the `n` vertices."""
    a = np.asarray(faces)
    if a.size == 0:
        return np.zeros((0, 3), "<i4")
    if a.ndim != 2 or a.shape[1] != 3 or a.dtype.kind not in "iu":
        raise PointCloudError(
            f"{path}: faces of shape {a.shape} and type {a.dtype}; expected an integer (F, 3) "
            "array of vertex indices"
        )
    if a.min() < 0 or a.max() >= n:
        raise PointCloudError(
            f"{path}: face vertex indices span [{int(a.min())}, {int(a.max())}]; expected "
            f"indices in [0, {n})"
        )
    return a.astype("<i4")


def _colors_to_write(path: Path, colors: np.ndarray, n: int) -> np.ndarray:
    """(n, 3) or (n, 4) uint8 colours from integers in [0, 255]."""
    a = np.asarray(colors)
    ok = a.ndim == 2 and a.shape == (n, a.shape[1]) and a.shape[1] in (3, 4)
    if ok and a.dtype != np.uint8:
        ok = a.dtype.kind in "iu" and (a.size == 0 or (a.min() >= 0 and a.max() <= 255))
    if not ok:
        raise PointCloudError(
            f"{path}: colours of shape {a.shape} and type {a.dtype}; expected ({n}, 3) or "
            f"({n}, 4) uint8 values"
        )
    return a.astype(np.uint8)


def _fields_to_write(path: Path, fields: Fields, n: int) -> list[tuple[str, np.ndarray]]:
    """Validated fields as (name, (N,) or (N, k) array) in order."""
    out = []
    for name, value in fields.items():
        a = np.asarray(value)
        if not _NAME_RE.match(name) or name in ("x", "y", "z"):
            raise PointCloudError(
                f"{path}: field name {name!r}; expected letters, digits, '_', '.', '-' and "
                "not x, y or z"
            )
        if a.dtype.kind not in "biuf" or a.ndim not in (1, 2) or len(a) != n:
            raise PointCloudError(
                f"{path}: field {name!r} of shape {a.shape} and type {a.dtype}; expected a "
                f"real array of shape ({n},) or ({n}, k)"
            )
        if a.ndim == 2 and a.shape[1] == 1:
            a = a[:, 0]
        if a.dtype.kind == "b":
            a = a.astype(np.uint8)
        elif a.dtype == np.float16:
            a = a.astype(np.float32)
        out.append((name, np.ascontiguousarray(a)))
    return out


def _column_names(name: str, a: np.ndarray) -> list[str]:
    """PLY property names of a field's columns."""
    if a.ndim == 1:
        return [name]
    k = a.shape[1]
    if name.lower() in _COLOR_NAMES and k in (3, 4):
        return ["red", "green", "blue", "alpha"][:k]
    if name.lower() in _NORMAL_NAMES and k == 3:
        return ["nx", "ny", "nz"]
    return [f"{name}_{i}" for i in range(k)]


def _narrow_int64(a: np.ndarray) -> np.ndarray:
    """int64/uint64 as int32/uint32 when the values fit, else float64 (PLY has no 64-bit
    integers)."""
    if a.dtype.itemsize < 8 or a.dtype.kind == "f":
        return a
    for t in (np.int32, np.uint32):
        info = np.iinfo(t)
        if a.size == 0 or (a.min() >= info.min and a.max() <= info.max):
            return a.astype(t)
    return a.astype(np.float64)


_PLY_NAMES = {
    "i1": "char",
    "u1": "uchar",
    "i2": "short",
    "u2": "ushort",
    "i4": "int",
    "u4": "uint",
    "f4": "float",
    "f8": "double",
}


def _write_ply(
    path: Path, xyz: np.ndarray, cols: list[tuple[str, np.ndarray]],
    faces: np.ndarray | None = None,
) -> Callable[[str], None]:
    parts: list[tuple[str, str]] = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")]
    data: dict[str, np.ndarray] = {"x": xyz[:, 0], "y": xyz[:, 1], "z": xyz[:, 2]}
    for name, a in cols:
        a = _narrow_int64(a)
        a2 = a.reshape(len(a), -1)
        for j, col in enumerate(_column_names(name, a)):
            if col in data:
                raise PointCloudError(
                    f"{path}: field {name!r} gives PLY property {col!r} twice; expected "
                    "unique property names"
                )
            parts.append((col, "<" + a.dtype.str[1:]))
            data[col] = a2[:, j]
    dt = np.dtype(parts)
    rec = np.empty(len(xyz), dt)
    for col in dt.names or ():
        rec[col] = data[col]
    header = [
        "ply",
        "format binary_little_endian 1.0",
        "comment written by fields",
        f"element vertex {len(xyz)}",
    ]
    header += [f"property {_PLY_NAMES[dt[c].str[1:]]} {c}" for c in dt.names or ()]
    records = [rec]
    if faces is not None:
        header += [f"element face {len(faces)}", "property list uchar int vertex_indices"]
        frec = np.empty(len(faces), np.dtype([("n", "u1"), ("i", "<i4", 3)]))
        frec["n"], frec["i"] = 3, faces
        records.append(frec)
    header.append("end_header")
    return _header_and_records(header, *records)


def _header_and_records(header: list[str], *records: np.ndarray) -> Callable[[str], None]:
    """A writer of the ASCII header lines followed by the binary records."""
    head = ("\n".join(header) + "\n").encode("ascii")

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            f.write(head)
            for rec in records:
                f.write(rec.tobytes())

    return write


def _write_pcd(
    path: Path, xyz: np.ndarray, cols: list[tuple[str, np.ndarray]]
) -> Callable[[str], None]:
    parts: list[tuple] = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")]
    data: dict[str, np.ndarray] = {"x": xyz[:, 0], "y": xyz[:, 1], "z": xyz[:, 2]}
    for name, a in cols:
        is_color = a.dtype == np.uint8 and a.ndim == 2 and a.shape[1] == 3
        if is_color and name.lower() in _COLOR_NAMES:
            c = a.astype(np.uint32)
            packed = (c[:, 0] << 16) | (c[:, 1] << 8) | c[:, 2]
            name, a = "rgb", packed.view(np.float32)
        if name in data:
            raise PointCloudError(f"{path}: field {name!r} given twice; expected unique names")
        code = "<" + a.dtype.str[1:]
        parts.append((name, code, (a.shape[1],)) if a.ndim == 2 else (name, code))
        data[name] = a
    dt = np.dtype(parts)
    rec = np.empty(len(xyz), dt)
    for name in dt.names or ():
        rec[name] = data[name]
    names = list(dt.names or ())
    kinds = {"i": "I", "u": "U", "f": "F"}
    sub = [dt[n].base if dt[n].shape else dt[n] for n in names]
    header = [
        "# .PCD v0.7 - Point Cloud Data file format",
        "VERSION 0.7",
        "FIELDS " + " ".join(names),
        "SIZE " + " ".join(str(d.itemsize) for d in sub),
        "TYPE " + " ".join(kinds[d.kind] for d in sub),
        "COUNT " + " ".join(str(dt[n].shape[0] if dt[n].shape else 1) for n in names),
        f"WIDTH {len(xyz)}",
        "HEIGHT 1",
        "VIEWPOINT 0 0 0 1 0 0 0",
        f"POINTS {len(xyz)}",
        "DATA binary",
    ]
    return _header_and_records(header, rec)


def _write_npy(
    path: Path, xyz: np.ndarray, cols: list[tuple[str, np.ndarray]]
) -> Callable[[str], None]:
    arr = np.concatenate(
        [xyz] + [a.reshape(len(a), -1).astype(np.float32) for _, a in cols], axis=1
    )

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            np.save(f, arr, allow_pickle=False)

    return write


def _write_kitti(
    path: Path, xyz: np.ndarray, cols: list[tuple[str, np.ndarray]]
) -> Callable[[str], None]:
    rec = np.zeros((len(xyz), 4), "<f4")
    rec[:, :3] = xyz
    intensity = dict(cols).get("intensity")
    if intensity is not None:
        if intensity.ndim != 1:
            raise PointCloudError(
                f"{path}: field 'intensity' of shape {intensity.shape}; expected ({len(xyz)},)"
            )
        rec[:, 3] = intensity

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            f.write(rec.tobytes())

    return write


_WRITERS: dict[
    str, Callable[[Path, np.ndarray, list[tuple[str, np.ndarray]]], Callable[[str], None]]
] = {
    ".ply": _write_ply,
    ".npy": _write_npy,
    ".pcd": _write_pcd,
    ".bin": _write_kitti,
}
