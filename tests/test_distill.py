"""KiloNeRF's field (`fields.nerf.kilo`) and distillation between architectures
(`fields.nerf.distill`, `fields distill`)."""

import json

import pytest
import torch
from typer.testing import CliRunner

from fields.cli import app
from fields.data import load_scene
from fields.nerf import (
    MODELS,
    KiloField,
    LoadedNerf,
    NerfConfig,
    NerfTask,
    build_field,
    kilo_config,
    render_rays,
)
from fields.nerf.distill import DistillConfig, DistillTask, opacity_log
from fields.nn.batched_mlp import batched_mlp_reference
from fields.train import TrainConfig, seed_everything, train

BOX = torch.tensor([[-1.0, -2.0, -1.0], [1.0, 2.0, 3.0]])


def small_kilo(**spec) -> NerfConfig:
    base = kilo_config()
    return NerfConfig.from_dict({
        **base.to_dict(), "kilo": {**base.kilo, "cells": 4, **spec}, "grid_resolution": 32,
        "render_steps": 128, "target_samples": 2**13, "initial_rays": 512,
        "occupancy_warmup": 32})


def test_kilo_cells_and_local_coordinates():
    field = KiloField(BOX, "none", small_kilo())
    # the centre of cell (i, j, k) of a 4^3 grid over BOX
    ijk = torch.tensor([[0, 0, 0], [3, 1, 2], [1, 3, 3]])
    size = (BOX[1] - BOX[0]) / 4
    x = BOX[0] + (ijk + torch.tensor([0.25, 0.5, 0.75])) * size
    cell, local, inside = field.cells_of(x)
    assert cell.tolist() == [(i * 4 + j) * 4 + k for i, j, k in ijk.tolist()]
    torch.testing.assert_close(local, torch.tensor([[0.25, 0.5, 0.75]] * 3))
    assert inside.all()
    # outside the box: no density, whatever the networks say
    far = torch.tensor([[5.0, 0.0, 0.0], [0.0, -3.0, 0.0]])
    assert (field.density(far) == 0).all()


def _manual(field: KiloField, x: torch.Tensor, d: torch.Tensor):
    """The field by hand: each point's cell's networks through the batched reference."""
    cell, local, inside = field.cells_of(x)
    dn, cn = field.density_network, field.color_network
    h = batched_mlp_reference(field.position_encoding(local), cell, list(dn.weights),
                              list(dn.biases), "ReLU", "None")
    sigma = torch.exp(h[:, 0] + field.config.density_bias) * inside
    rgb = batched_mlp_reference(torch.cat((field.view_features(d), h[:, 1:]), -1), cell,
                                list(cn.weights), list(cn.biases), "ReLU", "Sigmoid")
    return sigma, rgb


def test_kilo_field_matches_the_reference_in_values_and_gradients():
    torch.manual_seed(0)
    field = KiloField(BOX, "none", small_kilo())
    x = BOX[0] + torch.rand(3000, 3) * (BOX[1] - BOX[0])
    d = torch.nn.functional.normalize(torch.randn(3000, 3), dim=-1)
    sigma, rgb = field(x, d)
    ref_sigma, ref_rgb = _manual(field, x, d)
    torch.testing.assert_close(sigma, ref_sigma, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(rgb, ref_rgb, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(field.density(x), ref_sigma, rtol=1e-4, atol=1e-5)
    # gradients of every network's weights: the fused path against the reference
    w = torch.rand(3000, 3)
    loss = (sigma.log1p() + (rgb * w).sum(-1)).sum()
    grads = torch.autograd.grad(loss, list(field.parameters()))
    loss_ref = (ref_sigma.log1p() + (ref_rgb * w).sum(-1)).sum()
    grads_ref = torch.autograd.grad(loss_ref, list(field.parameters()))
    for g, gr in zip(grads, grads_ref, strict=True):
        torch.testing.assert_close(g, gr, rtol=1e-3, atol=1e-4)
    assert field.density_network.last_backend == "cpu"


@pytest.mark.parametrize("features", [15, 7])  # 1 + 15 and 16 view dims: whole-vector copies
def test_kilo_fused_inference_matches_the_reference(features):
    """Without gradients the whole field runs in one C++ pass (kilo_forward_cpu)."""
    torch.manual_seed(1)
    field = KiloField(BOX, "none", small_kilo(frequencies=3, features=features))
    x = BOX[0] - 0.2 + torch.rand(5000, 3) * (BOX[1] - BOX[0] + 0.4)  # some outside the box
    x[:8] = BOX[0] + torch.tensor([0.5, 1.0, 1.0]) * (BOX[1] - BOX[0]) * torch.rand(8, 1)
    d = torch.nn.functional.normalize(torch.randn(5000, 3), dim=-1)
    ref_sigma, ref_rgb = _manual(field, x, d)
    with torch.no_grad():
        sigma, rgb = field(x, d)
        dens = field.density(x)
    torch.testing.assert_close(sigma, ref_sigma.detach(), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(rgb, ref_rgb.detach(), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(dens, sigma)
    assert (sigma[~field.cells_of(x)[2]] == 0).all()
    assert field.density_network.last_backend is None  # BatchedMLP was not called
    # in eval mode the packed networks are kept between calls, and repacked when they change
    field.eval()
    with torch.no_grad():
        torch.testing.assert_close(field(x, d)[1], rgb)
        packed = field._pack
        torch.testing.assert_close(field(x, d)[1], rgb)
        assert field._pack is packed
        field.color_network.biases[-1].add_(1.0)
        changed = field(x, d)[1]
    assert field._pack is not packed
    torch.testing.assert_close(changed, _manual(field, x, d)[1].detach(), rtol=1e-4, atol=1e-5)


def test_kilo_fused_pass_reads_each_points_view_by_index():
    """Rendering hands `kilo_forward_cpu` one view encoding per ray and each sample's ray
    (`sample_colours`): the same values as one view row per sample; bad indices are refused."""
    torch.manual_seed(3)
    field = KiloField(BOX, "none", small_kilo(frequencies=3)).eval()
    rays = torch.nn.functional.normalize(torch.randn(40, 3), dim=-1)
    ray_of = torch.randint(0, 40, (3000,))
    x = BOX[0] + torch.rand(3000, 3) * (BOX[1] - BOX[0])
    with torch.no_grad():
        view = field.view_features(rays)
        sigma, rgb = field.sample_colours(x, view, ray_of)
        ref_sigma, ref_rgb = field(x, None, view=view.index_select(0, ray_of))
        assert field.colours_while_pruning(x)
    assert torch.equal(sigma, ref_sigma) and torch.equal(rgb, ref_rgb)
    ref = _manual(field, x, rays.index_select(0, ray_of))
    torch.testing.assert_close(rgb, ref[1].detach(), rtol=1e-4, atol=1e-5)
    with torch.no_grad(), pytest.raises(RuntimeError, match="outside the 40 rows"):
        field.sample_colours(x, view, torch.full((3000,), 40))
    field.train()
    assert not field.colours_while_pruning(x)  # training renders with gradients: two passes


def test_rendering_kilo_in_one_pass_gives_the_two_pass_image():
    """In eval mode rendering takes each evaluated sample's colour with its density (one
    pass); the image is the one the two passes (density, then the kept samples) give."""
    from fields.nerf import RenderSettings
    from fields.render.occupancy import OccupancyGrid

    torch.manual_seed(4)
    aabb = torch.tensor([[-1.0] * 3, [1.0] * 3])
    cfg = small_kilo()
    field = KiloField(aabb, "none", cfg).eval()
    with torch.no_grad():  # some opaque content: a dense slab of cells
        field.density_network.biases[-1][:, 0] += torch.linspace(-4, 6, 64)
    grid = OccupancyGrid(aabb.reshape(6), 32, "none")
    o = torch.tensor([[0.0, 0.0, -3.0]]).repeat(300, 1) + torch.randn(300, 3) * 0.3
    d = torch.nn.functional.normalize(torch.randn(300, 3) * 0.2 + torch.tensor([0, 0, 1.0]),
                                      dim=-1)
    settings = RenderSettings.for_scene(aabb, False, cfg)
    field.render_fused = lambda *a: None  # the general renderer
    with torch.no_grad():
        one = render_rays(field, grid, o, d, settings, torch.ones(3))
        field.colours_while_pruning = lambda x: False  # the two passes
        two = render_rays(field, grid, o, d, settings, torch.ones(3))
    assert int(one["n_samples"]) > 300
    assert int(one["n_samples"]) == int(two["n_samples"])
    for key in ("rgb", "opacity", "depth"):
        torch.testing.assert_close(one[key], two[key], rtol=1e-5, atol=1e-6)


def _kilo_scene(resolution: int, seed: int = 5):
    """A kilo field with opaque and faint cells, a grid with some cells empty, and rays from
    in front (some missing the box, one from inside it)."""
    from fields.nerf import RenderSettings
    from fields.render.occupancy import OccupancyGrid

    g = torch.Generator().manual_seed(seed)
    aabb = torch.tensor([[-1.0] * 3, [1.0] * 3])
    cfg = small_kilo()
    field = KiloField(aabb, "none", cfg).eval()
    with torch.no_grad():
        field.density_network.biases[-1][:, 0] += torch.linspace(-4, 6, 64)[
            torch.randperm(64, generator=g)]
    grid = OccupancyGrid(aabb.reshape(6), resolution, "none")
    grid.occupied.copy_(torch.rand(grid.occupied.shape, generator=g) < 0.6)
    grid.occupied[: resolution // 2, : resolution // 3] = False  # a stretch of empty blocks
    n = 400
    o = torch.tensor([[0.0, 0.0, -3.0]]).repeat(n, 1) + torch.randn(n, 3, generator=g) * 0.4
    d = torch.randn(n, 3, generator=g) * 0.3 + torch.tensor([0, 0, 1.0])
    d[:20] = torch.tensor([0.0, 0.0, -1.0])  # away from the box
    o[20] = torch.tensor([0.1, 0.2, 0.3])  # inside it
    d = torch.nn.functional.normalize(d, dim=-1)
    return field, grid, o, d, RenderSettings.for_scene(aabb, False, cfg)


@pytest.mark.parametrize("resolution", [32, 20])  # with the coarse grid's skipping, without
@pytest.mark.parametrize("threshold", [1e-4, 1e-2])
def test_kilo_fused_renderer_gives_the_general_renderers_image(resolution, threshold):
    """`KiloField.render_fused` (marching in rounds, the networks and compositing in one C++
    pass) gives the general renderer's image and keeps the same samples, while marching
    fewer: a ray's later samples only while it is still seen through."""
    from dataclasses import replace

    field, grid, o, d, settings = _kilo_scene(resolution)
    settings = replace(settings, transmittance_threshold=threshold)
    background = torch.rand(o.shape[0], 3)
    with torch.no_grad():
        fused = field.render_fused(grid, o, d, settings, background)
        assert fused is not None
        assert render_rays(field, grid, o, d, settings, background)["rgb"].equal(fused["rgb"])
        field.render_fused = lambda *a: None
        general = render_rays(field, grid, o, d, settings, background)
    assert int(fused["n_samples"]) == int(general["n_samples"]) > 400
    assert int(fused["n_marched"]) < int(general["n_marched"])
    for key in ("rgb", "opacity", "depth"):
        torch.testing.assert_close(fused[key], general[key], rtol=0, atol=1e-6)
    assert bool((fused["opacity"][:20] == 0).all())  # the rays that miss the box


def test_kilo_fused_renderer_encodes_the_view_as_the_field_does():
    """Given no view, the kernel takes the spherical harmonics of each ray's direction itself:
    the image of the view encoded by the field (`view_features`) handed to it."""
    from fields import _ext

    field, grid, o, d, settings = _kilo_scene(32)
    n = o.shape[0]
    dn, cn = field.density_network, field.color_network
    near, far = torch.full((n,), 0.0), torch.full((n,), 1e10)

    def render(view, degree):
        return _ext.extension().kilo_render_cpu(
            o, d, near, far, grid.occupied, grid.aabb, float(settings.step_size), view, degree,
            torch.rand(n, 3, generator=torch.Generator().manual_seed(1)), 1e-4, 8, field.aabb,
            field.spec.cells, field.spec.frequencies, list(dn.weights), list(dn.biases),
            list(cn.weights), list(cn.biases), field.spec.width,
            float(field.config.density_bias), field._packed())

    with torch.no_grad():
        own = render(None, field.direction_encoding.degree)
        given = render(field.view_features(d).contiguous(), 0)
    assert int(own[3][0]) == int(given[3][0]) > 400
    for a, b in zip(own[:3], given[:3], strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    with pytest.raises(RuntimeError, match="sh_degree must be in"):
        render(None, 3)


def test_kilo_fused_renderer_steps_aside_where_it_cannot_run():
    """Training, gradients and growing steps take the general renderer (render_fused: None)."""
    from dataclasses import replace

    field, grid, o, d, settings = _kilo_scene(32)
    bg = torch.ones(3)
    with torch.no_grad():
        assert field.render_fused(grid, o, d, replace(settings, cone_angle=0.01), bg) is None
        field.train()
        assert field.render_fused(grid, o, d, settings, bg) is None
        field.eval()
    assert field.render_fused(grid, o, d, settings, bg) is None  # gradients enabled
    with torch.no_grad():
        assert field.render_fused(grid, o, d, settings, bg) is not None


def test_kilo_rejects_unbounded_scenes_and_bad_specs():
    with pytest.raises(ValueError, match="bounded scenes only"):
        KiloField(BOX, "mipnerf360", small_kilo())
    with pytest.raises(ValueError, match=r"kilo\.width must be a multiple of 16"):
        NerfConfig.from_dict({"kilo": {"width": 24}})
    with pytest.raises(ValueError, match="unknown keys \\['cell'\\]"):
        NerfConfig.from_dict({"kilo": {"cell": 8}})
    with pytest.raises(ValueError, match="refine_poses"):
        NerfConfig.from_dict({"kilo": {}, "refine_poses": True})


def test_every_model_builds_and_renders():
    aabb = torch.tensor([[-1.0] * 3, [1.0] * 3])
    o = torch.tensor([[0.0, 0.0, -3.0]]).repeat(16, 1)
    d = torch.nn.functional.normalize(torch.randn(16, 3) * 0.1 + torch.tensor([0, 0, 1.0]),
                                      dim=-1)
    from fields.nerf import RenderSettings
    from fields.nn.encoding_config import hash_grid_config
    from fields.render.occupancy import OccupancyGrid

    for name, make in MODELS.items():
        cfg = make()
        if cfg.kilo is None and cfg.encoding is None:
            cfg.encoding = hash_grid_config(64, 14)
        model = build_field(aabb, "none", cfg)
        grid = OccupancyGrid(aabb.reshape(6), 16, "none")
        out = render_rays(model, grid, o, d, RenderSettings.for_scene(aabb, False, cfg),
                          torch.ones(3))
        assert torch.isfinite(out["rgb"]).all() and out["n_samples"] > 0, name


def test_kilo_trains_and_its_checkpoint_renders_the_same(tiny_scene_dir, tmp_path):
    scene = load_scene(tiny_scene_dir)
    seed_everything(0)
    task = NerfTask(scene, small_kilo(), seed=0)
    blank = task.evaluate(final=False)["psnr"]
    train(task, TrainConfig(steps=100, max_seconds=120, eval_every=0, checkpoint_every=0),
          checkpoint=tmp_path / "kilo.pt", checkpoint_extra=task.checkpoint_extra(),
          show_progress=False)
    assert task.evaluate(final=False)["psnr"] > blank + 3.0
    loaded = LoadedNerf(str(tmp_path / "kilo.pt"))
    assert isinstance(loaded.model, KiloField)
    x = torch.rand(500, 3) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(loaded.model.density(x), task.model.density(x))


def test_distillation_matches_the_teacher_then_fine_tunes(tiny_scene_dir, tiny_nerf):
    scene = load_scene(tiny_scene_dir)
    teacher = LoadedNerf(str(tiny_nerf))
    seed_everything(0)
    task = DistillTask(scene, small_kilo(), teacher, DistillConfig(stage1=0.5, points=4096),
                       seed=0)
    # the student starts with the teacher's occupancy grid
    assert torch.equal(task.grid.occupied, teacher.grid.occupied)
    x, d = task.teacher_samples(4096)
    assert x.shape == d.shape and 2048 <= x.shape[0] <= 4096
    torch.testing.assert_close(d.norm(dim=-1), torch.ones(x.shape[0]))
    # every sample lies in a cell the teacher's grid marks occupied
    g = ((x - teacher.grid.aabb[:3]) / (teacher.grid.aabb[3:] - teacher.grid.aabb[:3]))
    ijk = (g * teacher.grid.resolution).long().clamp(0, teacher.grid.resolution - 1)
    assert teacher.grid.occupied[ijk[:, 0], ijk[:, 1], ijk[:, 2]].float().mean() > 0.95

    def gap() -> float:
        xs, ds = task.teacher_samples(4096)
        with torch.no_grad():
            st, ct = teacher.model(xs, ds)
            ss, cs = task.model(xs, ds)
        step = task.settings.step_size
        return float((cs - ct).square().mean()
                     + (opacity_log(ss, step) - opacity_log(st, step)).abs().mean())

    before = gap()
    for step in range(120):
        rec = task.train_step(step, 0.4 * step / 120)
        assert task.objective_version == 1 and "colour_mse" in rec
    after = gap()
    assert after < 0.5 * before
    # the second stage trains on the images (and the density on the teacher's samples), its
    # learning-rate schedule starting afresh, through the teacher's grid, never updated
    assert task.extra_loss() is None
    occupied = task.grid.occupied.clone()
    rec = task.train_step(120, 0.5)
    assert task.objective_version == 2 and task.stage2_step == 120 and "rays" in rec
    extra = task.extra_loss()
    assert extra is not None and extra.requires_grad and float(extra.detach()) > 0
    task.train_step(128, 0.6)  # a step on which a NerfTask updates its grid
    assert torch.equal(task.grid.occupied, occupied)
    assert task.learning_rate(120, 0.5) == pytest.approx(task.config.lr / task.config.warmup_steps)
    state = task.state_dict()
    assert state["stage"] == 2 and state["stage2_step"] == 120


def test_fine_tuning_matches_the_teachers_colour_when_asked(tiny_scene_dir, tiny_nerf):
    """`fine_tune_colour_weight` adds the colour matching on the teacher's samples to the
    fine-tuning's extra loss: it reaches the colour networks only when it is on."""
    scene = load_scene(tiny_scene_dir)
    teacher = LoadedNerf(str(tiny_nerf))
    for weight in (0.0, 1.0):
        seed_everything(0)
        task = DistillTask(scene, small_kilo(), teacher,
                           DistillConfig(stage1=0.5, points=4096, fine_tune_density_points=2048,
                                         fine_tune_colour_weight=weight), seed=0)
        task.stage = 2
        task.model.zero_grad(set_to_none=True)
        task.extra_loss().backward()
        colour_grads = [p.grad for p in task.model.color_network.parameters()]
        reached = any(g is not None and bool(g.abs().sum() > 0) for g in colour_grads)
        assert reached == (weight > 0)
    # unset, it is on for the kilo student and off for the others
    kilo = DistillTask(scene, small_kilo(), teacher, DistillConfig(), seed=0)
    assert kilo.distill.fine_tune_colour_weight == 4.0
    planes = DistillTask(scene, MODELS["planes"](), teacher, DistillConfig(), seed=0)
    assert planes.distill.fine_tune_colour_weight == 0.0


def test_distill_config_is_checked():
    with pytest.raises(ValueError, match="stage1 must be a fraction"):
        DistillConfig(stage1=1.5)
    with pytest.raises(ValueError, match="points must be an integer >= 64"):
        DistillConfig(points=8)
    with pytest.raises(ValueError, match="fine_tune_colour_weight must be >= 0"):
        DistillConfig(fine_tune_colour_weight=-1.0)
    with pytest.raises(ValueError, match="colour_weight"):
        DistillConfig.from_dict({"colour_weight": 1.0})


def test_cli_distill_writes_a_student_that_loads(tiny_scene_dir, tiny_nerf, tmp_path):
    runner = CliRunner()
    out = tmp_path / "kilo"
    cfg = json.dumps({"kilo": {"cells": 4}, "grid_resolution": 32, "render_steps": 128,
                      "target_samples": 2**13, "initial_rays": 512,
                      "distill": {"fine_tune_colour_weight": 1.0}})
    res = runner.invoke(app, [
        "distill", str(tiny_nerf), "--into", "kilo", "--data", str(tiny_scene_dir),
        "--output", str(out), "--steps", "24", "--config", cfg, "--video-frames", "0",
        "--baseline"])
    assert res.exit_code == 0, res.output
    run = json.loads((out / "config.json").read_text())
    assert run["distill"]["fine_tune_colour_weight"] == 1.0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["student"] == "kilo" and metrics["steps"] == 24
    assert metrics["stage1_steps"] == 12
    for key in ("psnr", "teacher", "scratch"):
        assert key in metrics
    assert metrics["teacher"]["psnr"] > 15 and metrics["scratch"]["steps"] == 24
    assert isinstance(LoadedNerf(str(out / "checkpoint.pt")).model, KiloField)
    assert (out / "scratch" / "checkpoint.pt").is_file()
    res = runner.invoke(app, ["eval", str(out / "checkpoint.pt")])
    assert res.exit_code == 0, res.output
    # bad input: an unknown architecture, a missing teacher, an unknown distill field
    res = runner.invoke(app, ["distill", str(tiny_nerf), "--into", "kilo", "--config",
                              '{"distill": {"colour": 1}}', "--output", str(tmp_path / "y")])
    assert res.exit_code == 2 and "colour" in res.output
    res = runner.invoke(app, ["distill", str(tiny_nerf), "--into", "kilonerf"])
    assert res.exit_code == 2 and "--into" in res.output
    res = runner.invoke(app, ["distill", str(tmp_path / "none.pt"), "--into", "kilo",
                              "--output", str(tmp_path / "x")])
    assert res.exit_code == 2 and "none.pt" in res.output


def test_cli_distill_resumes_in_its_stage(tiny_scene_dir, tiny_nerf, tmp_path):
    runner = CliRunner()
    cfg = json.dumps({"kilo": {"cells": 4}, "grid_resolution": 32, "render_steps": 128,
                      "target_samples": 2**13, "initial_rays": 512})
    common = ["distill", str(tiny_nerf), "--into", "kilo", "--data", str(tiny_scene_dir),
              "--config", cfg, "--video-frames", "0"]
    res = runner.invoke(app, [*common, "--output", str(tmp_path / "a"), "--steps", "12"])
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "a" / "metrics.json").read_text())["stage1_steps"] == 6
    res = runner.invoke(app, [*common, "--output", str(tmp_path / "b"), "--steps", "16",
                              "--resume", str(tmp_path / "a" / "checkpoint.pt")])
    assert res.exit_code == 0, res.output
    metrics = json.loads((tmp_path / "b" / "metrics.json").read_text())
    # the second stage began at step 6 in the first run, and the resumed run knows it
    assert metrics["steps"] == 16 and metrics["stage1_steps"] == 6
