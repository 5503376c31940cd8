"""The CUDA grid-encoding kernels (csrc/kernels/grid_cuda.cu) against the torch reference:
values, table gradients (atomics) and input gradients, on two providers of the same kernels:
"emulated" (the CPU emulator, csrc/emulator/, every machine with g++ and the CUDA headers) and
"cuda" (fields._C on a GPU, marked `gpu`). Tolerances: float32 tables match the reference to
1e-5 (the same arithmetic in another order); float16 tables to 1e-3 of the output's scale
(the output is float16)."""

from __future__ import annotations

import pytest
import torch
from cuda_emulator import PROVIDERS, EmulatedGridKernels, skip_reason

from fields.nn import GridEncoding, grid_cuda


class Provider:
    def __init__(self, name: str) -> None:
        self.name = name
        if name == "emulated":
            self.kernels, self.device = EmulatedGridKernels(), torch.device("cpu")
        else:
            self.kernels, self.device = grid_cuda.cuda_kernels(), torch.device("cuda")

    def grid(self, n_dims, n_features, grid_type, interpolation, dtype=torch.float32, **kw):
        kw = {"n_levels": 4, "log2_hashmap_size": 9, "base_resolution": 3,
              "per_level_scale": 1.7} | kw
        enc = GridEncoding(n_dims, n_features_per_level=n_features, grid_type=grid_type,
                           interpolation=interpolation, backend="auto", device=self.device,
                           dtype=dtype, **kw)
        if self.name == "emulated":
            enc.kernels_override = self.kernels
        enc.backend = "cuda"
        with torch.no_grad():
            enc.params.uniform_(-1.0, 1.0)
        return enc




@pytest.fixture(params=PROVIDERS)
def provider(request) -> Provider:
    reason = skip_reason(request.param)
    if reason:
        pytest.skip(reason)
    return Provider(request.param)


def _points(n, n_dims, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, n_dims, generator=g)
    x[:8] = torch.randint(0, 2, (8, n_dims), generator=g).float()  # exact corners of the box
    x[8:16] = x[8:16] * 3.0 - 1.0  # outside the box
    return x


def _grads(y, x, params, g):
    return torch.autograd.grad(y, [x, params], g, allow_unused=True, materialize_grads=True)


@pytest.mark.parametrize("grid_type", ["Hash", "Dense", "Tiled"])
@pytest.mark.parametrize("interpolation", ["Nearest", "Linear", "Smoothstep"])
@pytest.mark.parametrize("n_dims", [1, 2, 3, 4])
def test_kernels_match_the_reference(provider, grid_type, interpolation, n_dims):
    for n_features in (1, 2, 4, 8):
        enc = provider.grid(n_dims, n_features, grid_type, interpolation)
        x = _points(300, n_dims).to(provider.device).requires_grad_()
        y = enc(x)
        assert enc.last_backend == "cuda" and y.dtype == torch.float32
        y_ref = enc.reference(x)
        torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-5)
        g = torch.randn(y.shape, generator=torch.Generator().manual_seed(1)).to(y.device)
        dx, dp = _grads(y, x, enc.params, g)
        dx_ref, dp_ref = _grads(y_ref, x, enc.params, g)
        scale = max(1.0, dx_ref.abs().max().item())
        torch.testing.assert_close(dx / scale, dx_ref / scale, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(dp, dp_ref, rtol=1e-4, atol=1e-4)


def test_the_hash_grid_of_the_issue_with_collisions(provider):
    # 3-D, 16 levels x 2 features, a table small enough that the fine levels collide (the
    # atomics add several points into one entry)
    enc = provider.grid(3, 2, "Hash", "Linear", n_levels=16, log2_hashmap_size=10,
                        base_resolution=16, per_level_scale=1.5)
    x = torch.rand(2000, 3, generator=torch.Generator().manual_seed(2)).to(provider.device)
    y = enc(x)
    torch.testing.assert_close(y, enc.reference(x), rtol=1e-5, atol=1e-5)
    g = torch.randn(y.shape, generator=torch.Generator().manual_seed(3)).to(y.device)
    (dp,) = torch.autograd.grad(y, enc.params, g)
    (dp_ref,) = torch.autograd.grad(enc.reference(x), enc.params, g)
    torch.testing.assert_close(dp, dp_ref, rtol=1e-4, atol=1e-4)


def test_fp16_table(provider):
    enc = provider.grid(3, 2, "Hash", "Linear", dtype=torch.float16, n_levels=8)
    x = _points(500, 3).to(provider.device).requires_grad_()
    y = enc(x)
    assert y.dtype == torch.float16
    y_ref = enc.reference(x).float()  # the reference in the table's dtype, as float32
    ref32 = provider.grid(3, 2, "Hash", "Linear", n_levels=8)
    with torch.no_grad():
        ref32.params.copy_(enc.params.float())
    y32 = ref32.reference(x)
    assert (y.float() - y32).abs().max() <= 2e-3 * y32.abs().max()
    assert y_ref.shape == y.shape
    g = torch.randn(y.shape, generator=torch.Generator().manual_seed(4)).to(y.device)
    dx, dp = _grads(y.float(), x, enc.params, g)
    dx_ref, dp_ref = _grads(y32, x, ref32.params, g)
    assert dp.dtype == torch.float16
    assert (dp.float() - dp_ref).norm() <= 2e-3 * dp_ref.norm()
    assert (dx - dx_ref).norm() <= 2e-3 * dx_ref.norm()


def test_second_derivative_goes_through_the_reference(provider):
    enc = provider.grid(2, 2, "Dense", "Smoothstep")
    x = torch.rand(50, 2).to(provider.device).requires_grad_()
    with pytest.warns(UserWarning, match="higher-order derivative"):
        (g,) = torch.autograd.grad(enc(x).sum(), x, create_graph=True)
        (h,) = torch.autograd.grad(g.sum(), enc.params)
    (gr,) = torch.autograd.grad(enc.reference(x).sum(), x, create_graph=True)
    (hr,) = torch.autograd.grad(gr.sum(), enc.params)
    torch.testing.assert_close(h, hr, rtol=1e-4, atol=1e-4)


def test_what_the_kernels_do_not_take(provider):
    enc = GridEncoding(2, n_levels=2, n_features_per_level=16, base_resolution=8,
                       grid_type="Dense", _allow_wide=True, device=provider.device)
    if provider.name == "emulated":
        enc.kernels_override = provider.kernels
    enc.backend = "cuda"
    with pytest.raises(ValueError, match="16 features per level"):
        enc(torch.rand(4, 2, device=provider.device))
