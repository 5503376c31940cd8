"""Real-capture training: camera pose refinement (BARF), per-image colour, the automatic
downscale, and `fields bench poses`."""

import json
import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from fields.cli import app
from fields.command import auto_downscale
from fields.data import load_scene
from fields.nerf import LoadedNerf, NerfConfig, NerfTask
from fields.nerf.bench_poses import _pose_errors, _with_cameras, held_out_psnr
from fields.nerf.model import is_capture
from fields.nerf.poses import (
    ColourCorrection,
    PoseRefinement,
    apply_similarity,
    coarse_to_fine_alpha,
    fit_colour,
    perturb_poses,
    similarity_between,
    skew,
    so3_exp,
    so3_log,
)
from fields.nn.encoding_config import hash_grid_config
from fields.render.cameras import Cameras
from fields.scenes.tabletop import SceneSpec, ensure_scene
from fields.train import TrainConfig, seed_everything, train

TINY = SceneSpec(resolution=48, n_train=40, n_val=2, n_test=3)


@pytest.fixture(scope="module")
def scene_dir(tmp_path_factory):
    return ensure_scene(TINY, root=tmp_path_factory.mktemp("scenes"))


def small_config(**kw) -> NerfConfig:
    return NerfConfig(encoding=hash_grid_config(finest_resolution=256, log2_hashmap_size=16),
                      grid_resolution=32, render_steps=128, target_samples=2**14,
                      initial_rays=1024, occupancy_warmup=32, **kw)


def random_cameras(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    rot = torch.linalg.qr(torch.randn(n, 3, 3, generator=g))[0]
    rot = rot * torch.linalg.det(rot).sign()[:, None, None]
    return torch.cat((rot, 4.0 * torch.randn(n, 3, 1, generator=g)), -1)


def test_so3_exp_matches_the_matrix_exponential_and_log_inverts_it():
    w = torch.randn(50, 3, dtype=torch.float64) * torch.tensor([1e-9, 1e-3, 0.5, 2.0]
                                                             ).repeat_interleave(13)[:50, None]
    r = so3_exp(w)
    torch.testing.assert_close(r, torch.linalg.matrix_exp(skew(w)), rtol=1e-10, atol=1e-10)
    ok = w.norm(dim=-1) < 3.0  # the log is unique below pi
    np.testing.assert_allclose(so3_log(r.numpy())[ok], w.numpy()[ok], atol=1e-7)
    z = torch.zeros(1, 3, requires_grad=True)
    so3_exp(z).sum().backward()
    assert torch.isfinite(z.grad).all()


def test_refined_rays_are_the_rays_of_the_corrected_cameras():
    c2w = random_cameras(4)
    refine = PoseRefinement(c2w, torch.zeros(3))
    cams = Cameras(c2w, 50.0, 50.0, 32.0, 32.0, 64, 64)
    idx = torch.tensor([0, 1, 2, 3, 2, 0])
    u, v = torch.rand(6) * 64, torch.rand(6) * 64
    o, d = cams.rays(idx, u, v)
    o0, d0 = refine(idx, o, d)  # zero corrections: nothing moves
    torch.testing.assert_close(o0, o)
    torch.testing.assert_close(d0, d)
    with torch.no_grad():
        refine.delta.normal_(0.0, 0.1)
    moved = Cameras(refine.corrected().detach(), 50.0, 50.0, 32.0, 32.0, 64, 64)
    o1, d1 = refine(idx, o, d)
    o2, d2 = moved.rays(idx, u, v)
    torch.testing.assert_close(o1, o2, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(d1, d2, rtol=1e-5, atol=1e-5)
    (o1.sum() + d1.sum()).backward()
    assert refine.delta.grad.abs().sum() > 0


def test_an_orbit_keeps_the_pivot_on_the_optical_axis():
    c2w = random_cameras(3, seed=1)
    refine = PoseRefinement(c2w, torch.zeros(3))
    with torch.no_grad():
        refine.delta[:, 3:5] = torch.tensor([0.2, -0.1])
    new = refine.corrected().detach()
    dist = c2w[:, :, 3].norm(dim=-1)
    pivot = c2w[:, :, 3] - c2w[:, :, 2] * dist[:, None]  # on each axis, at the distance
    local = torch.einsum("nji,nj->ni", new[:, :, :3], pivot - new[:, :, 3])
    torch.testing.assert_close(local[:, :2], torch.zeros(3, 2), atol=1e-5, rtol=0)
    torch.testing.assert_close(-local[:, 2], dist, rtol=1e-5, atol=1e-5)
    assert (new[:, :, 3] - c2w[:, :, 3]).norm(dim=-1).min() > 0.05 * dist.min()


def test_perturbation_magnitudes_and_similarity_round_trip():
    c2w = random_cameras(20, seed=2)
    noisy = perturb_poses(c2w, 3.0, 0.2, seed=0)
    rel = c2w[:, :, :3].transpose(1, 2) @ noisy[:, :, :3]
    angles = np.degrees(np.linalg.norm(so3_log(rel.double().numpy()), axis=-1))
    np.testing.assert_allclose(angles, 3.0, atol=1e-3)
    np.testing.assert_allclose((noisy[:, :, 3] - c2w[:, :, 3]).norm(dim=-1), 0.2, atol=1e-5)
    r = so3_exp(torch.tensor([[0.3, -0.2, 0.5]], dtype=torch.float64))[0].numpy()
    moved = apply_similarity(c2w.numpy(), 1.7, r, np.array([1.0, 2.0, -3.0]))
    s, r2, t2 = similarity_between(c2w.numpy(), moved)
    assert s == pytest.approx(1.7, rel=1e-6)
    np.testing.assert_allclose(apply_similarity(c2w.numpy(), s, r2, t2), moved, atol=1e-5)
    errors = _pose_errors(torch.from_numpy(moved).float(), c2w, 4.0)
    assert errors["rotation_mean_deg"] < 1e-3 and errors["centre_mean_pct_radius"] < 1e-3
    # two cameras: no plane to fit; the mean rotation and the centroid shift
    s1, r1, _ = similarity_between(c2w[:2].numpy(), moved[:2])
    assert s1 == 1.0
    np.testing.assert_allclose(r1, r, atol=1e-5)


def test_coarse_to_fine_schedule():
    assert coarse_to_fine_alpha(0.0, 16, 0.1, 0.5, 2.0) == 2.0
    assert coarse_to_fine_alpha(0.3, 16, 0.1, 0.5, 2.0) == pytest.approx(9.0)
    assert coarse_to_fine_alpha(0.5, 16, 0.1, 0.5, 2.0) is None


def test_colour_correction_starts_at_identity_and_fit_colour_is_exact():
    cc = ColourCorrection(3)
    rgb = torch.rand(10, 3)
    torch.testing.assert_close(cc(torch.tensor([0, 1, 2] * 3 + [0]), rgb), rgb)
    a = torch.tensor([[0.8, 0.1, 0.0], [0.0, 0.9, 0.05], [0.02, 0.0, 0.7]])
    target = rgb @ a.T + torch.tensor([0.05, 0.02, 0.1])
    torch.testing.assert_close(fit_colour(rgb, target), target, atol=1e-4, rtol=0)


def test_config_validation_and_captures_switch_it_on(scene_dir):
    with pytest.raises(ValueError, match="coarse_to_fine"):
        NerfConfig.from_dict({"coarse_to_fine": [0.6, 0.2]})
    with pytest.raises(ValueError, match="pose_lr"):
        NerfConfig.from_dict({"pose_lr": 0.0})
    scene = load_scene(scene_dir)
    assert not is_capture(scene)
    cfg = small_config().resolved(scene)
    assert cfg.refine_poses is False and cfg.appearance is False
    capture = replace(scene, meta={**scene.meta, "format": "colmap"})
    cfg = small_config().resolved(capture)
    assert cfg.refine_poses is False and cfg.appearance is True
    assert small_config(appearance=False).resolved(capture).appearance is False
    assert small_config(refine_poses=True).resolved(scene).refine_poses is True


def test_refinement_recovers_perturbed_poses(scene_dir):
    """The tiny scene's 40 training poses turned by 2 degrees and moved by 4% of the radius:
    a short fit with refinement brings them well back (after a similarity alignment), and
    test-time alignment of the held-out views raises their PSNR."""
    scene = load_scene(scene_dir)
    true = scene.train.cameras.c2w.clone()
    noisy = perturb_poses(true, 2.0, 0.16, seed=0)
    seed_everything(0)
    task = NerfTask(_with_cameras(scene, noisy), small_config(refine_poses=True), seed=0)
    train(task, TrainConfig(steps=700, max_seconds=600, eval_every=0, checkpoint_every=0),
          show_progress=False, log=None)
    before = _pose_errors(noisy, true, 4.0)
    after = _pose_errors(task.refined_cameras(), true, 4.0)
    assert before["rotation_mean_deg"] > 1.9 and before["centre_mean_pct_radius"] > 3.0
    assert after["rotation_mean_deg"] < 0.4 * before["rotation_mean_deg"], after
    assert after["centre_mean_pct_radius"] < 0.4 * before["centre_mean_pct_radius"], after
    scores = held_out_psnr(task, scene.eval_split(), true, 30)
    assert scores["psnr_test_time"] > scores["psnr_aligned"], scores
    assert all(p.requires_grad for p in task.module.parameters())  # given back


def test_checkpoint_keeps_refined_cameras_and_appearance(scene_dir, tmp_path):
    scene = load_scene(scene_dir)
    seed_everything(0)
    task = NerfTask(scene, small_config(refine_poses=True, appearance=True), seed=0)
    assert set(task.module.keys()) == {"field", "grid", "poses", "colour"}
    assert {g.get("name") for g in task.optimizer.param_groups} >= {"poses", "colour"}
    train(task, TrainConfig(steps=30, max_seconds=600, eval_every=0, checkpoint_every=0),
          checkpoint=tmp_path / "c.pt", checkpoint_extra=task.checkpoint_extra(),
          show_progress=False, log=None)
    refined = task.refined_cameras()
    assert (refined - scene.train.cameras.c2w).abs().max() > 0  # the poses moved
    with torch.no_grad():
        scores = task.evaluate(final=False)
    assert scores["psnr_colour_corrected"] >= scores["psnr"] - 1e-3
    nerf = LoadedNerf(str(tmp_path / "c.pt"))
    torch.testing.assert_close(torch.tensor(nerf.info["cameras"]["c2w"]), refined)
    out = tmp_path / "cams.json"
    r = CliRunner().invoke(app, ["export", "cameras", str(tmp_path / "c.pt"), "--output",
                                 str(out)])
    assert r.exit_code == 0, r.output
    cams = json.loads(out.read_text())["cameras"]
    np.testing.assert_allclose(np.array(cams[3]["c2w"]), refined[3].numpy(), atol=1e-5)
    # held-out views are moved into the refined frame for evaluation
    moved = nerf.aligned(scene.eval_split().cameras)
    assert moved.c2w.shape == scene.eval_split().cameras.c2w.shape


def test_automatic_downscale(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "images_2").mkdir()
    Image.new("RGB", (3300, 1000)).save(tmp_path / "images" / "a.png")
    Image.new("RGB", (1650, 500)).save(tmp_path / "images_2" / "a.png")
    assert auto_downscale(str(tmp_path), None, 1600) == 3
    assert auto_downscale(str(tmp_path), None, 4000) == 1
    assert auto_downscale(str(tmp_path), None, 0) == 1
    assert auto_downscale(str(tmp_path), 1, 1600) == 1  # given: kept
    assert auto_downscale(None, None, 1600) == 1
    with pytest.raises(ValueError, match="--max-size"):
        auto_downscale(str(tmp_path), None, -1)


def test_bench_poses_command_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(app, ["bench", "poses", "--seconds", "2", "--scene-resolution", "24",
                                 "--test-steps", "2", "--no-baseline", "--json"])
    assert r.exit_code == 0, r.output
    rows = [json.loads(line) for line in r.output.splitlines() if line.startswith("{")]
    assert [row["run"] for row in rows[:2]] == ["true poses", "perturbed, refined"]
    assert rows[1]["initial_rotation_mean_deg"] == pytest.approx(3.0, abs=0.2)
    assert math.isfinite(rows[1]["psnr_test_time"]) and "meets_targets" in rows[2]


def _camera_path(tmp_path, frames=None, **top):
    from fields.render.cameras import look_at

    eyes = torch.tensor([[3.0, 2.0, 1.0], [2.0, 3.0, 1.5], [0.0, 3.5, 2.0]])
    c2w = look_at(eyes, torch.zeros(3), up=torch.tensor([0.0, 0.0, 1.0]))
    rows = [torch.cat((m, torch.tensor([[0.0, 0.0, 0.0, 1.0]]))).reshape(-1).tolist()
            for m in c2w]
    doc = {"camera_type": "perspective", "render_width": 40, "render_height": 30, "fps": 12,
           "seconds": 0.25,
           "camera_path": frames if frames is not None else
           [{"camera_to_world": r, "fov": 50, "aspect": 4 / 3} for r in rows], **top}
    path = tmp_path / "path.json"
    path.write_text(json.dumps(doc))
    return path, c2w


def test_camera_path_file_is_read_as_nerfstudio_writes_it(tmp_path):
    from fields.render.paths import read_camera_path

    path, c2w = _camera_path(tmp_path)
    cams, fps = read_camera_path(str(path))
    assert fps == 12 and len(cams) == 3 and (cams.width, cams.height) == (40, 30)
    torch.testing.assert_close(cams.c2w, c2w)
    assert float(cams.fy[0]) == pytest.approx(15 / math.tan(math.radians(25)))
    # the world origin, which every camera looks at, projects to the image centre
    uv, _ = cams.project(torch.zeros(1, 3), 1)
    torch.testing.assert_close(uv[0], torch.tensor([20.0, 15.0]), atol=1e-4, rtol=0)


@pytest.mark.parametrize("change, message", [
    ({"camera_type": "fisheye"}, "camera_type"),
    ({"render_width": -3}, "render_width"),
    ({"camera_path": []}, "camera_path"),
    ({"camera_path": [{"camera_to_world": [1, 2, 3], "fov": 50}]}, r"camera_path\[0\]"),
    ({"camera_path": [{"camera_to_world": [2.0] + [0.0] * 4 + [2.0] + [0.0] * 4 + [2.0]
                       + [0.0] * 4 + [1.0], "fov": 50}]}, "determinant"),
    ({"camera_path": [{"camera_to_world": [1.0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1],
                       "fov": 190}]}, "fov"),
])
def test_bad_camera_paths_name_the_field(tmp_path, change, message):
    from fields.render.paths import read_camera_path

    path, _ = _camera_path(tmp_path)
    doc = {**json.loads(path.read_text()), **change}
    path.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match=message) as e:
        read_camera_path(str(path))
    assert str(path) in str(e.value)


def test_render_camera_path(tiny_nerf, tmp_path):
    import imageio.v3 as iio

    path, _ = _camera_path(tmp_path)
    out = tmp_path / "path.mp4"
    r = CliRunner().invoke(app, ["render", str(tiny_nerf), "--camera-path", str(path),
                                 "--output", str(out)])
    assert r.exit_code == 0, r.output
    frames = iio.imread(out)
    assert frames.shape[0] == 3  # one frame per keyframe (40x30 is enlarged for H.264)
    assert "3 frames, 40x30, 12 fps" in r.output
    bad = tmp_path / "nope.json"
    r = CliRunner().invoke(app, ["render", str(tiny_nerf), "--camera-path", str(bad)])
    assert r.exit_code == 2 and "no such camera-path file" in r.output


def test_periodic_evaluation_renders_a_fixed_subset_of_pixels(scene_dir):
    """Issue 28's "no waiting": held-out views larger than `eval_pixels` are evaluated during
    training on that many fixed pixels; the final evaluation renders every pixel."""
    scene = load_scene(scene_dir)
    seed_everything(0)
    task = NerfTask(scene, small_config(), seed=0, eval_pixels=48 * 48)
    train(task, TrainConfig(steps=40, max_seconds=600, eval_every=0, checkpoint_every=0),
          show_progress=False, log=None)
    with torch.no_grad():
        full = task.evaluate(final=False)["psnr"]
        task.eval_pixels = 48 * 48 - 1  # every pixel but one, through the sampled path
        almost = task.evaluate(final=False)["psnr"]
        task.eval_pixels = 300
        few = task.evaluate(final=False)["psnr"]
        again = task.evaluate(final=False)["psnr"]
        final = task.evaluate(final=True)["psnr"]
    assert almost == pytest.approx(full, abs=0.02)
    assert few == again and math.isfinite(few) and abs(few - full) < 3.0
    assert len(task.last_eval_images) == len(scene.eval_split())  # final: whole images
    assert math.isfinite(final)
