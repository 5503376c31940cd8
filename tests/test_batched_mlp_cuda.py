"""The CUDA batched-MLP kernels (csrc/kernels/batched_mlp_cuda.cu) against the torch reference:
values, input gradients and per-network weight and bias gradients, on two providers of the
same kernels: "emulated" (the CPU emulator, csrc/emulator/, every machine with g++ and the
CUDA headers) and "cuda" (fields._C on a GPU, marked `gpu`). Everything is float32: the
kernels match the reference to float32 rounding (the same sums in another order)."""

from __future__ import annotations

import pytest
import torch
from cuda_emulator import PROVIDERS, EmulatedBatchedKernels, skip_reason
from test_batched_mlp import uneven_nets

from fields.nn import batched_mlp_cuda
from fields.nn.batched_mlp import BatchedMLP, batched_mlp_reference, group_rows


class Provider:
    def __init__(self, name: str) -> None:
        self.name = name
        if name == "emulated":
            self.kernels, self.device = EmulatedBatchedKernels(), torch.device("cpu")
        else:
            self.kernels, self.device = batched_mlp_cuda.cuda_kernels(), torch.device("cuda")

    def mlp(self, n_nets, n_in, n_out, **kw) -> BatchedMLP:
        m = BatchedMLP(n_nets, n_in, n_out, backend="auto", device=self.device, **kw)
        if self.name == "emulated":
            m.kernels_override = self.kernels
        m.backend = "cuda"
        return m


@pytest.fixture(params=PROVIDERS)
def provider(request) -> Provider:
    reason = skip_reason(request.param)
    if reason:
        pytest.skip(reason)
    if request.param == "cuda" and batched_mlp_cuda.cuda_kernels() is None:
        pytest.skip("fields._C was built without the batched CUDA kernels")
    return Provider(request.param)


def _reference_grads(m, x, net, g):
    xr = x.detach().clone().requires_grad_(True)
    params = [p.detach().clone().requires_grad_(True) for p in m.parameters()]
    n = len(m.weights)
    y = batched_mlp_reference(xr, net, params[:n], params[n:] or None, m.spec.activation,
                              m.spec.output_activation, m.spec.omega0)
    return y, torch.autograd.grad(y, [xr, *params], g)


@pytest.mark.parametrize("activation,output_activation,bias,width,depth", [
    ("ReLU", "None", True, 32, 2),  # KiloNeRF's density network
    ("ReLU", "Sigmoid", True, 16, 1),  # and its colour network
    ("Sine", "None", False, 24, 3),  # a width no tensor-core kernel has; pre-activations
    ("Softplus", "Exponential", True, 64, 1),  # the widest kernel layer
])
def test_values_and_gradients_match_the_reference(provider, activation, output_activation,
                                                  bias, width, depth):
    torch.manual_seed(0)
    n_nets, n_in, n_out = 7, 27, 5
    m = provider.mlp(n_nets, n_in, n_out, width=width, depth=depth, activation=activation,
                     output_activation=output_activation, bias=bias, omega0=3.0)
    net = uneven_nets(n_nets).to(provider.device)  # empty networks, one of 250 rows
    x = torch.randn(len(net), n_in, device=provider.device, requires_grad=True)
    y = m(x, net)
    assert m.last_backend == "cuda"
    g = torch.randn_like(y)
    grads = torch.autograd.grad(y, [x, *m.parameters()], g)
    want_y, want = _reference_grads(m, x, net, g)
    torch.testing.assert_close(y, want_y, atol=1e-5, rtol=1e-5)
    for got, ref in zip(grads, want, strict=True):
        scale = float(ref.abs().max()) + 1e-6
        torch.testing.assert_close(got / scale, ref / scale, atol=2e-5, rtol=0)
    empty = torch.bincount(net.cpu(), minlength=n_nets) == 0
    assert float(grads[1][empty.to(provider.device)].abs().max()) == 0.0


def test_pre_grouped_rows_and_determinism(provider):
    torch.manual_seed(1)
    m = provider.mlp(5, 8, 4, width=32, depth=2)
    net = uneven_nets(5, seed=3).to(provider.device)
    order, offsets = group_rows(net, 5)
    x = torch.randn(len(net), 8, device=provider.device)
    y = m(x[order], net[order], offsets)
    torch.testing.assert_close(y, m(x, net)[order])
    runs = []
    for _ in range(2):
        m.zero_grad()
        m(x, net).square().sum().backward()
        runs.append([p.grad.clone() for p in m.parameters()])
    for a, b in zip(*runs, strict=True):
        assert torch.equal(a, b)  # a fixed order of summation: bit for bit


def test_no_rows_second_derivatives_and_limits(provider):
    m = provider.mlp(3, 4, 2, width=16, depth=1, activation="Softplus")
    empty = torch.zeros(0, 4, device=provider.device)
    assert m(empty, torch.zeros(0, dtype=torch.long, device=provider.device)).shape == (0, 2)
    x = torch.randn(10, 4, device=provider.device, requires_grad=True)
    net = torch.randint(0, 3, (10,), device=provider.device)
    (gx,) = torch.autograd.grad(m(x, net).sum(), x, create_graph=True)
    (hx,) = torch.autograd.grad(gx.sum(), x)  # through the reference, with a warning
    ref = provider.mlp(3, 4, 2, width=16, depth=1, activation="Softplus")
    ref.load_state_dict(m.state_dict())
    ref.backend = "torch"
    (gr,) = torch.autograd.grad(ref(x, net).sum(), x, create_graph=True)
    (hr,) = torch.autograd.grad(gr.sum(), x)
    torch.testing.assert_close(hx, hr)
    wide = provider.mlp(2, 4, 2, width=128, depth=1)
    with pytest.raises(ValueError, match="width above 64"):
        wide(torch.randn(3, 4, device=provider.device),
             torch.zeros(3, dtype=torch.long, device=provider.device))
