"""Signed distance fields: shapes, marching cubes (analytic, chunk seams), metrics, the
eikonal gradient, sphere tracing, a short fit, mesh files and the CLI."""

import json
import math

import numpy as np
import pytest
import torch

from fields.mesh import (
    extract_surface,
    is_watertight,
    load_mesh,
    sample_surface,
    save_mesh,
    surface_metrics,
)
from fields.scenes import shapes
from fields.sdf.field import SDFConfig, SDFField, SurfaceSamples, sdf_gradient

CUBE = torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])


@pytest.mark.parametrize("name", sorted(shapes.BUILTIN))
def test_builtin_shapes_are_distance_like(name):
    f = shapes.builtin_shape(name)
    x = (torch.rand(20000, 3) * 2 - 1).requires_grad_(True)
    d = f(x)
    (g,) = torch.autograd.grad(d.sum(), x)
    np.testing.assert_allclose(g.norm(dim=-1).numpy(), 1.0, atol=1e-4)
    assert (d < 0).any() and (d > 0).any()
    with pytest.raises(ValueError, match="unknown built-in shape"):
        shapes.builtin_shape("teapot")


def test_primitive_distances_are_exact():
    x = torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.5, 0.5, 0.5]])
    torch.testing.assert_close(shapes.sphere(1.0)(x),
                               torch.tensor([1.0, -1.0, math.sqrt(0.75) - 1]))
    b = shapes.box((0.5, 0.5, 0.5))
    torch.testing.assert_close(b(torch.tensor([[1.5, 1.5, 0.0], [0.0, 0.0, 0.2]])),
                               torch.tensor([math.sqrt(2.0), -0.3]))
    t = shapes.torus(1.0, 0.25)
    torch.testing.assert_close(t(torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]])),
                               torch.tensor([-0.25, math.sqrt(1.0) - 0.25]))
    c = shapes.capsule((0, 0, 0), (0, 0, 1), 0.1)
    torch.testing.assert_close(c(torch.tensor([[0.5, 0.0, 0.5], [0.0, 0.0, 2.0]])),
                               torch.tensor([0.4, 0.9]))


def test_marching_cubes_on_analytic_sdfs_lies_on_the_exact_surface():
    v, f = extract_surface(shapes.sphere(0.6), CUBE, 96)
    assert np.abs(np.linalg.norm(v, axis=1) - 0.6).max() < 2e-3
    assert is_watertight(f)
    # outward normals
    n = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
    assert ((n * v[f].mean(1)).sum(1) > 0).all()
    # the torus: vertices on the exact zero level set, area close to 4 pi^2 R r
    t = shapes.torus(0.55, 0.2)
    v, f = extract_surface(t, CUBE, 128)
    assert t(torch.from_numpy(v)).abs().max() < 2e-3
    area = 0.5 * np.linalg.norm(np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]]),
                                axis=1).sum()
    assert abs(area - 4 * math.pi**2 * 0.55 * 0.2) / area < 0.01


def test_chunked_extraction_has_no_seams():
    """A mesh extracted in blocks equals the one extracted whole: same vertices, same
    triangles, watertight (no cracks or duplicated vertices along block boundaries)."""
    f = shapes.csg_shape()
    whole_v, whole_f = extract_surface(f, CUBE, 61, chunk=1000)
    calls = []
    v, faces = extract_surface(f, CUBE, 61, chunk=7, progress=lambda i, n: calls.append(n))
    assert calls and calls[-1] == 9**3
    assert v.shape == whole_v.shape and faces.shape == whole_f.shape
    assert is_watertight(faces) and is_watertight(whole_f)

    # every triangle has its twin: same centroid and the same corners (up to float32 rounding)
    from scipy.spatial import cKDTree

    dist, idx = cKDTree(whole_v[whole_f].mean(1)).query(v[faces].mean(1))
    assert dist.max() < 1e-5 and len(np.unique(idx)) == len(faces)
    corners = np.sort(v[faces].reshape(-1, 3, 3).sum(-1), axis=1)
    twins = np.sort(whole_v[whole_f][idx].sum(-1), axis=1)
    assert np.abs(corners - twins).max() < 1e-5
    with pytest.raises(ValueError, match="resolution"):
        extract_surface(f, CUBE, 1)


def test_surface_metrics():
    v, f = extract_surface(shapes.sphere(0.6), CUBE, 64)
    # a mesh against itself: only the floor of two independent 100k-point samplings
    same = surface_metrics((v, f), (v, f), n_points=100_000)
    assert same["chamfer_l1"] < 2.5e-3 and same["f_score"] > 0.99
    assert same["normal_consistency"] > 0.99
    # a sphere 2% of the diagonal larger: Chamfer about that, F-score@0.5% near zero
    big_v, big_f = extract_surface(shapes.sphere(0.6 + 0.02 * 1.2 * math.sqrt(3)), CUBE, 64)
    m = surface_metrics((big_v, big_f), (v, f), n_points=20000)
    assert abs(m["chamfer_l1"] - 0.02) < 0.003 and m["f_score"] < 0.05
    pts, normals = sample_surface(v, f, 1000)
    np.testing.assert_allclose(np.linalg.norm(normals, axis=1), 1.0, atol=1e-6)
    assert np.abs(np.linalg.norm(pts, axis=1) - 0.6).max() < 5e-3


def test_surface_metrics_per_object():
    """Two balls, one of them fitted 0.04 too large: per object, the error is on that one,
    the other's is the sampling floor; the shares are the balls' areas."""
    a, b = shapes.sphere(0.3, (-0.5, 0.0, 0.0)), shapes.sphere(0.2, (0.5, 0.0, 0.0))
    big = shapes.sphere(0.24, (0.5, 0.0, 0.0))
    truth = extract_surface(shapes.union(a, b), CUBE, 96)
    pred = extract_surface(shapes.union(a, big), CUBE, 96)

    def label(p):
        return (p[:, 0] > 0).astype(np.int64)

    m = surface_metrics(pred, truth, n_points=40_000, objects=(label, ("left", "right")))
    left, right = m["objects"]["left"], m["objects"]["right"]
    assert left["chamfer_l1"] < 0.15 * right["chamfer_l1"]
    diag = m["diagonal"]
    assert abs(right["accuracy"] * diag - 0.04) < 0.005
    assert abs(right["completeness"] * diag - 0.04) < 0.005
    assert abs(left["share"] - 0.09 / 0.13) < 0.02 and abs(right["share"] - 0.04 / 0.13) < 0.02
    # the whole is the share-weighted mix of the parts' completeness
    whole = left["share"] * left["completeness"] + right["share"] * right["completeness"]
    assert abs(whole - m["completeness"]) < 1e-9
    assert "objects" not in surface_metrics(pred, truth, n_points=1000)


@pytest.mark.parametrize("model", ["hash", "siren"])
def test_eikonal_gradient_against_autograd(model):
    torch.manual_seed(0)
    field = SDFField(CUBE, SDFConfig(model=model, finest_resolution=64, log2_hashmap_size=12,
                                     n_levels=4))
    x = torch.rand(64, 3) * 1.6 - 0.8
    xd = x.double().requires_grad_(True)
    want = torch.autograd.grad(field.double()(xd).sum(), xd)[0].float()
    field = field.float()
    y, g = sdf_gradient(field, x, "autograd")
    torch.testing.assert_close(g, want, atol=1e-4, rtol=1e-3)
    torch.testing.assert_close(y, field(x))
    # the weight-gradient of the eikonal term (second derivative) is finite and reaches the
    # network's weights
    loss = (g.norm(dim=-1) - 1).square().mean()
    params = [p for p in field.parameters() if p.requires_grad]
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    assert any(gr is not None and gr.abs().sum() > 0 for gr in grads)
    # central differences agree where the field is smooth (SIREN), to first order
    _, gf = sdf_gradient(field, x, "finite", eps=1e-3)
    if model == "siren":
        torch.testing.assert_close(gf, want, atol=2e-2, rtol=2e-2)
    else:  # a hash grid is piecewise trilinear: compare directions, not exact values
        cos = torch.nn.functional.cosine_similarity(gf, want, dim=-1)
        assert float(cos.detach().median()) > 0.9


def test_sphere_tracing_hits_an_analytic_sphere_at_its_depth():
    from fields.render.sphere_trace import render_sdf

    o = torch.tensor([[0.0, 0.0, 3.0]]).expand(3, 3).contiguous()
    d = torch.tensor([[0.0, 0.0, -1.0], [0.1, 0.0, -1.0], [0.9, 0.0, -1.0]])
    d = d / d.norm(dim=-1, keepdim=True)
    out = render_sdf(shapes.sphere(1.0), o, d, CUBE * 1.5, epsilon=1e-6)
    assert out["hit"].tolist() == [True, True, False]
    assert abs(float(out["depth"][0]) - 2.0) < 1e-5
    # the exact ray-sphere distance for the oblique ray
    b = float((o[1] * d[1]).sum())
    t = -b - math.sqrt(b * b - 9.0 + 1.0)
    assert abs(float(out["depth"][1]) - t) < 1e-5
    n = out["normals"][1]
    torch.testing.assert_close(n, (o[1] + t * d[1]) / (o[1] + t * d[1]).norm(), atol=1e-3,
                               rtol=0)
    assert (out["rgb"][2] == 1.0).all()  # background


def test_a_short_fit_finds_the_sphere(tmp_path):
    from fields.sdf.field import SDFTask

    f = shapes.sphere(0.6)
    v, fa = extract_surface(f, CUBE, 64)
    surface, _ = sample_surface(v, fa, 20000)
    samples = SurfaceSamples.from_function(f, torch.from_numpy(surface).float(), CUBE,
                                           n_near=2**15, n_uniform=2**13)
    cfg = SDFConfig(finest_resolution=128, log2_hashmap_size=14, n_levels=8,
                    batch_near=2**12, batch_uniform=2**10)
    torch.manual_seed(0)
    task = SDFTask(samples, CUBE, cfg)
    first = task.train_step(0, 0.0)
    for i in range(1, 150):
        last = task.train_step(i, i / 150)
    assert last["l1"] < 0.3 * first["l1"]
    pv, pf = extract_surface(task.field, CUBE, 64)
    m = surface_metrics((pv, pf), (v, fa), n_points=20000)
    assert m["chamfer_l1"] < 0.01, m


def test_mesh_files_round_trip_and_bad_files_name_themselves(tmp_path):
    v, f = extract_surface(shapes.sphere(0.5), CUBE, 24)
    for suffix in (".ply", ".obj", ".glb", ".stl", ".off"):
        save_mesh(tmp_path / f"s{suffix}", v, f)
        lv, lf = load_mesh(tmp_path / f"s{suffix}")
        assert len(lf) == len(f), suffix
        assert np.abs(np.sort(lv[lf].reshape(-1, 3), 0) - np.sort(v[f].reshape(-1, 3), 0)).max() \
            < 1e-5, suffix
    # STL stores each triangle's own corners: loading merges them, so a closed mesh stays so
    assert is_watertight(load_mesh(tmp_path / "s.stl")[1])
    with pytest.raises(ValueError, match=r"\.xyz"):
        save_mesh(tmp_path / "s.xyz", v, f)
    (tmp_path / "junk.obj").write_text("this is not a mesh\n")
    with pytest.raises(ValueError, match=r"junk\.obj"):
        load_mesh(tmp_path / "junk.obj")
    (tmp_path / "trunc.ply").write_bytes(b"ply\nformat binary_little_endian 1.0\n")
    with pytest.raises(ValueError, match=r"trunc\.ply"):
        load_mesh(tmp_path / "trunc.ply")
    with pytest.raises(FileNotFoundError, match=r"none\.stl"):
        load_mesh(tmp_path / "none.stl")


def test_sdf_config_rejects_unknown_fields():
    with pytest.raises(ValueError, match="unknown key 'learning_rate'"):
        SDFConfig.from_dict({"learning_rate": 1})
    with pytest.raises(ValueError, match="model"):
        SDFConfig.from_dict({"model": "nerf"})


def test_cli_fit_sdf_export_and_render(tmp_path):
    from typer.testing import CliRunner

    from fields.cli import app

    runner = CliRunner()
    out = tmp_path / "run"
    cfg = json.dumps({"finest_resolution": 128, "log2_hashmap_size": 14, "n_levels": 8,
                      "batch_near": 4096, "batch_uniform": 1024})
    res = runner.invoke(app, ["fit", "sdf", "--shape", "sphere", "--steps", "60",
                              "--resolution", "48", "--eval-every", "0", "--config", cfg,
                              "--output", str(out)])
    assert res.exit_code == 0, res.output
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("chamfer_l1", "f_score", "normal_consistency", "watertight", "steps"):
        assert key in metrics
    assert metrics["steps"] == 60 and metrics["chamfer_l1"] < 0.05
    assert (out / "renders" / "compare.png").exists() and (out / "mesh.ply").exists()
    res = runner.invoke(app, ["export", "mesh", str(out / "checkpoint.pt"), "--resolution",
                              "40", "--out", str(tmp_path / "m.obj")])
    assert res.exit_code == 0, res.output
    assert len(load_mesh(tmp_path / "m.obj")[1]) > 100
    res = runner.invoke(app, ["render", str(out / "checkpoint.pt"), "--frames", "2",
                              "--scale", "0.25", "--out", str(tmp_path / "t.gif")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "t.gif").stat().st_size > 0


def test_cli_fit_sdf_from_a_mesh_and_bad_input(tmp_path):
    pytest.importorskip("open3d", reason="open3d (signed distances to meshes) is not importable")
    from typer.testing import CliRunner

    from fields.cli import app

    runner = CliRunner()
    cfg = json.dumps({"finest_resolution": 128, "log2_hashmap_size": 14, "n_levels": 8,
                      "batch_near": 4096, "batch_uniform": 1024})
    save_mesh(tmp_path / "ball.ply", *extract_surface(shapes.sphere(0.5), CUBE, 32))
    res = runner.invoke(app, ["fit", "sdf", "--mesh", str(tmp_path / "ball.ply"), "--steps",
                              "20", "--resolution", "32", "--eval-every", "0", "--config", cfg,
                              "--output", str(tmp_path / "m")])
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "m" / "metrics.json").read_text())["target_watertight"]
    res = runner.invoke(app, ["fit", "sdf", "--mesh", str(tmp_path / "nope.obj")])
    assert res.exit_code == 2 and "nope.obj" in res.output
    res = runner.invoke(app, ["fit", "sdf", "--config", '{"bogus": 1}'])
    assert res.exit_code == 2 and "bogus" in res.output


def test_an_oriented_point_cloud_fit_finds_the_sphere():
    from fields.sdf.field import PointCloudTask

    v, fa = extract_surface(shapes.sphere(0.6), CUBE, 64)
    pts, normals = sample_surface(v, fa, 20000)
    cfg = SDFConfig(finest_resolution=128, log2_hashmap_size=14, n_levels=8,
                    batch_near=2**12, batch_uniform=2**10)
    torch.manual_seed(0)
    task = PointCloudTask(torch.from_numpy(pts).float(), torch.from_numpy(normals).float(),
                          CUBE, cfg)
    first = task.train_step(0, 0.0)
    for i in range(1, 200):
        last = task.train_step(i, i / 200)
    assert last["zero"] < 0.5 * first["zero"] and last["normal"] < 0.1
    pv, pf = extract_surface(task.field, CUBE, 64)
    m = surface_metrics((pv, pf), (v, fa), n_points=20000)
    assert m["chamfer_l1"] < 0.01, m


def test_cli_fit_sdf_from_points(tmp_path):
    from typer.testing import CliRunner

    from fields.cli import app
    from fields.data.pointclouds import write_points

    v, fa = extract_surface(shapes.sphere(0.6), CUBE, 48)
    pts, normals = sample_surface(v, fa, 5000)
    write_points(tmp_path / "ball.ply", pts.astype(np.float32),
                 {"normals": normals.astype(np.float32)})
    save_mesh(tmp_path / "truth.ply", v, fa)
    cfg = json.dumps({"finest_resolution": 128, "log2_hashmap_size": 14, "n_levels": 8,
                      "batch_near": 2048, "batch_uniform": 512})
    runner = CliRunner()
    res = runner.invoke(app, ["fit", "sdf", "--points", str(tmp_path / "ball.ply"), "--gt",
                              str(tmp_path / "truth.ply"), "--steps", "30", "--resolution",
                              "32", "--eval-every", "0", "--config", cfg, "--output",
                              str(tmp_path / "p")])
    assert res.exit_code == 0, res.output
    metrics = json.loads((tmp_path / "p" / "metrics.json").read_text())
    assert "chamfer_l1" in metrics and metrics["steps"] == 30
    # without normals: a clear error naming the file
    write_points(tmp_path / "bare.ply", pts.astype(np.float32))
    res = runner.invoke(app, ["fit", "sdf", "--points", str(tmp_path / "bare.ply")])
    assert res.exit_code == 2 and "bare.ply" in res.output and "normals" in res.output
    res = runner.invoke(app, ["fit", "sdf", "--gt", str(tmp_path / "truth.ply")])
    assert res.exit_code == 2 and "--points" in res.output


def test_neus_alpha_is_the_sdf_section_opacity():
    """NeuS's discrete opacity: high where a section crosses the zero level set head on, near
    zero away from it, zero for sections outside that leave the surface (the SDF grows along
    the ray),
    and the product of (1 - alpha) over a ray crossing a plane matches the logistic CDF's
    drop across it."""
    from fields.sdf.neus import neus_alpha

    d = torch.tensor([[0.0, 0.0, -1.0]]).expand(5, 3)
    grad = torch.tensor([[0.0, 0.0, 1.0]]).expand(5, 3)  # the ray meets the surface head on
    sdf = torch.tensor([0.0, 0.5, -0.5, 0.01, 2.0])
    dt = torch.full((5,), 0.02)
    a = neus_alpha(sdf, grad, d, dt, torch.tensor(200.0))
    sig = torch.sigmoid
    exact = (sig(torch.tensor(2.0)) - sig(torch.tensor(-2.0))) / sig(torch.tensor(2.0))
    assert abs(float(a[0]) - float(exact)) < 1e-4 and a[1] < 1e-3 and a[4] < 1e-3
    # NeuS's annealing: a grazing section (cos 0) counts as entering at first (cos taken as
    # (c - 1) / 2), and as parallel to the surface at the end (min(c, 0) = 0)
    side = torch.tensor([[1.0, 0.0, 0.0]])
    early = neus_alpha(torch.zeros(1), side, d[:1], dt[:1], torch.tensor(200.0), anneal=0.0)
    late = neus_alpha(torch.zeros(1), side, d[:1], dt[:1], torch.tensor(200.0), anneal=1.0)
    assert float(early) > 0.5 and float(late) < 1e-3
    leaving = neus_alpha(sdf, -grad, d, dt, torch.tensor(200.0))
    outside = sdf >= 0  # (inside a solid, NeuS's alpha is 1: opaque)
    assert float(leaving[outside].max()) < 1e-3
    # a ray marching through a plane in small sections: transmittance = Phi_s(f_end) /
    # Phi_s(f_start) (telescoping), the NeuS derivation
    t = torch.linspace(0, 1, 101)
    f = 0.5 - t  # plane at t = 0.5
    mids, dts = 0.5 * (f[1:] + f[:-1]), torch.full((100,), 0.01)
    dd = torch.tensor([[0.0, 0.0, -1.0]]).expand(100, 3)
    gg = torch.tensor([[0.0, 0.0, 1.0]]).expand(100, 3)
    s = torch.tensor(30.0)
    a = neus_alpha(mids, gg, dd, dts, s)
    trans = torch.prod(1 - a)
    want = torch.sigmoid(f[-1] * s) / torch.sigmoid(f[0] * s)
    assert abs(float(trans) - float(want)) < 1e-3


def test_neus_field_gradient_and_a_few_steps(tmp_path):
    from fields.checkpoint import save_checkpoint
    from fields.data import load_scene
    from fields.scenes.tabletop import SceneSpec, ensure_scene
    from fields.sdf.field import load_sdf
    from fields.sdf.neus import NeusConfig, NeusField, NeusTask

    cfg = NeusConfig(finest_resolution=128, log2_hashmap_size=14, n_levels=8, n_features=7,
                     render_steps=96, grid_resolution=32, target_samples=2**12,
                     initial_rays=256, max_rays=1024)
    torch.manual_seed(0)
    field = NeusField(CUBE, cfg)
    x = torch.rand(32, 3) * 1.4 - 0.7
    f, g, feat = field.sdf_gradient(x)
    xd = x.clone().requires_grad_(True)
    (want,) = torch.autograd.grad(field.sdf(xd).sum(), xd)
    cos = torch.nn.functional.cosine_similarity(g, want, dim=-1)
    assert float(cos.detach().median()) > 0.9 and feat.shape == (32, 7)
    torch.testing.assert_close(f, field.sdf(x), atol=0.02, rtol=0)
    scene = load_scene(ensure_scene(SceneSpec(resolution=24, n_train=12, n_val=1, n_test=1),
                                    root=tmp_path / "scenes"))
    task = NeusTask(scene, cfg)
    # the multi-view consistency is on by default (its own tests: tests/test_ref_neus.py);
    # the rest of the loss falls over 30 steps (one step to the next is noise at 24 pixels:
    # compared, the means of the first and the last five)
    assert cfg.photo_consistency == 1.0
    out = [task.train_step(i, i / 30) for i in range(30)]
    assert all(np.isfinite(o["loss"]) and o["consistency"] > 0 for o in out)
    rest = np.array([o["loss"] - o["consistency"] for o in out])
    assert rest[-5:].mean() < rest[:5].mean() - 0.01
    # the checkpoint is an SDF checkpoint: meshing and viewing take it
    save_checkpoint(tmp_path / "neus.pt", task.module, extra={
        "kind": "sdf", "sdf": {"aabb": scene.aabb.tolist(), "config": cfg.to_dict(),
                               "neus": True}})
    loaded, _ = load_sdf(tmp_path / "neus.pt")
    torch.testing.assert_close(loaded(x), task.field(x))
    from fields.sdf.neus import vertex_colours

    colours = vertex_colours(loaded, x)
    assert colours.shape == (32, 3) and colours.dtype == np.uint8


def test_neus_coarse_to_fine_levels_and_the_variance_learning_rate(tmp_path):
    from fields.data import load_scene
    from fields.scenes.tabletop import SceneSpec, ensure_scene
    from fields.sdf.neus import NeusConfig, NeusTask

    cfg = NeusConfig(finest_resolution=128, log2_hashmap_size=14, n_levels=8, n_features=7,
                     render_steps=96, grid_resolution=32, target_samples=2**12,
                     initial_rays=256, max_rays=1024, coarse_to_fine=0.5, start_levels=2)
    scene = load_scene(ensure_scene(SceneSpec(resolution=24, n_train=12, n_val=1, n_test=1),
                                    root=tmp_path / "scenes"))
    task = NeusTask(scene, cfg)
    enc, extent = task.field.encoding, task.field.extent
    shown = []
    for i, progress in enumerate((0.0, 0.25, 0.49, 0.5, 0.9)):
        task.train_step(i, progress)
        w = enc.level_weights(torch.device("cpu"), torch.float32)
        shown.append(8 if w is None else float(w.reshape(-1, 2)[:, 0].sum()))
        # the step is the cell of the finest level shown (16 * 2^k here: 128 = 16 * 2^3 ...
        # over 8 levels, so level k has 16 * 2^(3k/7))
        finest = 128 if w is None else 16 * 2 ** (3 * (enc.progress - 1) / 7)
        assert task.field.eps == pytest.approx(extent / finest, rel=1e-6)
    assert shown[0] == 2 and shown[1] == pytest.approx(5, abs=1e-6)
    assert 7 < shown[2] < 8 and shown[3] == shown[4] == 8
    assert task.field.eps == pytest.approx(extent / 128)
    # the variance on a learning rate of its own, following the same schedule
    slow = NeusTask(scene, NeusConfig.from_dict({**cfg.to_dict(), "variance_lr": 1e-3}))
    before = slow.field.variance.item()
    slow.train_step(0, 0.75)  # lr decayed by 10^-0.5
    groups = slow.optimizer.param_groups
    assert [len(g["params"]) for g in groups] == [len(list(slow.field.parameters())) - 1, 1]
    assert groups[0]["lr"] == pytest.approx(1e-2 * 10 ** -0.5)
    assert groups[1]["lr"] == pytest.approx(1e-3 * 10 ** -0.5)
    assert 0 < abs(slow.field.variance.item() - before) <= 1.01 * groups[1]["lr"]  # Adam's step
    for bad in ({"coarse_to_fine": 1.0}, {"start_levels": 0.5}, {"start_levels": 17},
                {"photo_consistency": -1.0}, {"consistency_blur": -0.5},
                {"consistency_views": 0}, {"reflection_threshold": -0.1}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            NeusConfig.from_dict(bad)


def test_cli_fit_neus_writes_its_outputs(tmp_path, tiny_scene_dir):
    from typer.testing import CliRunner

    from fields.cli import app

    cfg = json.dumps({"finest_resolution": 128, "log2_hashmap_size": 14, "n_levels": 8,
                      "n_features": 7, "render_steps": 96, "grid_resolution": 32,
                      "target_samples": 4096, "initial_rays": 256, "max_rays": 1024})
    out = tmp_path / "neus"
    res = CliRunner().invoke(app, ["fit", "neus", "--data", str(tiny_scene_dir), "--steps",
                                   "10", "--resolution", "32", "--eval-every", "0",
                                   "--config", cfg, "--output", str(out)])
    assert res.exit_code == 0, res.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 10 and "psnr_view0" in metrics
    assert (out / "renders" / "compare.png").exists() and (out / "checkpoint.pt").exists()
    res = CliRunner().invoke(app, ["export", "mesh", str(out / "checkpoint.pt"),
                                   "--resolution", "24", "--out", str(tmp_path / "n.ply")])
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(app, ["fit", "neus", "--config", '{"nope": 1}'])
    assert res.exit_code == 2 and "nope" in res.output


def test_neus_trains_on_neus_format_data_with_masks(tmp_path):
    """DTU-style input: real backgrounds, masks. The reader composites on black, the scene's
    background is black, so the colour and mask losses agree (both want empty space empty)."""
    from test_readers import write_neus_scene

    from fields.data import load_scene
    from fields.scenes.tabletop import SceneSpec, ensure_scene
    from fields.sdf.neus import NeusConfig, NeusTask

    scene = load_scene(ensure_scene(SceneSpec(resolution=16, n_train=8, n_val=1, n_test=1),
                                    root=tmp_path / "scenes"))
    write_neus_scene(tmp_path / "dtu", scene, scale=1.5, offset=(0.0, 0.0, 0.0))
    data = load_scene(tmp_path / "dtu")
    assert data.train.alpha is not None and float(data.background.sum()) == 0.0
    cfg = NeusConfig(finest_resolution=64, log2_hashmap_size=12, n_levels=4, n_features=3,
                     render_steps=64, grid_resolution=16, target_samples=2**11,
                     initial_rays=128, max_rays=512)
    task = NeusTask(data, cfg)
    out = [task.train_step(i, i / 10) for i in range(10)]
    assert all(np.isfinite(o["loss"]) for o in out)
