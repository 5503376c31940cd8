"""Readers of posed-image formats (Blender, instant-ngp, LLFF, COLMAP) on tiny scenes written
here: camera values, image values, conventions (known points project where the format's own
projection puts them), malformed-input errors, format detection, the Blender round trip."""

import json
import math
import re
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from fields.data import format_of, load_scene
from fields.data.blender import read_blender, write_blender
from fields.data.colmap import read_colmap
from fields.data.dataset import SceneData, Split
from fields.data.llff import read_llff
from fields.data.ngp import read_ngp
from fields.render.cameras import Cameras, look_at, opencv_to_opengl

W, H = 8, 6


def _rng(seed=0):
    return np.random.default_rng(seed)


def _write_png(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(path, arr)


def _images(n, channels=4, w=W, h=H, seed=0):
    return _rng(seed).integers(0, 256, size=(n, h, w, channels), dtype=np.uint8)


def _poses(n, radius=4.0, arc=2 * math.pi):
    """(n, 4, 4) OpenGL camera-to-world matrices on an arc of a ring (the whole ring by
    default), looking at the origin."""
    a = torch.linspace(0, arc, n + 1)[:-1] - (0 if arc >= 2 * math.pi else arc / 2)
    eye = torch.stack((radius * a.cos(), radius * a.sin(), 0.5 + 0.3 * a.sin()), -1)
    c2w = look_at(eye, torch.zeros(3)).double()
    return torch.cat((c2w, torch.tensor([0, 0, 0, 1.0]).expand(n, 1, 4).double()), 1).numpy()


def _blender_scene(root: Path, n=3, angle=0.9, split="train", ext=".png", **extra):
    imgs = _images(n, channels=4 if ext == ".png" else 3, seed=len(split))
    poses = _poses(n)
    frames = []
    for i in range(n):
        _write_png(root / split / f"r_{i}{ext}", imgs[i])
        frames.append({"file_path": f"./{split}/r_{i}", "transform_matrix": poses[i].tolist()})
    data = {"camera_angle_x": angle, "frames": frames, **extra}
    (root / f"transforms_{split}.json").write_text(json.dumps(data))
    return imgs, poses


def _composite(imgs, bg):
    rgb, a = imgs[..., :3] / 255.0, imgs[..., 3:] / 255.0
    return rgb * a + np.asarray(bg) * (1 - a), a


# --------------------------------------------------------------------------------- Blender


def test_blender_cameras_images_alpha(tmp_path):
    imgs, poses = _blender_scene(tmp_path, n=3, angle=0.9)
    _, vposes = _blender_scene(tmp_path, n=2, angle=0.9, split="val")
    scene = read_blender(tmp_path, background=(0.2, 0.4, 0.6))
    assert isinstance(scene, SceneData)
    assert set(scene.splits) == {"train", "val"} and not scene.unbounded
    cams = scene.train.cameras
    f = 0.5 * W / math.tan(0.45)
    assert (cams.width, cams.height) == (W, H)
    torch.testing.assert_close(cams.fx, torch.full((3,), f))
    torch.testing.assert_close(cams.fy, torch.full((3,), f))
    torch.testing.assert_close(cams.cx, torch.full((3,), W / 2))
    torch.testing.assert_close(cams.cy, torch.full((3,), H / 2))
    torch.testing.assert_close(cams.c2w, torch.from_numpy(poses[:, :3]).float())
    assert not cams.has_distortion
    rgb, a = _composite(imgs, (0.2, 0.4, 0.6))
    torch.testing.assert_close(scene.train.images, torch.from_numpy(rgb).float())
    torch.testing.assert_close(scene.train.alpha, torch.from_numpy(a).float())
    torch.testing.assert_close(scene.splits["val"].cameras.c2w,
                               torch.from_numpy(vposes[:, :3]).float())
    assert scene.train.names == ["./train/r_0", "./train/r_1", "./train/r_2"]
    torch.testing.assert_close(scene.aabb, torch.tensor([[-1.5] * 3, [1.5] * 3]))
    torch.testing.assert_close(scene.background, torch.tensor([0.2, 0.4, 0.6]))
    assert scene.near == 0.0 and scene.far > 1e6


def test_blender_camera_looks_down_minus_z(tmp_path):
    """The ring cameras look at the origin: it projects to the image centre, in front."""
    _blender_scene(tmp_path, n=4)
    cams = read_blender(tmp_path).train.cameras
    for i in range(4):
        uv, depth = cams.project(torch.zeros(1, 3), i)
        torch.testing.assert_close(uv[0], torch.tensor([W / 2, H / 2]))
        assert depth.item() > 3.9
        # the -z axis of c2w points from the camera to the origin
        fwd = -cams.c2w[i, :, 2]
        to_origin = -cams.c2w[i, :, 3] / cams.c2w[i, :, 3].norm()
        torch.testing.assert_close(fwd, to_origin, atol=1e-5, rtol=0)


def test_blender_angle_y_aabb_and_file_suffixes(tmp_path):
    _blender_scene(tmp_path, n=2, ext=".jpg", camera_angle_y=0.5,
                   aabb=[[-1, -2, -3], [1, 2, 3]])
    scene = read_blender(tmp_path)
    cams = scene.train.cameras
    torch.testing.assert_close(cams.fy, torch.full((2,), 0.5 * H / math.tan(0.25)))
    torch.testing.assert_close(scene.aabb, torch.tensor([[-1.0, -2, -3], [1, 2, 3]]))
    assert scene.train.images.shape == (2, H, W, 3)
    # file_path with its extension written out is used as is
    data = json.loads((tmp_path / "transforms_train.json").read_text())
    for fr in data["frames"]:
        fr["file_path"] += ".jpg"
    (tmp_path / "transforms_train.json").write_text(json.dumps(data))
    assert len(read_blender(tmp_path).train) == 2


def test_blender_downscale_area_average(tmp_path):
    _blender_scene(tmp_path, n=2)
    full = read_blender(tmp_path)
    half = read_blender(tmp_path, downscale=2)
    cams = half.train.cameras
    assert (cams.width, cams.height) == (W // 2, H // 2)
    torch.testing.assert_close(cams.fx, full.train.cameras.fx / 2)
    torch.testing.assert_close(cams.cx, torch.full((2,), W / 4))
    expect = full.train.images.reshape(2, H // 2, 2, W // 2, 2, 3).mean((2, 4))
    torch.testing.assert_close(half.train.images, expect)
    assert half.train.alpha.shape == (2, H // 2, W // 2, 1)


def _edit_json(path, edit):
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def test_blender_errors_name_file_and_field(tmp_path):
    _blender_scene(tmp_path, n=3)
    jp = tmp_path / "transforms_train.json"
    good = jp.read_text()

    _edit_json(jp, lambda d: d.pop("camera_angle_x"))
    with pytest.raises(ValueError, match=r"transforms_train\.json: no 'camera_angle_x'"):
        read_blender(tmp_path)

    jp.write_text(good)
    _edit_json(jp, lambda d: d["frames"][1].pop("transform_matrix"))
    with pytest.raises(ValueError, match=r"transforms_train\.json: frames\[1\] has no "
                       r"'transform_matrix' \(expected a 4x4"):
        read_blender(tmp_path)

    jp.write_text(good)
    _edit_json(jp, lambda d: d["frames"][2].update(transform_matrix=np.eye(3).tolist()))
    with pytest.raises(ValueError, match=r"frames\[2\]\.transform_matrix has shape \(3, 3\) "
                       r"\(expected a 4x4"):
        read_blender(tmp_path)

    jp.write_text(good)
    _edit_json(jp, lambda d: d.update(aabb=[1, 2, 3]))
    with pytest.raises(ValueError, match=r"transforms_train\.json: 'aabb'"):
        read_blender(tmp_path)

    jp.write_text("{not json")
    with pytest.raises(ValueError, match=r"transforms_train\.json: not valid json"):
        read_blender(tmp_path)

    jp.write_text(good)
    (tmp_path / "train" / "r_1.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"frames\[1\]\.file_path"):
        read_blender(tmp_path)

    _write_png(tmp_path / "train" / "r_1.png", _images(1, w=W + 2)[0])
    with pytest.raises(ValueError, match=r"r_1\.png.*10x6.*share one size"):
        read_blender(tmp_path)


def test_blender_needs_transforms_train(tmp_path):
    (tmp_path / "transforms.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match=r"transforms_train\.json.*read_ngp"):
        read_blender(tmp_path)


def _scene_for_writing(n=3, alpha=True):
    g = torch.Generator().manual_seed(1)
    bg = torch.tensor([1.0, 1.0, 1.0])
    colour = torch.rand(n, H, W, 3, generator=g)
    a = torch.rand(n, H, W, 1, generator=g)
    a[:, 0, 0] = 0.0  # fully transparent pixels
    a[:, 1, 1] = 1.0
    images = colour * a + bg * (1 - a)
    f = 7.0
    cams = Cameras(look_at(torch.tensor([[4.0, 0, 1], [0, 4, 1], [-4, 0, 1]])[:n], torch.zeros(3)),
                   f, f, W / 2, H / 2, W, H)
    split = Split(images, cams, [f"x{i}" for i in range(n)], a if alpha else None)
    test = Split(images[:2], cams[:2], ["t0", "t1"], None)
    return SceneData("s", {"train": split, "test": test}, aabb=[[-1, -1, -1], [1, 1, 2]],
                     background=bg)


def test_write_read_blender_round_trip(tmp_path):
    scene = _scene_for_writing()
    write_blender(tmp_path / "out", scene)
    assert (tmp_path / "out" / "train" / "r_2.png").is_file()
    assert iio.imread(tmp_path / "out" / "train" / "r_0.png").shape == (H, W, 4)
    assert iio.imread(tmp_path / "out" / "test" / "r_0.png").shape == (H, W, 3)
    back = read_blender(tmp_path / "out", background=scene.background)
    assert set(back.splits) == {"train", "test"}
    for name in ("train", "test"):
        a, b = scene.splits[name], back.splits[name]
        assert (b.images - a.images).abs().max() <= 1.5 / 255
        torch.testing.assert_close(b.cameras.c2w, a.cameras.c2w, atol=1e-6, rtol=0)
        for k in ("fx", "fy", "cx", "cy"):
            torch.testing.assert_close(getattr(b.cameras, k), getattr(a.cameras, k))
    assert (back.train.alpha - scene.train.alpha).abs().max() <= 0.5 / 255 + 1e-6
    assert back.splits["test"].alpha is None
    torch.testing.assert_close(back.aabb, scene.aabb)
    # no temporary files left behind
    assert not [p for p in (tmp_path / "out").rglob(".*")]


def test_write_blender_rejects_what_the_format_cannot_hold(tmp_path):
    scene = _scene_for_writing(alpha=False)
    scene.train.cameras.cx[1] += 1.0
    with pytest.raises(ValueError, match="principal point"):
        write_blender(tmp_path, scene)
    scene = _scene_for_writing(alpha=False)
    scene.train.cameras.fx[1] += 1.0
    with pytest.raises(ValueError, match="fx differs"):
        write_blender(tmp_path, scene)


# --------------------------------------------------------------------------------- instant-ngp


def _ngp_scene(root: Path, n=10, **top):
    imgs = _images(n, channels=3, seed=3)
    poses = _poses(n)
    frames = []
    for i in range(n):
        _write_png(root / "images" / f"{i:03d}.png", imgs[i])
        frames.append({"file_path": f"images/{i:03d}.png", "transform_matrix": poses[i].tolist()})
    data = {"fl_x": 9.0, "fl_y": 10.0, "cx": 4.2, "cy": 2.9, "w": W, "h": H,
            "k1": 0.1, "k2": -0.02, "p1": 0.003, "p2": -0.004, "aabb_scale": 4, **top,
            "frames": frames}
    (root / "transforms.json").write_text(json.dumps(data))
    return imgs, poses, data


def _nerfstudio_scene(root: Path, n=10, model="OPENCV", frame_model=None):
    """A nerfstudio transforms.json: poses in the capture's own units and place (x3.7, moved),
    `camera_model`, `applied_transform`, no `aabb_scale`."""
    _imgs, poses, data = _ngp_scene(root, n=n)
    for fr, p in zip(data["frames"], poses, strict=True):
        q = p.copy()
        q[:3, 3] = 3.7 * p[:3, 3] + [10.0, -5.0, 2.0]
        fr["transform_matrix"] = q.tolist()
    if frame_model:
        data["frames"][3]["camera_model"] = frame_model
    del data["aabb_scale"]
    data |= {"camera_model": model, "applied_transform": np.eye(4)[:3].tolist()}
    (root / "transforms.json").write_text(json.dumps(data))
    return data


def test_nerfstudio_poses_are_oriented_centred_and_scaled_into_the_box(tmp_path):
    """Issue 22: a nerfstudio file was read as instant-ngp's (the scene outside the box, 8.7
    dB). Now its poses go through the capture transform: the cameras' focus (the ring's
    centre, moved to (10, -5, 2) by x3.7) at the origin, the region they see filling the box;
    a world point projects to the same pixel before and after."""
    data = _nerfstudio_scene(tmp_path)
    scene = read_ngp(tmp_path)
    assert scene.meta["format"] == "nerfstudio" and scene.unbounded
    torch.testing.assert_close(scene.aabb, torch.tensor([[-1.0] * 3, [1.0] * 3]))
    t = scene.meta["transform"]
    focus = np.array([10.0, -5.0, 2.0])  # the ring looks at its centre (the origin x3.7, moved)
    np.testing.assert_allclose(t["centre"], focus, atol=1e-3)
    r, s = np.asarray(t["rotation"]), t["scale"]
    cams = torch.cat([sp.cameras.c2w for sp in scene.splits.values()])
    names = [n for sp in scene.splits.values() for n in sp.names]
    by_name = {fr["file_path"]: np.asarray(fr["transform_matrix"]) for fr in data["frames"]}
    rng = _rng(5)
    world = focus + rng.uniform(-1, 1, size=(6, 3))
    for k, name in enumerate(names):
        c2w = by_name[name]
        # pinhole projection in the file's frame (OpenGL: looks down -z)
        pc = (world - c2w[:3, 3]) @ c2w[:3, :3]
        u_file = 9.0 * pc[:, 0] / -pc[:, 2]
        ours = (world - t["centre"]) @ r.T * s
        pc2 = (ours - cams[k, :, 3].double().numpy()) @ cams[k, :, :3].double().numpy()
        np.testing.assert_allclose(9.0 * pc2[:, 0] / -pc2[:, 2], u_file, atol=1e-3)
    # the cameras are outside the box, each seeing the unit sphere's width
    radii = cams[:, :, 3].norm(dim=-1)
    assert (radii > 1.5).all()


def test_nerfstudio_fisheye_and_equirectangular_cameras_are_read_as_such(tmp_path):
    """Issue 22: OPENCV_FISHEYE's k1..k4 used to be read as radial-tangential coefficients.
    Now a fisheye file gives fisheye cameras with k1 k2 k3 k4, an equirectangular one
    panoramas (nerfstudio's default intrinsics), and a pixel's ray is the same as the file's
    model gives."""
    data = _nerfstudio_scene(tmp_path, model="OPENCV_FISHEYE")
    for k, v in (("k1", 0.05), ("k2", -0.01), ("k3", 0.002), ("k4", -0.001), ("p1", 0),
                 ("p2", 0)):
        data[k] = v
    (tmp_path / "transforms.json").write_text(json.dumps(data))
    scene = read_ngp(tmp_path)
    cams = scene.train.cameras
    assert cams.model == "fisheye"
    torch.testing.assert_close(cams.distortion[0], torch.tensor([0.05, -0.01, 0.002, -0.001]))
    # p1 / p2 mean nothing to a fisheye
    data["p1"] = 0.01
    (tmp_path / "transforms.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"'p1' is non-zero \(expected only k1 k2 k3 k4"):
        read_ngp(tmp_path)
    # equirectangular: fx = w / 2, fy = h, centred, when not given
    data = _nerfstudio_scene(tmp_path, model="EQUIRECTANGULAR")
    for k in ("fl_x", "fl_y", "cx", "cy", "k1", "k2", "p1", "p2"):
        data.pop(k, None)
    (tmp_path / "transforms.json").write_text(json.dumps(data))
    cams = read_ngp(tmp_path).train.cameras
    assert cams.model == "equirectangular"
    assert (float(cams.fx[0]), float(cams.fy[0]), float(cams.cx[0]), float(cams.cy[0])) == \
        (W / 2, H, W / 2, H / 2)
    # one camera model per scene; unknown ones are named
    _nerfstudio_scene(tmp_path, frame_model="OPENCV_FISHEYE")
    with pytest.raises(ValueError, match=r"transforms\.json: frames\[3\]\.camera_model is "
                                         r"\"OPENCV_FISHEYE\": expected the file's camera model"):
        read_ngp(tmp_path)
    _nerfstudio_scene(tmp_path, model="ORTHOPHOTO")
    with pytest.raises(ValueError, match=r"'camera_model' is \"ORTHOPHOTO\": not supported"):
        read_ngp(tmp_path)
    # our own processed scenes (fields_transform) and instant-ngp files are read as they are
    data = _nerfstudio_scene(tmp_path)
    data["fields_transform"] = {"rotation": np.eye(3).tolist(), "centre": [0, 0, 0],
                                "scale": 1.0}
    data["aabb_scale"] = 2
    (tmp_path / "transforms.json").write_text(json.dumps(data))
    assert read_ngp(tmp_path).meta["format"] == "ngp"


def test_nerfstudio_masks_keep_pixels_out_of_training(tmp_path):
    from fields.render.rays import RayBatcher

    data = _nerfstudio_scene(tmp_path)
    (tmp_path / "masks").mkdir()
    m = np.full((H, W), 255, np.uint8)
    m[:, : W // 2] = 0  # the left half is ignored
    iio.imwrite(tmp_path / "masks" / "m.png", m)
    for fr in data["frames"][1:]:
        fr["mask_path"] = "masks/m.png"  # frame 0 (held out) has none
    (tmp_path / "transforms.json").write_text(json.dumps(data))
    scene = read_ngp(tmp_path)
    train = scene.train
    assert train.mask is not None and train.mask.shape == (len(train), H, W, 1)
    assert not train.mask[:, :, : W // 2].any() and train.mask[:, :, W // 2:].all()
    assert scene.splits["test"].mask[0].all()  # frame 0: no mask, every pixel
    rays = RayBatcher(train, scene.background)
    rays.sample(500, torch.Generator().manual_seed(0), False)
    assert ((rays.last_index % (H * W)) % W >= W // 2).all()
    # malformed masks name the frame and the field
    data["frames"][2]["mask_path"] = "masks/nope.png"
    (tmp_path / "transforms.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"frames\[2\]\.mask_path 'masks/nope.png': no such"):
        read_ngp(tmp_path)
    iio.imwrite(tmp_path / "masks" / "small.png", m[:2])
    data["frames"][2]["mask_path"] = "masks/small.png"
    (tmp_path / "transforms.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"frames\[2\]\.mask_path.*expected the same size"):
        read_ngp(tmp_path)
    data["frames"][2]["mask_path"] = 7
    (tmp_path / "transforms.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"frames\[2\]\.mask_path is 7"):
        read_ngp(tmp_path)


def test_ngp_intrinsics_distortion_scale_and_holdout(tmp_path):
    imgs, poses, _ = _ngp_scene(tmp_path, n=10, scale=0.5)
    scene = read_ngp(tmp_path)
    # 10 frames > 8: frames 0 and 8 held out
    assert scene.splits["test"].names == ["images/000.png", "images/008.png"]
    assert len(scene.train) == 8 and "images/001.png" in scene.train.names
    cams = scene.train.cameras
    torch.testing.assert_close(cams.fx, torch.full((8,), 9.0))
    torch.testing.assert_close(cams.fy, torch.full((8,), 10.0))
    torch.testing.assert_close(cams.cx, torch.full((8,), 4.2))
    torch.testing.assert_close(cams.cy, torch.full((8,), 2.9))
    torch.testing.assert_close(cams.distortion, torch.tensor([[0.1, -0.02, 0.003, -0.004]] * 8))
    train_idx = [i for i in range(10) if i % 8]
    expect = poses[train_idx, :3].copy()
    expect[:, :, 3] *= 0.5  # t * scale (+ offset - 0.5 = 0 with the default offset)
    torch.testing.assert_close(cams.c2w, torch.from_numpy(expect).float())
    torch.testing.assert_close(scene.train.images,
                               torch.from_numpy(imgs[train_idx] / 255.0).float())
    torch.testing.assert_close(scene.aabb, torch.tensor([[-2.0] * 3, [2.0] * 3]))
    assert scene.unbounded and scene.train.alpha is None


def test_ngp_offset_angle_fallback_per_frame_and_size_scaling(tmp_path):
    _, poses, data = _ngp_scene(tmp_path, n=3, aabb_scale=1, offset=[0.5, 0.7, 0.4])
    for k in ("fl_x", "fl_y", "cx", "cy"):
        data.pop(k)
    data.update(camera_angle_x=1.0, w=2 * W, h=2 * H)  # intrinsics given for a 2x larger image
    data["frames"][2]["fl_x"] = 30.0
    (tmp_path / "transforms.json").write_text(json.dumps(data))
    scene = read_ngp(tmp_path / "transforms.json")
    cams = scene.train.cameras
    f = 0.5 * 2 * W / math.tan(0.5) / 2
    torch.testing.assert_close(cams.fx, torch.tensor([f, f, 15.0]))
    torch.testing.assert_close(cams.fy, cams.fx)
    torch.testing.assert_close(cams.cx, torch.full((3,), W / 2))
    expect = poses[:, :3, 3] * 0.33 + np.array([0.0, 0.2, -0.1])
    torch.testing.assert_close(cams.c2w[:, :, 3], torch.from_numpy(expect).float())
    assert not scene.unbounded and "test" not in scene.splits
    torch.testing.assert_close(scene.aabb, torch.tensor([[-0.5] * 3, [0.5] * 3]))


def test_ngp_missing_image_is_skipped_with_a_warning(tmp_path):
    _ngp_scene(tmp_path, n=4)
    (tmp_path / "images" / "002.png").unlink()
    with pytest.warns(UserWarning, match=r"frames\[2\].*002\.png"):
        scene = read_ngp(tmp_path)
    assert scene.train.names == ["images/000.png", "images/001.png", "images/003.png"]
    for i in (0, 1, 3):
        (tmp_path / "images" / f"{i:03d}.png").unlink()
    with pytest.warns(UserWarning), pytest.raises(ValueError, match="none of the 4 frames"):
        read_ngp(tmp_path)


def test_ngp_errors(tmp_path):
    _ngp_scene(tmp_path, n=2)
    jp = tmp_path / "transforms.json"
    good = jp.read_text()
    _edit_json(jp, lambda d: d.pop("fl_x"))
    with pytest.raises(ValueError, match=r"transforms\.json: frames\[0\]: no 'fl_x' or "
                       "'camera_angle_x'"):
        read_ngp(tmp_path)
    jp.write_text(good)
    _edit_json(jp, lambda d: d["frames"][1].pop("transform_matrix"))
    with pytest.raises(ValueError, match=r"frames\[1\] has no 'transform_matrix'"):
        read_ngp(tmp_path)
    jp.write_text(good)
    _edit_json(jp, lambda d: d.update(w=7, h=7))
    with pytest.raises(ValueError, match=r"'w' x 'h' is 7x7 but the image is 8x6"):
        read_ngp(tmp_path)


# --------------------------------------------------------------------------------- LLFF


def _llff_scene(root: Path, n=10, folder="images", w=W, h=H):
    """poses_bounds.npy from OpenGL ring poses; hwf written for a 2x larger original image."""
    gl = _poses(n, radius=3.0, arc=0.6)  # forward-facing
    right, up, back, t = gl[:, :3, 0], gl[:, :3, 1], gl[:, :3, 2], gl[:, :3, 3]
    llff_rot = np.stack((-up, right, back), axis=2)  # columns [down, right, backwards]
    hwf = np.tile([2 * H, 2 * W, 14.0], (n, 1))[:, :, None]
    pose = np.concatenate((llff_rot, t[:, :, None], hwf), axis=2)  # (n, 3, 5)
    bounds = np.stack((np.linspace(2.0, 2.5, n), np.linspace(6.0, 8.0, n)), 1)
    np.save(root / "poses_bounds.npy", np.concatenate((pose.reshape(n, 15), bounds), 1))
    imgs = _images(n, channels=3, w=w, h=h, seed=5)
    for i in range(n):
        _write_png(root / folder / f"IMG_{i:04d}.png", imgs[i])
    return pose, bounds, imgs


def test_llff_conventions_rescale_recentre(tmp_path):
    pose, _, imgs = _llff_scene(tmp_path, n=10)
    scene = read_llff(tmp_path, hold_every=8)
    assert scene.unbounded
    assert scene.splits["test"].names == ["IMG_0000.png", "IMG_0008.png"]
    train_idx = [i for i in range(10) if i % 8]
    cams = scene.train.cameras
    torch.testing.assert_close(cams.fx, torch.full((8,), 7.0))  # hwf focal 14 at 2x the size
    torch.testing.assert_close(cams.cy, torch.full((8,), H / 2))
    torch.testing.assert_close(scene.train.images,
                               torch.from_numpy(imgs[train_idx] / 255.0).float())
    s = scene.meta["scale"]
    assert s == pytest.approx(1 / (0.75 * 2.0))
    assert scene.near == pytest.approx(0.9 * 2.0 * s)
    assert scene.far == pytest.approx(8.0 * s)
    avg = np.asarray(scene.meta["average_pose"])
    # recentred: the average of the read poses is the identity
    all_c2w = torch.cat((scene.train.cameras.c2w, scene.splits["test"].cameras.c2w)).double()
    assert all_c2w[:, :, 3].mean(0).abs().max() < 1e-5
    # a world point projects where LLFF's own model puts it: in the LLFF camera frame
    # (columns down, right, backwards) u = cx + f * right / -back, v = cy + f * down / -back
    rng = _rng(1)
    pts = rng.uniform(-0.5, 0.5, size=(5, 3))
    for k, i in enumerate(train_idx):
        rot, t, f = pose[i, :, :3], pose[i, :, 3], 14.0 / 2
        pc = (pts - t) @ rot  # (down, right, back)
        u = W / 2 + f * pc[:, 1] / -pc[:, 2]
        v = H / 2 + f * pc[:, 0] / -pc[:, 2]
        p_new = (np.linalg.inv(avg) @ np.c_[pts * s, np.ones(5)].T).T[:, :3]
        uv, depth = cams.project(torch.from_numpy(p_new).float(), k)
        torch.testing.assert_close(uv, torch.from_numpy(np.stack((u, v), 1)).float(),
                                   atol=1e-3, rtol=0)
        torch.testing.assert_close(depth, torch.from_numpy(-pc[:, 2] * s).float())
    # the aabb holds every camera centre
    centres = all_c2w[:, :, 3].float()
    assert (centres >= scene.aabb[0]).all() and (centres <= scene.aabb[1]).all()


def test_llff_downscale_uses_images_n(tmp_path):
    _llff_scene(tmp_path, n=3)
    _llff_scene(tmp_path, n=3, folder="images_2", w=W // 2, h=H // 2)
    scene = read_llff(tmp_path, downscale=2)
    assert "test" not in scene.splits
    cams = scene.train.cameras
    assert (cams.width, cams.height) == (W // 2, H // 2)
    torch.testing.assert_close(cams.fx, torch.full((3,), 3.5))
    assert scene.meta["images"].endswith("images_2")
    (tmp_path / "images_2" / "IMG_0001.png").unlink()
    (tmp_path / "images_2" / "IMG_0000.png").unlink()
    (tmp_path / "images_2" / "IMG_0002.png").unlink()
    (tmp_path / "images_2").rmdir()
    scene = read_llff(tmp_path, downscale=2)  # from images/, area-averaged
    assert scene.train.images.shape == (3, H // 2, W // 2, 3)
    torch.testing.assert_close(scene.train.cameras.fx, torch.full((3,), 3.5))


def test_llff_errors(tmp_path):
    _llff_scene(tmp_path, n=3)
    npy = tmp_path / "poses_bounds.npy"
    np.save(npy, np.zeros((3, 15)))
    with pytest.raises(ValueError, match=r"poses_bounds\.npy: array has shape \(3, 15\) "
                       r"\(expected \(N, 17\)"):
        read_llff(tmp_path)
    _llff_scene(tmp_path, n=3)
    (tmp_path / "images" / "IMG_0002.png").unlink()
    with pytest.raises(ValueError, match=r"2 images but .*poses_bounds\.npy has 3 poses"):
        read_llff(tmp_path)


# --------------------------------------------------------------------------------- COLMAP


def _rot_to_quat(r: np.ndarray) -> np.ndarray:
    """(w, x, y, z) of a rotation matrix (Shepperd's method)."""
    tr = np.trace(r)
    if tr > 0:
        s = 2 * math.sqrt(tr + 1)
        return np.array([s / 4, (r[2, 1] - r[1, 2]) / s, (r[0, 2] - r[2, 0]) / s,
                         (r[1, 0] - r[0, 1]) / s])
    i = int(np.argmax(np.diag(r)))
    j, k = (i + 1) % 3, (i + 2) % 3
    s = 2 * math.sqrt(1 + r[i, i] - r[j, j] - r[k, k])
    q = np.zeros(4)
    q[0] = (r[k, j] - r[j, k]) / s
    q[1 + i] = s / 4
    q[1 + j] = (r[j, i] + r[i, j]) / s
    q[1 + k] = (r[k, i] + r[i, k]) / s
    return q


def _opencv_w2c(eye, target):
    """World-to-camera (R, t) of an OpenCV camera at eye looking at target, world up +z:
    rows of R are the camera's x (right), y (down), z (forward) axes in world coordinates."""
    z = target - eye
    z = z / np.linalg.norm(z)
    x = np.cross(z, [0.0, 0.0, 1.0])
    x = x / np.linalg.norm(x)
    y = np.cross(z, x)
    r = np.stack((x, y, z))
    return r, -r @ eye


COLMAP_EYES = np.array([[5.0, 1.0, 1.0], [-1.0, 6.0, 0.5], [-4.0, -3.0, 2.0], [2.0, -5.0, -1.0]])
TARGET = np.array([0.3, -0.2, 0.1])


def _colmap_scene(root: Path, sub=("sparse", "0"), cameras=None, points=True, n=4):
    model = root.joinpath(*sub)
    model.mkdir(parents=True, exist_ok=True)
    cameras = cameras or [
        "1 PINHOLE 8 6 7.5 8.5 4.25 2.75",
        "2 OPENCV 8 6 7.0 7.2 3.9 3.1 0.05 -0.01 0.002 -0.003",
    ]
    (model / "cameras.txt").write_text("# Camera list\n" + "\n".join(cameras) + "\n")
    lines = ["# Image list with two lines of data per image:", "#   IMAGE_ID, ..."]
    imgs = _images(n, channels=3, seed=7)
    w2c = []
    for i in range(n):
        r, t = _opencv_w2c(COLMAP_EYES[i], TARGET)
        w2c.append((r, t))
        q = _rot_to_quat(r) * (-1 if i == 1 else 1)  # -q is the same rotation
        name = f"frame_{n - i:02d}.png"  # listed in reverse name order
        lines.append(f"{i + 1} {' '.join(f'{v:.17g}' for v in q)} "
                     f"{' '.join(f'{v:.17g}' for v in t)} "
                     f"{1 + i % 2} {name}")
        lines.append("" if i % 2 else "1.5 2.5 -1 3.0 4.0 7")
        _write_png(root / "images" / name, imgs[i])
    (model / "images.txt").write_text("\n".join(lines) + "\n")
    pts = _rng(2).normal(size=(200, 3))
    if points:
        (model / "points3D.txt").write_text(
            "# 3D point list\n"
            + "\n".join(f"{k} {p[0]} {p[1]} {p[2]} 10 20 30 0.5 1 2 3 4" for k, p in enumerate(pts))
            + "\n"
        )
    return w2c, pts, imgs


def _opencv_project(x, r, t, fx, fy, cx, cy, k=(0, 0, 0, 0)):
    pc = x @ r.T + t
    xn, yn = pc[:, 0] / pc[:, 2], pc[:, 1] / pc[:, 2]
    k1, k2, p1, p2 = k
    r2 = xn * xn + yn * yn
    rad = 1 + k1 * r2 + k2 * r2 * r2
    xd = xn * rad + 2 * p1 * xn * yn + p2 * (r2 + 2 * xn * xn)
    yd = yn * rad + p1 * (r2 + 2 * yn * yn) + 2 * p2 * xn * yn
    return np.stack((fx * xd + cx, fy * yd + cy), 1), pc[:, 2]


def test_colmap_projection_matches_colmap_pinhole_and_opencv(tmp_path):
    w2c, pts, imgs = _colmap_scene(tmp_path)
    scene = read_colmap(tmp_path, hold_every=0)
    split = scene.train
    # sorted by name: frame_01 (image 4), frame_02 (3), frame_03 (2), frame_04 (1)
    assert split.names == ["frame_01.png", "frame_02.png", "frame_03.png", "frame_04.png"]
    order = [3, 2, 1, 0]
    torch.testing.assert_close(split.images, torch.from_numpy(imgs[order] / 255.0).float())
    centre, s = np.asarray(scene.meta["centre"]), scene.meta["scale"]
    np.testing.assert_allclose(centre, COLMAP_EYES.mean(0), atol=1e-9)
    assert s == pytest.approx(1 / np.linalg.norm(COLMAP_EYES - COLMAP_EYES.mean(0), axis=1).max())
    cams = split.cameras
    intr = {1: (7.5, 8.5, 4.25, 2.75, (0, 0, 0, 0)),
            2: (7.0, 7.2, 3.9, 3.1, (0.05, -0.01, 0.002, -0.003))}
    world = np.vstack((TARGET, TARGET + _rng(3).uniform(-0.4, 0.4, size=(6, 3))))
    for k, i in enumerate(order):
        fx, fy, cx, cy, dist = intr[1 + i % 2]
        torch.testing.assert_close(cams.distortion[k], torch.tensor(dist, dtype=torch.float32))
        r, t = w2c[i]
        uv, z = _opencv_project(world, r, t, fx, fy, cx, cy, dist)
        uv_ours, depth = cams.project(torch.from_numpy((world - centre) * s).float(), k)
        torch.testing.assert_close(uv_ours, torch.from_numpy(uv).float(), atol=1e-4, rtol=0)
        torch.testing.assert_close(depth, torch.from_numpy(z * s).float())
        # the target is on the optical axis: principal point
        torch.testing.assert_close(uv_ours[0], torch.tensor([cx, cy]), atol=1e-4, rtol=0)
        # OpenGL c2w = OpenCV c2w with y, z flipped; camera centre normalised
        cv_c2w = torch.from_numpy(np.c_[r.T, ((-r.T @ t) - centre) * s]).float()
        torch.testing.assert_close(cams.c2w[k], opencv_to_opengl(cv_c2w), atol=1e-6, rtol=0)
    # cameras within the unit sphere, one on it
    radii = cams.c2w[:, :, 3].norm(dim=-1)
    assert radii.max().item() == pytest.approx(1.0, abs=1e-6)
    # aabb: 2nd-98th percentile box of the normalised points
    box = np.percentile((pts - centre) * s, [2, 98], axis=0)
    torch.testing.assert_close(scene.aabb, torch.from_numpy(box).float())
    assert scene.unbounded


def test_colmap_model_locations_and_downscale(tmp_path):
    _colmap_scene(tmp_path, sub=(), points=False, n=4)
    with pytest.warns(UserWarning, match="estimated from the cameras"):
        scene = read_colmap(tmp_path, downscale=2, hold_every=2)
    assert scene.splits["test"].names == ["frame_01.png", "frame_03.png"]
    cams = scene.train.cameras
    assert (cams.width, cams.height) == (W // 2, H // 2)
    torch.testing.assert_close(cams.fx, torch.tensor([7.5, 7.5]) / 2)  # frame_02, frame_04
    torch.testing.assert_close(cams.cy, torch.tensor([2.75, 2.75]) / 2)
    torch.testing.assert_close(scene.splits["test"].cameras.fx, torch.tensor([7.0, 7.0]) / 2)


def _iou(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    inter = np.clip(np.minimum(a[1], b[1]) - np.maximum(a[0], b[0]), 0, None).prod()
    return inter / ((a[1] - a[0]).prod() + (b[1] - b[0]).prod() - inter)


def test_colmap_without_points_estimates_the_bounds_from_the_cameras(tmp_path):
    """Issue 21 A8: without points3D.txt the box was the cameras' own extent (a ring around
    the object: mostly empty space, training crawled). Cameras looking inward now give the
    sphere around the point nearest their optical axes, close to the box of the points."""
    _colmap_scene(tmp_path / "pts", points=True)
    _colmap_scene(tmp_path / "none", points=False)
    with_points = read_colmap(tmp_path / "pts")
    assert with_points.meta["notes"] == []
    with pytest.warns(UserWarning, match=r"sparse.0: scene bounds estimated from the cameras "
                      r"\(no points3D\.txt or \.bin\)"):
        estimated = read_colmap(tmp_path / "none")
    assert "optical axis" in estimated.meta["notes"][0]
    cams = torch.cat([s.cameras.c2w for s in estimated.splits.values()])[:, :, 3]
    camera_box = torch.stack((cams.min(0).values, cams.max(0).values))
    assert _iou(estimated.aabb, with_points.aabb) > 0.6
    assert _iou(estimated.aabb, with_points.aabb) > 2 * _iou(camera_box, with_points.aabb)
    # the object's centre (the cameras' target) is the box's centre
    target = (TARGET - np.asarray(estimated.meta["centre"])) * estimated.meta["scale"]
    np.testing.assert_allclose(estimated.aabb.mean(0).numpy(), target, atol=1e-4)


def test_bounds_from_cameras_forward_facing_falls_back_to_the_camera_box():
    from fields.data.colmap import bounds_from_cameras

    centres = np.array([[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [1, 1, 0.2]])
    axes = np.tile([0.0, 0.0, 1.0], (4, 1))  # parallel axes: forward-facing
    box, note = bounds_from_cameras(centres, axes, np.full(4, 0.4))
    assert "forward-facing" in note
    np.testing.assert_allclose(box[:, :2], [[0, 0], [1, 1]])
    # looking outward from a ring (a panorama): no common centre in front of them either
    a = np.linspace(0, 2 * np.pi, 8, endpoint=False)
    ring = np.stack((np.cos(a), np.sin(a), np.zeros(8)), 1)
    box, note = bounds_from_cameras(3 * ring, ring, np.full(8, 0.4))
    assert "forward-facing" in note
    # inward: the centre, radius = distance x sin(half fov)
    box, note = bounds_from_cameras(3 * ring + 1.0, -ring, np.full(8, 0.4))
    np.testing.assert_allclose(box, [[1 - 3 * np.sin(0.4)] * 3, [1 + 3 * np.sin(0.4)] * 3],
                               atol=1e-9)


def test_colmap_errors(tmp_path):
    _colmap_scene(tmp_path, cameras=["1 PINHOLE 8 6 7 7 4 3", "2 FULL_OPENCV 8 6 " + "1 " * 12])
    with pytest.raises(ValueError, match=r"cameras\.txt:3: camera model 'FULL_OPENCV' is not "
                       "supported"):
        read_colmap(tmp_path)
    _colmap_scene(tmp_path, cameras=["1 PINHOLE 8 6 7 7 4", "2 PINHOLE 8 6 7 7 4 3"])
    with pytest.raises(ValueError, match=r"cameras\.txt:2: PINHOLE has 3 parameters \(expected 4"):
        read_colmap(tmp_path)
    _colmap_scene(tmp_path, cameras=["1 PINHOLE 8 6 7 7 4 3", "2 PINHOLE 10 6 7 7 4 3"])
    with pytest.raises(ValueError, match=r"cameras\.txt: the images use cameras of sizes"):
        read_colmap(tmp_path)
    _colmap_scene(tmp_path, cameras=["1 PINHOLE 16 12 7 7 4 3", "2 PINHOLE 16 12 7 7 4 3"])
    with pytest.raises(ValueError, match=r"image is 8x6 but its camera .* is 16x12"):
        read_colmap(tmp_path)
    _colmap_scene(tmp_path)
    images_txt = tmp_path / "sparse" / "0" / "images.txt"
    lines = images_txt.read_text().split("\n")
    lines[2] = "1 0.5 0.5 x 0.5 1 2 3 1 frame_04.png"
    images_txt.write_text("\n".join(lines))
    with pytest.raises(ValueError, match=r"images\.txt:3: QY is 'x' \(expected a number; "
                       "IMAGE_ID QW QX QY QZ"):
        read_colmap(tmp_path)
    _colmap_scene(tmp_path)
    (tmp_path / "images" / "frame_02.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"frame_02\.png: no such image \(listed in "
                       r".*images\.txt:"):
        read_colmap(tmp_path)


_MODEL_IDS = {"SIMPLE_PINHOLE": 0, "PINHOLE": 1, "SIMPLE_RADIAL": 2, "RADIAL": 3, "OPENCV": 4,
              "OPENCV_FISHEYE": 5}


def _text_to_binary(model: Path, out: Path, track=(1, 0)) -> None:
    """Writes COLMAP's binary model (cameras.bin, images.bin, points3D.bin) of a text model,
    byte for byte as COLMAP lays it out (little-endian; see `_colmap_scene`)."""
    out.mkdir(parents=True, exist_ok=True)
    cams = [ln.split() for ln in (model / "cameras.txt").read_text().splitlines()
            if ln.strip() and not ln.startswith("#")]
    b = struct.pack("<Q", len(cams))
    for c in cams:
        b += struct.pack("<iiQQ", int(c[0]), _MODEL_IDS[c[1]], int(c[2]), int(c[3]))
        b += struct.pack(f"<{len(c) - 4}d", *map(float, c[4:]))
    (out / "cameras.bin").write_bytes(b)
    lines = [ln for ln in (model / "images.txt").read_text().split("\n")
             if not ln.startswith("#")]
    entries = [ln.split() for ln in lines[0::2] if ln.strip()]
    b = struct.pack("<Q", len(entries))
    for k, e in enumerate(entries):
        b += struct.pack("<i7di", int(e[0]), *map(float, e[1:8]), int(e[8]))
        b += " ".join(e[9:]).encode() + b"\0"
        pts = np.array(lines[2 * k + 1].split(), dtype=np.float64).reshape(-1, 3)
        b += struct.pack("<Q", len(pts))
        for x, y, pid in pts:
            b += struct.pack("<ddq", x, y, int(pid))
    (out / "images.bin").write_bytes(b)
    if (model / "points3D.txt").is_file():
        pts = [ln.split() for ln in (model / "points3D.txt").read_text().splitlines()
               if ln.strip() and not ln.startswith("#")]
        b = struct.pack("<Q", len(pts))
        for p in pts:
            b += struct.pack("<Q3d3BdQ", int(p[0]), *map(float, p[1:4]), *map(int, p[4:7]),
                             float(p[7]), 1)
            b += struct.pack("<ii", *track)
        (out / "points3D.bin").write_bytes(b)


def _binary_scene(root: Path, **kw):
    out = _colmap_scene(root, **kw)
    text = root / "sparse" / "0"
    _text_to_binary(text, root / "bin")
    for f in text.iterdir():
        f.unlink()
    for f in (root / "bin").iterdir():
        f.rename(text / f.name)
    (root / "bin").rmdir()
    return out


def _same_scene(a: SceneData, b: SceneData) -> None:
    assert a.splits.keys() == b.splits.keys()
    for k in a.splits:
        sa, sb = a.splits[k], b.splits[k]
        assert sa.names == sb.names
        torch.testing.assert_close(sa.images, sb.images)
        for f, v in sa.cameras.to_dict().items():
            torch.testing.assert_close(v, sb.cameras.to_dict()[f]) if torch.is_tensor(v) \
                else (v == sb.cameras.to_dict()[f]) or pytest.fail(f)
    torch.testing.assert_close(a.aabb, b.aabb)
    assert a.meta["scale"] == b.meta["scale"] and a.meta["centre"] == b.meta["centre"]


def test_colmap_binary_model_reads_as_its_text_model(tmp_path):
    _colmap_scene(tmp_path / "text")
    _binary_scene(tmp_path / "bin")
    assert sorted(p.name for p in (tmp_path / "bin" / "sparse" / "0").iterdir()) == [
        "cameras.bin", "images.bin", "points3D.bin"]
    _same_scene(read_colmap(tmp_path / "text"), read_colmap(tmp_path / "bin"))
    assert format_of(tmp_path / "bin") == "colmap"


def test_colmap_binary_as_pycolmap_writes_it(tmp_path):
    """COLMAP's own writer (pycolmap, in a process of its own: it must not share one with
    PIL) turns the text model into a binary one (with rigs.bin and frames.bin beside it, as
    COLMAP 3.12+ writes them); ours reads the same scene from both."""
    pytest.importorskip("pycolmap")
    _colmap_scene(tmp_path / "text")
    model = tmp_path / "text" / "sparse" / "0"
    # tracks of the fixture's points name 2D points that do not exist: COLMAP checks them
    pts = model / "points3D.txt"
    pts.write_text("\n".join(" ".join(ln.split()[:8]) for ln in pts.read_text().splitlines()))
    out = tmp_path / "bin" / "sparse" / "0"
    out.mkdir(parents=True)
    shutil.copytree(tmp_path / "text" / "images", tmp_path / "bin" / "images")
    code = ("import pycolmap, sys; r = pycolmap.Reconstruction(); r.read_text(sys.argv[1]); "
            "r.write_binary(sys.argv[2])")
    subprocess.run([sys.executable, "-c", code, str(model), str(out)], check=True)
    assert {"cameras.bin", "images.bin", "points3D.bin"} <= {p.name for p in out.iterdir()}
    _same_scene(read_colmap(tmp_path / "text"), read_colmap(tmp_path / "bin"))


def _edit_bin(path: Path, offset: int, data: bytes | None = None, cut: int | None = None):
    b = bytearray(path.read_bytes())
    if data is not None:
        b[offset:offset + len(data)] = data
    if cut is not None:
        b = b[:cut]
    path.write_bytes(bytes(b))


def test_colmap_binary_errors_name_file_entry_and_field(tmp_path):
    model = tmp_path / "sparse" / "0"
    cases = [
        ("cameras.bin", 4 + 8, struct.pack("<i", 5),  # camera 0's model id: OPENCV_FISHEYE
         r"cameras\.bin: camera 0 \(CAMERA_ID 1\): camera model OPENCV_FISHEYE is not supported"),
        ("cameras.bin", 4 + 8, struct.pack("<i", 99),
         r"cameras\.bin: camera 0 \(CAMERA_ID 1\): MODEL is 99 \(expected a COLMAP camera model"),
        ("cameras.bin", 8 + 24, struct.pack("<d", -3.0),
         r"camera 0 \(CAMERA_ID 1\): fx is -3 \(expected a focal length > 0"),
        ("cameras.bin", 8 + 24 + 8, struct.pack("<d", math.nan),
         r"camera 0 \(CAMERA_ID 1\): fy is nan \(expected a finite number\)"),
        ("cameras.bin", 0, struct.pack("<Q", 1 << 40),
         r"cameras\.bin: the number of cameras is 1099511627776, but the \d+ bytes left hold"),
        ("images.bin", 8 + 4, struct.pack("<d", math.inf),
         r"images\.bin: image 0 \(IMAGE_ID 1, frame_04\.png\): QW is inf"),
        ("images.bin", 8 + 4, struct.pack("<4d", 0, 0, 0, 0),
         r"image 0 \(IMAGE_ID 1, frame_04\.png\): zero quaternion"),
        ("images.bin", 8 + 4 + 56, struct.pack("<i", 9),
         r"images\.bin: image 0 \(IMAGE_ID 1, frame_04\.png\): CAMERA_ID 9 is not in "
         r".*cameras\.bin"),
    ]
    for name, offset, data, message in cases:
        _binary_scene(tmp_path)
        _edit_bin(model / name, offset, data)
        with pytest.raises(ValueError, match=message):
            read_colmap(tmp_path)
    for name, what in (("cameras.bin", "camera 1"), ("images.bin", "image 3"),
                       ("points3D.bin", "point 199")):
        _binary_scene(tmp_path)
        _edit_bin(model / name, 0, cut=(model / name).stat().st_size - 3)
        with pytest.raises(ValueError, match=rf"{re.escape(name)}: truncated: .*{what}"):
            read_colmap(tmp_path)
    _binary_scene(tmp_path)
    (model / "images.bin").write_bytes((model / "images.bin").read_bytes() + b"\0\0")
    with pytest.raises(ValueError, match=r"images\.bin: 2 bytes after the last entry"):
        read_colmap(tmp_path)
    _binary_scene(tmp_path)
    (model / "images.bin").unlink()
    with pytest.raises(FileNotFoundError, match=r"cameras\.bin: no images\.bin beside it"):
        read_colmap(tmp_path)


# --------------------------------------------------------------------------------- detection


def test_format_detection_and_load_scene(tmp_path):
    blender, ngp, llff, colmap, flat = (tmp_path / n for n in ("b", "n", "l", "c", "f"))
    for p in (blender, ngp, llff, colmap, flat):
        p.mkdir()
    _blender_scene(blender, n=2)
    (blender / "transforms.json").write_text("{}")  # Blender wins over a stray transforms.json
    _ngp_scene(ngp, n=2)
    _llff_scene(llff, n=2)
    _colmap_scene(colmap, n=2)
    _colmap_scene(flat, sub=(), n=2)
    expect = {blender: "blender", ngp: "ngp", llff: "llff", colmap: "colmap", flat: "colmap"}
    for p, fmt in expect.items():
        assert format_of(p) == fmt
        scene = load_scene(p)
        assert scene.meta["format"] == fmt and len(scene.train) == 2
    assert format_of(ngp / "transforms.json") == "ngp"
    assert load_scene(blender, downscale=2).train.cameras.width == W // 2
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match=r"empty: unknown scene format \(looked for "
                       r"transforms_train\.json .*poses_bounds\.npy.*cameras\.txt"):
        load_scene(empty)
    with pytest.raises(FileNotFoundError):
        format_of(tmp_path / "missing")
    # what a new user has: photos, or a video (issue 22): the message names the next command
    _write_png(tmp_path / "photos" / "IMG_1.JPG", _images(1, channels=3)[0])
    with pytest.raises(ValueError, match=r"photos: photos without cameras .* fields process "
                                         r"images .*photos --output SCENE"):
        load_scene(tmp_path / "photos")
    (tmp_path / "clip.MP4").write_bytes(b"")
    with pytest.raises(ValueError, match=r"clip\.MP4: a video, not a scene: .* fields process "
                                         r"video"):
        load_scene(tmp_path / "clip.MP4")


# -- NeuS / IDR (cameras_sphere.npz) --


def write_neus_scene(folder, scene, scale=2.0, offset=(0.3, -0.2, 0.1), masks=True, sign=1.0):
    """A NeuS-layout copy of `scene`'s train split: world_mat = K [R | t] of each camera in
    world units (K in OpenCV's convention: pixel centres at integers; the whole matrix times
    `sign`, a projection being defined up to scale), scale_mat mapping the unit sphere to
    x_world = scale * x + offset."""
    from fields.data.images import write_image
    from fields.render.cameras import opencv_to_opengl

    split = scene.train
    cams = split.cameras
    (folder / "image").mkdir(parents=True)
    (folder / "mask").mkdir()
    mats = {}
    off = np.array(offset)
    for i in range(len(cams)):
        c2w_cv = opencv_to_opengl(cams.c2w[i : i + 1])[0].double().numpy()
        # the scene's world is the normalised one: world units = scale * normalised + offset
        r_c2w, centre = c2w_cv[:, :3], c2w_cv[:, 3] * scale + off
        r = r_c2w.T
        t = -r @ centre
        k = np.eye(4)
        k[0, 0], k[1, 1] = cams.fx[i], cams.fy[i]
        k[0, 2], k[1, 2] = cams.cx[i] - 0.5, cams.cy[i] - 0.5
        w2c = np.eye(4)
        w2c[:3, :3], w2c[:3, 3] = r, t
        mats[f"world_mat_{i}"] = sign * (k @ w2c)
        s = np.diag([scale, scale, scale, 1.0])
        s[:3, 3] = off
        mats[f"scale_mat_{i}"] = s
        write_image(folder / "image" / f"{i:03d}.png", split.images[i])
        if masks:
            write_image(folder / "mask" / f"{i:03d}.png", split.alpha[i].expand(-1, -1, 3))
    np.savez(folder / "cameras_sphere.npz", **mats)


def test_neus_reader_recovers_the_cameras(tmp_path):
    from fields.scenes.tabletop import SceneSpec, ensure_scene

    scene = load_scene(ensure_scene(SceneSpec(resolution=24, n_train=10, n_val=1, n_test=1),
                                    root=tmp_path / "scenes"))
    write_neus_scene(tmp_path / "dtu", scene)
    assert format_of(tmp_path / "dtu") == "neus"
    got = load_scene(tmp_path / "dtu", hold_out_every=None)
    want = scene.train.cameras
    cams = got.train.cameras
    torch.testing.assert_close(cams.c2w, want.c2w, atol=1e-4, rtol=0)
    for a, b in ((cams.fx, want.fx), (cams.fy, want.fy), (cams.cx, want.cx), (cams.cy, want.cy)):
        torch.testing.assert_close(a, b, atol=1e-3, rtol=0)
    assert got.train.alpha is not None and got.train.alpha.shape[-1] == 1
    # the images come composited on black by their masks
    mask = (scene.train.alpha > 0.5).float()
    torch.testing.assert_close(got.train.images, scene.train.images * mask, atol=1 / 255,
                               rtol=0)
    # a projection matrix with a negative scale is the same camera
    write_neus_scene(tmp_path / "neg", scene, sign=-3.0)
    neg = load_scene(tmp_path / "neg", hold_out_every=None).train.cameras
    torch.testing.assert_close(neg.c2w, want.c2w, atol=1e-4, rtol=0)
    torch.testing.assert_close(neg.fx, want.fx, atol=1e-3, rtol=0)
    # downscaled by 2: intrinsics halve
    half = load_scene(tmp_path / "dtu", hold_out_every=None, downscale=2).train.cameras
    assert (half.width, half.height) == (12, 12)
    torch.testing.assert_close(half.fy, want.fy / 2, atol=1e-3, rtol=0)
    torch.testing.assert_close(half.cx, want.cx / 2, atol=1e-3, rtol=0)
    # the default hold-out: every 8th image is a test image
    held = load_scene(tmp_path / "dtu")
    assert len(held.splits["test"]) == 2 and len(held.train) == 8


def test_neus_reader_errors_name_the_file_and_field(tmp_path):
    from fields.scenes.tabletop import SceneSpec, ensure_scene

    scene = load_scene(ensure_scene(SceneSpec(resolution=16, n_train=4, n_val=1, n_test=1),
                                    root=tmp_path / "scenes"))
    write_neus_scene(tmp_path / "s", scene)
    npz = dict(np.load(tmp_path / "s" / "cameras_sphere.npz"))
    del npz["scale_mat_2"]
    np.savez(tmp_path / "s" / "cameras_sphere.npz", **npz)
    with pytest.raises(ValueError, match=r"cameras_sphere\.npz: field 'scale_mat_2'"):
        load_scene(tmp_path / "s")
    npz["scale_mat_2"] = np.eye(3)
    np.savez(tmp_path / "s" / "cameras_sphere.npz", **npz)
    with pytest.raises(ValueError, match=r"'scale_mat_2' must be a finite 4x4"):
        load_scene(tmp_path / "s")
    npz["scale_mat_2"] = np.eye(4)
    np.savez(tmp_path / "s" / "cameras_sphere.npz", **npz)
    (tmp_path / "s" / "mask" / "003.png").unlink()
    with pytest.raises(ValueError, match="3 masks for 4 images"):
        load_scene(tmp_path / "s")
    (tmp_path / "s" / "cameras_sphere.npz").write_bytes(b"junk")
    with pytest.raises(ValueError, match=r"cameras_sphere\.npz: not a readable"):
        load_scene(tmp_path / "s")


# -- issue 21: readers that never crash (each case crashed or was accepted before) --


def test_zero_or_non_rotation_poses_are_refused_naming_file_frame_and_field(tmp_path):
    """A1: an all-zero camera matrix was accepted and made NaN rays."""
    _blender_scene(tmp_path / "b", n=3)
    jp = tmp_path / "b" / "transforms_train.json"
    _edit_json(jp, lambda d: d["frames"][1].update(transform_matrix=np.zeros((4, 4)).tolist()))
    with pytest.raises(ValueError, match=r"transforms_train\.json: frames\[1\]\.transform_matrix: "
                       r"the rotation part .* is singular"):
        read_blender(tmp_path / "b")
    shear = np.eye(4)
    shear[0, 1] = 0.5
    _edit_json(jp, lambda d: d["frames"][2].update(transform_matrix=shear.tolist()))
    _edit_json(jp, lambda d: d["frames"][1].update(transform_matrix=np.eye(4).tolist()))
    with pytest.raises(ValueError, match=r"frames\[2\]\.transform_matrix: .* is not a rotation"):
        read_blender(tmp_path / "b")

    _, poses, _ = _ngp_scene(tmp_path / "n", n=3)
    jp = tmp_path / "n" / "transforms.json"
    _edit_json(jp, lambda d: d["frames"][0].update(transform_matrix=np.zeros((4, 4)).tolist()))
    with pytest.raises(ValueError, match=r"transforms\.json: frames\[0\]\.transform_matrix"):
        read_ngp(tmp_path / "n")
    # a uniformly scaled rotation (some exporters write one) is normalised, not refused
    scaled = poses[0].copy()
    scaled[:3, :3] *= 2.0
    _edit_json(jp, lambda d: d["frames"][0].update(transform_matrix=scaled.tolist()))
    cams = read_ngp(tmp_path / "n").train.cameras
    rot = cams.c2w[0, :, :3].double()
    torch.testing.assert_close(rot.T @ rot, torch.eye(3, dtype=torch.float64), atol=1e-6, rtol=0)
    torch.testing.assert_close(cams.c2w[0, :, :3], torch.from_numpy(poses[0, :3, :3]).float())
    _, ray_d = cams.rays(torch.zeros(2, dtype=torch.long), torch.ones(2), torch.ones(2))
    assert torch.isfinite(ray_d).all()

    (tmp_path / "l").mkdir()
    _llff_scene(tmp_path / "l", n=3)
    arr = np.load(tmp_path / "l" / "poses_bounds.npy")
    arr[2, [0, 1, 2, 5, 6, 7, 10, 11, 12]] = 0.0
    np.save(tmp_path / "l" / "poses_bounds.npy", arr)
    with pytest.raises(ValueError, match=r"poses_bounds\.npy: row 2: rotation .* singular"):
        read_llff(tmp_path / "l")


def test_principal_point_and_distortion_out_of_range_are_refused(tmp_path):
    """A2: a principal point far off the image and huge distortion were accepted."""
    _ngp_scene(tmp_path, n=2)
    jp = tmp_path / "transforms.json"
    good = jp.read_text()
    _edit_json(jp, lambda d: d.update(cx=1000.0))
    with pytest.raises(ValueError, match=r"transforms\.json: frames\[0\]: principal point 'cx' is "
                       r"1000 pixels, outside \[-0\.5 W, 1\.5 W\] = \[-4, 12\]"):
        read_ngp(tmp_path)
    jp.write_text(good)
    _edit_json(jp, lambda d: d["frames"][1].update(cy=-40.0))
    with pytest.raises(ValueError, match=r"frames\[1\]: principal point 'cy'"):
        read_ngp(tmp_path)
    jp.write_text(good)
    _edit_json(jp, lambda d: d.update(k1=-1000.0))
    with pytest.raises(ValueError, match=r"frames\[0\]: radial distortion 'k1' = -1000.*not "
                       r"monotonic.*1 \+ 3 k1 r\^2 \+ 5 k2 r\^4 must stay > 0"):
        read_ngp(tmp_path)
    jp.write_text(good)
    _edit_json(jp, lambda d: d.update(k1=1e6))
    with pytest.raises(ValueError, match=r"frames\[0\]: radial distortion 'k1' = 1e\+06, 'k2' = "
                       r"-0\.02 scales radii by .* must stay within \[1/10, 10\]"):
        read_ngp(tmp_path)
    jp.write_text(good)
    _edit_json(jp, lambda d: d.update(p1=50.0))
    with pytest.raises(ValueError, match=r"frames\[0\]: distortion .* folds the image"):
        read_ngp(tmp_path)
    _colmap_scene(tmp_path / "c", cameras=["1 PINHOLE 8 6 7 7 4 3",
                                           "2 OPENCV 8 6 7 7 4 3 -60 0 0 0"])
    with pytest.raises(ValueError, match=r"cameras\.txt:3 \(camera 2 of frame_0\d\.png\): "
                       "radial distortion"):
        read_colmap(tmp_path / "c")
    _colmap_scene(tmp_path / "c", cameras=["1 PINHOLE 8 6 7 7 4 300", "2 PINHOLE 8 6 7 7 4 3"])
    with pytest.raises(ValueError, match=r"cameras\.txt:2 .*principal point cy is 300"):
        read_colmap(tmp_path / "c")


@pytest.mark.parametrize(("edit", "match"), [
    (lambda d: d.update(offset="abc"),
     r"transforms\.json: 'offset' is \"abc\" \(strings, not numbers; expected 3 finite numbers"),
    (lambda d: d.update(offset=[1, 2]), r"'offset' is \[1, 2\] \(expected 3 finite numbers"),
    (lambda d: d.update(scale="0.5"),
     r"transforms\.json: 'scale' is \"0\.5\" of type string \(expected a number"),
    (lambda d: d.update(aabb_scale=None), r"'aabb_scale' is null of type null"),
    (lambda d: d.update(fl_x=True), r"frames\[0\]: 'fl_x' is true of type boolean"),
    (lambda d: d.update(w="8"), r"frames\[0\]: 'w' is \"8\" of type string"),
    (lambda d: d["frames"][1].update(k1=[0.1]), r"frames\[1\]: 'k1' is \[0\.1\] of type array"),
    (lambda d: d.update(scale=10**400), r"'scale' is 1000.* \(expected a finite number"),
    (lambda d: d["frames"][0].update(transform_matrix=[[1, 0, 0, 0]] * 3 + [["0", 0, 0, 1]]),
     r"frames\[0\]\.transform_matrix is .* \(strings, not numbers; expected a 4x4"),
    (lambda d: d["frames"][0].update(transform_matrix=[[1, 0, 0], [0, 1]]),
     r"frames\[0\]\.transform_matrix is .* \(not a rectangular array of numbers"),
])
def test_ngp_wrong_types_name_file_field_and_expected_type(tmp_path, edit, match):
    """A3: `"offset": "abc"` gave numpy's "could not convert string to float" alone."""
    _ngp_scene(tmp_path, n=2)
    _edit_json(tmp_path / "transforms.json", edit)
    with pytest.raises(ValueError, match=match):
        read_ngp(tmp_path)


def test_blender_wrong_types_name_file_and_field(tmp_path):
    _blender_scene(tmp_path, n=2)
    jp = tmp_path / "transforms_train.json"
    _edit_json(jp, lambda d: d.update(camera_angle_x="0.9"))
    with pytest.raises(ValueError, match=r"transforms_train\.json: 'camera_angle_x' is \"0\.9\" "
                       r"of type string \(expected a number"):
        read_blender(tmp_path)
    jp.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ValueError, match=r"transforms_train\.json: not valid json"):
        read_blender(tmp_path)


def test_llff_text_file_is_not_a_npy_array(tmp_path):
    """A4: a text file named poses_bounds.npy gave numpy's message about pickles."""
    _llff_scene(tmp_path, n=3)
    npy = tmp_path / "poses_bounds.npy"
    npy.write_text("1 2 3\n4 5 6\n")
    with pytest.raises(ValueError, match=r"poses_bounds\.npy: not a \.npy array \(.*expected "
                       r"\(N, 17\): an N x 17 float array"):
        read_llff(tmp_path)
    np.savez(npy.with_suffix(".npz"), a=np.zeros(3))
    npy.write_bytes(npy.with_suffix(".npz").read_bytes())
    with pytest.raises(ValueError, match=r"poses_bounds\.npy: not a \.npy array \(an \.npz"):
        read_llff(tmp_path)
    np.save(npy, np.array([["a"] * 17] * 3))
    with pytest.raises(ValueError, match=r"poses_bounds\.npy: array of type <U1"):
        read_llff(tmp_path)
    arr = np.ones((3, 17))
    arr[1, 16] = np.nan
    np.save(npy, arr)
    with pytest.raises(ValueError, match=r"poses_bounds\.npy: row 1 has non-finite values "
                       r"\(1 1 .* nan;"):
        read_llff(tmp_path)


def test_downscale_below_one_pixel_is_an_error_naming_the_source(tmp_path):
    """A7: --downscale 1000 made 1-pixel images out of anything; tiny but >= 1 px is fine."""
    _blender_scene(tmp_path / "b", n=2)
    with pytest.raises(ValueError, match=r"transforms_train\.json: --downscale 1000 would shrink "
                       r"the 8x6 images below one pixel \(expected --downscale <= 6"):
        read_blender(tmp_path / "b", downscale=1000)
    assert read_blender(tmp_path / "b", downscale=6).train.images.shape == (2, 1, 1, 3)
    _ngp_scene(tmp_path / "n", n=2)
    with pytest.raises(ValueError, match=r"transforms\.json: --downscale 7"):
        read_ngp(tmp_path / "n", downscale=7)
    (tmp_path / "l").mkdir()
    _llff_scene(tmp_path / "l", n=2)
    with pytest.raises(ValueError, match=r"images: --downscale 1000"):
        read_llff(tmp_path / "l", downscale=1000)
    _colmap_scene(tmp_path / "c", n=2)
    with pytest.raises(ValueError, match=r"images\.txt: --downscale 1000"):
        read_colmap(tmp_path / "c", downscale=1000)
    with pytest.raises(ValueError, match=r"--downscale must be an integer >= 1, got 'x'"):
        read_colmap(tmp_path / "c", downscale="x")


def test_neus_downscale_and_bad_matrices_name_file_and_field(tmp_path):
    write_neus_scene(tmp_path / "s", _scene_for_writing(n=2))
    with pytest.raises(ValueError, match=r"image: --downscale 100 would shrink the 8x6 images "
                       r"below one pixel \(expected --downscale <= 6"):
        load_scene(tmp_path / "s", downscale=100)
    assert load_scene(tmp_path / "s", downscale=6).train.images.shape == (2, 1, 1, 3)
    npz_path = tmp_path / "s" / "cameras_sphere.npz"
    npz = dict(np.load(npz_path))
    npz["world_mat_1"] = np.zeros((4, 4))
    np.savez(npz_path, **npz)
    with pytest.raises(ValueError, match=r"cameras_sphere\.npz: world_mat_1 @ scale_mat_1 is "
                       "singular"):
        load_scene(tmp_path / "s")
    npz["world_mat_1"] = np.full((4, 4), "a")
    np.savez(npz_path, **npz)
    with pytest.raises(ValueError, match=r"cameras_sphere\.npz: field 'world_mat_1' has type"):
        load_scene(tmp_path / "s")
    np.save(npz_path.with_suffix(".npy"), np.eye(4))
    npz_path.write_bytes(npz_path.with_suffix(".npy").read_bytes())
    with pytest.raises(ValueError, match=r"cameras_sphere\.npz: not an \.npz archive"):
        load_scene(tmp_path / "s")


def test_colmap_wrong_types_name_file_line_and_field(tmp_path):
    """A3 for COLMAP: each bad token is named by its field, with the line's layout."""
    _colmap_scene(tmp_path, cameras=["1 PINHOLE 8 6 abc 7 4 3", "2 PINHOLE 8 6 7 7 4 3"])
    with pytest.raises(ValueError, match=r"cameras\.txt:2: fx is 'abc' \(expected a number; "
                       "PINHOLE parameters fx fy cx cy"):
        read_colmap(tmp_path)
    _colmap_scene(tmp_path, cameras=["1 PINHOLE 8 6.5 7 7 4 3", "2 PINHOLE 8 6 7 7 4 3"])
    with pytest.raises(ValueError, match=r"cameras\.txt:2: HEIGHT is '6\.5' \(expected an "
                       "integer; CAMERA_ID MODEL WIDTH HEIGHT"):
        read_colmap(tmp_path)
    _colmap_scene(tmp_path, cameras=["1 SIMPLE_RADIAL 8 6 -7 4 3 0", "2 PINHOLE 8 6 7 7 4 3"])
    with pytest.raises(ValueError, match=r"cameras\.txt:2: f is -7 \(expected a focal length"):
        read_colmap(tmp_path)
    _colmap_scene(tmp_path, cameras=["1 PINHOLE 8 6 7 inf 4 3", "2 PINHOLE 8 6 7 7 4 3"])
    with pytest.raises(ValueError, match=r"cameras\.txt:2: fy is inf \(expected a finite"):
        read_colmap(tmp_path)
    _colmap_scene(tmp_path)
    points = tmp_path / "sparse" / "0" / "points3D.txt"
    points.write_text("1 0.5 nan 2 10 20 30 0.5\n")
    with pytest.raises(ValueError, match=r"points3D\.txt:1: Y is nan \(expected a finite number"):
        read_colmap(tmp_path)


@pytest.mark.parametrize(("w", "h", "f", "dist"), [
    (1920, 1080, 1000, (-0.25, 0.07, 0.0, 0.0)),  # action camera, barrel
    (1920, 1080, 800, (-0.3, 0.09, 0.001, -0.001)),  # wider, with tangential terms
    (4000, 3000, 2800, (0.1, -0.2, 0.0, 0.0)),  # phone, mild pincushion
    (640, 480, 300, (0.5, 0.0, 0.0, 0.0)),
])
def test_camera_checks_accept_real_lenses(w, h, f, dist):
    """The distortion rules refuse what is no lens, not strong real ones."""
    from fields.render.cameras import check_cameras

    cams = Cameras(look_at(torch.tensor([[4.0, 0, 1]]), torch.zeros(3)), f, f, 0.5 * w + 3,
                   0.5 * h - 2, w, h, torch.tensor(dist))
    check_cameras(cams, ["cameras.txt:2"])


def test_checked_rotations_orthonormalise_rounded_matrices():
    from fields.render.cameras import checked_rotations

    c2w = look_at(torch.tensor([[4.0, 1, 1], [0, 3, 2]]), torch.zeros(3)).double().numpy()
    rounded = np.round(c2w, 3)  # as a json written with 3 decimals holds them
    out = checked_rotations(rounded, ["a", "b"])
    np.testing.assert_allclose(out[:, :, :3] @ out[:, :, :3].transpose(0, 2, 1),
                               np.broadcast_to(np.eye(3), (2, 3, 3)), atol=1e-12)
    np.testing.assert_allclose(out, c2w, atol=2e-3)
    np.testing.assert_array_equal(out[:, :, 3], rounded[:, :, 3])
    mirrored = c2w.copy()
    mirrored[:, :, 0] *= -1  # a left-handed camera frame: kept
    assert np.linalg.det(checked_rotations(mirrored, ["a", "b"])[:, :, :3]) == \
        pytest.approx([-1, -1])
