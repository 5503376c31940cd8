"""Point-cloud readers and writer (fields.data.pointclouds): round trips through every writable
format, hand-built files of each readable format (ASCII/binary PLY of both byte orders with
faces and list properties, PCD ascii/binary, KITTI, npy, text) and malformed inputs, whose
errors must name the file and say what is wrong."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from fields.data.pointclouds import PointCloudError, read_points, write_points


def _cloud(n: int = 50, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, 3)).astype(np.float32)


def _raises(path: Path, *fragments: str, exc: type[Exception] = PointCloudError) -> None:
    """read_points(path) raises `exc` whose message names the file and holds `fragments`."""
    with pytest.raises(exc) as info:
        read_points(path)
    msg = str(info.value)
    assert path.name in msg, msg
    for frag in fragments:
        assert frag in msg, (frag, msg)


# --------------------------------------------------------------------------------------------
# round trips


@pytest.mark.parametrize("suffix", [".ply", ".npy", ".pcd", ".bin", ".PLY"])
def test_round_trip_points(tmp_path, suffix):
    pts = _cloud()
    out = write_points(tmp_path / f"cloud{suffix}", pts)
    assert out == tmp_path / f"cloud{suffix}" and out.is_file()
    got = read_points(out)
    assert got.dtype == np.float32 and got.shape == pts.shape
    np.testing.assert_array_equal(got, pts)
    assert not list(tmp_path.glob(".*")), "temporary file left behind"


def test_round_trip_float64_and_int_points(tmp_path):
    pts = np.arange(12, dtype=np.int64).reshape(4, 3)
    got = read_points(write_points(tmp_path / "a.ply", pts))
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, pts.astype(np.float32))


def test_round_trip_ply_fields(tmp_path):
    n = 20
    rng = np.random.default_rng(1)
    pts = _cloud(n)
    fields = {
        "intensity": rng.random(n).astype(np.float32),
        "colors": rng.integers(0, 256, (n, 3), dtype=np.uint8),
        "normals": rng.normal(size=(n, 3)),  # float64 -> double
        "feat": rng.random((n, 2)).astype(np.float32),
        "label": rng.integers(0, 1000, n),  # int64 -> int (fits)
    }
    xyz, got = read_points(write_points(tmp_path / "f.ply", pts, fields), with_fields=True)
    np.testing.assert_array_equal(xyz, pts)
    np.testing.assert_array_equal(got["intensity"], fields["intensity"])
    for j, c in enumerate(("red", "green", "blue")):
        assert got[c].dtype == np.uint8
        np.testing.assert_array_equal(got[c], fields["colors"][:, j])
    for j, c in enumerate(("nx", "ny", "nz")):
        assert got[c].dtype == np.float64
        np.testing.assert_array_equal(got[c], fields["normals"][:, j])
    np.testing.assert_array_equal(got["feat_0"], fields["feat"][:, 0])
    np.testing.assert_array_equal(got["feat_1"], fields["feat"][:, 1])
    assert got["label"].dtype == np.int32
    np.testing.assert_array_equal(got["label"], fields["label"])
    header = (tmp_path / "f.ply").read_bytes().split(b"end_header")[0]
    assert b"format binary_little_endian 1.0" in header
    assert b"property uchar red" in header


def test_round_trip_pcd_fields(tmp_path):
    n = 15
    rng = np.random.default_rng(2)
    pts = _cloud(n)
    colors = rng.integers(0, 256, (n, 3), dtype=np.uint8)
    feat = rng.random((n, 4)).astype(np.float32)
    intensity = rng.random(n).astype(np.float64)
    path = write_points(
        tmp_path / "f.pcd", pts, {"rgb": colors, "feat": feat, "intensity": intensity}
    )
    xyz, got = read_points(path, with_fields=True)
    np.testing.assert_array_equal(xyz, pts)
    np.testing.assert_array_equal(np.stack([got["red"], got["green"], got["blue"]], 1), colors)
    assert got["feat"].shape == (n, 4)
    np.testing.assert_array_equal(got["feat"], feat)
    assert got["intensity"].dtype == np.float64
    np.testing.assert_array_equal(got["intensity"], intensity)
    header = path.read_bytes().split(b"DATA binary\n")[0].decode()
    assert "FIELDS x y z rgb feat intensity" in header
    assert "COUNT 1 1 1 1 4 1" in header


def test_round_trip_kitti_intensity(tmp_path):
    pts = _cloud(8)
    inten = np.linspace(0, 1, 8, dtype=np.float32)
    xyz, got = read_points(
        write_points(tmp_path / "s.bin", pts, {"intensity": inten}), with_fields=True
    )
    np.testing.assert_array_equal(xyz, pts)
    np.testing.assert_array_equal(got["intensity"], inten)
    _, got = read_points(write_points(tmp_path / "z.bin", pts), with_fields=True)
    np.testing.assert_array_equal(got["intensity"], np.zeros(8, np.float32))


def test_round_trip_npy_fields_become_columns(tmp_path):
    pts = _cloud(6)
    inten = np.arange(6, dtype=np.float32)
    path = write_points(tmp_path / "c.npy", pts, {"intensity": inten})
    assert np.load(path).shape == (6, 4)
    xyz, got = read_points(path, with_fields=True)
    np.testing.assert_array_equal(xyz, pts)
    np.testing.assert_array_equal(got["c3"], inten)


def test_write_rejects_bad_input(tmp_path):
    with pytest.raises(PointCloudError, match=r"x\.obj.*expected one of \.ply"):
        write_points(tmp_path / "x.obj", _cloud())
    with pytest.raises(PointCloudError, match=r"bad\.ply.*shape \(5, 2\)"):
        write_points(tmp_path / "bad.ply", np.zeros((5, 2)))
    with pytest.raises(PointCloudError, match=r"bad\.ply.*'intensity'.*\(5,\)"):
        write_points(tmp_path / "bad.ply", np.zeros((5, 3)), {"intensity": np.zeros(4)})
    nan = np.zeros((5, 3))
    nan[2, 1] = np.nan
    with pytest.raises(PointCloudError, match=r"bad\.pcd.*1 of 5.*row 2"):
        write_points(tmp_path / "bad.pcd", nan)
    assert not list(tmp_path.iterdir())


# --------------------------------------------------------------------------------------------
# PLY


ASCII_PLY = """ply
format ascii 1.0
comment made by hand
element vertex 4
property float x
property float y
property double z
property uchar red
property uchar green
property uchar blue
property float intensity
element face 2
property list uchar int vertex_indices
end_header
0 0 0 255 0 0 0.5
1 0 0 0 255 0 0.25
0 1 0.5 0 0 255 1
1 1 -2.5 10 20 30 0
3 0 1 2
4 0 1 3 2
"""


def test_ply_ascii_with_faces_and_extra_properties(tmp_path):
    path = tmp_path / "hand.ply"
    path.write_text(ASCII_PLY)
    xyz, got = read_points(path, with_fields=True)
    assert xyz.dtype == np.float32
    np.testing.assert_array_equal(xyz, [[0, 0, 0], [1, 0, 0], [0, 1, 0.5], [1, 1, -2.5]])
    assert set(got) == {"red", "green", "blue", "intensity"}
    assert got["red"].dtype == np.uint8
    np.testing.assert_array_equal(got["red"], [255, 0, 0, 10])
    np.testing.assert_array_equal(got["intensity"], np.float32([0.5, 0.25, 1, 0]))
    # CRLF line endings read the same
    crlf = tmp_path / "crlf.ply"
    crlf.write_bytes(ASCII_PLY.replace("\n", "\r\n").encode())
    np.testing.assert_array_equal(read_points(crlf), xyz)


def _binary_ply(bo: str, header_elements: str, body: bytes) -> bytes:
    kind = {"<": "binary_little_endian", ">": "binary_big_endian"}[bo]
    return f"ply\nformat {kind} 1.0\n{header_elements}end_header\n".encode() + body


@pytest.mark.parametrize("bo", [">", "<"])
def test_ply_binary_with_faces_and_mixed_types(tmp_path, bo):
    rng = np.random.default_rng(3)
    n = 7
    dt = np.dtype(
        [
            ("x", bo + "f8"),
            ("intensity", bo + "u2"),
            ("y", bo + "i4"),
            ("z", bo + "f4"),
            ("label", bo + "i1"),
        ]
    )
    rec = np.zeros(n, dt)
    rec["x"] = rng.normal(size=n)
    rec["y"] = rng.integers(-100, 100, n)
    rec["z"] = rng.normal(size=n)
    rec["intensity"] = rng.integers(0, 60000, n)
    rec["label"] = rng.integers(-5, 5, n)
    faces = b"".join(
        struct.pack(bo + "B3i", 3, i, i + 1, i + 2) for i in range(n - 2)
    ) + struct.pack(bo + "B4i", 4, 0, 1, 2, 3)  # a quad among triangles: lengths vary
    header = (
        f"element vertex {n}\nproperty double x\nproperty uint16 intensity\n"
        "property int32 y\nproperty float32 z\nproperty char label\n"
        f"element face {n - 1}\nproperty list uchar int vertex_indices\n"
    )
    path = tmp_path / "big.ply"
    path.write_bytes(_binary_ply(bo, header, rec.tobytes() + faces))
    xyz, got = read_points(path, with_fields=True)
    want = np.stack([rec["x"], rec["y"], rec["z"]], 1).astype(np.float32)
    np.testing.assert_array_equal(xyz, want)
    assert got["intensity"].dtype == np.uint16 and got["intensity"].dtype.isnative
    np.testing.assert_array_equal(got["intensity"], rec["intensity"])
    np.testing.assert_array_equal(got["label"], rec["label"])


@pytest.mark.parametrize("bo", ["<", ">"])
@pytest.mark.parametrize("varying", [False, True])
def test_ply_binary_element_with_list_before_vertex(tmp_path, bo, varying):
    """An element before the vertex element holding a scalar and a list property: the reader
    has to walk it (fixed list lengths take the fast path, varying ones the record walk)."""
    pts = _cloud(5)
    lengths = [2, 5, 0] if varying else [3, 3, 3]
    groups = b"".join(struct.pack(bo + f"hI{k}f", -i, k, *range(k)) for i, k in enumerate(lengths))
    header = (
        "comment an element of groups first\n"
        f"element group {len(lengths)}\nproperty short id\n"
        "property list uint float weights\n"
        "element vertex 5\nproperty float x\nproperty float y\nproperty float z\n"
        "element face 1\nproperty list uchar uint vertex_indices\n"
    )
    body = groups + pts.astype(bo + "f4").tobytes() + struct.pack(bo + "B3I", 3, 0, 1, 2)
    path = tmp_path / "groups.ply"
    path.write_bytes(_binary_ply(bo, header, body))
    xyz, got = read_points(path, with_fields=True)
    np.testing.assert_array_equal(xyz, pts)
    assert got == {}


def test_ply_ascii_element_before_vertex(tmp_path):
    path = tmp_path / "pre.ply"
    path.write_text(
        "ply\nformat ascii 1.0\nelement camera 1\nproperty list uchar float k\n"
        "element vertex 2\nproperty int x\nproperty int y\nproperty int z\nend_header\n"
        "3 1 2 3\n1 2 3\n4 5 6\n"
    )
    np.testing.assert_array_equal(read_points(path), [[1, 2, 3], [4, 5, 6]])


def test_ply_vertex_with_list_property(tmp_path):
    """A list property inside the vertex element (ASCII and binary) is skipped."""
    path = tmp_path / "vl.ply"
    path.write_text(
        "ply\nformat ascii 1.0\nelement vertex 2\nproperty float x\n"
        "property list uchar int nb\nproperty float y\nproperty float z\nend_header\n"
        "1 2 7 8 2 3\n4 0 5 6\n"
    )
    xyz, got = read_points(path, with_fields=True)
    np.testing.assert_array_equal(xyz, [[1, 2, 3], [4, 5, 6]])
    assert got == {}
    body = struct.pack("<fB2iff", 1, 2, 7, 8, 2, 3) + struct.pack("<fBff", 4, 0, 5, 6)
    header = (
        "element vertex 2\nproperty float x\nproperty list uchar int nb\n"
        "property float y\nproperty float z\n"
    )
    path.write_bytes(_binary_ply("<", header, body))
    np.testing.assert_array_equal(read_points(path), [[1, 2, 3], [4, 5, 6]])


def test_ply_missing_x(tmp_path):
    path = tmp_path / "nox.ply"
    path.write_text(
        "ply\nformat ascii 1.0\nelement vertex 1\nproperty float y\n"
        "property float z\nend_header\n1 2\n"
    )
    _raises(path, "'x'", "expected x, y, z")


def test_ply_bad_magic(tmp_path):
    path = tmp_path / "magic.ply"
    path.write_text("solid cube\nfacet normal 0 0 1\n")
    _raises(path, "not a PLY file", "'ply'")


def test_ply_header_errors_name_the_line(tmp_path):
    path = tmp_path / "scan.ply"
    path.write_text("ply\nformat ascii 1.0\nelement vertex 1\nproperty flaot x\nend_header\n")
    _raises(path, "header line 4", "'flaot'", "expected one of", "float")
    path.write_text("ply\nformat ascii 1.0\nelement vertex 1\nproperty float x\n")
    _raises(path, "end_header")
    path.write_text("ply\nelement vertex 1\nproperty float x\nend_header\n")
    _raises(path, "'format'")
    path.write_text("ply\nformat ascii 1.0\nelement vertex many\nend_header\n")
    _raises(path, "header line 3", "element <name> <count>")
    path.write_text(
        "ply\nformat ascii 1.0\nelement face 1\nproperty list float int v\nend_header\n"
    )
    _raises(path, "header line 4", "not an integer type")
    path.write_text("ply\nformat ascii 1.0\nelement face 0\nend_header\n")
    _raises(path, "no 'vertex' element", "face")


def test_ply_truncated_binary(tmp_path):
    path = tmp_path / "trunc.ply"
    header = "element vertex 1000\nproperty float x\nproperty float y\nproperty float z\n"
    path.write_bytes(_binary_ply("<", header, _cloud(10).tobytes()))
    _raises(path, "truncated", "120 of the 12000 bytes", "'vertex'")
    # truncated inside a list element that comes before the vertices
    header = (
        "element face 3\nproperty list uchar int v\n"
        "element vertex 1\nproperty float x\nproperty float y\nproperty float z\n"
    )
    body = struct.pack("<B3i", 3, 0, 1, 2) + struct.pack("<B4i", 4, 0, 1, 2, 3) + b"\x05\x00"
    path.write_bytes(_binary_ply("<", header, body))
    _raises(path, "truncated", "record 2", "'face'")


def test_ply_truncated_and_bad_ascii(tmp_path):
    path = tmp_path / "short.ply"
    path.write_text(
        "ply\nformat ascii 1.0\nelement vertex 3\nproperty float x\n"
        "property float y\nproperty float z\nend_header\n1 2 3\n4 5 6\n"
    )
    _raises(path, "2 of the 3 vertex lines", "truncated")
    path.write_text(
        "ply\nformat ascii 1.0\nelement vertex 2\nproperty float x\n"
        "property float y\nproperty float z\nend_header\n1 2 3\n4 5\n"
    )
    _raises(path, "line 9", "expected 3")
    path.write_text(
        "ply\nformat ascii 1.0\nelement vertex 2\nproperty float x\n"
        "property float y\nproperty float z\nend_header\n1 2 3\n4 five 6\n"
    )
    _raises(path, "line 9", "'five' is not a number")


# --------------------------------------------------------------------------------------------
# PCD


PCD_HEADER = """# .PCD v0.7 - Point Cloud Data file format
VERSION 0.7
FIELDS x y z intensity rgb
SIZE 4 4 4 2 4
TYPE F F F U F
COUNT 1 1 1 1 1
WIDTH {n}
HEIGHT 1
VIEWPOINT 0 0 0 1 0 0 0
POINTS {n}
DATA {data}
"""


def _packed_rgb(r: int, g: int, b: int) -> float:
    return float(np.array([(r << 16) | (g << 8) | b], np.uint32).view(np.float32)[0])


def test_pcd_ascii(tmp_path):
    rgb = _packed_rgb(255, 128, 1)
    path = tmp_path / "hand.pcd"
    path.write_text(
        PCD_HEADER.format(n=3, data="ascii")
        + f"0 0 0 10 {rgb!r}\n1.5 -2 3 20 {rgb!r}\n\n0.25 0.5 0.75 30 {rgb!r}\n"
    )
    xyz, got = read_points(path, with_fields=True)
    assert xyz.dtype == np.float32
    np.testing.assert_array_equal(xyz, [[0, 0, 0], [1.5, -2, 3], [0.25, 0.5, 0.75]])
    assert got["intensity"].dtype == np.uint16
    np.testing.assert_array_equal(got["intensity"], [10, 20, 30])
    assert (got["red"] == 255).all() and (got["green"] == 128).all() and (got["blue"] == 1).all()
    assert "rgb" not in got


def test_pcd_binary_with_padding_and_counts(tmp_path):
    n = 6
    rng = np.random.default_rng(4)
    dt = np.dtype(
        [
            ("x", "<f4"),
            ("y", "<f4"),
            ("z", "<f4"),
            ("_", "u1", (4,)),
            ("hist", "<f8", (3,)),
            ("ring", "<u2"),
        ]
    )
    rec = np.zeros(n, dt)
    for c in "xyz":
        rec[c] = rng.normal(size=n)
    rec["hist"] = rng.random((n, 3))
    rec["ring"] = np.arange(n)
    header = (
        "VERSION .7\nFIELDS x y z _ hist ring\nSIZE 4 4 4 1 8 2\nTYPE F F F U F U\n"
        f"COUNT 1 1 1 4 3 1\nWIDTH {n}\nHEIGHT 1\nVIEWPOINT 0 0 0 1 0 0 0\nPOINTS {n}\n"
        "DATA binary\n"
    )
    path = tmp_path / "bin.pcd"
    path.write_bytes(header.encode() + rec.tobytes())
    xyz, got = read_points(path, with_fields=True)
    np.testing.assert_array_equal(xyz, np.stack([rec["x"], rec["y"], rec["z"]], 1))
    assert set(got) == {"hist", "ring"}
    np.testing.assert_array_equal(got["hist"], rec["hist"])
    np.testing.assert_array_equal(got["ring"], rec["ring"])


def test_pcd_truncated(tmp_path):
    path = tmp_path / "trunc.pcd"
    rec = np.zeros(4, [("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("i", "<u2"), ("c", "<f4")])
    path.write_bytes(PCD_HEADER.format(n=1000, data="binary").encode() + rec.tobytes())
    _raises(path, "POINTS 1000", "truncated")
    path.write_text(PCD_HEADER.format(n=5, data="ascii") + "0 0 0 1 0\n1 1 1 1 0\n")
    _raises(path, "holds 2 lines", "POINTS is 5", "truncated")


def test_pcd_binary_compressed(tmp_path):
    path = tmp_path / "comp.pcd"
    path.write_bytes(PCD_HEADER.format(n=2, data="binary_compressed").encode() + b"\0" * 16)
    _raises(path, "binary_compressed is not supported", "pcl_convert_pcd_ascii_binary")


def test_pcd_header_errors(tmp_path):
    path = tmp_path / "bad.pcd"
    path.write_text(
        PCD_HEADER.format(n=1, data="ascii").replace("FIELDS x y z", "FIELDS a b c") + "0 0 0 0 0\n"
    )
    _raises(path, "header line 3", "no 'x'")
    path.write_text(
        PCD_HEADER.format(n=1, data="ascii").replace("SIZE 4 4 4 2 4", "SIZE 4 4") + "0 0 0 0 0\n"
    )
    _raises(path, "header line 4", "SIZE has 2 values")
    path.write_text(
        PCD_HEADER.format(n=1, data="ascii").replace("TYPE F F F U", "TYPE F F F F") + "0 0 0 0 0\n"
    )
    _raises(path, "header line 5", "TYPE F SIZE 2")
    path.write_text("VERSION 0.7\nFIELDS x y z\nSIZE 4 4 4\nTYPE F F F\nWIDTH 1\n")
    _raises(path, "no DATA line")


# --------------------------------------------------------------------------------------------
# KITTI, npy, text


def test_kitti_bin(tmp_path):
    rec = np.array([[1, 2, 3, 0.5], [4, 5, 6, 0.25], [-1, 0, 1e3, 1]], "<f4")
    path = tmp_path / "000000.bin"
    path.write_bytes(rec.tobytes())
    xyz, got = read_points(path, with_fields=True)
    np.testing.assert_array_equal(xyz, rec[:, :3])
    assert got["intensity"].dtype == np.float32
    np.testing.assert_array_equal(got["intensity"], rec[:, 3])
    assert read_points(path).flags.writeable


def test_kitti_bin_bad_size(tmp_path):
    path = tmp_path / "odd.bin"
    path.write_bytes(b"\0" * 10)
    _raises(path, "10 bytes", "multiple of 16")


def test_npy_four_columns(tmp_path):
    arr = np.random.default_rng(5).normal(size=(9, 4))
    path = tmp_path / "four.npy"
    np.save(path, arr)
    xyz, got = read_points(path, with_fields=True)
    assert xyz.dtype == np.float32
    np.testing.assert_array_equal(xyz, arr[:, :3].astype(np.float32))
    assert set(got) == {"c3"}
    np.testing.assert_array_equal(got["c3"], arr[:, 3])


def test_npy_bad_shapes(tmp_path):
    path = tmp_path / "flat.npy"
    np.save(path, np.zeros(5))
    _raises(path, "shape (5,)", "(N, 3)")
    np.save(path, np.zeros((5, 2)))
    _raises(path, "shape (5, 2)")
    path.write_bytes(b"not an npy file")
    _raises(path, "cannot read as .npy")


def test_text_formats(tmp_path):
    path = tmp_path / "pts.xyz"
    path.write_text("# comment\n1 2 3\n4 5 6\n")
    np.testing.assert_array_equal(read_points(path), [[1, 2, 3], [4, 5, 6]])
    path = tmp_path / "pts.csv"
    path.write_text("i,z,y,x\n9,3,2,1\n8,6,5,4\n")
    xyz, got = read_points(path, with_fields=True)
    np.testing.assert_array_equal(xyz, [[1, 2, 3], [4, 5, 6]])
    np.testing.assert_array_equal(got["i"], [9, 8])
    path = tmp_path / "pts.txt"
    path.write_text("1, 2, 3, 7\n4, 5, 6, 8\n")
    _, got = read_points(path, with_fields=True)
    np.testing.assert_array_equal(got["c3"], [7, 8])
    path.write_text("1 2 3\n4 5\n")
    _raises(path, "line 2", "expected 3")
    path.write_text("1 2\n")
    _raises(path, "at least 3")


# --------------------------------------------------------------------------------------------
# errors common to all formats


@pytest.mark.parametrize("suffix", [".ply", ".pcd", ".npy", ".bin"])
def test_nan_points(tmp_path, suffix):
    """NaNs poked into rows 3 and 7 after writing (the writer refuses them)."""
    pts = _cloud(10)
    path = write_points(tmp_path / f"nan{suffix}", pts)
    pts[[3, 7], 1] = np.nan
    if suffix == ".npy":
        np.save(path, pts)
    elif suffix == ".bin":
        rec = np.zeros((10, 4), "<f4")
        rec[:, :3] = pts
        path.write_bytes(rec.tobytes())
    else:
        data = path.read_bytes()
        end = b"end_header\n" if suffix == ".ply" else b"DATA binary\n"
        cut = data.index(end) + len(end)
        path.write_bytes(data[:cut] + pts.astype("<f4").tobytes())
    _raises(path, "2 of 10 points", "non-finite", "row 3")


def test_ascii_nan_and_inf(tmp_path):
    path = tmp_path / "inf.xyz"
    path.write_text("0 0 0\n1 inf 1\n2 2 nan\n")
    _raises(path, "2 of 3 points", "row 1")


def test_missing_file(tmp_path):
    path = tmp_path / "nowhere.ply"
    _raises(path, "nowhere.ply", exc=FileNotFoundError)


def test_unknown_suffix(tmp_path):
    path = tmp_path / "mesh.obj"
    path.write_text("v 0 0 0\n")
    _raises(path, "'.obj'", ".ply", ".pcd", ".npy", ".bin")


@pytest.mark.parametrize("suffix", [".ply", ".pcd", ".npy", ".bin", ".xyz"])
def test_empty_cloud(tmp_path, suffix):
    path = tmp_path / f"empty{suffix}"
    if suffix == ".ply":
        path.write_bytes(
            _binary_ply(
                "<", "element vertex 0\nproperty float x\nproperty float y\nproperty float z\n", b""
            )
        )
    elif suffix == ".pcd":
        path.write_text(PCD_HEADER.format(n=0, data="binary"))
    elif suffix == ".npy":
        np.save(path, np.zeros((0, 3), np.float32))
    else:
        path.write_bytes(b"")
    _raises(path, "no points")


# -- one PLY codec for point clouds and meshes --


def _tetrahedron():
    verts = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], np.float32)
    faces = np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]], np.int64)
    return verts, faces


def test_mesh_ply_round_trip_with_colours_and_fields(tmp_path):
    from fields.data.pointclouds import read_ply, write_ply

    verts, faces = _tetrahedron()
    colours = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [9, 9, 9]], np.uint8)
    path = write_ply(tmp_path / "tet.ply", verts, faces, colours,
                     fields={"quality": np.arange(4, dtype=np.float32)})
    v, f, extra = read_ply(path, with_fields=True)
    np.testing.assert_array_equal(v, verts)
    np.testing.assert_array_equal(f, faces)
    assert f.dtype == np.int64
    np.testing.assert_array_equal(np.stack([extra[c] for c in ("red", "green", "blue")], 1),
                                  colours)
    np.testing.assert_array_equal(extra["quality"], np.arange(4))
    # the same file is a point cloud to read_points (faces skipped), and a mesh to trimesh
    np.testing.assert_array_equal(read_points(path), verts)
    trimesh = pytest.importorskip("trimesh")
    mesh = trimesh.load(path, process=False)
    np.testing.assert_array_equal(mesh.faces, faces)


def test_read_ply_point_cloud_has_no_faces_and_empty_mesh_is_allowed(tmp_path):
    from fields.data.pointclouds import read_ply, write_ply

    pts = _cloud(5)
    v, f = read_ply(write_points(tmp_path / "c.ply", pts))
    np.testing.assert_array_equal(v, pts)
    assert f is None
    v, f = read_ply(write_ply(tmp_path / "empty.ply", np.zeros((0, 3)), np.zeros((0, 3), int)))
    assert v.shape == (0, 3) and f.shape == (0, 3)
    with pytest.raises(PointCloudError, match="no points"):
        write_ply(tmp_path / "nothing.ply", np.zeros((0, 3)))


@pytest.mark.parametrize("fmt", ["ascii", "binary_big_endian"])
def test_read_ply_faces_ascii_and_big_endian_polygons_become_fans(tmp_path, fmt):
    from fields.data.pointclouds import read_ply

    verts = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 0, 1]], np.float32)
    polys = [[0, 1, 2, 3], [0, 1, 4]]  # a quad and a triangle
    header = (f"ply\nformat {fmt} 1.0\nelement vertex 5\nproperty float x\nproperty float y\n"
              "property float z\nelement face 2\nproperty list uchar int vertex_indices\n"
              "end_header\n")
    if fmt == "ascii":
        body = "".join(" ".join(map(str, v)) + "\n" for v in verts.tolist())
        body += "".join(f"{len(p)} {' '.join(map(str, p))}\n" for p in polys)
        (tmp_path / "m.ply").write_text(header + body)
    else:
        body = verts.astype(">f4").tobytes()
        for p in polys:
            body += bytes([len(p)]) + np.array(p, ">i4").tobytes()
        (tmp_path / "m.ply").write_bytes(header.encode() + body)
    v, f = read_ply(tmp_path / "m.ply")
    np.testing.assert_array_equal(v, verts)
    np.testing.assert_array_equal(f, [[0, 1, 2], [0, 2, 3], [0, 1, 4]])


def test_read_ply_mesh_errors_name_the_file(tmp_path):
    from fields.data.pointclouds import read_ply, write_ply

    verts, faces = _tetrahedron()
    with pytest.raises(PointCloudError, match=r"bad\.ply: face vertex indices span \[0, 9\]"):
        write_ply(tmp_path / "bad.ply", verts, np.array([[0, 1, 9]]))
    with pytest.raises(PointCloudError, match=r"bad\.ply: colours of shape \(4, 3\) and type "
                                              r"float32"):
        write_ply(tmp_path / "bad.ply", verts, faces, np.zeros((4, 3), np.float32))
    header = ("ply\nformat ascii 1.0\nelement vertex 3\nproperty float x\nproperty float y\n"
              "property float z\nelement face 1\nproperty list uchar int {name}\nend_header\n"
              "0 0 0\n1 0 0\n0 1 0\n{face}\n")
    (tmp_path / "m.ply").write_text(header.format(name="corners", face="3 0 1 2"))
    with pytest.raises(PointCloudError, match=r"m\.ply: face element .* no 'vertex_indices'"):
        read_ply(tmp_path / "m.ply")
    (tmp_path / "m.ply").write_text(header.format(name="vertex_indices", face="3 0 1 5"))
    with pytest.raises(PointCloudError, match=r"m\.ply: face vertex index 5 is outside"):
        read_ply(tmp_path / "m.ply")
    (tmp_path / "m.ply").write_text(header.format(name="vertex_indices", face="2 0 1"))
    with pytest.raises(PointCloudError, match=r"m\.ply: face 0 has 2 vertices"):
        read_ply(tmp_path / "m.ply")


def test_mesh_module_reads_and_writes_ply_through_the_one_codec(tmp_path):
    from fields import mesh
    from fields.data import pointclouds

    assert mesh.write_ply is pointclouds.write_ply
    assert not hasattr(mesh, "read_ply") or mesh.read_ply is pointclouds.read_ply
    verts, faces = _tetrahedron()
    mesh.save_mesh(tmp_path / "tet.ply", verts, faces)
    v, f = mesh.load_mesh(tmp_path / "tet.ply")
    np.testing.assert_array_equal(v, verts)
    np.testing.assert_array_equal(f, faces)


# --------------------------------------------------------------------------------------------
# issue 21: messages with values show them as plain text; meshes that never crash


def test_non_finite_point_message_shows_the_row_values_as_plain_text(tmp_path):
    """A5: a NaN point printed "(first at row 10: )": the values were in brackets, which a
    markup renderer took for a tag. They are plain numbers now, and survive rich markup."""
    from rich.console import Console

    pts = _cloud(12)
    pts[10] = [np.nan, 1.0, 2.0]
    path = tmp_path / "flow.npy"
    np.save(path, pts)
    with pytest.raises(PointCloudError) as info:
        read_points(path)
    msg = str(info.value)
    assert "1 of 12 points" in msg and "(first at row 10: nan 1 2)" in msg, msg
    assert "[" not in msg, msg
    console = Console(record=True, width=400)
    console.print(msg)  # as markup: nothing of the values may vanish
    assert "row 10: nan 1 2" in console.export_text()


def _tet_obj(path: Path, verts: np.ndarray, faces: np.ndarray) -> None:
    path.write_text("".join(f"v {x} {y} {z}\n" for x, y, z in verts)
                    + "".join(f"f {a + 1} {b + 1} {c + 1}\n" for a, b, c in faces))


def test_mesh_with_nan_vertices_names_the_vertex(tmp_path):
    """A6: a mesh with NaN vertices was reported as "has no area"."""
    from fields.data.pointclouds import write_ply
    from fields.mesh import load_mesh

    verts, faces = _tetrahedron()
    verts = verts.astype(np.float64)
    verts[2] = [np.nan, 0.0, 1.0]
    _tet_obj(tmp_path / "nan.obj", verts, faces)
    with pytest.raises(ValueError, match=r"nan\.obj: vertex 2 is not finite \(nan, 0, 1\)"):
        load_mesh(tmp_path / "nan.obj")
    # the PLY codec refuses to write NaN, so write a valid one and poke a NaN into its body
    good = verts.copy()
    good[2] = [0.0, 0.0, 1.0]
    write_ply(tmp_path / "nan.ply", good, faces)
    data = bytearray((tmp_path / "nan.ply").read_bytes())
    body = data.index(b"end_header\n") + len(b"end_header\n")
    data[body + 24 : body + 28] = struct.pack("<f", np.nan)  # vertex 2, x
    (tmp_path / "nan.ply").write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"nan\.ply: vertex 2 is not finite \(nan, 0, 1\)"):
        load_mesh(tmp_path / "nan.ply")


def test_mesh_bad_indices_and_empty_meshes_are_clear_errors(tmp_path):
    from fields.mesh import load_mesh

    (tmp_path / "far.obj").write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\nf 1 2 9\n")
    with pytest.raises(ValueError, match=r"far\.obj"):
        load_mesh(tmp_path / "far.obj")
    (tmp_path / "empty.obj").write_text("# nothing\n")
    with pytest.raises(ValueError, match=r"empty\.obj: no triangles in the mesh"):
        load_mesh(tmp_path / "empty.obj")
    (tmp_path / "points.obj").write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\n")
    with pytest.raises(ValueError, match=r"points\.obj: no triangles in the mesh"):
        load_mesh(tmp_path / "points.obj")
    (tmp_path / "flat.obj").write_text("v 0 0 0\nv 1 0 0\nv 2 0 0\nf 1 2 3\n")
    with pytest.raises(ValueError, match=r"flat\.obj: the mesh has no area \(all 1 triangles "
                       "are degenerate"):
        load_mesh(tmp_path / "flat.obj")
    (tmp_path / "empty.ply").write_text("ply\nformat ascii 1.0\nelement vertex 0\nproperty float"
                                        " x\nproperty float y\nproperty float z\nelement face 0\n"
                                        "property list uchar int vertex_indices\nend_header\n")
    with pytest.raises(ValueError, match=r"empty\.ply: no triangles in the mesh \(vertices "
                       r"of shape \(0, 3\)"):
        load_mesh(tmp_path / "empty.ply")
    (tmp_path / "big.obj").write_text("v 1e200 0 0\nv 0 1e200 0\nv 0 0 1e200\nf 1 2 3\n")
    with pytest.raises(ValueError, match=r"big\.obj: vertex coordinates so large"):
        load_mesh(tmp_path / "big.obj")
