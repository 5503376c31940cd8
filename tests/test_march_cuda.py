"""The CUDA ray marcher (csrc/kernels/march_cuda.cu) against the C++ kernel and the torch
reference, bit for bit (every product and sum rounded on its own), on two providers of the same
kernel: "emulated" (the CPU emulator, csrc/emulator/) and "cuda" (fields._C on a GPU, marked
`gpu`)."""

from __future__ import annotations

import pytest
import torch
from cuda_emulator import PROVIDERS, EmulatedMarchKernels, skip_reason
from test_march import AABB, _check_packed, _occupancy, _rays

from fields import _ext
from fields.render.occupancy import OccupancyGrid, march_rays, march_rays_reference, ray_aabb


class Provider:
    def __init__(self, name: str) -> None:
        self.name = name
        self.kernels = EmulatedMarchKernels() if name == "emulated" else None
        self.device = torch.device("cpu" if name == "emulated" else "cuda")

    def march(self, *args):
        moved = [a.to(self.device) if isinstance(a, torch.Tensor) else a for a in args]
        out = march_rays(*moved, kernels=self.kernels)
        return type(out)(*(t.cpu() for t in out))




@pytest.fixture(params=PROVIDERS)
def provider(request) -> Provider:
    reason = skip_reason(request.param)
    if reason:
        pytest.skip(reason)
    return Provider(request.param)


def _same(a, b):
    assert torch.equal(a.offsets, b.offsets)
    assert torch.equal(a.ray_indices, b.ray_indices)
    assert torch.equal(a.t_starts, b.t_starts)
    assert torch.equal(a.t_ends, b.t_ends)


@pytest.mark.parametrize("contraction", ["none", "mipnerf360"])
@pytest.mark.parametrize(("cone_angle", "max_step"), [(0.0, 1e10), (0.02, 1e10), (0.05, 0.06)])
def test_cuda_kernel_matches_the_cpu_kernel_and_the_reference(provider, contraction, cone_angle,
                                                               max_step):
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
    t_min[30] = float("nan")  # no samples
    occ = _occupancy(20, 0.3, dtype=torch.uint8 if cone_angle > 0 else torch.bool)
    args = (o, d, t_min, t_max, occ, AABB, contraction, 0.013, cone_angle, max_step)
    out = provider.march(*args)
    assert out.t_starts.numel() > 1000
    _check_packed(out, n)
    _same(out, march_rays_reference(*args))
    if _ext.available():
        _same(out, march_rays(*args))
    assert int(out.offsets[31] - out.offsets[30]) == 0


def test_no_rays_and_no_samples(provider):
    occ = torch.zeros(4, 4, 4, dtype=torch.bool)
    o, d = _rays(10)
    t_min, t_max = torch.zeros(10), torch.full((10,), 5.0)
    out = provider.march(o, d, t_min, t_max, occ, AABB, "none", 0.1)
    assert out.offsets.tolist() == [0] * 11 and out.t_starts.numel() == 0
    out = provider.march(o[:0], d[:0], t_min[:0], t_max[:0], occ, AABB, "none", 0.1)
    assert out.offsets.tolist() == [0] and out.ray_indices.numel() == 0


def test_bad_arguments_are_named(provider):
    o, d = _rays(8)
    occ = torch.ones(4, 4, 4, dtype=torch.bool)
    with pytest.raises(ValueError, match="step_size"):
        provider.march(o, d, torch.zeros(8), torch.ones(8), occ, AABB, "none", 0.0)


def test_occupancy_grid_sample_picks_the_kernel_of_the_device():
    grid = OccupancyGrid(AABB, resolution=8)
    o, d = _rays(50)
    auto = grid.sample(o, d, 0.0, 10.0, 0.05)
    torch_ = grid.sample(o, d, 0.0, 10.0, 0.05, backend="torch")
    _same(auto, torch_)
    with pytest.raises(ValueError, match="backend"):
        grid.sample(o, d, 0.0, 10.0, 0.05, backend="vulkan")
