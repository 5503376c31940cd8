"""Cameras, compositing, camera paths, SSIM, meshes: the renderer's pure-torch parts."""

import math

import numpy as np
import pytest
import torch

from fields import _ext
from fields.metrics import ssim
from fields.render.cameras import Cameras, distort, look_at, opencv_to_opengl, undistort
from fields.render.paths import orbit_path
from fields.render.volrend import (
    composite,
    composite_reference,
    exclusive_cumsum_packed,
    offsets_from_indices,
    prune_samples,
)


def test_composite_hand_computed():
    # ray 0: two samples; ray 1: one sample; ray 2: none
    sig = torch.tensor([1.0, 2.0, 4.0])
    ts = torch.tensor([0.0, 0.5, 1.0])
    te = torch.tensor([0.5, 1.0, 1.25])
    ri = torch.tensor([0, 0, 1])
    offsets = offsets_from_indices(ri, 3)
    assert offsets.tolist() == [0, 2, 3, 3]
    rgb = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    bg = torch.tensor([0.5, 0.5, 0.5])
    out = composite(sig, rgb, ts, te, ri, offsets, bg)
    a1 = 1 - math.exp(-0.5)
    a2 = 1 - math.exp(-1.0)
    w1, w2 = a1, math.exp(-0.5) * a2
    a3 = 1 - math.exp(-1.0)
    expect = torch.tensor(
        [
            [w1 + 0.5 * (1 - w1 - w2), w2 + 0.5 * (1 - w1 - w2), 0.5 * (1 - w1 - w2)],
            [0.5 * (1 - a3), 0.5 * (1 - a3), a3 + 0.5 * (1 - a3)],
            [0.5, 0.5, 0.5],
        ]
    )
    torch.testing.assert_close(out["rgb"], expect)
    torch.testing.assert_close(out["opacity"][:, 0], torch.tensor([w1 + w2, a3, 0.0]))
    d0 = (w1 * 0.25 + w2 * 0.75) / (w1 + w2)
    torch.testing.assert_close(out["depth"][:, 0], torch.tensor([d0, 1.125, 0.0]))
    torch.testing.assert_close(out["weights"], torch.tensor([w1, w2, a3]))


def test_composite_gradient_matches_dense():
    # packed compositing against a batched (dense) formula, values and gradients
    torch.manual_seed(0)
    counts = torch.tensor([3, 0, 5, 1])
    ri = torch.repeat_interleave(torch.arange(4), counts)
    offsets = offsets_from_indices(ri, 4)
    s = ri.shape[0]
    sig = torch.rand(s, dtype=torch.float64, requires_grad=True)
    rgb = torch.rand(s, 3, dtype=torch.float64, requires_grad=True)
    ts = torch.rand(s, dtype=torch.float64)
    te = ts + 0.3
    out = composite(sig, rgb, ts, te, ri, offsets)["rgb"]
    rows = []
    for r in range(4):  # test-only reference: a loop over 4 rays
        sl = slice(int(offsets[r]), int(offsets[r + 1]))
        sd = sig[sl] * (te[sl] - ts[sl])
        trans = torch.exp(-(torch.cumsum(sd, 0) - sd))
        w = trans * (1 - torch.exp(-sd))
        rows.append((w[:, None] * rgb[sl]).sum(0))
    ref = torch.stack(rows)
    torch.testing.assert_close(out, ref)
    g1 = torch.autograd.grad(out.sum(), (sig, rgb))
    g2 = torch.autograd.grad(ref.sum(), (sig, rgb))
    for a, b in zip(g1, g2, strict=True):
        torch.testing.assert_close(a, b)


@pytest.mark.skipif(not _ext.available(), reason=_ext.unavailable_reason())
@pytest.mark.parametrize("per_ray_background", [False, True])
def test_composite_kernel_matches_reference(per_ray_background):
    # fields._C's compositing (float32 on the CPU) against the torch ops: values, and the
    # gradients of all four outputs (the weights' too) for sigmas, rgbs and the background
    g = torch.Generator().manual_seed(5)
    counts = torch.randint(0, 40, (300,), generator=g)
    counts[:3] = torch.tensor([0, 1, 0])
    ri = torch.repeat_interleave(torch.arange(300), counts)
    offsets = offsets_from_indices(ri, 300)
    s = ri.shape[0]
    dense = (torch.rand(300, generator=g) ** 2 * 60)[ri]  # empty to opaque rays
    sig = (torch.rand(s, generator=g) * dense).requires_grad_()
    rgb = torch.rand(s, 3, generator=g).requires_grad_()
    ts = torch.sort(torch.rand(s, generator=g)).values
    te = ts + 0.05 * torch.rand(s, generator=g)
    bg = torch.rand(300, 3, generator=g) if per_ray_background else torch.rand(3, generator=g)
    bg.requires_grad_()
    up = {k: torch.randn(shape, generator=g) for k, shape in
          (("rgb", (300, 3)), ("opacity", (300, 1)), ("depth", (300, 1)), ("weights", (s,)))}
    got = composite(sig, rgb, ts, te, ri, offsets, bg)
    assert "Composite" in type(got["opacity"].grad_fn).__name__  # the kernel ran
    want = composite_reference(sig, rgb, ts, te, ri, offsets, bg)
    exact = composite_reference(*(v.double() for v in (sig, rgb, ts, te)), ri, offsets,
                                bg.double())

    def grads(out):
        loss = sum((out[k] * up[k].to(out[k].dtype)).sum() for k in up)
        return torch.autograd.grad(loss, (sig, rgb, bg))

    # as close to float64 as the float32 torch ops are (these rays sum large optical depths)
    for k in up:
        err_ref = (want[k].double() - exact[k]).abs().max()
        assert (got[k].double() - exact[k]).abs().max() <= 2 * err_ref + 1e-6, k
    for a, b, c in zip(grads(got), grads(want), grads(exact), strict=True):
        err_ref = (b.double() - c).abs().max()
        assert (a.double() - c).abs().max() <= 2 * err_ref + 1e-6
    # only the rgb's gradient asked for (the other outputs' gradients are None)
    (a,) = torch.autograd.grad(composite(sig, rgb, ts, te, ri, offsets)["rgb"].sum(), sig)
    (b,) = torch.autograd.grad(composite_reference(sig, rgb, ts, te, ri, offsets)["rgb"].sum(),
                               sig)
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.skipif(not _ext.available(), reason=_ext.unavailable_reason())
def test_composite_kernel_names_bad_offsets():
    sig, ts = torch.ones(3), torch.zeros(3)
    with pytest.raises(RuntimeError, match="offsets must run from 0 to 3"):
        _ext.extension().composite_forward_cpu(sig, torch.ones(3, 3), ts, ts + 1,
                                               torch.tensor([0, 2]))
    with pytest.raises(RuntimeError, match="offsets must not decrease"):
        _ext.extension().composite_forward_cpu(sig, torch.ones(3, 3), ts, ts + 1,
                                               torch.tensor([0, 2, 1, 3]))


def test_exclusive_cumsum_and_prune():
    ri = torch.tensor([0, 0, 0, 2, 2])
    offsets = offsets_from_indices(ri, 3)
    v = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])
    assert exclusive_cumsum_packed(v, ri, offsets).tolist() == [0.0, 1.0, 3.0, 0.0, 4.0]
    # an opaque first sample hides the ones behind it on the same ray only
    sig = torch.tensor([100.0, 1.0, 1.0, 0.0, 1.0])
    ts = torch.arange(5.0)
    keep = prune_samples(sig, ts, ts + 1, ri, offsets)
    assert keep.tolist() == [True, False, False, True, True]


def test_camera_projection_and_rays_agree():
    c2w = look_at(torch.tensor([[0.0, -4.0, 1.0]]), torch.zeros(3))
    cam = Cameras(c2w, 100.0, 110.0, 64.0, 48.0, 128, 96)
    # the look-at target projects to the principal point, in front of the camera
    uv, depth = cam.project(torch.zeros(1, 3), 0)
    torch.testing.assert_close(uv, torch.tensor([[64.0, 48.0]]))
    assert depth.item() == pytest.approx(math.sqrt(17.0), rel=1e-6)
    # a point above the target appears higher in the image (smaller v): +y is up
    uv_up, _ = cam.project(torch.tensor([[0.0, 0.0, 0.5]]), 0)
    assert uv_up[0, 1] < 48.0 and abs(uv_up[0, 0] - 64.0) < 1e-3
    # a point to the camera's right (+x in the world here) has larger u
    uv_r, _ = cam.project(torch.tensor([[0.5, 0.0, 0.0]]), 0)
    assert uv_r[0, 0] > 64.0


def test_rays_through_projected_points_with_distortion():
    torch.manual_seed(1)
    c2w = look_at(torch.tensor([[3.0, 1.0, 2.0]]), torch.zeros(3))
    k = torch.tensor([[0.08, -0.03, 0.004, -0.002]])
    cam = Cameras(c2w, 90.0, 95.0, 60.0, 50.0, 120, 100, k)
    pts = torch.rand(50, 3) - 0.5
    uv, _ = cam.project(pts, 0)
    o, d = cam.rays(torch.zeros(50, dtype=torch.long), uv[:, 0], uv[:, 1])
    dist = (pts - o).norm(dim=-1, keepdim=True)
    torch.testing.assert_close(o + d * dist, pts, atol=1e-4, rtol=0)
    torch.testing.assert_close(d.norm(dim=-1), torch.ones(50))


@pytest.mark.parametrize("model", ["perspective", "fisheye", "equirectangular"])
def test_projection_with_a_camera_per_point_is_each_cameras_own(model):
    """`project(points, cameras)` with (P,) indices: each point as `project(point, its
    camera)` gives it (intrinsics and distortion per camera), with the gradient."""
    g = torch.Generator().manual_seed(2)
    eyes = torch.tensor([[0.0, -4.0, 1.0], [3.0, 1.0, 2.0], [-2.0, 2.5, -1.0]])
    k = torch.tensor([[0.08, -0.03, 0.004, -0.002], [0.0, 0.0, 0.0, 0.0],
                      [-0.05, 0.01, -0.003, 0.001]])
    if model == "perspective":  # the first camera's k are (k1, k2, p1, p2) for a pinhole
        k[0, 2:] = torch.tensor([0.001, -0.002])
    cam = Cameras(look_at(eyes, torch.zeros(3)), torch.tensor([100.0, 90.0, 120.0]),
                  torch.tensor([110.0, 95.0, 118.0]), torch.tensor([64.0, 60.0, 70.0]),
                  torch.tensor([48.0, 50.0, 52.0]), 128, 96, k, model=model)
    pts = (torch.rand(40, 3, generator=g) - 0.5).requires_grad_()
    which = torch.randint(0, 3, (40,), generator=g)
    uv, depth = cam.project(pts, which)
    uv.sum().backward()
    for c in range(3):
        sel = which == c
        ref = pts.detach()[sel].requires_grad_()
        uv_c, depth_c = cam.project(ref, c)
        torch.testing.assert_close(uv[sel], uv_c)
        torch.testing.assert_close(depth[sel], depth_c)
        uv_c.sum().backward()
        torch.testing.assert_close(pts.grad[sel], ref.grad)


def test_fisheye_camera_projects_by_the_equidistant_model_and_rays_round_trip():
    c2w = torch.cat((torch.eye(3), torch.zeros(3, 1)), 1)[None]  # looks down -z, +y up
    k = torch.tensor([[0.05, -0.01, 0.002, -0.0005]])
    cam = Cameras(c2w, 80.0, 82.0, 100.0, 90.0, 200, 180, k, model="fisheye")
    # a point 60 degrees off the axis, to the right: radius theta_d(60 deg) in normalised units
    theta = math.radians(60.0)
    t2 = theta**2
    theta_d = theta * (1 + 0.05 * t2 - 0.01 * t2**2 + 0.002 * t2**3 - 0.0005 * t2**4)
    p = torch.tensor([[math.sin(theta), 0.0, -math.cos(theta)]]) * 3.0
    uv, depth = cam.project(p, 0)
    torch.testing.assert_close(uv, torch.tensor([[100.0 + 80.0 * theta_d, 90.0]]), atol=1e-3,
                               rtol=0)
    assert depth.item() == pytest.approx(1.5, rel=1e-5)
    # above the axis: smaller v (+y up); beyond 90 degrees the camera still sees it
    uv_up, _ = cam.project(torch.tensor([[0.0, 1.0, -1.0]]), 0)
    assert uv_up[0, 1] < 90.0 and abs(uv_up[0, 0] - 100.0) < 1e-3
    # rays through the projections of points (up to 100 degrees off the axis) hit them
    g = torch.Generator().manual_seed(0)
    ang = torch.rand(60, generator=g) * math.radians(100.0)
    az = torch.rand(60, generator=g) * 2 * math.pi
    dirs = torch.stack((torch.sin(ang) * torch.cos(az), torch.sin(ang) * torch.sin(az),
                        -torch.cos(ang)), -1)
    pts = dirs * (1.0 + torch.rand(60, 1, generator=g) * 3)
    uv, _ = cam.project(pts, 0)
    o, d = cam.rays(torch.zeros(60, dtype=torch.long), uv[:, 0], uv[:, 1])
    dist = (pts - o).norm(dim=-1, keepdim=True)
    torch.testing.assert_close(o + d * dist, pts, atol=1e-4, rtol=0)
    torch.testing.assert_close(d.norm(dim=-1), torch.ones(60))


def test_equirectangular_camera_sees_every_direction_and_rays_round_trip():
    c2w = look_at(torch.tensor([[0.0, -2.0, 0.0]]), torch.zeros(3),
                  up=torch.tensor([0.0, 0.0, 1.0]))
    w, h = 64, 32
    cam = Cameras(c2w, w / 2, float(h), w / 2, h / 2, w, h, model="equirectangular")
    idx = torch.zeros(3, dtype=torch.long)
    # the centre pixel looks ahead (the look-at point), the top row up, the bottom row down
    _, d = cam.rays(idx, torch.tensor([w / 2, w / 2, w / 2]), torch.tensor([h / 2, 0.0, h]))
    torch.testing.assert_close(d, torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0],
                                                [0.0, 0.0, -1.0]]), atol=1e-5, rtol=0)
    # a quarter of the width to the right: the camera's right (+x here); the left edge: behind
    _, d = cam.rays(idx[:2], torch.tensor([0.75 * w, 0.0]), torch.tensor([h / 2, h / 2]))
    torch.testing.assert_close(d, torch.tensor([[1.0, 0.0, 0.0], [0.0, -1.0, 0.0]]),
                               atol=1e-5, rtol=0)
    g = torch.Generator().manual_seed(1)
    pts = torch.randn(80, 3, generator=g) * 2
    uv, dist = cam.project(pts, 0)
    assert (uv[:, 0] >= 0).all() and (uv[:, 0] <= w).all()
    assert (uv[:, 1] >= 0).all() and (uv[:, 1] <= h).all()
    o, d = cam.rays(torch.zeros(80, dtype=torch.long), uv[:, 0], uv[:, 1])
    torch.testing.assert_close(o + d * dist[:, None], pts, atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match="model"):
        Cameras(c2w, 1.0, 1.0, 1.0, 1.0, 4, 4, model="orthographic")


def test_undistort_inverts_distort():
    x, y = torch.rand(2, 100) - 0.5
    k = torch.tensor([0.1, -0.05, 0.01, 0.005]).expand(100, 4)
    xd, yd = distort(x, y, k)
    xu, yu = undistort(xd, yd, k)
    torch.testing.assert_close(xu, x, atol=1e-6, rtol=0)
    torch.testing.assert_close(yu, y, atol=1e-6, rtol=0)


def test_opencv_to_opengl_flips_camera_axes():
    c2w = torch.eye(4)[:3]
    gl = opencv_to_opengl(c2w)
    torch.testing.assert_close(gl[:, :3], torch.diag(torch.tensor([1.0, -1.0, -1.0])))
    # an OpenCV camera looking down +z at a point ahead: OpenGL frame looks down -z at it
    cam = Cameras(gl[None], 10.0, 10.0, 5.0, 5.0, 10, 10)
    _, depth = cam.project(torch.tensor([[0.0, 0.0, 2.0]]), 0)
    assert depth.item() == pytest.approx(2.0)
    # OpenCV: +y world is down in the image for this camera
    uv2, _ = cam.project(torch.tensor([[0.0, 0.5, 2.0]]), 0)
    assert uv2[0, 1] > 5.0


def test_orbit_path_looks_at_centre():
    centre = torch.tensor([0.1, 0.2, 0.3])
    c2w = orbit_path(centre, 3.0, torch.tensor([0.0, 0.0, 1.0]), n_frames=8)
    eyes = c2w[:, :, 3]
    torch.testing.assert_close((eyes - centre).norm(dim=-1), torch.full((8,), 3.0))
    forward = -c2w[:, :, 2]
    to_centre = (centre - eyes) / 3.0
    torch.testing.assert_close(forward, to_centre, atol=1e-5, rtol=0)


def test_ssim_identity_and_noise():
    torch.manual_seed(0)
    img = torch.rand(32, 32, 3)
    assert ssim(img, img) == pytest.approx(1.0)
    noisy = (img + 0.2 * torch.randn_like(img)).clamp(0, 1)
    assert ssim(noisy, img) < 0.9
    with pytest.raises(ValueError, match="ssim"):
        ssim(img, img[:16])


def test_marching_cubes_sphere_and_ply_round_trip(tmp_path):
    from fields.data.pointclouds import read_ply, write_ply
    from fields.mesh import marching_cubes, sample_grid

    aabb = torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])
    # "density" high inside a sphere of radius 0.6
    vol = sample_grid(lambda p: 0.6 - p.norm(dim=-1), aabb, 64, chunk=1000)
    verts, faces = marching_cubes(vol, 0.0, aabb)
    r = np.linalg.norm(verts, axis=-1)
    assert np.abs(r - 0.6).max() < 0.01
    # outward normals: the signed volume is positive
    tri = verts[faces]
    signed = np.einsum("ij,ij->i", tri[:, 0], np.cross(tri[:, 1], tri[:, 2])).sum() / 6
    assert signed == pytest.approx(4 / 3 * math.pi * 0.6**3, rel=0.02)
    colours = np.full((len(verts), 3), 200, np.uint8)
    write_ply(tmp_path / "m.ply", verts, faces, colours)
    v2, f2 = read_ply(tmp_path / "m.ply")
    np.testing.assert_array_equal(v2, verts)
    np.testing.assert_array_equal(f2, faces)
