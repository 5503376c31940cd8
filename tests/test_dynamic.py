"""Dynamic radiance fields: the space-time encodings, the plane regularisers, the time-aware
occupancy grid, the readers' per-frame times, and fits of the built-in dynamic scene."""

import json
import math
import threading
import time

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from fields.cli import app
from fields.nn.encoding_config import encoding_from_config
from fields.nn.grid import GridEncoding
from fields.nn.triplane import Triplane


@pytest.fixture(scope="module")
def tiny_video():
    from fields.scenes.kinetic import KineticSpec, render_kinetic

    return render_kinetic(KineticSpec(resolution=24, n_cameras=8, n_test_cameras=2,
                                      n_frames=7, hold_out_every=3, objects="ball"))


@pytest.fixture(scope="module")
def tiny_video_dir(tmp_path_factory):
    from fields.scenes.kinetic import KineticSpec, ensure_kinetic

    return ensure_kinetic(KineticSpec(resolution=16, n_cameras=4, n_test_cameras=1,
                                      n_frames=4, hold_out_every=2),
                          root=tmp_path_factory.mktemp("kinetic"))


# -- encodings --


def test_kplanes_matches_its_reference_values_and_gradients():
    enc = encoding_from_config(4, {"otype": "KPlanes", "resolution": 8, "n_features": 4,
                                   "n_levels": 2})
    assert isinstance(enc, Triplane) and len(enc.planes) == 6 and enc.n_output_dims == 8
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():  # away from the initial constant planes, so that every term matters
        for p in enc.planes:
            p.params.copy_(0.2 + 1.3 * torch.rand(p.params.shape, generator=gen))
    x = torch.rand(300, 4, generator=gen).requires_grad_()
    y = enc(x)
    torch.testing.assert_close(y, enc.reference(x), rtol=1e-5, atol=1e-6)
    want = 1.0
    for plane, ax in zip(enc.planes, ((0, 1), (0, 2), (1, 2), (0, 3), (1, 3), (2, 3)),
                         strict=True):
        want = want * plane(x[:, list(ax)])
    torch.testing.assert_close(y, want)
    g = torch.randn_like(y)
    a = torch.autograd.grad(y, [x, *enc.parameters()], g)
    b = torch.autograd.grad(enc.reference(x), [x, *enc.parameters()], g)
    for u, v in zip(a, b, strict=True):  # products of six planes up to 1.5: values up to ~11
        torch.testing.assert_close(u, v, rtol=1e-4, atol=1e-4)


def test_kplanes_time_resolution_scales_time_and_its_regularised_rows():
    enc = encoding_from_config(4, {"otype": "KPlanes", "resolution": 16, "n_features": 2,
                                   "n_levels": 2, "time_resolution": 5})
    assert enc.time_scale == pytest.approx(4 / 15)
    x = torch.rand(64, 4)
    want = 1.0
    for plane, ax in zip(enc.planes, enc.axes, strict=True):
        xs = x[:, list(ax)].clone()
        if 3 in ax:
            xs[:, 1] *= 4 / 15
        want = want * plane(xs)
    torch.testing.assert_close(enc(x), want)
    rows = [t.shape[0] for t in enc.plane_levels(3)]
    # level 0: t = 1 sits at vertex 4.5 (rows 0..5); level 1 (32 vertices): at 8.77 (0..9)
    assert rows == [6, 10]
    assert [t.shape[0] for t in enc.plane_levels(0)] == [16, 32]
    with pytest.raises(ValueError, match="time_resolution is for 4-D"):
        encoding_from_config(3, {"otype": "KPlanes", "time_resolution": 4})


def test_kplanes_starts_static_and_refuses_other_dimensions():
    enc = encoding_from_config(4, {"otype": "KPlanes", "resolution": 8})
    x = torch.rand(50, 4)
    moved = x.clone()
    moved[:, 3] = torch.rand(50)
    torch.testing.assert_close(enc(x), enc(moved))  # space-time planes start at 1
    with pytest.raises(ValueError, match="n_input_dims=2"):
        Triplane(2)


def test_four_dimensional_hash_grid_matches_reference():
    enc = GridEncoding(4, n_levels=4, n_features_per_level=2, log2_hashmap_size=12,
                       base_resolution=4, per_level_scale=1.5, backend="cpu")
    x = torch.rand(400, 4, requires_grad=True)
    y = enc(x)
    torch.testing.assert_close(y, enc.reference(x), rtol=1e-5, atol=1e-6)
    g = torch.randn_like(y)
    a = torch.autograd.grad(y, [x, enc.params], g)
    b = torch.autograd.grad(enc.reference(x), [x, enc.params], g)
    for u, v in zip(a, b, strict=True):
        torch.testing.assert_close(u, v, rtol=1e-4, atol=1e-5)


# -- regularisers against hand-computed cases --


def _tiny_planes() -> Triplane:
    """Six 3 x 3 planes of one feature with known entries: plane p holds p + i + 2 j^2 at
    [j, i] (second axis j, first axis i)."""
    enc = Triplane(4, resolution=3, n_features=1, n_levels=1, reduce="product")
    with torch.no_grad():
        for p, plane in enumerate(enc.planes):
            j, i = torch.meshgrid(torch.arange(3.0), torch.arange(3.0), indexing="ij")
            table = plane.params.view(-1)
            table.zero_()
            table[:9] = (p + i + 2 * j**2).reshape(-1)
    return enc


def test_plane_regularisers_by_hand():
    enc = _tiny_planes()
    # along the first axis i neighbours differ by 1; along j by 2(j+1)^2 - 2j^2 = 2, 6
    tv_first = 1.0  # mean of 1^2 over the 3 x 2 pairs
    tv_second = (4.0 + 36.0) / 2  # rows j=0->1 (2^2) and 1->2 (6^2), each over 3 columns
    torch.testing.assert_close(enc.total_variation(), torch.tensor(tv_first + tv_second))
    # second difference along time (j): 2*4 - 2*2*1 + 0 = 4 for every column of every plane
    torch.testing.assert_close(enc.time_smoothness(), torch.tensor(16.0))
    # |1 - entry| over the space-time planes' 3 x 3 entries (not the table's padding)
    j, i = torch.meshgrid(torch.arange(3.0), torch.arange(3.0), indexing="ij")
    want = torch.stack([(1 - (p + i + 2 * j**2)).abs().mean() for p in (3, 4, 5)]).mean()
    torch.testing.assert_close(enc.time_l1(), want)


def test_plane_levels_index_time_first():
    enc = _tiny_planes()
    scale = enc.planes[3].layout.levels[0].scale  # a vertex v sits at x = (v - 0.5) / scale
    x = torch.tensor([[(1 - 0.5) / scale, 0.3, 0.3, (2 - 0.5) / scale]])
    # plane 3 is (x, t): at vertex i=1 (x), j=2 (t) it holds 3 + 1 + 8 = 12
    with torch.no_grad():
        assert float(enc.planes[3](x[:, [0, 3]])) == pytest.approx(12.0)
        assert float(enc.plane_levels(3)[0][2, 1, 0]) == pytest.approx(12.0)


# -- time-aware occupancy --


def _moving_blob(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    centre = torch.stack((-0.6 + 1.2 * t, 0.2 * torch.sin(6.0 * t), torch.zeros_like(t)), -1)
    return 50.0 * ((x - centre).square().sum(-1) < 0.15**2).float()


def test_time_occupancy_never_skips_a_sample_with_density_at_its_time():
    from fields.dynamic.model import TimeOccupancy
    from fields.render.occupancy import march_rays_reference

    grid = TimeOccupancy(torch.tensor([-1.0, -1, -1, 1, 1, 1]), resolution=32)
    gen = torch.Generator().manual_seed(0)
    step = 0.01
    for s in range(0, 20 * 16, 16):  # warm-up updates (every cell) at 8 times each
        grid.update_over_time(s, lambda x, t: _moving_blob(x, t) * step, 8, generator=gen,
                              warmup_steps=10_000)
    # a static grid fed one time at a time would miss the blob elsewhere: check it does
    assert 0.0 < grid.occupancy_fraction < 0.2
    # rays through the blob's whole track, at random times
    n = 400
    times = torch.rand(n, generator=gen)
    target = torch.stack((-0.6 + 1.2 * times, 0.2 * torch.sin(6.0 * times),
                          torch.zeros(n)), -1)
    origins = torch.tensor([0.0, -3.0, 0.3]).expand(n, 3)
    dirs = target + 0.1 * torch.randn(n, 3, generator=gen) - origins
    dirs = dirs / dirs.norm(dim=-1, keepdim=True)
    ri, t0, _, _ = grid.sample(origins.contiguous(), dirs.contiguous(), 0.0, 10.0, step,
                                backend="torch")
    # the dense reference: every step of every ray where the blob is at the ray's time
    all_occupied = torch.ones_like(grid.occupied)
    dri, d0, d1, _ = march_rays_reference(origins.contiguous(), dirs.contiguous(),
                                          *grid_limits(grid, origins, dirs), all_occupied,
                                          grid.aabb, "none", step, 0.0, 1e10)
    mid = (0.5 * (d0 + d1))[:, None]
    pts = origins[dri] + dirs[dri] * mid
    dense = _moving_blob(pts, times[dri]) > 0
    assert int(dense.sum()) > 500
    marched = set(zip(ri.tolist(), [round(v, 4) for v in t0.tolist()], strict=True))
    want = set(zip(dri[dense].tolist(), [round(v, 4) for v in d0[dense].tolist()],
                   strict=True))
    assert want <= marched, f"{len(want - marched)} samples with density were skipped"


def grid_limits(grid, origins, dirs):
    from fields.render.occupancy import ray_aabb

    near, far = ray_aabb(origins, dirs, grid.aabb)
    return near.clamp_min(0.0).contiguous(), far.clamp_max(10.0).contiguous()


# -- readers --


def _blender_video(root, frames_json):
    root.mkdir(parents=True, exist_ok=True)
    from fields.data.images import write_image

    frames = []
    for i, extra in enumerate(frames_json):
        write_image(root / f"r_{i}.png", torch.full((8, 8, 3), 0.5))
        m = np.eye(4)
        m[2, 3] = 4.0
        frames.append({"file_path": f"./r_{i}", "transform_matrix": m.tolist(), **extra})
    (root / "transforms_train.json").write_text(json.dumps(
        {"camera_angle_x": 0.69, "frames": frames}))
    return root


def test_readers_keep_frame_times_and_reject_bad_ones(tmp_path):
    from fields.data import load_scene

    scene = load_scene(_blender_video(tmp_path / "ok", [{"time": 0.0}, {"time": 0.5},
                                                        {"time": 1}]))
    torch.testing.assert_close(scene.train.times, torch.tensor([0.0, 0.5, 1.0]))
    assert load_scene(_blender_video(tmp_path / "static", [{}, {}])).train.times is None
    bad = {"one missing": ([{"time": 0.1}, {}], r"frames\[1\] has no 'time'"),
           "a string": ([{"time": "0.5"}], r"frames\[0\]\.time is \"0\.5\""),
           "out of range": ([{"time": 1.5}], r"frames\[0\]\.time is 1\.5 \(expected a number "
                                             r"in \[0, 1\]"),
           "not finite": ([{"time": float("nan")}], r"frames\[0\]\.time")}
    for name, (frames, match) in bad.items():
        folder = _blender_video(tmp_path / name.replace(" ", "_"), frames)
        with pytest.raises(ValueError, match="transforms_train.json: " + match):
            load_scene(folder)


def test_nerfstudio_transforms_with_time(tmp_path):
    from fields.data import load_scene
    from fields.data.images import write_image

    frames = []
    for i in range(10):
        write_image(tmp_path / f"f{i}.png", torch.full((8, 8, 3), 0.25))
        m = np.eye(4)
        m[2, 3] = 3.0
        frames.append({"file_path": f"f{i}.png", "transform_matrix": m.tolist(),
                       "time": i / 9})
    (tmp_path / "transforms.json").write_text(json.dumps(
        {"fl_x": 8.0, "fl_y": 8.0, "cx": 4.0, "cy": 4.0, "w": 8, "h": 8, "frames": frames}))
    scene = load_scene(tmp_path)
    # instant-ngp's hold-out (every 8th frame) keeps each frame's own time
    torch.testing.assert_close(scene.splits["test"].times, torch.tensor([0.0, 8 / 9]))
    assert len(scene.train.times) == 8


def test_dynamic_fit_refuses_static_data(tmp_path):
    folder = _blender_video(tmp_path / "static", [{}, {}])
    res = CliRunner().invoke(app, ["fit", "dynamic", "--data", str(folder), "--steps", "1",
                                   "--output", str(tmp_path / "run")])
    assert res.exit_code == 2
    assert "have no per-frame 'time'" in res.output and str(folder) in res.output


# -- fits --


def _fit_and_score(task, steps, split):
    """Held-out PSNR on `split` (seen cameras at held-out times) after `steps` steps."""
    from fields.metrics import psnr

    for i in range(steps):
        task.train_step(i, i / steps)
    task.module.eval()
    with torch.no_grad():
        return sum(psnr(task.render(split, i)["rgb"], split.images[i])
                   for i in range(len(split))) / len(split)


def test_tiny_dynamic_fits_beat_a_static_fit_of_the_same_video(tiny_video):
    from fields.dynamic.model import DynamicConfig, DynamicTask
    from fields.nerf import NerfConfig, NerfTask
    from fields.nn.encoding_config import hash_grid_config

    torch.manual_seed(0)
    common = {"grid_resolution": 32, "occupancy_warmup": 32, "target_samples": 2**13,
              "initial_rays": 1024, "render_steps": 128}
    steps = 300
    val = tiny_video.splits["val"]  # the training cameras at the held-out times
    scores = {}
    for model in ("planes", "deform"):
        task = DynamicTask(tiny_video, DynamicConfig(model=model, **common), seed=0)
        scores[model] = _fit_and_score(task, steps, val)
    static = NerfTask(tiny_video, NerfConfig(
        encoding=hash_grid_config(finest_resolution=128, log2_hashmap_size=15), **common),
        seed=0)
    scores["static"] = _fit_and_score(static, steps, val)
    # the static model averages the moving objects over time: clearly worse at other times
    # (the deformation model learns more slowly: in 300 steps it only starts; the README's
    # 15-minute runs compare the three)
    assert scores["planes"] > scores["static"] + 1.0, scores
    assert scores["deform"] > 15.0, scores


def test_fit_dynamic_command_eval_render_and_view(tiny_video_dir, tmp_path, monkeypatch):
    from fields.dynamic.view import DynamicView
    from fields.render.cameras import Cameras, look_at

    monkeypatch.setenv("FIELDS_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "run"
    res = CliRunner().invoke(app, [
        "fit", "dynamic", "--data", str(tiny_video_dir), "--steps", "30", "--output", str(out),
        "--video-frames", "3", "--eval-every", "0",
        "--config", '{"grid_resolution": 16, "occupancy_warmup": 8, "target_samples": 4096}'])
    assert res.exit_code == 0, res.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["model"] == "planes" and math.isfinite(metrics["psnr"])
    assert (out / "bullet_time.mp4").stat().st_size > 0
    assert len(list((out / "renders").glob("test_*_t*.png"))) == 2
    ck = str(out / "checkpoint.pt")
    res = CliRunner().invoke(app, ["eval", ck, "--output", str(tmp_path / "e.json")])
    assert res.exit_code == 0, res.output
    ev = json.loads((tmp_path / "e.json").read_text())
    assert ev["psnr"] == pytest.approx(metrics["psnr"], abs=1e-3)
    res = CliRunner().invoke(app, ["render", ck, "--output", str(tmp_path / "v.mp4"),
                                   "--frames", "2", "--time-range", "0.25:0.75", "--still"])
    assert res.exit_code == 0, res.output
    assert "times 0.25 to 0.75" in res.output
    res = CliRunner().invoke(app, ["render", ck, "--time-range", "2:3"])
    assert res.exit_code == 2 and "--time-range: got '2:3'; expected START:END" in res.output
    view = DynamicView.from_checkpoint(ck)
    cam = Cameras(look_at(torch.tensor([[0.0, -3.5, 1.5]]), torch.zeros(3)), 20.0, 20.0, 8.0,
                  8.0, 16, 16)
    pics = []
    for t in (0.0, 1.0):
        view.settings["time"] = t
        pics.append(view.render(cam, "rgb", lambda: False))
    assert pics[0].shape == (16, 16, 3) and np.isfinite(pics[0]).all()
    assert [c["name"] for c in view.controls()] == ["time", "play"]
    assert not view.advance(1.0)  # not playing
    view.settings.update(time=0.9, play=True)
    assert view.advance(0.2 * view.play_seconds) and view.settings["time"] == pytest.approx(0.1)


def test_static_baseline_ignores_time():
    from fields.dynamic.model import DynamicConfig, DynamicField

    torch.manual_seed(0)
    aabb = torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])
    f = DynamicField(aabb, DynamicConfig(model="static"))
    assert not hasattr(f, "deform_network") and not hasattr(f, "deform_encoding")
    with torch.no_grad():  # a field that is not flat in space
        for p in f.encoding.parameters():
            p.uniform_(-1, 1)
    x = torch.rand(64, 3) * 2 - 1
    a, b = f.density(x, torch.zeros(64)), f.density(x, torch.ones(64))
    assert torch.equal(a, b) and a.std() > 0
    assert float(f.regulariser()) == 0.0
    planes = DynamicField(aabb, DynamicConfig(model="planes"))
    with torch.no_grad():
        for p in planes.encoding.parameters():
            p.uniform_(0, 2)
        assert not torch.equal(planes.density(x, torch.zeros(64)),
                               planes.density(x, torch.ones(64)))
    with pytest.raises(ValueError, match="model must be one of planes, deform, static"):
        DynamicConfig.from_dict({"model": "hexplane"})


def test_plane_resolution_follows_the_images(tiny_video):
    from fields.dynamic.model import DynamicConfig, DynamicTask, plane_resolution

    assert plane_resolution(96, 3, 2.0) == 12  # finest level 48: half the images' side
    assert plane_resolution(1352, 3, 2.0) == 128  # finest capped at 512
    assert plane_resolution(24, 3, 2.0) == 8  # finest at least 32
    assert plane_resolution(200, 1, 2.0) == 100
    task = DynamicTask(tiny_video, DynamicConfig(grid_resolution=16), seed=0)
    assert task.config.planes["resolution"] == 8 and task.model.encoding.resolution == 8
    # 5 training times -> half, at least 4; a resolution given is kept
    assert task.config.planes["time_resolution"] == 4
    cfg = DynamicConfig(planes={"otype": "KPlanes", "resolution": 40}, grid_resolution=16)
    assert DynamicTask(tiny_video, cfg, seed=0).config.planes["resolution"] == 40


def test_bench_summary_by_hand():
    from fields.dynamic.bench import DynamicBenchRow, summarise

    rows = [DynamicBenchRow("planes", 0, 28.0, 0.97, 29.0, 10, 1.0, 5.0, 100),
            DynamicBenchRow("static", 0, 23.0, None, None, 10, 1.0, 5.0, 100),
            DynamicBenchRow("planes", 1, 27.0, 0.95, 29.5, 12, 1.0, 5.0, 100)]
    s = summarise(rows)
    assert list(s) == ["planes", "static"]
    assert s["planes"] == pytest.approx({"fits": 2, "psnr_mean": 27.5, "psnr_min": 27.0,
                                         "psnr_max": 28.0, "ssim_mean": 0.96})
    assert "ssim_mean" not in s["static"] and s["static"]["psnr_mean"] == 23.0
    assert "history" not in rows[0].as_dict(history=False)


def test_bench_dynamic_command(tiny_video_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("FIELDS_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "bench"
    res = CliRunner().invoke(app, [
        "bench", "dynamic", "--data", str(tiny_video_dir), "--model", "planes", "--model",
        "static", "--seed", "0", "--seed", "1", "--seconds", "0.5", "--eval-every", "0.25",
        "--out", str(out), "--config", json.dumps({
            "grid_resolution": 16, "occupancy_warmup": 8, "target_samples": 4096,
            "encoding": {"otype": "HashGrid", "n_levels": 4, "n_features_per_level": 2,
                         "log2_hashmap_size": 12, "base_resolution": 4,
                         "per_level_scale": 2.0}})])
    assert res.exit_code == 0, res.output
    bench = json.loads((out / "bench.json").read_text())
    assert [(r["model"], r["seed"]) for r in bench["rows"]] == [
        ("planes", 0), ("planes", 1), ("static", 0), ("static", 1)]
    assert bench["summary"]["planes"]["fits"] == 2 and bench["overrides"]["grid_resolution"] == 16
    assert all(r["steps"] > 0 and math.isfinite(r["psnr"]) for r in bench["rows"])
    for name in ("comparison.png", "psnr_vs_time.png"):
        assert (out / name).stat().st_size > 0
    # each row's checkpoint scores what the row says
    row = bench["rows"][2]
    res = CliRunner().invoke(app, ["eval", str(out / "static-seed0" / "checkpoint.pt"),
                                   "--output", str(tmp_path / "e.json")])
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "e.json").read_text())["psnr"] == pytest.approx(
        row["psnr"], abs=1e-3)
    res = CliRunner().invoke(app, ["bench", "dynamic", "--data", str(tiny_video_dir),
                                   "--model", "hexplane", "--out", str(out)])
    assert res.exit_code == 2 and "unknown model(s) ['hexplane']" in res.output


def _viewer_of_a_fitted_dynamic_field(tiny_video_dir, tmp_path):
    """A 3-step dynamic fit of the tiny video, its view and a viewer showing it (port 0)."""
    from fields.dynamic.view import DynamicView
    from fields.viewer import Viewer

    out = tmp_path / "run"
    res = CliRunner().invoke(app, [
        "fit", "dynamic", "--data", str(tiny_video_dir), "--steps", "3", "--output", str(out),
        "--video-frames", "0", "--eval-every", "0",
        "--config", '{"grid_resolution": 16, "occupancy_warmup": 2, "target_samples": 1024}'])
    assert res.exit_code == 0, res.output
    view = DynamicView.from_checkpoint(str(out / "checkpoint.pt"))
    viewer = Viewer(view, port=0)
    return view, viewer


def test_viewer_plays_the_time_slider(tiny_video_dir, tmp_path):
    view, viewer = _viewer_of_a_fitted_dynamic_field(tiny_video_dir, tmp_path)
    try:
        viewer._control_by_name["play"].value = True  # as the browser's checkbox does
        deadline = time.time() + 5.0
        while view.settings["time"] == 0.0 and time.time() < deadline:
            time.sleep(0.05)
        assert view.settings["time"] > 0.0
        time.sleep(0.3)
        slider = viewer._control_by_name["time"].value
        assert slider == pytest.approx(view.settings["time"], abs=0.2)
        viewer._control_by_name["play"].value = False
        assert view.settings["play"] is False  # the callback runs before the setter returns
        time.sleep(0.3)  # an animation step already past advance() may still land
        stopped = view.settings["time"]
        time.sleep(0.3)
        assert view.settings["time"] == stopped
    finally:
        viewer.close()


def test_viewer_animation_keeps_a_control_changed_while_it_advances(tiny_video_dir, tmp_path):
    """The user unchecks "play" while the animation writes the advanced time to its slider
    (after the animation's lock is released): the write-back must not check "play" again (it
    once did, and CI saw the time run on after "play" was off)."""
    view, viewer = _viewer_of_a_fitted_dynamic_field(tiny_video_dir, tmp_path)
    unchecked = threading.Event()

    def uncheck_once(_: object) -> None:
        if threading.current_thread().name == "viewer-animation" and not unchecked.is_set():
            unchecked.set()
            viewer._control_by_name["play"].value = False  # the user, at that moment

    viewer._control_by_name["time"].on_update(uncheck_once)
    try:
        viewer._control_by_name["play"].value = True
        assert unchecked.wait(5.0)
        time.sleep(0.5)  # several animation ticks
        assert view.settings["play"] is False
        assert viewer._control_by_name["play"].value is False
        stopped = view.settings["time"]
        assert stopped > 0.0
        time.sleep(0.3)
        assert view.settings["time"] == stopped
    finally:
        viewer.close()


def test_time_range_is_refused_for_static_kinds(tiny_nerf):
    res = CliRunner().invoke(app, ["render", str(tiny_nerf), "--time-range", "0.5"])
    assert res.exit_code == 2 and "only dynamic-field checkpoints have a time" in res.output


def _dynerf(root, n_cams=3, n_frames=4, size=16, mp4=True):
    """A DyNeRF folder: poses_bounds.npy, cam00.mp4 (or a frame folder) and cam01/, ... frame
    folders of a square that moves."""
    from fields.data.images import write_image

    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for c in range(n_cams):
        rot = np.array([[0.0, 1, 0], [-1, 0, 0], [0, 0, 1]])  # [down, right, back] columns
        pose = np.concatenate((rot, [[0.1 * c], [0.0], [0.0]], [[size], [size], [20.0]]), 1)
        rows.append(np.concatenate((pose.reshape(-1), [1.0, 10.0])))
    np.save(root / "poses_bounds.npy", np.array(rows))
    for c in range(n_cams):
        clip = torch.full((n_frames, size, size, 3), 0.8)
        for k in range(n_frames):
            clip[k, 4:8, 2 + 2 * k : 6 + 2 * k] = torch.tensor([0.9, 0.2, 0.1])
        if c == 0 and mp4:
            import imageio.v3 as iio

            iio.imwrite(root / "cam00.mp4", (clip.numpy() * 255).astype(np.uint8), fps=4)
        else:
            for k in range(n_frames):
                write_image(root / f"cam{c:02d}" / f"{k:04d}.png", clip[k])
    return root


def test_dynerf_videos_and_poses(tmp_path):
    from fields.data import format_of, load_scene

    root = _dynerf(tmp_path / "scene")
    assert format_of(root) == "dynerf"
    scene = load_scene(root)
    assert scene.unbounded and scene.meta["format"] == "dynerf"
    assert len(scene.train) == 8 and len(scene.splits["test"]) == 4  # cam00 held out
    torch.testing.assert_close(scene.splits["test"].times, torch.arange(4) / 3.0)
    # frame-major: every training camera at time 0, then at the next time
    torch.testing.assert_close(scene.train.times[:2], torch.zeros(2))
    im = scene.train.images[2 * 3]  # camera 1 at the last frame: the square moved right
    assert im[5, 9:12].sub(torch.tensor([0.9, 0.2, 0.1])).abs().max() < 0.05
    small = load_scene(root, downscale=2)
    assert small.train.images.shape[1:3] == (8, 8)


def test_dynerf_malformed_inputs_name_the_file(tmp_path):
    from fields.data import load_scene

    root = _dynerf(tmp_path / "few", n_cams=3, mp4=False)
    np.save(root / "poses_bounds.npy", np.load(root / "poses_bounds.npy")[:2])
    with pytest.raises(ValueError, match=r"3 camera videos .* has 2 rows"):
        load_scene(root)
    root = _dynerf(tmp_path / "frames", n_cams=2, mp4=False)
    (root / "cam01" / "0003.png").unlink()
    with pytest.raises(ValueError, match=r"cam01: 3 frames but .*cam00 has 4"):
        load_scene(root)


def test_fit_dynamic_on_an_unbounded_dynerf_capture(tmp_path):
    root = _dynerf(tmp_path / "scene", mp4=False)
    out = tmp_path / "run"
    res = CliRunner().invoke(app, [
        "fit", "dynamic", "--data", str(root), "--steps", "6", "--output", str(out),
        "--video-frames", "0", "--eval-every", "0",
        "--config", '{"grid_resolution": 16, "occupancy_warmup": 4, "target_samples": 2048}'])
    assert res.exit_code == 0, res.output
    info = json.loads((out / "metrics.json").read_text())
    assert math.isfinite(info["psnr"])
    from fields.dynamic.model import LoadedDynamic

    loaded = LoadedDynamic(str(out / "checkpoint.pt"))
    assert loaded.model.contraction == "mipnerf360" and loaded.settings.cone_angle > 0
