import json
import math

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from fields import _ext
from fields.cli import app
from fields.data.pointclouds import write_points
from fields.flow import (
    DistanceGrid,
    FlowConfig,
    accumulate,
    chamfer,
    chamfer_reference,
    distance_grid_reference,
    estimate_normals,
    fit_flow,
    integrate,
    load_flow_field,
)
from fields.metrics import scene_flow_metrics
from fields.scenes.street import rigid_pair

needs_ext = pytest.mark.skipif(not _ext.available(), reason="fields._C not built")


def _cloud(n: int, seed: int = 0, extent=(8.0, 6.0, 2.0)) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, 3, generator=g) - 0.5) * torch.tensor(extent)


def _box_surface(n: int, seed: int, half_extent) -> np.ndarray:
    """n random points on the surface of a box centred at the origin."""
    g = torch.Generator().manual_seed(seed)
    p = torch.rand(n, 3, generator=g) * 2 - 1
    face = torch.randint(0, 3, (n,), generator=g)
    p[torch.arange(n), face] = p[torch.arange(n), face].sign()
    return (p * torch.tensor(half_extent)).numpy()


# -- distance transform --


@needs_ext
@pytest.mark.parametrize("voxel", [0.1, 0.25])
def test_distance_transform_kernel_matches_reference(voxel):
    pts = _cloud(600, seed=1)
    grid = DistanceGrid.build(pts, voxel=voxel, margin=1.0, backend="cpu")
    ref, ref_idx = distance_grid_reference(pts, grid.origin, voxel, grid.dims)
    err = (grid.values - ref).abs()
    # exact wherever the distance is below 2.4 voxels, within sqrt(3) voxels everywhere
    near = ref < 2.4 * voxel
    assert near.sum() > 1000
    assert err[near].max() < 1e-5
    assert err.max() <= math.sqrt(3) * voxel + 1e-5
    assert (grid.values >= 0).all()
    # the feature transform: the index of the point at that distance
    assert grid.nearest.dtype == torch.int32
    assert (grid.nearest[near] == ref_idx[near]).float().mean() > 0.999  # ties aside
    centres = torch.stack(torch.meshgrid(
        *[torch.arange(n) for n in grid.dims[::-1]], indexing="ij")[::-1], -1).double()
    centres = centres * voxel + grid.origin.double()
    at = (centres - pts.double()[grid.nearest.long()]).norm(dim=-1).float()
    assert torch.allclose(at, grid.values, atol=1e-5)


def test_lookup_gives_the_nearest_point_of_the_cell():
    pts = _cloud(300, seed=9)
    grid = DistanceGrid.build(pts, voxel=0.1, margin=0.5, backend="torch")
    x = _cloud(50, seed=10)
    idx = grid.lookup(x)
    cell_centre = torch.round((x - grid.origin) / 0.1) * 0.1 + grid.origin
    expected = torch.cdist(cell_centre.double(), pts.double()).argmin(dim=1)
    assert torch.equal(idx, expected)


@needs_ext
def test_distance_transform_does_not_depend_on_threads():
    pts = _cloud(400, seed=2)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        a = DistanceGrid.build(pts, 0.1, 0.5, backend="cpu").values
        torch.set_num_threads(2)
        b = DistanceGrid.build(pts, 0.1, 0.5, backend="cpu").values
    finally:
        torch.set_num_threads(before)
    assert torch.equal(a, b)


def test_distance_grid_lookup_and_gradient():
    # one point: the distance field is |x - p|, its gradient the unit direction away from p
    p = torch.tensor([[0.3, -0.2, 0.1]])
    grid = DistanceGrid.build(p, voxel=0.05, margin=1.0, backend="torch")
    x = torch.tensor([[0.8, -0.2, 0.1], [0.3, 0.4, -0.3], [1.0, 0.5, 0.6]], requires_grad=True)
    d = grid(x)
    exact = (x - p).norm(dim=-1)
    assert torch.allclose(d, exact, atol=0.01)
    d.sum().backward()
    direction = (x - p) / exact[:, None]
    assert torch.allclose(x.grad, direction.detach(), atol=0.08)


def test_distance_grid_outside_adds_distance_to_grid():
    p = torch.tensor([[0.0, 0.0, 0.0]])
    grid = DistanceGrid.build(p, voxel=0.1, margin=0.5, backend="torch")
    x = torch.tensor([[2.0, 0.0, 0.0]], requires_grad=True)
    d = grid(x)
    assert abs(d.item() - 2.0) < 0.02  # 0.5 to the border + 1.5 outside
    d.backward()
    assert x.grad[0, 0] > 0.9


def test_distance_grid_refuses_huge_grids():
    pts = torch.tensor([[0.0, 0.0, 0.0], [1000.0, 1000.0, 10.0]])
    with pytest.raises(ValueError, match="cells"):
        DistanceGrid.build(pts, voxel=0.1)


# -- Chamfer --


@pytest.mark.parametrize("truncate", [None, 0.3])
def test_chamfer_matches_brute_force(truncate):
    a = _cloud(300, seed=3).requires_grad_()
    b = _cloud(250, seed=4)
    a_ref = a.detach().clone().requires_grad_()
    loss = chamfer(a, b, truncate=truncate)
    ref = chamfer_reference(a_ref, b, truncate=truncate)
    assert torch.allclose(loss, ref, rtol=1e-5)
    loss.backward()
    ref.backward()
    assert torch.allclose(a.grad, a_ref.grad, atol=1e-6)


def test_normals_and_point_to_plane_chamfer():
    g = torch.Generator().manual_seed(11)
    plane = torch.cat((torch.rand(500, 2, generator=g) * 4 - 2, torch.zeros(500, 1)), -1)
    normals = estimate_normals(plane, k=10, viewpoint=(0.0, 0.0, 5.0))
    assert torch.allclose(normals, torch.tensor([0.0, 0.0, 1.0]).expand_as(normals), atol=1e-4)
    # a ball is not flat anywhere at this k: no normals
    ball = torch.randn(200, 3, generator=g)
    assert (estimate_normals(ball, k=30).abs().sum(-1) == 0).float().mean() > 0.9
    # sliding along the plane costs nothing point-to-plane, but does point-to-point
    a = plane[:250] + torch.tensor([0.05, 0.03, 0.0])
    b = plane[250:]
    with_planes = chamfer(a, b, normals_b=normals[250:])
    without = chamfer(a, b)
    assert with_planes < without
    lifted = chamfer(a + torch.tensor([0.0, 0.0, 0.2]), b, normals_b=normals[250:])
    assert lifted > with_planes + 0.03  # 0.2^2 from the planes, a to b


# -- metrics --


def test_scene_flow_metrics_hand_computed():
    gt = torch.tensor([[1.0, 0, 0], [1.0, 0, 0], [0, 2.0, 0], [0, 0, 0.5]])
    pred = torch.tensor([[1.0, 0, 0], [1.04, 0, 0], [0, 2.15, 0], [0, 0, 1.0]])
    m = scene_flow_metrics(pred, gt)
    assert m["epe3d"] == pytest.approx((0 + 0.04 + 0.15 + 0.5) / 4, abs=1e-6)
    # errors 0, 0.04, 0.15 (7.5%), 0.5 (100%)
    assert m["acc_strict"] == pytest.approx(2 / 4)
    assert m["acc_relax"] == pytest.approx(3 / 4)
    assert m["outliers"] == pytest.approx(1 / 4)
    # angle of (0, 0, 1, 1) vs (0, 0, 0.5, 1): acos(1.5 / (sqrt(2) sqrt(1.25)))
    last = math.acos(1.5 / (math.sqrt(2) * math.sqrt(1.25)))
    first = 0.0
    second = math.acos((1.04 + 1) / (math.sqrt(1.04**2 + 1) * math.sqrt(2)))
    third = math.acos((2 * 2.15 + 1) / (math.sqrt(2.15**2 + 1) * math.sqrt(5)))
    assert m["angle_error"] == pytest.approx((first + second + third + last) / 4, abs=1e-6)


def test_scene_flow_metrics_shape_errors():
    with pytest.raises(ValueError, match="same shape"):
        scene_flow_metrics(torch.zeros(3, 3), torch.zeros(4, 3))


# -- fitting --


@pytest.mark.parametrize("method", ["dt", "nsfp"])
def test_rigid_motion_is_recovered(method):
    # a box's surface, moved rigidly: small yaw plus a translation
    pts = _box_surface(1500, 5, (2.0, 1.0, 0.8))
    pair = rigid_pair(pts, rotation_deg=3.0, translation=(0.4, -0.2, 0.05), shuffle=True)
    cfg = FlowConfig.for_method(method, width=64, depth=4, max_iters=400, patience=50,
                                lr=4e-3)
    fit = fit_flow(pair.source, pair.target, cfg)
    m = scene_flow_metrics(fit.flow, torch.from_numpy(pair.flow))
    assert m["epe3d"] < 0.05, m
    assert fit.best_iter <= fit.iters <= 400


def test_rigid_part_of_the_field_is_a_rotation_and_a_translation():
    from scipy.spatial.transform import Rotation

    from fields.flow import FlowField

    field = FlowField(FlowConfig.for_method("dt", width=16, depth=2, rigid=True))
    x = _cloud(50, seed=8)
    with torch.no_grad():
        network_only = field(x)  # the rigid part starts at the identity
        rotvec, trans = np.array([0.1, -0.2, 0.3]), np.array([0.5, -1.0, 0.25])
        field.rigid.copy_(torch.tensor(np.concatenate((rotvec, trans)), dtype=torch.float32))
        rot, _t = field.rigid_motion()
        flow = field(x)
    expected_rot = Rotation.from_rotvec(rotvec).as_matrix()
    assert np.allclose(rot.numpy(), expected_rot, atol=2e-5)  # float32
    expected = x.double().numpy() @ expected_rot.T + trans - x.double().numpy()
    assert np.allclose((flow - network_only).numpy(), expected, atol=1e-4)
    # without the option there is no rigid part
    plain = FlowField(FlowConfig.for_method("dt", width=16, depth=2, rigid=False))
    assert plain.rigid is None and torch.equal(plain.rigid_motion()[0], torch.eye(3))


def test_rigid_stage_finds_the_motion():
    # rigid=True: the rigid motion alone first, then the network. The rigid stage alone (the
    # network then barely trained) already explains a rigid motion; the whole fit is exact
    pts = _box_surface(2000, 9, (3.0, 2.0, 1.0))
    pair = rigid_pair(pts, rotation_deg=4.0, translation=(0.3, 0.1, -0.05), shuffle=True)
    gt = torch.from_numpy(pair.flow)
    common = dict(width=32, depth=2, patience=30, rigid=True, rigid_iters=400,
                  tangent_weight=0.1)
    rigid_only = fit_flow(pair.source, pair.target,
                          FlowConfig.for_method("dt", max_iters=1, lr=1e-6, **common))
    with torch.no_grad():
        rot, _ = rigid_only.forward_field.rigid_motion()
    # the translation also absorbs the untrained network's near-constant output; the
    # rotation is the motion's
    assert math.degrees(math.atan2(float(rot[1, 0]), float(rot[0, 0]))) == pytest.approx(
        4.0, abs=0.3)
    assert scene_flow_metrics(rigid_only.flow, gt)["epe3d"] < 0.04
    plain = fit_flow(pair.source, pair.target,
                     FlowConfig.for_method("dt", max_iters=1, lr=1e-6,
                                           **{**common, "rigid": False}))
    assert scene_flow_metrics(plain.flow, gt)["epe3d"] > 0.2  # the network alone: not yet
    full = fit_flow(pair.source, pair.target, FlowConfig.for_method("dt", max_iters=100,
                                                                     **common))
    assert scene_flow_metrics(full.flow, gt)["epe3d"] < 0.01


def test_one_way_chamfer():
    a, b = _cloud(200, seed=12), _cloud(150, seed=13)
    one = chamfer(a, b, both=False)
    ref = torch.cdist(a, b).square().min(dim=1).values.mean()
    assert torch.allclose(one, ref, rtol=1e-5)
    assert chamfer(a, b) > one


def test_early_stopping_and_best_iterate():
    pts = _cloud(300, seed=6)
    cfg = FlowConfig.for_method("dt", width=32, depth=2, max_iters=2000, patience=5,
                                min_delta=0.5)
    fit = fit_flow(pts, pts + 0.1, cfg)
    assert fit.iters < 2000  # a relative improvement of 50% is soon out of reach
    assert fit.history[-1]["best_loss"] == pytest.approx(fit.best_loss)


def test_config_errors():
    with pytest.raises(ValueError, match="method"):
        FlowConfig(method="sift")
    with pytest.raises(ValueError, match="width"):
        FlowConfig(width=0)
    with pytest.raises(ValueError, match="FlowConfig: unknown key"):
        FlowConfig.from_dict({"widht": 3})
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        fit_flow(np.zeros((4, 2)), np.zeros((4, 3)))


# -- sequences --


def test_integrate_and_accumulate_with_known_fields():
    shift = torch.tensor([0.5, 0.0, 0.0])
    fields_ = [lambda p: shift.expand_as(p), lambda p: 2 * shift.expand_as(p)]
    pts = _cloud(10)
    traj = integrate(fields_, pts)
    assert traj.shape == (3, 10, 3)
    assert torch.allclose(traj[2], pts + 3 * shift)
    frames = [pts, pts + 1.0, pts + 2.0]
    dense, idx = accumulate(frames, fields_)
    assert dense.shape == (30, 3)
    assert torch.allclose(dense[:10], pts + 3 * shift)
    assert torch.allclose(dense[10:20], pts + 1.0 + 2 * shift)
    assert torch.allclose(dense[20:], pts + 2.0)
    assert idx.tolist() == [0] * 10 + [1] * 10 + [2] * 10
    with pytest.raises(ValueError, match="flow fields"):
        accumulate(frames, fields_[:1])


# -- the training loop --


def test_flow_task_stops_early_through_done():
    from fields.flow import FlowTask
    from fields.train import TrainConfig, train

    pts = _cloud(300, seed=6)
    cfg = FlowConfig.for_method("dt", width=32, depth=2, max_iters=2000, patience=5,
                                min_delta=0.5, rigid_iters=50)
    task = FlowTask(pts, pts + 0.1, cfg)
    state = train(task, TrainConfig(steps=task.max_steps, max_seconds=60.0, eval_every=0.0),
                  show_progress=False)
    assert task.done and state.step < task.max_steps  # the task ended the loop
    assert state.step == task.iters + task.rigid_steps  # one optimiser step per loop step
    assert 0 < task.rigid_steps < 50  # the rigid phase stopped early too
    # the best iterate is what the fit returns
    fit = task.result(steps=state.step)
    with torch.no_grad():
        assert torch.allclose(fit.forward_field(pts), fit.flow, atol=1e-6)
    assert fit.best_loss == min(r["best_loss"] for r in fit.history)


def test_flow_task_budget_in_seconds():
    pts = _cloud(300, seed=6)
    cfg = FlowConfig.for_method("dt", width=32, depth=2, max_iters=100_000, patience=100_000)
    fit = fit_flow(pts, pts + 0.1, cfg, max_seconds=0.3)
    assert 0 < fit.steps < 100_000 and fit.train_seconds < 5.0


# -- the built-in data: one sphere tracer --


def _reference_trace(scene, origin, dirs, time, max_range=35.0):
    """FlowScene.trace as it was before it called fields.render.sphere_trace (its own loop)."""
    from fields.scenes.street import CHUNK, HIT_EPS, MAX_STEPS

    dtype = dirs.dtype
    prims = scene.primitives(time, dtype)
    o = torch.as_tensor(np.asarray(origin), dtype=dtype)
    n = dirs.shape[0]
    t_out = torch.zeros(n, dtype=dtype)
    kind = torch.zeros(n, dtype=torch.int8)
    down = dirs[:, 2] < 0
    t_ground = torch.where(down, -o[2] / dirs[:, 2].clamp_max(-1e-12), math.inf)
    t_lim = t_ground.clamp_max(max_range)
    for start in range(0, n, CHUNK):
        idx = torch.arange(start, min(start + CHUNK, n))
        t = torch.zeros(idx.shape[0], dtype=dtype)
        for _ in range(MAX_STEPS):
            if idx.numel() == 0:
                break
            p = o + t[:, None] * dirs[idx]
            d = prims.distances(p, scene.sculpture).amin(dim=1)
            close = d < HIT_EPS
            t_out[idx[close]] = t[close]
            kind[idx[close]] = 1
            t = t + d
            ended = ~close & (t >= t_lim[idx])
            ground = idx[ended & (t_ground[idx] <= max_range)]
            t_out[ground] = t_ground[ground]
            kind[ground] = 2
            keep = ~close & ~ended
            idx, t = idx[keep], t[keep]
    return t_out, kind


@pytest.mark.parametrize("time", [0, 9])
def test_scene_trace_is_the_shared_sphere_tracer_bit_for_bit(time):
    from fields.scenes.street import FlowScene

    scene = FlowScene(seed=1)
    _, origin = scene.sensor_pose(time)
    el, az = np.meshgrid(np.radians(np.linspace(-24.8, 2.0, 12)),
                         np.linspace(0, 2 * np.pi, 200, endpoint=False) + 0.01, indexing="ij")
    dirs = np.stack((np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)), -1)
    dirs = torch.tensor(dirs.reshape(-1, 3), dtype=torch.float32)
    t, kind = scene.trace(origin, dirs, time)
    t_ref, kind_ref = _reference_trace(scene, origin, dirs, time)
    assert torch.equal(kind, kind_ref)
    assert torch.equal(t, t_ref)
    assert {0, 1, 2} <= set(kind.tolist())  # misses, objects and the ground all traced


# -- command line --


def _pair_files(tmp_path, n=400):
    pts = _cloud(n, seed=7).numpy()
    write_points(tmp_path / "a.ply", pts)
    write_points(tmp_path / "b.pcd", pts + np.float32([0.2, 0.0, 0.0]))
    np.save(tmp_path / "gt.npy", np.tile(np.float32([0.2, 0.0, 0.0]), (n, 1)))
    return pts, [str(tmp_path / "a.ply"), str(tmp_path / "b.pcd")]


SMALL = '{"width": 32, "depth": 2}'


def test_fit_flow_cli_writes_outputs(tmp_path):
    pts, clouds = _pair_files(tmp_path)
    out = tmp_path / "out"
    result = CliRunner().invoke(app, [
        "fit", "flow", *clouds, "--gt", str(tmp_path / "gt.npy"), "--method", "dt",
        "--steps", "40", "--output", str(out), "--config", SMALL, "--seed", "3",
        "--max-seconds", "60",
    ])
    assert result.exit_code == 0, result.output
    flow = np.load(out / "flow.npy")
    assert flow.shape == (400, 3) and flow.dtype == np.float32
    metrics = json.loads((out / "metrics.json").read_text())
    assert list(metrics)[:3] == ["steps", "seconds", "wall_seconds"]
    assert metrics["steps"] == 40 and "iters" not in metrics
    # the budget ended in the rigid phase (300 steps): the flow is the rigid motion's so far
    assert metrics["flow_steps"] == 0 and metrics["epe3d"] < 0.1
    assert metrics["steps"] == metrics["rigid_steps"] + metrics["flow_steps"]
    for key in ("epe3d", "acc_strict", "acc_relax", "outliers", "angle_error", "best_step"):
        assert key in metrics
    assert metrics["wall_seconds"] >= metrics["seconds"] > 0
    config = json.loads((out / "config.json").read_text())
    assert config["kind"] == "flow" and config["steps"] == 40 and config["seed"] == 3
    assert config["max_seconds"] == 60 and config["config"]["width"] == 32
    assert config["config"]["seed"] == 3 and config["gt"] == str((tmp_path / "gt.npy").resolve())
    assert (out / "flow.png").stat().st_size > 10_000
    field, payload = load_flow_field(out / "checkpoint.pt")
    with torch.no_grad():
        again = field(torch.from_numpy(pts))
    # the checkpoint gives the best iterate, the one flow.npy comes from
    assert np.allclose(again.numpy(), flow, atol=1e-5)
    assert payload["source"].shape == (400, 3) and payload["train_state"]["step"] == 40


def test_fit_flow_cli_old_spelling_still_works(tmp_path, monkeypatch):
    from fields import command

    monkeypatch.setattr(command, "_warned", set())
    _, clouds = _pair_files(tmp_path, n=200)
    out = tmp_path / "out"
    r = CliRunner().invoke(app, ["fit", "flow", *clouds, "--max-iters", "12", "--output",
                                 str(out), "--config", SMALL])
    assert r.exit_code == 0, r.output
    assert r.output.count("deprecated") == 1 and "--max-iters is now --steps" in r.output
    assert json.loads((out / "metrics.json").read_text())["steps"] == 12
    assert "--max-iters" not in CliRunner().invoke(app, ["fit", "flow", "--help"]).output


def test_fit_flow_cli_config_file_and_default_folder(tmp_path, monkeypatch):
    _, clouds = _pair_files(tmp_path, n=200)
    (tmp_path / "cfg.json").write_text('{"width": 16, "depth": 2, "lr": 0.005}')
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(app, ["fit", "flow", *clouds, "--steps", "5", "--config",
                                 str(tmp_path / "cfg.json")])
    assert r.exit_code == 0, r.output
    (run,) = (tmp_path / "outputs" / "a" / "flow").iterdir()  # outputs/<input>/flow/<time>
    config = json.loads((run / "config.json").read_text())["config"]
    assert config["width"] == 16 and config["lr"] == 0.005 and config["method"] == "dt"
    assert {"config.json", "metrics.json", "checkpoint.pt", "flow.npy"} <= {
        p.name for p in run.iterdir()}


def test_fit_flow_cli_resume_continues_the_run(tmp_path):
    # through the rigid phase (20 steps) into the flow phase: 8 steps, then 8 -> 25 (phase
    # change), then 25 -> 40, equals 40 steps at once
    _, clouds = _pair_files(tmp_path, n=300)
    cfg = '{"width": 32, "depth": 2, "patience": 1000, "rigid_iters": 20}'
    runner = CliRunner()

    def fit(name: str, steps: int, resume: str | None = None):
        args = ["fit", "flow", *clouds, "--steps", str(steps), "--output",
                str(tmp_path / name), "--config", cfg]
        r = runner.invoke(app, args + (["--resume", resume] if resume else []))
        assert r.exit_code == 0, r.output
        return json.loads((tmp_path / name / "metrics.json").read_text())

    straight = fit("straight", 40)
    fit("a", 8)
    fit("b", 25, str(tmp_path / "a" / "checkpoint.pt"))
    resumed = fit("c", 40, str(tmp_path / "b" / "checkpoint.pt"))
    assert resumed["steps"] == straight["steps"] == 40
    assert resumed["rigid_steps"] == straight["rigid_steps"] == 20
    assert resumed["best_loss"] == pytest.approx(straight["best_loss"], rel=1e-6)
    np.testing.assert_allclose(np.load(tmp_path / "c" / "flow.npy"),
                               np.load(tmp_path / "straight" / "flow.npy"), atol=1e-6)
    # resuming with other clouds is refused, naming the checkpoint
    other = tmp_path / "other.npy"
    np.save(other, _cloud(300, seed=99).numpy())
    r = runner.invoke(app, ["fit", "flow", str(other), clouds[1], "--resume",
                            str(tmp_path / "a" / "checkpoint.pt"), "--output",
                            str(tmp_path / "d")])
    assert r.exit_code == 2 and "checkpoint.pt" in r.output and "source" in r.output


def test_fit_flow_cli_ctrl_c_leaves_a_checkpoint(tmp_path, monkeypatch):
    from fields.flow import FlowTask

    _, clouds = _pair_files(tmp_path, n=200)
    step = FlowTask.train_step

    def interrupted(self, i, progress):
        if i == 6:
            raise KeyboardInterrupt
        return step(self, i, progress)

    monkeypatch.setattr(FlowTask, "train_step", interrupted)
    out = tmp_path / "out"
    r = CliRunner().invoke(app, ["fit", "flow", *clouds, "--steps", "50", "--output", str(out),
                                 "--config", SMALL])
    assert r.exit_code == 130 and "checkpoint" in r.output
    _, payload = load_flow_field(out / "checkpoint.pt")
    assert payload["train_state"]["step"] == 6 and (out / "config.json").is_file()


def test_fit_flow_cli_errors(tmp_path):
    runner = CliRunner()
    (tmp_path / "bad.ply").write_text("ply\nformat ascii 1.0\nelement vertex 1\nend_header\n1 2\n")
    write_points(tmp_path / "b.npy", _cloud(5).numpy())
    r = runner.invoke(app, ["fit", "flow", str(tmp_path / "bad.ply"), str(tmp_path / "b.npy")])
    assert r.exit_code == 2 and "bad.ply" in r.output
    r = runner.invoke(app, ["fit", "flow", str(tmp_path / "b.npy")])
    assert r.exit_code == 2 and "both" in r.output
    np.save(tmp_path / "gt.npy", np.zeros((3, 3), np.float32))
    r = runner.invoke(app, ["fit", "flow", str(tmp_path / "b.npy"), str(tmp_path / "b.npy"),
                            "--gt", str(tmp_path / "gt.npy")])
    assert r.exit_code == 2 and "gt.npy" in r.output and "(5, 3)" in r.output
    r = runner.invoke(app, ["fit", "flow", "--config", '{"lr": -1}'])
    assert r.exit_code == 2 and "lr" in r.output
    r = runner.invoke(app, ["fit", "flow", "--config", '{"widht": 3}'])
    assert r.exit_code == 2 and "widht" in r.output
    r = runner.invoke(app, ["fit", "flow", "--config", str(tmp_path / "nope.json")])
    assert r.exit_code == 2 and "nope.json" in r.output
    r = runner.invoke(app, ["fit", "flow", "--steps", "0"])
    assert r.exit_code == 2 and "--steps" in r.output
    r = runner.invoke(app, ["fit", "flow", "--resume", str(tmp_path / "gone.pt")])
    assert r.exit_code == 2 and "gone.pt" in r.output
    r = runner.invoke(app, ["fit", "flow", "--sequence", str(tmp_path / "nope")])
    assert r.exit_code == 2 and "nope" in r.output
    r = runner.invoke(app, ["fit", "flow", "--sequence", "builtin", "--resume",
                            str(tmp_path / "b.npy")])
    assert r.exit_code == 2 and "--sequence" in r.output


def test_fit_flow_cli_sequence_folder(tmp_path):
    frames = tmp_path / "frames"
    pts = _cloud(300, seed=8).numpy()
    for k in range(3):
        write_points(frames / f"{k:02d}.npy", pts + np.float32([0.15 * k, 0, 0]))
    out = tmp_path / "out"
    r = CliRunner().invoke(app, [
        "fit", "flow", "--sequence", str(frames), "--trajectories", "--method", "dt",
        "--steps", "15", "--output", str(out), "--config", SMALL,
    ])
    assert r.exit_code == 0, r.output
    assert np.load(out / "trajectories.npy").shape == (3, 300, 3)
    assert (out / "flows" / "flow_001.npy").is_file()
    assert (out / "accumulated.ply").is_file()
    metrics = json.loads((out / "metrics.json").read_text())
    assert list(metrics)[:3] == ["steps", "seconds", "wall_seconds"]
    assert len(metrics["pairs"]) == 2 and metrics["steps"] == 30  # 15 per pair
    assert all(p["steps"] == 15 for p in metrics["pairs"])
    config = json.loads((out / "config.json").read_text())
    assert config["kind"] == "flow" and config["frames"] == 3 and config["steps"] == 15
    # each pair's checkpoint is the loop's, and loads (its best iterate)
    field, payload = load_flow_field(out / "flows" / "checkpoint_001.pt")
    with torch.no_grad():
        again = field(torch.from_numpy(pts + np.float32([0.15, 0, 0])))
    np.testing.assert_allclose(again.numpy(), np.load(out / "flows" / "flow_001.npy"),
                               atol=1e-5)
    assert payload["pair"] == 1 and payload["train_state"]["step"] == 15


# -- fields eval --


def test_eval_flow_checkpoint_against_its_gt_file(tmp_path):
    _, clouds = _pair_files(tmp_path)
    out = tmp_path / "out"
    runner = CliRunner()
    r = runner.invoke(app, ["fit", "flow", *clouds, "--gt", str(tmp_path / "gt.npy"),
                            "--steps", "30", "--output", str(out), "--config", SMALL])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["eval", str(out / "checkpoint.pt")])
    assert r.exit_code == 0, r.output
    scores = json.loads((out / "eval.json").read_text())
    fitted = json.loads((out / "metrics.json").read_text())
    assert scores["kind"] == "flow" and scores["n_source"] == 400
    for key in ("epe3d", "acc_strict", "acc_relax", "outliers", "angle_error"):
        assert scores[key] == pytest.approx(fitted[key], abs=1e-5), key
    # --data: another ground truth (zero flow: the error is the flow's length)
    np.save(tmp_path / "zero.npy", np.zeros((400, 3), np.float32))
    r = runner.invoke(app, ["eval", str(out / "checkpoint.pt"), "--data",
                            str(tmp_path / "zero.npy"), "--output", str(tmp_path / "z.json")])
    assert r.exit_code == 0, r.output
    flow = torch.from_numpy(np.load(out / "flow.npy"))
    assert json.loads((tmp_path / "z.json").read_text())["epe3d"] == pytest.approx(
        float(flow.norm(dim=-1).mean()), abs=1e-5)


def test_eval_flow_without_ground_truth_says_so(tmp_path):
    _, clouds = _pair_files(tmp_path, n=200)
    out = tmp_path / "out"
    runner = CliRunner()
    r = runner.invoke(app, ["fit", "flow", *clouds, "--steps", "5", "--output", str(out),
                            "--config", SMALL])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["eval", str(out / "checkpoint.pt")])
    assert r.exit_code == 2
    assert "checkpoint.pt" in r.output and "no ground-truth flow" in r.output
    np.save(tmp_path / "short.npy", np.zeros((10, 3), np.float32))
    r = runner.invoke(app, ["eval", str(out / "checkpoint.pt"), "--data",
                            str(tmp_path / "short.npy")])
    assert r.exit_code == 2 and "short.npy" in r.output and "(200, 3)" in r.output


def test_eval_flow_regenerates_the_builtin_pair(tmp_path, monkeypatch):
    # the built-in pair, made small and cheap: the run's config.json names its seed and time,
    # and `fields eval` makes it again from them
    from fields.scenes import street as flow_scenes

    made = []

    def small_pair(seed=0, n_points=8192, *, time=0, **kw):
        made.append((seed, n_points, time))
        pts = _box_surface(500, seed + 10 * time, (2.0, 1.0, 0.8))
        pair = rigid_pair(pts, rotation_deg=2.0, translation=(0.3, 0.0, 0.0), shuffle=True)
        pair.name = f"small-s{seed}-t{time}"
        return pair

    monkeypatch.setattr(flow_scenes, "make_flow_pair", small_pair)
    out = tmp_path / "out"
    runner = CliRunner()
    r = runner.invoke(app, ["fit", "flow", "--seed", "2", "--time", "4", "--steps", "60",
                            "--output", str(out), "--config", SMALL])
    assert r.exit_code == 0, r.output
    config = json.loads((out / "config.json").read_text())
    assert config["builtin"] == {"seed": 2, "time": 4, "n_points": 8192}
    r = runner.invoke(app, ["eval", str(out / "checkpoint.pt")])
    assert r.exit_code == 0, r.output
    assert made == [(2, 8192, 4), (2, 8192, 4)]
    scores = json.loads((out / "eval.json").read_text())
    fitted = json.loads((out / "metrics.json").read_text())
    assert scores["ground_truth"] == "builtin small-s2-t4"
    assert scores["epe3d"] == pytest.approx(fitted["epe3d"], abs=1e-5)
