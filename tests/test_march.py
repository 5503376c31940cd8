"""Occupancy grid and ray marching: C++ kernel against the torch reference, hand-checked
samples, contraction, grid updates."""

import math

import pytest
import torch

from fields import _ext
from fields.render.occupancy import (
    MISS,
    OccupancyGrid,
    contract,
    march_rays,
    march_rays_reference,
    ray_aabb,
    uncontract,
)

needs_ext = pytest.mark.skipif(not _ext.available(), reason="fields._C not built")

AABB = [-1.0, -1.2, -0.8, 1.1, 1.0, 0.9]


def _rays(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    o = torch.randn(n, 3, generator=g) * 1.5
    d = torch.nn.functional.normalize(torch.randn(n, 3, generator=g), dim=-1)
    o[:8] = torch.tensor(
        [
            [-3.0, 0.1, 0.2],
            [0.0, 0.0, 0.0],
            [0.5, -3.0, 0.25],
            [0.0, 0.0, -2.0],
            [-1.0, -1.2, -0.8],
            [2.0, 2.0, 2.0],
            [0.3, 0.3, 0.3],
            [-1.0, 0.0, 0.0],
        ]
    )
    d[:8] = torch.tensor(
        [
            [1.0, 0.0, 0.0],
            [0.0, 1.0, 0.0],
            [0.0, 1.0, 0.0],
            [0.0, 0.0, 1.0],
            [0.6, 0.64, 0.48],
            [1.0, 0.0, 0.0],
            [0.0, 0.0, -1.0],
            [1.0, 0.0, 0.0],
        ]
    )
    return o, d


def _occupancy(res, frac, seed=1, dtype=torch.bool):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(res, res, res, generator=g) < frac).to(dtype)


def _assert_same(a, b):
    assert torch.equal(a.offsets, b.offsets)
    assert torch.equal(a.ray_indices, b.ray_indices)
    torch.testing.assert_close(a.t_starts, b.t_starts, rtol=0, atol=1e-5)
    torch.testing.assert_close(a.t_ends, b.t_ends, rtol=0, atol=1e-5)


def _check_packed(s, n):
    assert s.offsets.shape == (n + 1,) and s.offsets[0] == 0
    assert s.ray_indices.dtype == torch.int64 and s.t_starts.dtype == torch.float32
    counts = s.offsets[1:] - s.offsets[:-1]
    assert torch.equal(s.ray_indices, torch.repeat_interleave(torch.arange(n), counts))
    assert bool((s.t_ends > s.t_starts).all())
    same_ray = s.ray_indices[1:] == s.ray_indices[:-1]
    assert bool((s.t_starts[1:][same_ray] >= s.t_ends[:-1][same_ray]).all())


@needs_ext
@pytest.mark.parametrize("contraction", ["none", "mipnerf360"])
@pytest.mark.parametrize(("cone_angle", "max_step"), [(0.0, 1e10), (0.02, 1e10), (0.05, 0.06)])
def test_kernel_matches_reference(contraction, cone_angle, max_step):
    n = 400
    o, d = _rays(n)
    g = torch.Generator().manual_seed(2)
    if contraction == "none":
        t_min, t_max = ray_aabb(o, d, AABB)
        t_min = t_min.clamp(min=0.0)
    else:
        t_min = torch.rand(n, generator=g) * 0.2
        t_max = t_min + 1.0 + torch.rand(n, generator=g) * 4.0
    t_max[20:25] = t_min[20:25]  # empty intervals
    occ = _occupancy(20, 0.3, dtype=torch.uint8 if cone_angle > 0 else torch.bool)
    args = (o, d, t_min, t_max, occ, AABB, contraction, 0.013, cone_angle, max_step)
    out = march_rays(*args)
    ref = march_rays_reference(*args)
    assert out.t_starts.numel() > 1000
    _assert_same(out, ref)
    _check_packed(out, n)
    assert int(out.offsets[21] - out.offsets[20]) == 0
    # Steps as documented: t_end - t_start = clamp(t * cone, step, max_step) unless clipped.
    dt = torch.clamp(out.t_starts * cone_angle, min=0.013, max=max_step)
    clipped = out.t_ends == t_max[out.ray_indices]
    torch.testing.assert_close(
        out.t_ends[~clipped] - out.t_starts[~clipped], dt[~clipped], rtol=1e-4, atol=1e-6
    )


@needs_ext
@pytest.mark.parametrize("frac", [0.02, 0.2])
def test_rays_on_and_along_cell_faces_match_the_reference(frac):
    """Rays that start on cell faces, run along them (zero and tiny direction components) or
    graze them give the reference's samples exactly."""
    res, n = 32, 600
    g = torch.Generator().manual_seed(5)
    lo, hi = torch.tensor(AABB[:3]), torch.tensor(AABB[3:])
    cell = (hi - lo) / res
    # origins on cell faces (integer multiples of the cell size), inside and outside the box
    k = torch.randint(-8, res + 8, (n, 3), generator=g).float()
    o = lo + k * cell
    d = torch.randn(n, 3, generator=g)
    d[: n // 4, 0] = 0.0  # along x faces
    d[n // 4 : n // 2, 1] = 1e-6 * torch.sign(d[n // 4 : n // 2, 1])  # grazing y faces
    d[n // 2 : n // 2 + 50] = torch.tensor([1.0, 0.0, 0.0])  # axis-aligned, on faces
    d = torch.nn.functional.normalize(d, dim=-1)
    t_min, t_max = ray_aabb(o, d, AABB)
    t_min = t_min.clamp(min=0.0)
    occ = _occupancy(res, frac, seed=7)
    args = (o, d, t_min, t_max, occ, AABB, "none", 0.004, 0.0, 1e10)
    out = march_rays(*args)
    ref = march_rays_reference(*args)
    assert out.t_starts.numel() > 500
    _assert_same(out, ref)


@needs_ext
@pytest.mark.parametrize(("frac", "step"), [(0.002, 0.0021), (0.01, 0.00917), (0.05, 0.0313)])
def test_empty_space_skipping_gives_the_reference_bit_for_bit(frac, step):
    """Bounded scenes with constant steps skip the blocks of 4^3 cells with nothing occupied
    near them, and jump the step chain a binade at a time: the samples are still the
    reference's, exactly (t_starts and t_ends compared with no tolerance), for rays from
    inside the box (t_min 0, the chain from 0 through many binades), from outside, along
    and on block faces, and for sparse grids where most of each ray is skipped."""
    res, n = 64, 700
    g = torch.Generator().manual_seed(11)
    lo, hi = torch.tensor(AABB[:3]), torch.tensor(AABB[3:])
    o, d = _rays(n, seed=3)
    o[100:300] = lo + torch.rand(200, 3, generator=g) * (hi - lo)  # inside: t_min = 0
    cell = (hi - lo) / res
    k = torch.randint(0, res // 4 + 1, (100, 3), generator=g).float() * 4  # on block faces
    o[300:400] = lo + k * cell
    d[300:350, 2] = 0.0  # along z faces of the blocks
    d[350:400] = torch.tensor([0.0, 1.0, 0.0])  # axis-aligned, on block edges
    d = torch.nn.functional.normalize(d, dim=-1)
    t_min, t_max = ray_aabb(o, d, AABB)
    t_min = t_min.clamp(min=0.0)
    occ = _occupancy(res, frac, seed=13)
    occ[40:44, 10:30, 33] = True  # a thin occupied sheet on a block boundary
    args = (o, d, t_min, t_max, occ, AABB, "none", step, 0.0, 1e10)
    out = march_rays(*args)
    ref = march_rays_reference(*args)
    assert out.t_starts.numel() > 300
    assert torch.equal(out.offsets, ref.offsets)
    assert torch.equal(out.t_starts, ref.t_starts) and torch.equal(out.t_ends, ref.t_ends)


@needs_ext
def test_grid_packing_is_kept_until_the_grid_changes():
    """`OccupancyGrid.packed_cpu` packs the grid once for many calls and again once it changes;
    marching with a packing gives the samples marching without one gives; a packing of another
    grid size is refused, naming what was expected."""
    res = 32
    grid = OccupancyGrid(AABB, resolution=res)
    grid.occupied.copy_(_occupancy(res, 0.2, seed=5))
    o, d = _rays(300, seed=6)
    first = grid.packed_cpu()
    assert grid.packed_cpu() is first  # kept
    bits, coarse = first
    assert bits.dtype == torch.uint8 and bits.numel() == res**3 // 8
    assert coarse.numel() == (res // 4) ** 3
    a = grid.sample(o, d, 0.0, 1e10, 0.02)
    t_min, t_max = ray_aabb(o, d, AABB)
    t_min = t_min.clamp(min=0.0)  # as sample's near = 0
    b = march_rays(o, d, t_min, t_max, grid.occupied, AABB, "none", 0.02)
    assert torch.equal(a.t_starts, b.t_starts) and torch.equal(a.offsets, b.offsets)
    grid.occupied[: res // 2] = False  # in place: the packing is made again
    assert grid.packed_cpu() is not first
    c = grid.sample(o, d, 0.0, 1e10, 0.02)
    d2 = march_rays(o, d, t_min, t_max, grid.occupied, AABB, "none", 0.02)
    assert torch.equal(c.t_starts, d2.t_starts) and c.t_starts.numel() < a.t_starts.numel()
    with pytest.raises(RuntimeError, match=r"packed\[0\] must be pack_occupancy_cpu's"):
        march_rays(o, d, t_min, t_max, grid.occupied, AABB, "none", 0.02,
                   packed=OccupancyGrid(AABB, resolution=16).packed_cpu())


@needs_ext
@pytest.mark.parametrize("backend", ["cpu", "torch"])
def test_single_cell_hand_checked(backend):
    # Cells of size 1 over [0, 4]^3; only cell (2, 1, 1) = [2, 3] x [1, 2] x [1, 2] occupied.
    occ = torch.zeros(4, 4, 4, dtype=torch.bool)
    occ[2, 1, 1] = True
    o = torch.tensor([[-0.5, 1.5, 1.5], [-0.5, 0.5, 1.5]])  # the second misses the cell
    d = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    t_min = torch.zeros(2)
    t_max = torch.full((2,), 10.0)
    march = march_rays if backend == "cpu" else march_rays_reference
    s = march(o, d, t_min, t_max, occ, [0, 0, 0, 4, 4, 4], "none", 0.25)
    # Midpoint x = t + 0.125 - 0.5 must lie in [2, 3): t in [2.375, 3.375).
    expected = torch.tensor([2.5, 2.75, 3.0, 3.25])
    assert torch.equal(s.t_starts, expected)
    assert torch.equal(s.t_ends, expected + 0.25)
    assert s.offsets.tolist() == [0, 4, 4]
    assert s.ray_indices.tolist() == [0, 0, 0, 0]
    # The last step is clipped at t_max, and its midpoint decides.
    s = march(o[:1], d[:1], t_min[:1], torch.tensor([2.6]), occ, [0, 0, 0, 4, 4, 4], "none", 0.25)
    assert s.t_starts.tolist() == [2.5] and s.t_ends.tolist() == [pytest.approx(2.6)]


@needs_ext
@pytest.mark.parametrize("contraction", ["none", "mipnerf360"])
def test_all_occupied_counts(contraction):
    n, step = 300, 1.0 / 64
    g = torch.Generator().manual_seed(3)
    o = torch.rand(n, 3, generator=g) * 2 - 1
    d = torch.nn.functional.normalize(torch.randn(n, 3, generator=g), dim=-1)
    # t_min on a 2^-10 lattice so that t_min + k * step is exact in float32.
    t_min = torch.randint(0, 1024, (n,), generator=g).float() / 1024
    t_max = t_min + 0.01 + torch.rand(n, generator=g) * 2.0
    occ = torch.ones(8, 8, 8, dtype=torch.bool)
    aabb = [-8.0, -8.0, -8.0, 8.0, 8.0, 8.0]
    s = march_rays(o, d, t_min, t_max, occ, aabb, contraction, step)
    expected = torch.ceil((t_max.double() - t_min.double()) / step).long()
    assert torch.equal(s.offsets[1:] - s.offsets[:-1], expected)
    k = torch.arange(s.t_starts.numel()) - s.offsets[s.ray_indices]
    assert torch.equal(s.t_starts, t_min[s.ray_indices] + k.float() * step)
    last = s.offsets[1:] - 1
    assert torch.equal(s.t_ends[last], t_max)
    _assert_same(s, march_rays_reference(o, d, t_min, t_max, occ, aabb, contraction, step))


@needs_ext
def test_misses_and_empty_batch():
    aabb = [-1.0, -1.0, -1.0, 1.0, 1.0, 1.0]
    o = torch.tensor([[-3.0, 0.0, 0.0], [-3.0, 0.0, 0.0], [-3.0, 2.0, 0.0], [0.0, 0.0, 0.0]])
    d = torch.tensor([[1.0, 0.0, 0.0], [-1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    t_near, t_far = ray_aabb(o, d, aabb)
    assert t_near.tolist() == [2.0, MISS, MISS, -1.0]
    assert t_far.tolist() == [4.0, MISS, MISS, 1.0]
    grid = OccupancyGrid(aabb, resolution=8)
    for backend in ("cpu", "torch"):
        s = grid.sample(o, d, 0.0, 100.0, 0.125, backend=backend)
        counts = (s.offsets[1:] - s.offsets[:-1]).tolist()
        assert counts == [16, 0, 0, 8]
        e = grid.sample(torch.zeros(0, 3), torch.zeros(0, 3), 0.0, 100.0, 0.1, backend=backend)
        assert e.offsets.tolist() == [0] and e.t_starts.numel() == 0
        assert e.ray_indices.dtype == torch.int64
    empty = torch.zeros(0)
    for march in (march_rays, march_rays_reference):
        e = march(
            torch.zeros(0, 3),
            torch.zeros(0, 3),
            empty,
            empty,
            grid.occupied,
            aabb,
            "mipnerf360",
            0.1,
        )
        assert e.offsets.tolist() == [0] and e.t_ends.numel() == 0


@needs_ext
def test_thread_count_independent():
    o, d = _rays(3000, seed=5)
    t_min = torch.zeros(3000)
    t_max = torch.full((3000,), 5.0)
    occ = _occupancy(32, 0.4)
    args = (o, d, t_min, t_max, occ, AABB, "mipnerf360", 0.02, 0.004)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = march_rays(*args)
        torch.set_num_threads(2)
        two = march_rays(*args)
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(one, two, strict=True):
        assert torch.equal(a, b)


def test_contract_values_and_round_trip():
    aabb = torch.tensor([-1.0, -2.0, 0.0, 3.0, 2.0, 2.0], dtype=torch.float64)
    centre, half = torch.tensor([1.0, 0.0, 1.0]), torch.tensor([2.0, 2.0, 1.0])
    g = torch.Generator().manual_seed(0)
    dirs = torch.randn(50, 3, generator=g, dtype=torch.float64)
    dirs = dirs / dirs.norm(dim=-1, keepdim=True)

    def world(y):
        return centre.double() + y * half.double()

    def c_of(y):
        return contract(world(y), aabb) * 4 - 2

    y_in = dirs * torch.rand(50, 1, generator=g, dtype=torch.float64)
    torch.testing.assert_close(c_of(y_in), y_in)  # identity inside the unit ball
    torch.testing.assert_close(
        c_of(2 * dirs).norm(dim=-1), torch.full((50,), 1.5, dtype=torch.float64)
    )
    torch.testing.assert_close(c_of(2 * dirs), 1.5 * dirs)  # same direction
    far = c_of(1e8 * dirs).norm(dim=-1)
    assert bool((far < 2).all()) and bool((far > 2 - 1e-7).all())
    gp = contract(world(5 * dirs), aabb)
    assert bool((gp >= 0).all()) and bool((gp <= 1).all())
    # Round trips.
    x = world(dirs * torch.rand(50, 1, generator=g, dtype=torch.float64) * 20)
    torch.testing.assert_close(uncontract(contract(x, aabb), aabb), x)
    gg = 0.5 + 0.49 * dirs * torch.rand(50, 1, generator=g, dtype=torch.float64)
    torch.testing.assert_close(contract(uncontract(gg, aabb), aabb), gg)
    x32 = x.float()
    torch.testing.assert_close(uncontract(contract(x32, aabb, "none"), aabb, "none"), x32)
    torch.testing.assert_close(
        contract(torch.tensor([[-1.0, -2.0, 0.0], [3.0, 2.0, 2.0]]), aabb, "none"),
        torch.tensor([[0.0] * 3, [1.0] * 3]),
    )


def test_contract_gradients():
    aabb = [-1.0, -2.0, 0.0, 3.0, 2.0, 2.0]
    g = torch.Generator().manual_seed(1)
    x = (torch.randn(12, 3, generator=g, dtype=torch.float64) * 3).requires_grad_()
    for contraction in ("none", "mipnerf360"):
        assert torch.autograd.gradcheck(lambda v, c=contraction: contract(v, aabb, c), (x,))
    gg = (0.5 + 0.1 * torch.randn(12, 3, generator=g, dtype=torch.float64)).requires_grad_()
    assert torch.autograd.gradcheck(lambda v: uncontract(v, aabb), (gg,))
    # The box centre (y = 0) has a finite gradient (identity there: 1 / half_size).
    centre = torch.tensor([[1.0, 0.0, 1.0]], requires_grad=True)
    contract(centre, aabb).sum().backward()
    torch.testing.assert_close(centre.grad, torch.tensor([[1 / 8, 1 / 8, 1 / 4]]))


@needs_ext
@pytest.mark.parametrize("contraction", ["none", "mipnerf360"])
def test_occupancy_grid_update_sphere(contraction):
    res = 16
    grid = OccupancyGrid([-1.0] * 3 + [1.0] * 3, resolution=res, contraction=contraction)
    assert grid.occupancy_fraction == 1.0
    calls = []

    def density_fn(p):
        calls.append(p.shape[0])
        assert not torch.is_grad_enabled()
        return torch.where(p.norm(dim=-1) < 0.5, 100.0, 0.0)

    gen = torch.Generator().manual_seed(0)
    grid.update(0, density_fn, generator=gen)  # warm-up: every cell
    assert sum(calls) == res**3
    # Cell centres in world space; the half diagonal of a cell bounds the distance inside it.
    ijk = torch.stack(torch.meshgrid(*[torch.arange(res)] * 3, indexing="ij"), -1)
    g_centre = (ijk.float() + 0.5) / res
    r = uncontract(g_centre, grid.aabb, contraction).norm(dim=-1)
    half_diag = math.sqrt(3) / res * (1 if contraction == "none" else 2)
    inside, outside = r < 0.5 - half_diag, r > 0.5 + half_diag
    assert inside.sum() > 0 and outside.sum() > 0
    assert bool(grid.occupied[inside].all()) and not bool(grid.occupied[outside].any())
    assert 0 < grid.occupancy_fraction < 0.5
    # After warm-up: R^3/4 uniform + R^3/4 occupied cells; EMA keeps the sphere.
    calls.clear()
    grid.update(1000, density_fn, generator=gen)
    assert sum(calls) == res**3 // 2
    assert bool(grid.occupied[inside].all()) and not bool(grid.occupied[outside].any())

    # The opacity rule: with a thin haze (sigma 1) outside the sphere, every cell is occupied
    # by density > 0.01, but only the sphere by density * step_size > 0.01 (0.005 outside).
    def hazy_fn(p):
        return torch.where(p.norm(dim=-1) < 0.5, 1000.0, 1.0)

    hazy = OccupancyGrid([-1.0] * 3 + [1.0] * 3, resolution=res, contraction=contraction)
    hazy.update(0, hazy_fn, generator=gen)
    assert hazy.occupancy_fraction == 1.0
    hazy.update(0, hazy_fn, step_size=0.005, generator=gen)
    assert bool(hazy.occupied[inside].all()) and not bool(hazy.occupied[outside].any())
    # state_dict round trip; the kernel and the reference march the loaded grid alike.
    loaded = OccupancyGrid([-1.0] * 3 + [1.0] * 3, resolution=res, contraction=contraction)
    loaded.load_state_dict(grid.state_dict())
    assert set(grid.state_dict()) == {"aabb", "density", "occupied"}
    assert torch.equal(loaded.occupied, grid.occupied)
    assert torch.equal(loaded.density, grid.density)
    o, d = _rays(200, seed=7)
    a = loaded.sample(o, d, 0.0, 4.0, 0.01)
    b = grid.sample(o, d, 0.0, 4.0, 0.01, backend="torch")
    assert a.t_starts.numel() > 0
    _assert_same(a, b)
    mids = (a.t_starts + a.t_ends)[:, None] / 2 * d[a.ray_indices] + o[a.ray_indices]
    assert bool((mids.norm(dim=-1) < 0.5 + 2 * half_diag).all())


def test_validation_errors():
    o, d = torch.zeros(4, 3), torch.ones(4, 3)
    t0, t1 = torch.zeros(4), torch.ones(4)
    occ = torch.ones(4, 4, 4, dtype=torch.bool)
    aabb = [0.0, 0.0, 0.0, 1.0, 1.0, 1.0]
    base = dict(
        origins=o,
        directions=d,
        t_min=t0,
        t_max=t1,
        occupancy=occ,
        aabb=aabb,
        contraction="none",
        step_size=0.1,
    )
    bad = [
        ({"origins": o.double()}, "float32"),
        ({"directions": torch.ones(4, 2)}, r"\(R, 3\)"),
        ({"t_min": torch.zeros(5)}, "t_min"),
        ({"t_max": t1.double()}, "t_max"),
        ({"occupancy": torch.ones(4, 4, 5, dtype=torch.bool)}, r"\(G, G, G\)"),
        ({"occupancy": torch.ones(4, 4, 4)}, "bool or uint8"),
        ({"aabb": [0.0, 0.0, 0.0, 1.0, -1.0, 1.0]}, "min < max"),
        ({"aabb": [0.0, 1.0]}, r"\(6,\)"),
        ({"contraction": "sphere"}, "contraction"),
        ({"step_size": 0.0}, "step_size"),
    ]
    for march in (march_rays_reference, march_rays):
        for change, match in bad:
            with pytest.raises(ValueError, match=match):
                march(**(base | change))
    with pytest.raises(ValueError, match="cone_angle"):
        march_rays_reference(**base, cone_angle=-1.0)
    with pytest.raises(ValueError, match="resolution"):
        OccupancyGrid(aabb, resolution=0)
    with pytest.raises(ValueError, match="far must be finite"):
        OccupancyGrid(aabb, 4, "mipnerf360").sample(o, d, 0.0, math.inf, 0.1)
    with pytest.raises(ValueError, match="backend"):
        OccupancyGrid(aabb, 4).sample(o, d, 0.0, 1.0, 0.1, backend="vulkan")
    with pytest.raises(ValueError, match="backend='cuda' needs the rays on the CUDA"):
        OccupancyGrid(aabb, 4).sample(o, d, 0.0, 1.0, 0.1, backend="cuda")


@needs_ext
@pytest.mark.parametrize("contraction", ["none", "mipnerf360"])
def test_contract_points_kernel_matches_contract(contraction):
    """`contract_points_cpu` (the NeRF field's contraction, clamp and inside test in one pass)
    against the torch ops: bit for bit without contraction; within an ulp with it (torch's
    vectorised sqrt is not always correctly rounded); NaN kept, never inside."""
    ext = _ext.extension()
    g = torch.Generator().manual_seed(3)
    x = torch.randn(20000, 3, generator=g) * 2.5
    x[0, 1] = float("nan")
    x[1, 0] = float("inf")
    x[2] = torch.tensor([AABB[0], AABB[1], AABB[2]])  # a corner: inside
    x[3] = torch.tensor([AABB[3], AABB[4], AABB[5]])
    aabb = torch.tensor(AABB)
    ref = contract(x, aabb, contraction)
    ref_in = ((ref >= 0) & (ref <= 1)).all(-1)
    gc, inside = ext.contract_points_cpu(x, aabb, ["none", "mipnerf360"].index(contraction))
    assert torch.equal(inside, ref_in)
    assert torch.isnan(gc[0]).any() and not inside[0]
    ref_c = ref.clamp(0.0, 1.0)
    if contraction == "none":
        assert inside[2] and inside[3] and 0.0 < inside.float().mean() < 1.0
        assert torch.equal(torch.nan_to_num(gc, nan=-1.0), torch.nan_to_num(ref_c, nan=-1.0))
    else:
        torch.testing.assert_close(gc, ref_c, rtol=0, atol=2e-7, equal_nan=True)
    with pytest.raises(RuntimeError, match="x must be"):
        ext.contract_points_cpu(x.double(), aabb, 0)
    with pytest.raises(RuntimeError, match="contraction must be"):
        ext.contract_points_cpu(x, aabb, 2)


def test_occupancy_update_is_the_ema_max_over_the_visited_cells():
    """After warm-up: a visited cell's density is max(old * decay, the largest sigma drawn in
    it), the others keep theirs (the visits are evaluated in memory order)."""
    res = 8
    grid = OccupancyGrid([-1.0] * 3 + [1.0] * 3, resolution=res, contraction="none")
    gen = torch.Generator().manual_seed(3)
    grid.density.copy_(torch.rand(grid.density.shape, generator=gen))
    grid.occupied.copy_(grid.density > 0.5)
    before = grid.density.clone().reshape(-1)
    seen = []

    def density_fn(p):
        g = ((p + 1.0) / 2.0 * res).floor().long().clamp(0, res - 1)
        cell = (g[:, 0] * res + g[:, 1]) * res + g[:, 2]
        sigma = torch.rand(len(p), generator=gen)
        seen.append((cell, sigma))
        return sigma

    grid.update(1000, density_fn, ema_decay=0.9, generator=gen)
    cell = torch.cat([c for c, _ in seen])
    sigma = torch.cat([s for _, s in seen])
    assert len(cell) == res**3 // 2
    assert bool((cell[1:] >= cell[:-1]).all())  # in memory order
    want = before.clone()
    for c in cell.unique().tolist():
        want[c] = max(before[c] * 0.9, float(sigma[cell == c].max()))
    torch.testing.assert_close(grid.density.reshape(-1), want)
