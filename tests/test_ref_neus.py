"""Ref-NeuS: the glossy built-in scene, the reflected-direction radiance and the reflection
score that down-weights pixels other views disagree with; NeuS's multi-view photometric
consistency, which projects surface points into other views the same way."""

import json
import math

import numpy as np
import pytest
import torch

from fields.render.cameras import Cameras, look_at


def _surface_rays(point, normal, offsets):
    """Rays from eyes at `point + offset` (offsets in the normal's hemisphere) to `point`."""
    eyes = torch.tensor(point) + torch.tensor(offsets)
    d = torch.tensor(point) - eyes
    return eyes, d / d.norm(dim=-1, keepdim=True)


def test_glossy_scene_reflects_and_its_diffuse_parts_do_not():
    """The same point of the mirror sphere changes colour with the view; a point of the
    diffuse box lid does not (Lambert), and the scene's truth is its SDF's zero set."""
    from fields.scenes.glossy import BOX_CENTRE, SPHERE, glossy_sdf, shade
    from fields.sdf.run import scene_truth

    white = torch.ones(3)
    n = torch.tensor([0.0, -0.6, 0.8])
    p = (torch.tensor(SPHERE) + 0.36 * n).tolist()
    views = [[0.0, -0.9, 0.4], [0.5, -0.5, 0.7], [-0.5, -0.6, 0.6]]
    o, d = _surface_rays(p, n, views)
    rgb, hit = shade(o, d, white)
    assert bool(hit.all())
    assert float((rgb[0] - rgb[1]).abs().max()) > 0.1
    assert float((rgb[0] - rgb[2]).abs().max()) > 0.1
    lid = [BOX_CENTRE[0], BOX_CENTRE[1], BOX_CENTRE[2] + 0.17]
    o, d = _surface_rays(lid, [0, 0, 1], [[0.0, 0.0, 0.8], [0.3, -0.2, 0.7], [-0.2, -0.3, 0.6]])
    rgb, hit = shade(o, d, white)
    assert bool(hit.all())
    torch.testing.assert_close(rgb[1:], rgb[:1].expand(2, 3), atol=2e-3, rtol=0)
    verts, faces = scene_truth("glossy", 48)
    assert len(faces) > 1000
    assert float(glossy_sdf(torch.from_numpy(verts).float())[0].abs().max()) < 0.03


def test_shiny_scene_is_the_glossy_one_on_a_matte_table():
    """`shiny`: the same objects and truth as `glossy`; its table looks alike from every view
    (the polished one does not), its mirror sphere still reflects, and what it reflects is the
    matte checkerboard."""
    from fields.scenes.glossy import SPHERE, shade
    from fields.scenes.shading import TABLE_TOP

    white = torch.ones(3)
    top = [0.55, 0.55, TABLE_TOP]  # a free spot of the table top
    views = [[0.3, 0.5, 0.8], [0.6, 0.1, 0.5], [0.1, 0.6, 0.3]]
    o, d = _surface_rays(top, [0, 0, 1], views)
    matte, hit = shade(o, d, white, matte_table=True)
    assert bool(hit.all())
    torch.testing.assert_close(matte[1:], matte[:1].expand(2, 3), atol=2e-3, rtol=0)
    polished, _ = shade(o, d, white)
    assert float((polished[0] - polished[2]).abs().max()) > 0.02
    n = torch.tensor([0.0, -0.6, 0.8])
    p = (torch.tensor(SPHERE) + 0.36 * n).tolist()
    o, d = _surface_rays(p, n, [[0.0, -0.9, 0.4], [0.5, -0.5, 0.7]])
    rgb, hit = shade(o, d, white, matte_table=True)
    assert bool(hit.all()) and float((rgb[0] - rgb[1]).abs().max()) > 0.1
    # a ray straight down onto the sphere's top mirrors straight up: the sky, as on `glossy`;
    # one grazing the sphere's lower side mirrors onto the table, which differs
    down = torch.tensor([[SPHERE[0], SPHERE[1], 2.0]]), torch.tensor([[0.0, 0.0, -1.0]])
    torch.testing.assert_close(shade(*down, white, matte_table=True)[0], shade(*down, white)[0])
    n = torch.tensor([0.0, -0.8, -0.6])
    p = (torch.tensor(SPHERE) + 0.36 * n).tolist()
    o, d = _surface_rays(p, n, [[0.0, -1.0, 0.05]])
    assert float((shade(o, d, white, matte_table=True)[0] - shade(o, d, white)[0]).abs().max()) \
        > 0.05


def test_chrome_scene_has_a_mirror_box_for_the_sphere():
    """`chrome`: the shiny scene with a mirror-like box where the sphere was; the box's flat
    top shows the sky at the mirrored direction (a colour that changes with the view's
    elevation), the matte table looks alike from every view, and the truth is the box's SDF."""
    from fields.scenes.glossy import CHROME_BOX, SPHERE, chrome_sdf, environment, shade
    from fields.scenes.shading import TABLE_TOP
    from fields.sdf.run import scene_truth

    white = torch.ones(3)
    (_, _, hz), (cx, cy, cz), _, _ = CHROME_BOX
    top = [cx, cy, cz + hz]
    views = [[0.0, 0.0, 1.0], [0.2, 0.1, 0.3], [-0.1, 0.3, 0.15]]
    o, d = _surface_rays(top, [0, 0, 1], views)
    rgb, hit = shade(o, d, white, chrome=True)
    assert bool(hit.all())
    assert float((rgb[0] - rgb[2]).abs().max()) > 0.1
    # a mirror: what the top shows from straight above is mostly the sky straight up
    sky = environment(torch.tensor([[0.0, 0.0, 1.0]]))[0]
    assert float((rgb[0] - 0.9 * torch.tensor([0.95, 0.85, 0.65]) * sky).abs().max()) < 0.1
    o, d = _surface_rays([0.55, 0.55, TABLE_TOP], [0, 0, 1], views)
    table, hit = shade(o, d, white, chrome=True)
    assert bool(hit.all())
    torch.testing.assert_close(table[1:], table[:1].expand(2, 3), atol=2e-3, rtol=0)
    verts, faces = scene_truth("chrome", 48)
    assert len(faces) > 1000
    assert float(chrome_sdf(torch.from_numpy(verts).float())[0].abs().max()) < 0.03
    sphere_top = torch.tensor([[SPHERE[0], SPHERE[1], SPHERE[2] + 0.36]])
    assert float(chrome_sdf(sphere_top)[0]) > 0.1  # no sphere there: the box is lower


def test_reflected_direction_inputs_and_their_gradient():
    from fields.nn.spherical_harmonics import spherical_harmonics
    from fields.sdf.neus import NeusConfig, NeusField

    cfg = NeusConfig(finest_resolution=32, log2_hashmap_size=10, n_levels=2, n_features=3,
                     reflected=True)
    field = NeusField(torch.tensor([[-1.0] * 3, [1.0] * 3]), cfg)
    d = torch.tensor([[1.0, 0.0, -1.0]]) / math.sqrt(2)
    n = torch.tensor([[0.0, 0.0, 1.0]], requires_grad=True)
    x = field.direction_inputs(d, n)
    r = torch.tensor([[1.0, 0.0, 1.0]]) / math.sqrt(2)  # d mirrored about the normal, reversed
    torch.testing.assert_close(x[:, :16], spherical_harmonics(r, 4))
    torch.testing.assert_close(x[:, 16], torch.tensor([1 / math.sqrt(2)]))
    assert not x.requires_grad  # the mirrored direction takes the normals without gradient
    rgb = field.color(x, n, torch.zeros(1, 3))
    rgb.sum().backward()
    assert rgb.shape == (1, 3) and float(n.grad.abs().sum()) > 0  # the normal input does
    # without `reflected`, the view direction itself (NeuS)
    plain = NeusField(field.aabb, NeusConfig(finest_resolution=32, log2_hashmap_size=10,
                                             n_levels=2, n_features=3))
    torch.testing.assert_close(plain.direction_inputs(d, n.detach()), plain.view_encoding(d))
    with pytest.raises(ValueError, match="reflection_start"):
        NeusConfig.from_dict({"reflection_start": 1.5})
    with pytest.raises(ValueError, match="reflection_degree"):
        NeusConfig.from_dict({"reflection_degree": 9})
    eight = NeusField(field.aabb, NeusConfig(finest_resolution=32, log2_hashmap_size=10,
                                             n_levels=2, n_features=3, reflected=True,
                                             reflection_degree=8))
    assert eight.direction_inputs(d, n).shape == (1, 65)
    assert eight.color(eight.direction_inputs(d, n), n, torch.zeros(1, 3)).shape == (1, 3)


def test_split_radiance_is_diffuse_plus_a_fresnel_weighted_environment():
    from fields.nn.spherical_harmonics import spherical_harmonics
    from fields.sdf.neus import NeusConfig, NeusField

    cfg = NeusConfig(finest_resolution=32, log2_hashmap_size=10, n_levels=2, n_features=3,
                     reflected=True, split_radiance=True)
    field = NeusField(torch.tensor([[-1.0] * 3, [1.0] * 3]), cfg)
    gen = torch.Generator().manual_seed(0)
    for p in field.parameters():  # away from the initialisation, every term contributes
        p.data.normal_(0.0, 0.5, generator=gen)
    n = torch.nn.functional.normalize(torch.randn(64, 3, generator=gen), dim=-1)
    d = torch.nn.functional.normalize(torch.randn(64, 3, generator=gen), dim=-1)
    d = torch.where(((d * n).sum(-1, keepdim=True) > 0), -d, d)  # seen from outside
    feat = torch.randn(64, 3, generator=gen, requires_grad=True)
    view = field.direction_inputs(d, n)
    rgb = field.color(view, n, feat)
    # the reference: the same terms written out from the two networks
    h = field.color_network(torch.cat((n, feat), -1)).float()
    cos = (-d * n).sum(-1, keepdim=True)
    f0, g = torch.sigmoid(h[:, 6:7] - 3), torch.sigmoid(h[:, 7:8] - 3)
    fresnel = f0 + (1 - f0) * g * (1 - cos) ** 5
    r = 2 * cos * n + d
    env = field.environment_network(spherical_harmonics(r, 4))
    want = (1 - fresnel) * torch.sigmoid(h[:, :3]) + fresnel * torch.sigmoid(h[:, 3:6]) * env
    torch.testing.assert_close(rgb, want, atol=1e-5, rtol=1e-5)
    nn_ = n.clone().requires_grad_(True)  # the normals reach r only with reflection_normal_grad
    assert not field.direction_inputs(d, nn_).requires_grad
    field.normal_grad = True  # what NeusTask sets while progress < reflection_normal_grad
    (gn,) = torch.autograd.grad(field.direction_inputs(d, nn_).sum(), nn_)
    assert float(gn.abs().sum()) > 0
    with pytest.raises(ValueError, match="reflection_normal_grad"):
        NeusConfig.from_dict({"reflection_normal_grad": 1.5})
    gf, = torch.autograd.grad(rgb.sum(), feat)
    gw, = torch.autograd.grad(want.sum(), feat)
    torch.testing.assert_close(gf, gw, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="split_radiance: needs reflected"):
        NeusConfig.from_dict({"split_radiance": True})


def _plane_views(n_views=6, size=48, freq=1.0):
    """Cameras around and above the textured plane z = 0 (|x|, |y| < 1), its images
    (smooth diffuse texture, white and alpha 0 off the plane) as a RayBatcher's flat arrays."""
    ang = torch.arange(n_views) * (2 * math.pi / n_views)
    eyes = torch.stack((1.5 * torch.cos(ang), 1.5 * torch.sin(ang), torch.full_like(ang, 2.5)), -1)
    f = 0.5 * size / math.tan(0.35)
    cams = Cameras(look_at(eyes, torch.zeros(3)), f, f, size / 2, size / 2, size, size)
    images, alphas = [], []
    for i in range(n_views):
        o, d = cams.pixel_rays(i)
        t = -o[:, 2] / d[:, 2]
        p = o + t[:, None] * d
        on = (p[:, :2].abs() < 1).all(-1)
        c = torch.stack((0.5 + 0.4 * torch.sin(3 * freq * p[:, 0]),
                         0.5 + 0.4 * torch.cos(2 * freq * p[:, 1]), torch.full_like(t, 0.5)), -1)
        images.append(torch.where(on[:, None], c, torch.ones(3)))
        alphas.append(on[:, None].float())
    return cams, torch.cat(images), torch.cat(alphas)


def test_reflection_scores_find_the_pixels_other_views_disagree_with():
    from fields.sdf.neus import gather_bilinear, reflection_scores

    cams, images, alpha = _plane_views()
    size = cams.width
    o, d = cams.pixel_rays(0)
    t = -o[:, 2] / d[:, 2]
    p = o + t[:, None] * d
    inside = (p[:, :2].abs() < 0.8).all(-1)
    p, ref = p[inside], images[: size * size][inside]
    own = torch.zeros(p.shape[0], dtype=torch.long)
    aabb = torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])
    views = torch.arange(6)  # its own view among them: never counted

    def plane(q):
        return q[:, 2]

    scores = reflection_scores(p, ref, own, images, cams, views, plane, aabb, alpha)
    assert float(scores.max()) < 0.02  # a diffuse surface: every view agrees
    shiny = torch.arange(p.shape[0]) % 3 == 0  # a highlight only view 0 saw
    glint = ref.clone()
    glint[shiny] = (glint[shiny] + 0.3).clamp(max=1)
    scores = reflection_scores(p, glint, own, images, cams, views, plane, aabb, alpha)
    want = (glint - ref).abs().mean(-1)
    torch.testing.assert_close(scores[shiny], want[shiny], atol=0.02, rtol=0)
    assert float(scores[~shiny].max()) < 0.02

    # the best match within a pixel: a diffuse surface seen half a pixel off still agrees
    # (a finer texture, its pixels' colours read 0.7 pixels off)
    _, fine, _ = _plane_views(freq=8.0)
    off = gather_bilinear(fine, own, (size, size),
                          cams.project(p, 0)[0] + torch.tensor([0.7, 0.0]))
    strict = reflection_scores(p, off, own, fine, cams, views, plane, aabb, alpha)
    tolerant = reflection_scores(p, off, own, fine, cams, views, plane, aabb, alpha,
                                 tolerance=1.0)
    assert float(strict.mean()) > 0.02
    assert float(tolerant.mean()) < 0.8 * float(strict.mean())
    tolerant = reflection_scores(p, glint, own, images, cams, views, plane, aabb, alpha,
                                 tolerance=1.0)
    # a highlight is no nearer a pixel away
    torch.testing.assert_close(tolerant[shiny], want[shiny], atol=0.05, rtol=0)
    from fields.sdf.neus import reflection_weights

    w = reflection_weights(torch.tensor([0.0, 0.05, 0.1, 0.15, 0.3]), 0.05, 0.1)
    torch.testing.assert_close(w, torch.tensor([1.0, 1.0, 1 / 1.5, 0.5, 1 / 3.5]))

    def roofed(q):  # a slab above the plane hides it from every camera: nothing counts
        return torch.minimum(q[:, 2], (q[:, 2] - 0.5).abs() - 0.2)

    scores = reflection_scores(p, glint, own, images, cams, views, roofed, aabb, alpha)
    assert float(scores.abs().max()) == 0.0


def _plane_texture(p):
    return torch.stack((0.5 + 0.4 * torch.sin(3 * p[:, 0]), 0.5 + 0.4 * torch.cos(2 * p[:, 1]),
                        torch.full_like(p[:, 0], 0.5)), -1)


def test_reprojected_colours_agree_at_the_true_depth_and_pull_towards_it():
    from fields.sdf.neus import gather_bilinear, reprojected_colours

    cams, images, alpha = _plane_views()
    size = cams.width
    # the per-point bilinear lookup is the per-image one, and differentiable in uv
    uv = torch.rand(40, 2, dtype=torch.float64) * (size - 2) + 1
    views = torch.randint(0, 6, (40,))
    flat = images.double()
    # reference: torch's grid_sample on each point's own image (pixel centres at i + 0.5)
    stack = flat.reshape(6, size, size, 3).permute(0, 3, 1, 2)
    grid = (uv * (2.0 / size) - 1.0).reshape(40, 1, 1, 2)
    want = torch.nn.functional.grid_sample(stack[views], grid, mode="bilinear",
                                           padding_mode="border", align_corners=False)
    want = want.reshape(40, 3)
    torch.testing.assert_close(gather_bilinear(flat, views, (size, size), uv), want)
    assert torch.autograd.gradcheck(
        lambda q: gather_bilinear(flat, views, (size, size), q), (uv.requires_grad_(),))

    o, d = cams.pixel_rays(0)
    t = -o[:, 2] / d[:, 2]
    inside = ((o + t[:, None] * d)[:, :2].abs() < 0.5).all(-1)
    o, d, t, ref = o[inside], d[inside], t[inside], images[: size * size][inside]
    other = torch.full((o.shape[0],), 1)
    on_plane = o + t[:, None] * d
    colour, seen = reprojected_colours(on_plane, other, images, (size, size), cams, alpha)
    assert bool(seen.all())
    torch.testing.assert_close(colour, _plane_texture(on_plane), atol=0.02, rtol=0)
    torch.testing.assert_close(colour, ref, atol=0.03, rtol=0)

    def difference(shift):  # the mean colour difference with every depth off by `shift`
        s = torch.tensor(shift, requires_grad=True)
        x = o + (t + s)[:, None] * d
        c, ok = reprojected_colours(x, other, images, (size, size), cams, alpha)
        diff = (c - ref).abs().mean(-1)[ok].mean()
        diff.backward()
        return float(diff.detach()), float(s.grad)

    at, _ = difference(0.0)
    (above, slope_above), (below, slope_below) = difference(-0.1), difference(0.1)
    assert above > at + 0.01 and below > at + 0.01
    assert slope_above < 0 < slope_below  # the gradient points back to the plane
    # behind the camera or off the image: not seen
    far = torch.tensor([[0.0, 0.0, 50.0], [30.0, 0.0, 0.0]])
    _, seen = reprojected_colours(far, torch.zeros(2, dtype=torch.long), images, (size, size),
                                  cams)
    assert not bool(seen.any())


def test_nearest_views_and_blurred_images():
    from fields.render.cameras import look_at
    from fields.sdf.neus import blurred_images, nearest_views

    ang = torch.arange(8) * (2 * math.pi / 8)
    eyes = torch.stack((3 * torch.cos(ang), 3 * torch.sin(ang), torch.full_like(ang, 1.0)), -1)
    near = nearest_views(look_at(eyes, torch.zeros(3)), torch.zeros(3), 2)
    assert near.shape == (8, 2)
    for i in range(8):  # the two neighbours on the ring, never itself
        assert set(near[i].tolist()) == {(i + 1) % 8, (i - 1) % 8}
    torch.manual_seed(0)
    flat = torch.rand(2 * 20 * 24, 3)
    torch.testing.assert_close(blurred_images(flat, 2, (20, 24), 0.1), flat)
    const = torch.full((2 * 20 * 24, 3), 0.3)
    torch.testing.assert_close(blurred_images(const, 2, (20, 24), 2.0), const)
    sigma, r = 1.5, 5
    k = torch.exp(-torch.arange(-r, r + 1.0) ** 2 / (2 * sigma**2))
    kernel = (k[:, None] * k[None]) / k.sum() ** 2
    img = flat.reshape(2, 20, 24, 3).permute(0, 3, 1, 2).reshape(6, 1, 20, 24)
    want = torch.nn.functional.conv2d(img, kernel[None, None])  # the interior only
    got = blurred_images(flat, 2, (20, 24), sigma).reshape(2, 20, 24, 3).permute(0, 3, 1, 2)
    torch.testing.assert_close(got.reshape(6, 1, 20, 24)[..., r:-r, r:-r], want,
                               atol=1e-5, rtol=0)


def test_ref_neus_task_trains_weights_and_reloads(tmp_path):
    from fields.checkpoint import save_checkpoint
    from fields.data import load_scene
    from fields.scenes.tabletop import SceneSpec, ensure_scene
    from fields.sdf.field import load_sdf
    from fields.sdf.neus import NeusConfig, NeusTask

    cfg = NeusConfig(finest_resolution=128, log2_hashmap_size=14, n_levels=8, n_features=7,
                     render_steps=96, grid_resolution=32, target_samples=2**12,
                     initial_rays=256, max_rays=1024, reflected=True, reflection_score=True,
                     reflection_start=0.5, reflection_views=4, reflection_normal_grad=0.25,
                     photo_consistency=0.5, consistency_views=3)
    scene = load_scene(ensure_scene(SceneSpec(name="glossy", resolution=24, n_train=12,
                                              n_val=1, n_test=1), root=tmp_path / "scenes"))
    task = NeusTask(scene, cfg)
    out = [task.train_step(i, i / 20) for i in range(20)]
    assert all(np.isfinite(o["loss"]) for o in out)
    assert np.mean([o["psnr"] for o in out[-4:]]) > np.mean([o["psnr"] for o in out[:4]])
    assert all("reflection_weight" not in o for o in out[:10])
    weights = [o["reflection_weight"] for o in out[10:]]
    assert all(0.0 < w <= 1.0 for w in weights)
    assert all(0.0 < o["consistency"] < 1.0 for o in out)
    assert task.neighbours is not None and task.neighbours.shape == (12, 3)
    assert task._blur is not None and task._blur[0] == 0.5  # 2 pixels halved twice
    # the normals' gradient through r for the first quarter of the run only
    assert not task.field.normal_grad
    task.train_step(20, 0.1)
    assert task.field.normal_grad
    save_checkpoint(tmp_path / "ref.pt", task.module, extra={
        "kind": "sdf", "sdf": {"aabb": scene.aabb.tolist(), "config": cfg.to_dict(),
                               "neus": True}})
    loaded, _ = load_sdf(tmp_path / "ref.pt")
    assert loaded.config.reflected
    x = torch.rand(16, 3) - 0.5
    torch.testing.assert_close(loaded(x), task.field(x))


def test_cli_fit_ref_neus_on_the_glossy_scene(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    import fields.sdf.run as run_module
    from fields.cli import app

    truth = run_module.scene_truth
    monkeypatch.setattr(run_module, "scene_truth", lambda scene: truth(scene, 48))
    monkeypatch.setenv("FIELDS_CACHE", str(tmp_path / "cache"))
    cfg = json.dumps({"finest_resolution": 128, "log2_hashmap_size": 14, "n_levels": 8,
                      "n_features": 7, "render_steps": 96, "grid_resolution": 32,
                      "target_samples": 4096, "initial_rays": 256, "max_rays": 1024,
                      "reflection_start": 0.5})
    out = tmp_path / "ref"
    res = CliRunner().invoke(app, ["fit", "neus", "--scene", "glossy", "--model", "ref-neus",
                                   "--scene-resolution", "16", "--steps", "6",
                                   "--resolution", "32", "--eval-every", "0", "--config", cfg,
                                   "--output", str(out)])
    assert res.exit_code == 0, res.output
    run = json.loads((out / "config.json").read_text())
    assert run["model"] == "ref-neus" and run["scene"] == "glossy"
    assert run["config"]["reflected"]  # Ref-NeuS's radiance; the score and the split are
    assert not run["config"]["reflection_score"]  # options (README: not better measured)
    assert not run["config"]["split_radiance"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 6 and metrics["chamfer_l1"] > 0
    objects = metrics["objects"]  # per object of the scene's truth
    assert list(objects) == ["table", "chrome sphere", "glossy capsule", "torus", "box"]
    assert abs(sum(o["share"] for o in objects.values()) - 1.0) < 1e-6
    assert all(o["completeness"] > 0 for o in objects.values())
    # the options: Ref-NeuS's reflection score, the split radiance and the normals' gradient
    # through the mirrored direction
    ablation = json.dumps({**json.loads(cfg), "reflection_score": True,
                           "split_radiance": True, "reflection_normal_grad": 1.0})
    res = CliRunner().invoke(app, ["fit", "neus", "--scene", "chrome", "--model", "ref-neus",
                                   "--scene-resolution", "16", "--steps", "2",
                                   "--resolution", "16", "--eval-every", "0", "--config",
                                   ablation, "--output", str(tmp_path / "ablation")])
    assert res.exit_code == 0, res.output
    run = json.loads((tmp_path / "ablation" / "config.json").read_text())
    assert run["scene"] == "chrome" and "mirror box" in json.loads(
        (tmp_path / "ablation" / "metrics.json").read_text())["objects"]
    assert run["config"]["reflected"] and run["config"]["reflection_score"]
    assert run["config"]["split_radiance"] and run["config"]["reflection_normal_grad"] == 1.0
    for bad in (["--model", "refneus"], ["--scene", "mirror"]):
        res = CliRunner().invoke(app, ["fit", "neus", *bad, "--output", str(tmp_path / "x")])
        assert res.exit_code == 2 and bad[1] in res.output
