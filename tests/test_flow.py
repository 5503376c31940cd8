import json
import math

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from fields import _ext
from fields.cli import app
from fields.data.flow_scenes import rigid_pair
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
    with pytest.raises(ValueError, match="unknown FlowConfig"):
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


# -- command line --


def test_fit_flow_cli_writes_outputs(tmp_path):
    pts = _cloud(400, seed=7).numpy()
    write_points(tmp_path / "a.ply", pts)
    write_points(tmp_path / "b.pcd", pts + np.float32([0.2, 0.0, 0.0]))
    np.save(tmp_path / "gt.npy", np.tile(np.float32([0.2, 0.0, 0.0]), (400, 1)))
    out = tmp_path / "out"
    result = CliRunner().invoke(app, [
        "fit", "flow", str(tmp_path / "a.ply"), str(tmp_path / "b.pcd"), "--gt",
        str(tmp_path / "gt.npy"), "--method", "dt", "--max-iters", "20", "--output", str(out),
        "--config", '{"width": 32, "depth": 2}',
    ])
    assert result.exit_code == 0, result.output
    flow = np.load(out / "flow.npy")
    assert flow.shape == (400, 3) and flow.dtype == np.float32
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("epe3d", "acc_strict", "acc_relax", "outliers", "angle_error", "seconds"):
        assert key in metrics
    assert (out / "flow.png").stat().st_size > 10_000
    field, payload = load_flow_field(out / "checkpoint.pt")
    with torch.no_grad():
        again = field(torch.from_numpy(pts))
    # the checkpoint holds the best iterate, the one flow.npy comes from
    assert np.allclose(again.numpy(), flow, atol=1e-5)
    assert payload["source"].shape == (400, 3)


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
    r = runner.invoke(app, ["fit", "flow", "--sequence", str(tmp_path / "nope")])
    assert r.exit_code == 2 and "nope" in r.output


def test_fit_flow_cli_sequence_folder(tmp_path):
    frames = tmp_path / "frames"
    pts = _cloud(300, seed=8).numpy()
    for k in range(3):
        write_points(frames / f"{k:02d}.npy", pts + np.float32([0.15 * k, 0, 0]))
    out = tmp_path / "out"
    r = CliRunner().invoke(app, [
        "fit", "flow", "--sequence", str(frames), "--trajectories", "--method", "dt",
        "--max-iters", "15", "--output", str(out), "--config", '{"width": 32, "depth": 2}',
    ])
    assert r.exit_code == 0, r.output
    assert np.load(out / "trajectories.npy").shape == (3, 300, 3)
    assert (out / "flows" / "flow_001.npy").is_file()
    assert (out / "accumulated.ply").is_file()
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(metrics["pairs"]) == 2
