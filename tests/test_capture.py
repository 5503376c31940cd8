"""Your own capture: photos / a video -> cameras (fields.capture), on captures rendered here
with known cameras; the alignment and frame selection against references; bad input."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from fields.capture.align import camera_errors, rotation_angle, umeyama
from fields.capture.frames import sharpness, video_frames
from fields.capture.process import (
    CaptureError,
    ProcessOptions,
    list_images,
    process_images,
    process_video,
)
from fields.data.colmap import capture_transform
from fields.io import write_video
from fields.scenes.capture import CaptureSpec, capture_cameras, make_photos, make_video, truth_path

pycolmap = pytest.importorskip("pycolmap")


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q * np.linalg.det(q)


def test_umeyama_recovers_a_similarity_and_camera_errors_vanish():
    rng = np.random.default_rng(0)
    src = rng.normal(size=(20, 3))
    r, s, t = _random_rotation(rng), 2.5, np.array([1.0, -2.0, 0.5])
    s2, r2, t2 = umeyama(src, s * src @ r.T + t)
    assert s2 == pytest.approx(s) and np.allclose(r2, r) and np.allclose(t2, t)
    # cameras: the same cameras in another frame of reference have no error
    c2w = np.concatenate([np.stack([_random_rotation(rng) for _ in range(8)]),
                          rng.normal(size=(8, 3, 1))], axis=2)
    moved = c2w.copy()
    moved[:, :, :3] = r @ c2w[:, :, :3]
    moved[:, :, 3] = s * c2w[:, :, 3] @ r.T + t
    e = camera_errors(c2w, moved)
    assert e["rotation_deg"].max() < 1e-6 and e["centre"].max() < 1e-9
    # a known error: one camera turned by 2 degrees, another moved by 0.1
    bad = moved.copy()
    a = math.radians(2.0)
    bad[3, :, :3] = bad[3, :, :3] @ np.array([[1, 0, 0], [0, math.cos(a), -math.sin(a)],
                                              [0, math.sin(a), math.cos(a)]])
    e = camera_errors(c2w, bad)
    assert e["rotation_deg"][3] == pytest.approx(2.0, abs=1e-6)
    assert np.delete(e["rotation_deg"], 3).max() < 1e-6
    assert rotation_angle(np.eye(3)) == 0.0
    with pytest.raises(ValueError, match="umeyama: expected two"):
        umeyama(src[:2], src[:2])


def test_normalise_turns_the_cameras_up_to_z_and_centres_their_focus():
    """Cameras on a tilted ring around a point: the transform puts their up vector on +z,
    the point at the origin, and the region they see at radius 1."""
    spec = CaptureSpec(n=12, jitter=0.0)
    cams = capture_cameras(spec)
    rng = np.random.default_rng(1)
    tilt, shift, s = _random_rotation(rng), np.array([3.0, -1.0, 7.0]), 0.37
    c2w = cams.c2w.double().numpy().copy()
    c2w[:, :, 1:3] *= -1  # OpenGL -> OpenCV
    world = c2w.copy()
    world[:, :, :3] = tilt @ c2w[:, :, :3]
    world[:, :, 3] = s * c2w[:, :, 3] @ tilt.T + shift
    r, centre, scale, how = capture_transform(world, np.zeros((0, 3)), 0.4)
    assert "object" in how
    np.testing.assert_allclose(centre, s * np.asarray((0.0, 0.0, -0.35)) @ tilt.T + shift,
                               atol=1e-6)
    np.testing.assert_allclose(r @ tilt @ [0, 0, 1.0], [0, 0, 1.0], atol=0.05)
    dist = np.linalg.norm(scale * (world[:, :, 3] - centre), axis=1)
    np.testing.assert_allclose(dist * math.sin(0.4), 1.0, rtol=1e-6)


def test_sharpness_and_the_sharpest_frame_of_each_window(tmp_path):
    rng = np.random.default_rng(0)
    sharp = rng.integers(0, 256, (64, 80, 3)).astype(np.uint8)
    blurred = ((sharp.astype(np.float32) + np.roll(sharp, 1, 1) + np.roll(sharp, 2, 1)
                + np.roll(sharp, 3, 1)) / 4).astype(np.uint8)
    assert sharpness(sharp) > 2 * sharpness(blurred)
    # 12 frames, windows of 3: the sharp frame is the 2nd of each window
    frames = [torch.from_numpy((sharp if k % 3 == 1 else blurred).astype(np.float32) / 255)
              for k in range(12)]
    write_video(tmp_path / "v.mp4", frames, fps=12)
    kept, index, fps = video_frames(tmp_path / "v.mp4", target=4)
    assert index == [1, 4, 7, 10] and len(kept) == 4 and fps == pytest.approx(12)
    assert kept[0].shape == (64, 80, 3)
    kept, index, _ = video_frames(tmp_path / "v.mp4", target=50)
    assert index == list(range(12))  # fewer frames than the target: all
    with pytest.raises(FileNotFoundError, match=r"nope\.mp4: no such video file"):
        video_frames(tmp_path / "nope.mp4")
    (tmp_path / "text.mp4").write_text("not a video")
    with pytest.raises(ValueError, match=r"text\.mp4: not a video ffmpeg can read"):
        video_frames(tmp_path / "text.mp4")


def test_bad_input_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"missing: no such folder"):
        list_images(tmp_path / "missing")
    (tmp_path / "one.jpg").write_bytes(b"")
    with pytest.raises(ValueError, match=r"one\.jpg: not a folder"):
        list_images(tmp_path / "one.jpg")
    (tmp_path / "few").mkdir()
    (tmp_path / "few" / "a.png").write_bytes(b"")
    (tmp_path / "few" / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match=r"few: 1 photo\(s\) \(expected at least 3"):
        list_images(tmp_path / "few")
    for k in "bc":
        (tmp_path / "few" / f"{k}.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match=r"a\.png: not an image PIL can read"):
        process_images(tmp_path / "few", tmp_path / "out")
    with pytest.raises(ValueError, match=r"--camera-model 'equirect': expected one of"):
        ProcessOptions(camera_model="equirect").check()
    with pytest.raises(ValueError, match=r"--matcher 'vocab'"):
        ProcessOptions(matcher="vocab").check()


def test_photos_of_nothing_in_common_fail_with_the_likely_cause(tmp_path):
    import imageio.v3 as iio

    rng = np.random.default_rng(0)
    (tmp_path / "noise").mkdir()
    for k in range(4):  # unrelated images: nothing can match
        iio.imwrite(tmp_path / "noise" / f"{k}.png",
                    rng.integers(0, 256, (120, 160, 3)).astype(np.uint8))
    with pytest.raises(CaptureError, match=r"(no camera could be registered|only \d of 4 images "
                                           r"registered).*(overlap|texture)"):
        process_images(tmp_path / "noise", tmp_path / "out", ProcessOptions(threads=2))


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, CaptureSpec]:
    spec = CaptureSpec(n=14, width=320, height=240, arc=120.0)
    folder = tmp_path_factory.mktemp("capture") / "photos"
    return make_photos(folder, spec), spec


def test_photos_without_poses_become_a_scene_with_the_true_cameras(photos, tmp_path):
    """The issue's acceptance test on a small capture: >= 95% registered, mean rotation error
    <= 1 degree and camera-centre error <= 1% of the orbit radius after alignment; the scene
    is read by the NeRF readers; the folder has what the docs promise."""
    from fields.capture.bench import recovered_errors
    from fields.data import load_scene

    folder, spec = photos
    out = tmp_path / "scene"
    stages: set[str] = set()
    report = process_images(folder, out, ProcessOptions(threads=2, camera_model="pinhole"),
                            lambda s, k, n: stages.add(s))
    assert stages == {"images", "sfm"}
    assert report["images_registered"] >= 0.95 * spec.n
    e = recovered_errors(out, truth_path(folder), spec.radius)
    assert e["compared"] == report["images_registered"]
    # 14 photos over a third of an orbit leave the focal length loose (0.2-1.6 degrees over
    # runs: COLMAP is multi-threaded); the issue's 1 degree / 1% is `fields bench capture`'s
    # figure on a full orbit. Photos matched to the wrong truth (8.6 degrees apart) fail this.
    assert e["rotation_mean_deg"] <= 3.0 and e["centre_mean_pct_radius"] <= 3.0
    for f in ("transforms.json", "report.json", "cameras.png", "sparse_points.ply",
              "sparse/0/cameras.bin", "sparse/0/images.bin", "sparse/0/points3D.bin",
              "images/IMG_0000.jpg", "images_2/IMG_0000.jpg", "images_4/IMG_0000.jpg"):
        assert (out / f).is_file(), f
    data = json.loads((out / "transforms.json").read_text())
    assert data["camera_model"] == "PINHOLE" and data["aabb_scale"] == 2
    assert data["fields_transform"]["centre_from"].startswith("object")
    scene = load_scene(out)
    assert scene.meta["format"] == "ngp" and scene.unbounded
    assert len(scene.train) + len(scene.splits["test"]) == report["images_registered"]
    # cameras outside the unit box, looking at it, up is +z
    c2w = torch.cat([s.cameras.c2w for s in scene.splits.values()])
    assert (c2w[:, :, 3].norm(dim=-1) > 1.2).all()
    assert (c2w[:, 2, 1] > 0.5).all()  # the camera's up (OpenGL +y) points up the world
    # the photos are never under a folder the scene's copies replace
    with pytest.raises(ValueError, match=r"its images/ would hold the scene's copies, but the "
                                         "photos are there"):
        process_images(out / "images", out)


def test_process_a_video_and_the_command_line(photos, tmp_path):
    from typer.testing import CliRunner

    from fields.capture.bench import recovered_errors
    from fields.cli import app

    spec = CaptureSpec(n=30, width=240, height=180, arc=120.0)
    video = make_video(tmp_path / "orbit.mp4", spec, fps=10)
    out = tmp_path / "scene"
    report = process_video(video, out, frames=15, options=ProcessOptions(
        threads=2, matcher="sequential", camera_model="pinhole"))
    assert report["video"]["frames_kept"] == 15
    assert report["images_registered"] >= 0.95 * 15
    names = {f"frame_{k:05d}.png": f"frame_{k:05d}" for k in report["video"]["frame_indices"]}
    e = recovered_errors(out, truth_path(video), spec.radius, names)
    # 15 small H.264 frames over a third of an orbit leave the focal length loose (SfM's
    # estimate is a few % off, ~1 degree): the 1 degree / 1% is `fields bench
    # capture`'s figure on a full orbit; here a frame matched to the wrong truth (one frame
    # apart: 8 degrees) must not pass
    assert e["rotation_mean_deg"] <= 3.0 and e["centre_mean_pct_radius"] <= 3.0
    # the command refuses to overwrite a processed scene, and says how
    runner = CliRunner()
    r = runner.invoke(app, ["process", "video", str(video), "--output", str(out)])
    assert r.exit_code == 2 and "already holds a processed scene" in r.output
    r = runner.invoke(app, ["process", "images", str(tmp_path / "missing")])
    assert r.exit_code == 2 and "missing: no such folder" in r.output
