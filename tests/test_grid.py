"""Grid encodings: C++ kernels against the torch reference, gradients, boundaries, collisions."""

import math

import pytest
import torch

from fields import _ext
from fields.nn import DenseGrid, GridEncoding, HashGrid, TiledGrid, grid_reference
from fields.nn.backend import forget_warnings
from fields.nn.grid import PRIMES, grid_layout

needs_ext = pytest.mark.skipif(not _ext.available(), reason="fields._C not built")


def _grid(n_dims, n_features, grid_type, interpolation, backend="cpu", **kw):
    kw = {"n_levels": 4, "log2_hashmap_size": 9, "base_resolution": 3, "per_level_scale": 1.7} | kw
    enc = GridEncoding(
        n_dims,
        n_features_per_level=n_features,
        grid_type=grid_type,
        interpolation=interpolation,
        backend=backend,
        **kw,
    )
    with torch.no_grad():
        enc.params.uniform_(-1.0, 1.0)
    return enc


def _points(n, n_dims, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, n_dims, generator=g)
    x[:8] = torch.randint(0, 2, (8, n_dims), generator=g).float()  # exact corners of the box
    x[8:16] = x[8:16] * 3.0 - 1.0  # outside the box
    return x


def _grads(y, x, params, g):
    return torch.autograd.grad(y, [x, params], g, allow_unused=True, materialize_grads=True)


@needs_ext
@pytest.mark.parametrize("grid_type", ["Hash", "Dense", "Tiled"])
@pytest.mark.parametrize("interpolation", ["Nearest", "Linear", "Smoothstep"])
@pytest.mark.parametrize("n_dims", [1, 2, 3, 4])
def test_kernel_matches_reference(grid_type, interpolation, n_dims):
    for n_features in (1, 2, 4, 8):
        enc = _grid(n_dims, n_features, grid_type, interpolation)
        x = _points(700, n_dims).requires_grad_()
        y = enc(x)
        assert enc.last_backend == "cpu"
        y_ref = enc.reference(x)
        torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-5)
        g = torch.randn_like(y)
        dx, dp = _grads(y, x, enc.params, g)
        dx_ref, dp_ref = _grads(y_ref, x, enc.params, g)
        scale = max(1.0, dx_ref.abs().max().item())
        torch.testing.assert_close(dx / scale, dx_ref / scale, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(dp, dp_ref, rtol=1e-4, atol=1e-4)


@needs_ext
def test_wide_features_for_triplanes():
    for n_features in (16, 32):
        enc = GridEncoding(
            2, n_levels=2, n_features_per_level=n_features, base_resolution=8,
            grid_type="Dense", backend="cpu", _allow_wide=True,
        )
        x = torch.rand(300, 2, requires_grad=True)
        y = enc(x)
        torch.testing.assert_close(y, enc.reference(x))
        g = torch.randn_like(y)
        for a, b in zip(_grads(y, x, enc.params, g), _grads(enc.reference(x), x, enc.params, g),
                        strict=True):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("interpolation", ["Linear", "Smoothstep"])
def test_reference_gradcheck_float64(interpolation):
    enc = _grid(3, 2, "Hash", interpolation, backend="torch", n_levels=3)
    params = enc.params.detach().double().requires_grad_()
    layout = enc.layout
    # keep points away from cell boundaries, where the encoding is not differentiable
    x = torch.rand(20, 3, dtype=torch.float64) * 0.9 + 0.05
    x.requires_grad_()
    assert torch.autograd.gradcheck(lambda a, p: grid_reference(a, p, layout), (x, params))
    assert torch.autograd.gradgradcheck(lambda a, p: grid_reference(a, p, layout), (x, params))


@needs_ext
@pytest.mark.parametrize("interpolation", ["Linear", "Smoothstep"])
def test_second_derivatives_through_the_cpu_backend(interpolation):
    """Eikonal-style: the gradient of an input-gradient norm, to the inputs and the table."""
    enc = _grid(3, 2, "Hash", interpolation)
    x = torch.rand(200, 3, requires_grad=True)

    def eikonal(y_of_x):
        y = y_of_x(x).sum(-1)
        (gx,) = torch.autograd.grad(y.sum(), x, create_graph=True)
        loss = (gx.norm(dim=-1) - 1.0).square().mean()
        return torch.autograd.grad(loss, [x, enc.params])

    forget_warnings()
    with pytest.warns(UserWarning, match="reference"):
        got = eikonal(enc)
    want = eikonal(enc.reference)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    assert want[1].abs().sum() > 0


def test_layout_matches_tiny_cuda_nn_sizes():
    layout = grid_layout(3, 16, 2, 19, 16, 2.0, "Linear", "Hash")
    res = [lv.res for lv in layout.levels]
    assert res[:4] == [16, 32, 64, 128]  # ceil(16 * 2^l - 1) + 1
    assert layout.levels[0].size == 16**3 and layout.levels[0].addressing == "Dense"
    assert layout.levels[2].size == 64**3 and layout.levels[2].addressing == "Dense"
    assert all(lv.size == 2**19 and lv.addressing == "Hash" for lv in layout.levels[3:])
    assert layout.n_params == 2 * (16**3 + 32**3 + 64**3 + 13 * 2**19)
    dense = grid_layout(2, 2, 1, 19, 5, 1.5, "Linear", "Dense")
    # scales 4 and 6.5 -> 5 and 8 vertices; 5^2 rounded up to a multiple of 8, and 8^2
    assert [lv.res for lv in dense.levels] == [5, 8]
    assert [lv.size for lv in dense.levels] == [32, 64]
    tiled = grid_layout(2, 3, 1, 19, 4, 2.0, "Linear", "Tiled")
    assert [lv.tile for lv in tiled.levels] == [4, 4, 4]
    assert [lv.size for lv in tiled.levels] == [16, 16, 16]


def test_hash_addressing_is_the_documented_hash():
    enc = HashGrid(3, n_levels=1, log2_hashmap_size=4, base_resolution=64, backend="torch")
    lv = enc.layout.levels[0]
    assert lv.addressing == "Hash"
    table = enc.level_table(0)
    # a point exactly on vertex (i, j, k): pos = x * scale + 0.5 = vertex + 0.5 ... take the
    # nearest-vertex encoding to read back single entries
    near = HashGrid(
        3, n_levels=1, log2_hashmap_size=4, base_resolution=64, interpolation="Nearest",
        backend="torch",
    )
    near.params = enc.params
    for v in [(0, 0, 0), (5, 7, 11), (63, 1, 40)]:
        x = torch.tensor([[c / lv.scale for c in v]])
        h = (v[0] * PRIMES[0]) ^ (v[1] * PRIMES[1]) ^ (v[2] * PRIMES[2])
        torch.testing.assert_close(near(x)[0], table[h & (lv.size - 1)])


@needs_ext
def test_boundaries_and_outside_are_clamped():
    enc = _grid(2, 2, "Dense", "Linear", n_levels=3)
    inside = torch.tensor([[0.0, 0.0], [1.0, 1.0], [1.0, 0.25]])
    outside = torch.tensor([[-0.5, -3.0], [1.5, 7.0], [1.0001, 0.25]])
    torch.testing.assert_close(enc(outside), enc(inside))
    torch.testing.assert_close(enc(outside), enc.reference(outside))
    x = outside.clone().requires_grad_()
    (dx,) = torch.autograd.grad(enc(x).sum(), x)
    out_of_box = (outside < 0) | (outside > 1)
    assert torch.all(dx[out_of_box] == 0)  # outside the box: zero gradient along that dim
    assert dx[2, 1] != 0
    xi = torch.tensor([[0.0, 0.3], [1.0, 0.3]], requires_grad=True)
    (dxi,) = torch.autograd.grad(enc(xi).sum(), xi)
    (dxr,) = torch.autograd.grad(enc.reference(xi).sum(), xi)
    torch.testing.assert_close(dxi, dxr)
    assert torch.all(torch.isfinite(dxi))
    nan = torch.tensor([[float("nan"), 0.5]])
    zero = torch.tensor([[0.0, 0.5]])
    torch.testing.assert_close(enc(nan), enc(zero))  # NaN encodes as 0 (documented)
    torch.testing.assert_close(enc.reference(nan), enc(zero))


def test_dense_level_is_an_interpolant_of_its_vertices():
    enc = DenseGrid(1, n_levels=1, base_resolution=9, backend="torch")
    lv = enc.layout.levels[0]
    table = enc.level_table(0)[:, 0]
    # vertex j sits at x = (j - 0.5) / scale; midway between vertices j and j+1 -> the mean
    j = 3
    x = torch.tensor([[(j + 0.5 - 0.5) / lv.scale]])
    torch.testing.assert_close(enc(x)[0, 0], (table[j] + table[j + 1]) / 2)


@needs_ext
def test_tiled_grid_repeats_with_the_tile_period():
    enc = TiledGrid(1, n_levels=2, base_resolution=4, per_level_scale=3.0, backend="cpu")
    lv = enc.layout.levels[1]
    assert lv.res > lv.tile == 4
    # the cells [j, j+1] and [j + tile, j + tile + 1] share their entries at the fine level
    x = torch.tensor([[1 / lv.scale], [(1 + lv.tile) / lv.scale]])
    y = enc(x)
    torch.testing.assert_close(y[0, 2:], y[1, 2:])  # level 1 (two features per level)


def test_small_hash_table_still_trains():
    """Collisions: a table far smaller than the grid still fits a smooth 2-D signal."""
    torch.manual_seed(0)
    enc = HashGrid(
        2, n_levels=8, n_features_per_level=2, log2_hashmap_size=8, base_resolution=4,
        per_level_scale=1.6,
    )
    assert any(lv.addressing == "Hash" and lv.res**2 > 4 * lv.size for lv in enc.layout.levels)
    head = torch.nn.Linear(enc.n_output_dims, 1)
    opt = torch.optim.Adam([*enc.parameters(), *head.parameters()], lr=1e-2)
    x = torch.rand(4096, 2)
    target = (torch.sin(6 * x[:, 0]) * torch.cos(4 * x[:, 1]))[:, None]
    first = None
    for _ in range(300):
        loss = (head(enc(x)) - target).square().mean()
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.02 * first


@needs_ext
def test_auto_backend_falls_back_for_float64():
    enc = _grid(2, 2, "Hash", "Linear", backend="auto")
    x = torch.rand(50, 2)
    enc(x)
    assert enc.last_backend == "cpu"
    y64 = enc.double()(x.double())
    assert enc.last_backend == "torch" and y64.dtype == torch.float64


def test_bad_grid_arguments():
    with pytest.raises(ValueError, match="n_features_per_level"):
        GridEncoding(3, n_features_per_level=3)
    with pytest.raises(ValueError, match="interpolation"):
        GridEncoding(3, interpolation="Cubic")
    with pytest.raises(ValueError, match="n_input_dims"):
        GridEncoding(5)
    with pytest.raises(ValueError, match="per_level_scale"):
        GridEncoding(3, per_level_scale=0.5)
    with pytest.raises(ValueError, match="2\\^31"):
        GridEncoding(3, grid_type="Dense", n_levels=16, base_resolution=64)
    with pytest.raises(ValueError, match="expected input"):
        GridEncoding(3, n_levels=2)(torch.rand(4, 2))


@needs_ext
def test_level_mask_scales_outputs():
    enc = _grid(2, 2, "Hash", "Linear")
    x = torch.rand(10, 2)
    full = enc(x)
    enc.set_progress(1.5)  # level 0 fully, level 1 half (cosine window), the rest off
    masked = enc(x)
    w = 0.5 * (1 - math.cos(math.pi * 0.5))
    torch.testing.assert_close(masked[:, :2], full[:, :2])
    torch.testing.assert_close(masked[:, 2:4], full[:, 2:4] * w)
    assert torch.all(masked[:, 4:] == 0)
    enc.set_progress(None)
    torch.testing.assert_close(enc(x), full)
