"""The tensor-core MLP kernels (csrc/kernels/mlp_cuda.cu): values and gradients against the
torch reference, through the autograd function and weight packing of the CUDA backend
(fields/nn/mlp_cuda.py), on two providers of the same kernels:

- "emulated": compiled for the CPU emulator of the warp-level instructions (csrc/emulator/),
  on every machine with g++ and the CUDA headers. The emulator follows the PTX ISA's fragment
  layouts; these runs establish that the kernels' index arithmetic, padding, 16-bit rounding,
  grid-stride loops and backward are right.
- "cuda": fields._C's real kernels on the GPU (marked `gpu`, skipped without one). Only these
  find what real hardware shows (shared-memory races, launch limits).

Tolerances: the kernels round inputs, weights and every hidden activation to 16 bits and
accumulate in fp32. Against a float64 reference that rounds the same values the same way, the
outputs agree to 2e-3 (fp16) / 2e-2 (bf16) relative to their scale; gradients to 1e-2 / 5e-2
in relative L2 norm (the deltas are 16-bit too).
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from cuda_emulator import PROVIDERS, EmulatedKernels, skip_reason

from fields.nn import mlp_cuda
from fields.nn.activations import ACTIVATION_IDS, apply_activation
from fields.nn.mlp import FusedMLP, MLPSpec, mlp_reference
from fields.nn.mlp_cuda import (
    SKEW,
    CudaMLP,
    delta_scale,
    infer,
    kernel_width,
    layer_shapes,
    pack,
    pack_biases,
    pack_weights,
    unsupported,
)

D64 = torch.float64


class Provider:
    def __init__(self, name: str) -> None:
        self.name = name
        if name == "emulated":
            self.kernels, self.device = EmulatedKernels(), torch.device("cpu")
        else:
            from fields.nn.mlp_cuda import cuda_kernels

            self.kernels, self.device = cuda_kernels(), torch.device("cuda")

    def warp_instructions(self) -> int:
        return self.kernels.warp_instructions()




@pytest.fixture(params=PROVIDERS)
def provider(request) -> Provider:
    reason = skip_reason(request.param)
    if reason:
        pytest.skip(reason)
    return Provider(request.param)


@pytest.fixture
def emulated() -> Provider:
    reason = skip_reason("emulated")
    if reason:
        pytest.skip(reason)
    return Provider("emulated")


def make_spec(n_in=32, n_out=16, width=64, depth=2, act="ReLU", out_act="None", bias=False,
              omega0=30.0) -> MLPSpec:
    return MLPSpec(n_in=n_in, n_out=n_out, width=width, depth=depth, activation=act,
                   output_activation=out_act, bias=bias, omega0=omega0)


def make_params(spec: MLPSpec, seed: int = 0, gain: float = 1.0):
    g = torch.Generator().manual_seed(seed)
    ws, bs = [], []
    for i, o in spec.layer_dims():
        bound = gain * math.sqrt(6.0 / (i + o))
        if spec.activation == "Sine":
            bound = 1.0 / i if not ws else math.sqrt(6.0 / i) / spec.omega0
        ws.append((torch.rand(o, i, generator=g) * 2 - 1) * bound)
        if spec.bias:
            bs.append((torch.rand(o, generator=g) * 2 - 1) * 0.1)
    return ws, bs


def round16(t: torch.Tensor, half: int) -> torch.Tensor:
    """t rounded to 16 bits, with an identity gradient in float64 (the kernels' gradients are
    not rounded where their values are)."""
    r = t.detach().to(torch.bfloat16 if half else torch.float16).to(t.dtype)
    return t + (r - t.detach())


def rounded_reference(x, ws, bs, spec: MLPSpec, half: int) -> torch.Tensor:
    """The network as the kernels compute it: 16-bit inputs, weights and hidden activations,
    everything else in float64."""
    h = round16(x, half)
    for layer, w in enumerate(ws):
        z = h @ round16(w, half).t()
        if bs:
            z = z + bs[layer].to(D64)
        last = layer == spec.depth
        h = apply_activation(spec.output_activation if last else spec.activation, z,
                             spec.omega0)
        if not last:
            h = round16(h, half)
    return h


def apply(pr: Provider, x, spec, half, params, out16=False):
    n = spec.n_layers
    pw, pb = pack(spec, params[:n], params[n:], half)
    return CudaMLP.apply(x, spec, pr.kernels, half, out16, pw, pb, *params)


class Grads:
    """Gradients of a run, on the CPU."""

    def __init__(self, x, params):
        self._x, self._params = x, params

    @property
    def x(self):
        return self._x.grad.cpu()

    def params(self):
        return [p.grad.cpu() if p.grad is not None else None for p in self._params]


def run(pr: Provider, x, ws, bs, spec, half, requires_grad=False, out16=False):
    """The kernels on the provider's device; returns (y on the device, Grads after a backward
    on y)."""
    params = [p.detach().to(pr.device).clone().requires_grad_(requires_grad) for p in ws + bs]
    xd = x.detach().to(pr.device).clone().requires_grad_(requires_grad)
    return apply(pr, xd, spec, half, params, out16), Grads(xd, params)


def rel_err(a: torch.Tensor, b: torch.Tensor | None) -> float:
    """|a - b| / |b|; b None (autograd's "no dependence") is zero: then |a| itself."""
    a = a.detach().cpu().double()
    if b is None:
        return float(a.norm())
    b = b.detach().cpu().double()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


# -- packing -----------------------------------------------------------------------------------


@pytest.mark.parametrize("n_in,n_out,width,depth", [(32, 16, 64, 4), (3, 1, 48, 2),
                                                      (17, 20, 16, 1), (5, 33, 128, 3)])
def test_packing_matches_the_kernels_layout(emulated, n_in, n_out, width, depth):
    kw = kernel_width(width)
    dims = [n_in, n_out, kw, depth, 1, 0, 0]
    spec = make_spec(n_in, n_out, width, depth)
    ws, _ = make_params(spec)
    packed = pack_weights(ws, n_in, n_out, width, torch.float16)
    assert packed.numel() == emulated.kernels.packed_size(dims)
    offset = 0
    for layer, ((op, ip), w) in enumerate(zip(layer_shapes(n_in, n_out, width, depth), ws,
                                              strict=True)):
        assert offset == emulated.kernels.packed_offset(dims, layer)
        block = packed[offset : offset + op * (ip + SKEW)].reshape(op, ip + SKEW)
        assert torch.equal(block[: w.shape[0], : w.shape[1]], w.half())
        block[: w.shape[0], : w.shape[1]] = 0
        assert not block.any()  # zero padding everywhere else
        offset += op * (ip + SKEW)
    bs = [torch.ones(o) for _, o in spec.layer_dims()]
    pb = pack_biases(bs, n_in, n_out, width)
    assert pb.numel() == sum(op for op, _ in layer_shapes(n_in, n_out, width, depth))
    assert float(pb.sum()) == sum(o for _, o in spec.layer_dims())


def test_kernel_widths_and_limits():
    assert [kernel_width(w) for w in (1, 16, 17, 48, 64, 100, 128, 129)] == [
        16, 16, 32, 64, 64, 128, 128, 0]
    assert unsupported(32, 16, 256, 2) == "width 256 exceeds 128"
    assert "depth" in unsupported(32, 16, 64, 65)
    assert unsupported(32, 16, 96, 4) == ""


# -- forward -----------------------------------------------------------------------------------


@pytest.mark.parametrize("half", [0, 1], ids=["fp16", "bf16"])
@pytest.mark.parametrize("n_in,n_out,width,depth,rows", [
    (32, 16, 64, 2, 600),    # the benchmark's shape; 3 blocks' worth of rows (emulator: 2 blocks)
    (3, 1, 48, 3, 77),       # odd input (unpaired loads), one output, a padded width
    (16, 20, 32, 1, 200),    # outputs past one 16-wide tile
    (8, 4, 16, 2, 129),
    (32, 16, 128, 2, 70),
])
def test_forward_matches_the_reference(provider, half, n_in, n_out, width, depth, rows):
    spec = make_spec(n_in, n_out, width, depth)
    ws, bs = make_params(spec, seed=width + depth)
    x = torch.rand(rows, n_in, generator=torch.Generator().manual_seed(1)) * 2 - 1
    y, _ = run(provider, x, ws, bs, spec, half)
    ref = rounded_reference(x, ws, bs, spec, half)
    assert y.dtype == torch.float32 and y.shape == (rows, n_out)
    tol = 2e-3 if half == 0 else 2e-2
    assert float((y.cpu().double() - ref).abs().max()) <= tol * float(ref.abs().max())


@pytest.mark.parametrize("act,out_act,bias,omega0", [
    ("ReLU", "Sigmoid", True, 1.5), ("LeakyReLU", "None", False, 1.5),
    ("Softplus", "Exponential", True, 1.5), ("Sigmoid", "Tanh", False, 1.5),
    ("Tanh", "None", True, 1.5), ("SiLU", "SiLU", False, 1.5), ("Sine", "None", True, 30.0),
    ("Squareplus", "Softplus", False, 1.5), ("Gaussian", "None", False, 1.5),
    # omega0 5, not 30: with a Sine output on Finer layers, 30 makes the outputs chaotic in
    # the last bit of any fp16 rounding (the reference's too)
    ("Finer", "Sine", True, 5.0),
])
def test_every_activation_forward_and_backward(provider, act, out_act, bias, omega0):
    spec = make_spec(6, 5, 32, 2, act, out_act, bias, omega0=omega0)
    ws, bs = make_params(spec, seed=ACTIVATION_IDS[act])
    x = torch.rand(90, 6, generator=torch.Generator().manual_seed(2)) * 2 - 1
    y, grads = run(provider, x, ws, bs, spec, 0, requires_grad=True)
    ref_params = [p.to(D64).requires_grad_(True) for p in ws + bs]
    xr = x.to(D64).requires_grad_(True)
    ref = rounded_reference(xr, ref_params[: len(ws)], ref_params[len(ws) :], spec, 0)
    scale = float(ref.detach().abs().max())
    assert float((y.detach().cpu().double() - ref).abs().max()) <= 3e-3 * scale
    dy = torch.randn(y.shape, generator=torch.Generator().manual_seed(3))
    y.backward(dy.to(y.device))
    ref.backward(dy.to(D64))
    assert rel_err(grads.x, xr.grad) < 2e-2
    for g, r in zip(grads.params(), ref_params, strict=True):
        assert rel_err(g, r.grad) < 2e-2, (act, g.shape)


# -- backward ----------------------------------------------------------------------------------


@pytest.mark.parametrize("half", [0, 1], ids=["fp16", "bf16"])
@pytest.mark.parametrize("n_in,n_out,width,depth,rows", [
    (32, 16, 64, 3, 300), (3, 2, 48, 2, 65), (16, 20, 32, 1, 100), (32, 16, 128, 2, 40)])
def test_backward_matches_autograd(provider, half, n_in, n_out, width, depth, rows):
    spec = make_spec(n_in, n_out, width, depth, bias=True)
    ws, bs = make_params(spec, seed=7)
    x = torch.rand(rows, n_in, generator=torch.Generator().manual_seed(4)) * 2 - 1
    y, grads = run(provider, x, ws, bs, spec, half, requires_grad=True)
    # a mean-square loss over all rows: tiny per-row gradients, as in training
    y.square().mean().backward()
    ref_params = [p.to(D64).requires_grad_(True) for p in ws + bs]
    xr = x.to(D64).requires_grad_(True)
    ref = rounded_reference(xr, ref_params[: len(ws)], ref_params[len(ws) :], spec, half)
    ref.square().mean().backward()
    tol = 1e-2 if half == 0 else 5e-2
    assert rel_err(grads.x, xr.grad) < tol
    for g, r in zip(grads.params(), ref_params, strict=True):
        assert g.dtype == torch.float32
        assert rel_err(g, r.grad) < tol, g.shape


@pytest.mark.parametrize("act", ["Tanh", "Sigmoid"])
def test_saturated_activations_keep_their_derivatives(provider, act):
    # pre-activations around +-4..8: a 16-bit tanh(4) is 0.99951, so 1 - a^2 from it would be
    # 27% off; the kernels take these derivatives from the fp32 pre-activations instead
    spec = make_spec(4, 2, 16, 2, act, act)
    ws, _ = make_params(spec, seed=14, gain=6.0)
    x = torch.rand(64, 4, generator=torch.Generator().manual_seed(11)) * 2 - 1
    y, grads = run(provider, x, ws, [], spec, 0, requires_grad=True)
    y.sum().backward()
    xr = x.to(D64).requires_grad_(True)
    pr = [w.to(D64).requires_grad_(True) for w in ws]
    rounded_reference(xr, pr, [], spec, 0).sum().backward()
    assert rel_err(grads.x, xr.grad) < 2e-2
    for g, r in zip(grads.params(), pr, strict=True):
        assert rel_err(g, r.grad) < 2e-2


def test_tiny_gradients_survive_fp16(provider):
    # dL/dy of 1e-9 underflows fp16 (smallest subnormal 6e-8): the deltas are scaled
    spec = make_spec(8, 4, 16, 2)
    ws, bs = make_params(spec, seed=9)
    x = torch.rand(64, 8, generator=torch.Generator().manual_seed(5))
    y, grads = run(provider, x, ws, bs, spec, 0, requires_grad=True)
    dy = torch.full(y.shape, 1e-9)
    y.backward(dy.to(y.device))
    xr = x.to(D64).requires_grad_(True)
    pr = [p.to(D64).requires_grad_(True) for p in ws]
    rounded_reference(xr, pr, [], spec, 0).backward(dy.to(D64))
    assert rel_err(grads.x, xr.grad) < 1e-2
    assert rel_err(grads.params()[0], pr[0].grad) < 1e-2
    assert delta_scale(dy, 0) == 2.0 ** round(math.log2(256 / 1e-9))
    assert delta_scale(dy, 1) == 1.0


def test_only_the_requested_gradients(provider):
    spec = make_spec(8, 4, 16, 2)
    ws, _ = make_params(spec)
    dev = provider.device
    x = torch.rand(40, 8, device=dev)
    ws = [w.to(dev) for w in ws]
    params = [ws[0].clone().requires_grad_(True), ws[1].clone(), ws[2].clone()]
    y = apply(provider, x, spec, 0, params)
    y.sum().backward()
    assert params[0].grad is not None and params[0].grad.shape == ws[0].shape
    assert params[1].grad is None
    # no grad wanted at all: nothing is saved, the output is still right
    with torch.no_grad():
        y2 = apply(provider, x, spec, 0, ws)
    assert torch.equal(y.detach(), y2)
    y3 = infer(x, spec, provider.kernels, 0, False, pack(spec, ws, [], 0), False)
    assert torch.equal(y3, y2)


@pytest.mark.parametrize("half", [0, 1], ids=["fp16", "bf16"])
def test_16_bit_outputs(provider, half):
    # the output written in the input's 16-bit type (as tiny-cuda-nn does), and backward
    # reading it for the output activation's derivative
    spec = make_spec(8, 5, 32, 2, act="Tanh", out_act="Sigmoid")
    ws, _ = make_params(spec, seed=11)
    x = torch.rand(100, 8, generator=torch.Generator().manual_seed(6)) * 2 - 1
    y32, _ = run(provider, x, ws, [], spec, half)
    y16, grads = run(provider, x, ws, [], spec, half, requires_grad=True, out16=True)
    dtype16 = torch.bfloat16 if half else torch.float16
    assert y16.dtype == dtype16
    assert torch.equal(y16, y32.to(dtype16))
    y16.float().sum().backward()
    xr = x.to(D64).requires_grad_(True)
    pr = [w.to(D64).requires_grad_(True) for w in ws]
    rounded_reference(xr, pr, [], spec, half).sum().backward()
    tol = 2e-2 if half == 0 else 6e-2
    assert rel_err(grads.x, xr.grad) < tol
    assert rel_err(grads.params()[0], pr[0].grad) < tol


def test_input_hessian_on_the_kernels(provider, monkeypatch):
    # d/dx of the input gradient (a Laplacian's terms): the first backward, then the double
    # backward's dS/dx, both on the kernels
    _no_fallback(monkeypatch)
    spec = make_spec(2, 1, 16, 2, act="Tanh")
    ws, _ = make_params(spec)
    dev = provider.device
    x = torch.rand(30, 2, generator=torch.Generator().manual_seed(7)).to(dev).requires_grad_()
    y = apply(provider, x, spec, 0, [w.to(dev).requires_grad_(True) for w in ws])
    (g,) = torch.autograd.grad(y.sum(), x, create_graph=True)
    (h,) = torch.autograd.grad(g[:, 0].sum(), x)
    xr = x.detach().cpu().to(D64).requires_grad_(True)
    yr = rounded_reference(xr, [w.to(D64) for w in ws], [], spec, 0)
    (gr,) = torch.autograd.grad(yr.sum(), xr, create_graph=True)
    (hr,) = torch.autograd.grad(gr[:, 0].sum(), xr)
    assert rel_err(g.detach().cpu(), gr) < 1e-2 and rel_err(h.cpu(), hr) < 3e-2


# -- second derivatives --------------------------------------------------------------------------


def _no_fallback(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("the second derivative fell back to the torch reference")

    monkeypatch.setattr(mlp_cuda, "_reference_double_backward", fail)


def eikonal_case(act, out_act, width, bias, omega0, half, tol, provider):
    """A loss on dL/dx (an eikonal term plus a linear one), differentiated to the weights, the
    biases and x, against float64 autograd of the rounded reference."""
    spec = make_spec(3, 2, width, 2, act, out_act, bias, omega0=omega0)
    ws, bs = make_params(spec, seed=ACTIVATION_IDS[act] + width)
    gen = torch.Generator().manual_seed(8)
    x = torch.rand(70, 3, generator=gen) * 2 - 1
    v = torch.randn(70, 2, generator=gen)
    c = torch.randn(3, generator=gen)

    def loss_of(y, xx, vv):
        (g,) = torch.autograd.grad(y, xx, vv, create_graph=True)
        return ((g.square().sum(1) - 1) ** 2).mean() + (g * c.to(g)).mean()

    y, grads = run(provider, x, ws, bs, spec, half, requires_grad=True)
    loss_of(y, grads._x, v.to(y.device)).backward()
    ref_params = [p.to(D64).requires_grad_(True) for p in ws + bs]
    xr = x.to(D64).requires_grad_(True)
    ref = rounded_reference(xr, ref_params[: len(ws)], ref_params[len(ws) :], spec, half)
    loss_of(ref, xr, v.to(D64)).backward()
    assert rel_err(grads.x, xr.grad) < tol
    for g, r in zip(grads.params(), ref_params, strict=True):
        # a gradient autograd finds independent of the loss (None) must come out zero
        assert rel_err(g, r.grad) < (tol if r.grad is not None else 1e-12), (act, g.shape)


@pytest.mark.parametrize("act,out_act,width,bias,omega0,half", [
    ("Tanh", "None", 64, True, 1.5, 0), ("ReLU", "None", 32, False, 1.5, 0),
    ("Softplus", "Sigmoid", 128, False, 1.5, 0), ("SiLU", "Tanh", 48, True, 1.5, 0),
    ("Gaussian", "None", 32, False, 1.5, 0), ("Squareplus", "Exponential", 64, True, 1.5, 0),
    ("Sigmoid", "SiLU", 32, False, 1.5, 0), ("Sine", "None", 16, True, 3.0, 0),
    ("Finer", "None", 16, False, 2.0, 0),
    # SIREN's omega0 30: second derivatives far beyond fp16's range; bf16 holds them
    ("Sine", "None", 16, True, 30.0, 1), ("Finer", "None", 32, False, 30.0, 1),
    ("Tanh", "Softplus", 64, True, 1.5, 1),
])
def test_eikonal_gradient_on_the_kernels(provider, monkeypatch, act, out_act, width, bias,
                                         omega0, half):
    _no_fallback(monkeypatch)
    eikonal_case(act, out_act, width, bias, omega0, half, 3e-2 if half == 0 else 1e-1,
                 provider)


def test_fp16_overflow_falls_back_to_the_reference(provider):
    # SIREN (omega0 30) in fp16: the double backward overflows, is detected, and the torch
    # reference gives the gradients (a warning says so)
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        eikonal_case("Sine", "None", 16, True, 30.0, 0, 3e-2, provider)


def test_backward_overflow_says_what_overflowed(emulated):
    # a large last layer: the output is in fp16's range, its deltas times the layer are not
    from fields.nn.backend import forget_warnings

    net = cuda_mlp(emulated, n_in=4, n_out=2, width=16, depth=2)
    with torch.no_grad():
        net.weights[-1].mul_(2000.0)
    x = torch.rand(20, 4).half().requires_grad_(True)
    forget_warnings()
    with pytest.warns(UserWarning, match=r"overflowed in the backward \((dx|the deltas)[^)]* not "
                                         r"finite\)"):
        net(x).float().sum().backward()
    ref_x = x.detach().float().requires_grad_(True)
    mlp_reference(ref_x, [w.float() for w in net.weights], None, "ReLU", "None",
                  1.0).sum().backward()
    torch.testing.assert_close(x.grad.float(), ref_x.grad, rtol=2e-2, atol=2e-2 * float(
        ref_x.grad.abs().max()))


@pytest.mark.parametrize("half", [0, 1], ids=["fp16", "bf16"])
def test_second_derivatives_to_the_upstream_gradient(provider, monkeypatch, half):
    # the upstream gradient v itself requires grad (dS/dv = J u), and a 16-bit output
    _no_fallback(monkeypatch)
    spec = make_spec(4, 3, 32, 3, "Tanh", "Sigmoid", bias=True)
    ws, bs = make_params(spec, seed=12)
    gen = torch.Generator().manual_seed(9)
    x = torch.rand(50, 4, generator=gen) * 2 - 1
    v = torch.randn(50, 3, generator=gen)
    y, grads = run(provider, x, ws, bs, spec, half, requires_grad=True, out16=True)
    vd = v.clone().to(y.device).requires_grad_(True)
    (g,) = torch.autograd.grad(y, grads._x, vd.to(y.dtype), create_graph=True)
    g.float().square().sum().backward()
    xr = x.to(D64).requires_grad_(True)
    pr = [p.to(D64).requires_grad_(True) for p in ws + bs]
    vr = v.to(D64).requires_grad_(True)
    ref = rounded_reference(xr, pr[:4], pr[4:], spec, half)
    (gr,) = torch.autograd.grad(ref, xr, vr, create_graph=True)
    gr.square().sum().backward()
    tol = 3e-2 if half == 0 else 8e-2
    assert rel_err(vd.grad.cpu(), vr.grad) < tol
    assert rel_err(grads.x, xr.grad) < tol
    for gp, r in zip(grads.params(), pr, strict=True):
        assert rel_err(gp, r.grad) < tol


def test_third_order_goes_through_the_reference(provider):
    # a PDE residual with u_xx, trained: d/dtheta of a second derivative (third order)
    spec = make_spec(2, 1, 16, 2, act="Tanh")
    ws, _ = make_params(spec, seed=13)
    x = torch.rand(40, 2, generator=torch.Generator().manual_seed(10))

    def residual_loss(y, xx):
        (g,) = torch.autograd.grad(y.sum(), xx, create_graph=True)
        (h,) = torch.autograd.grad(g[:, 0].sum(), xx, create_graph=True)
        return (h[:, 0] + y[:, 0]).square().mean()

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        y, grads = run(provider, x, ws, [], spec, 0, requires_grad=True)
        residual_loss(y, grads._x).backward()
    pr = [w.to(D64).requires_grad_(True) for w in ws]
    xr = x.to(D64).requires_grad_(True)
    residual_loss(rounded_reference(xr, pr, [], spec, 0), xr).backward()
    for gp, r in zip(grads.params(), pr, strict=True):
        assert rel_err(gp, r.grad) < 3e-2


# -- FusedMLP(backend="cuda") --------------------------------------------------------------------


def cuda_mlp(provider: Provider, **kwargs) -> FusedMLP:
    net = FusedMLP(backend="auto", device=provider.device, **kwargs)
    if provider.name == "emulated":
        net.kernels_override = provider.kernels
    net.backend = "cuda"
    return net


def test_fused_mlp_on_the_cuda_backend(provider):
    net = cuda_mlp(provider, n_in=5, n_out=3, width=40, depth=2, activation="SiLU", bias=True)
    dev = provider.device
    x = (torch.rand(70, 5, device=dev) * 2 - 1).half().requires_grad_(True)
    y = net(x)
    assert net.last_backend == "cuda" and y.dtype == torch.float16 and y.shape == (70, 3)
    ws, bs = net._params()
    ref_ws = [w.detach().cpu().double().requires_grad_(True) for w in ws + bs]
    xr = x.detach().cpu().double().requires_grad_(True)
    ref = rounded_reference(xr, ref_ws[:3], ref_ws[3:], net.spec, 0)
    assert rel_err(y.detach().cpu(), ref) < 1e-2
    y.float().square().sum().backward()
    ref.square().sum().backward()
    assert x.grad.dtype == torch.float16 and rel_err(x.grad.cpu(), xr.grad) < 2e-2
    for p, r in zip(ws + bs, ref_ws, strict=True):
        assert p.grad.dtype == torch.float32 and rel_err(p.grad.cpu(), r.grad) < 2e-2
    # the packed weights are cached while the parameters stay, rebuilt after a change
    packed = net._packed[1]
    net(x)
    assert net._packed[1] is packed
    with torch.no_grad():
        ws[0].mul_(2)
    net(x)
    assert net._packed[1] is not packed
    # fp32 inputs run in fp16 with an fp32 output
    y32 = net(x.detach().float())
    assert y32.dtype == torch.float32


def test_fused_mlp_cuda_backend_refusals():
    if skip_reason("cuda") == "":
        pytest.skip("this machine has the CUDA kernels")
    with pytest.raises(ValueError, match="without the CUDA kernels"):
        FusedMLP(4, 2, 32, 2, backend="cuda")
    net = FusedMLP(4, 2, 32, 2)
    net(torch.rand(8, 4))  # auto on the CPU: the CPU kernels
    assert net.last_backend == "cpu"


def test_fused_mlp_cuda_backend_rejects_what_it_cannot_run(emulated):
    with pytest.raises(ValueError, match="width 256 exceeds 128"):
        cuda_mlp(emulated, n_in=4, n_out=2, width=256, depth=2)._select(
            torch.rand(2, 4), [])
    # all weights must fit one block's shared memory: 258,304 bytes at width 128, depth 8
    with pytest.raises(ValueError, match="shared memory"):
        cuda_mlp(emulated, n_in=32, n_out=16, width=128, depth=8)._select(torch.rand(2, 32), [])
    assert mlp_cuda.shared_bytes(32, 16, 128, 8, False) == 258304
    assert mlp_cuda.unsupported(32, 16, 128, 4) == ""
    assert "shared memory" in mlp_cuda.unsupported(32, 16, 128, 6, limit=163 * 1024)  # A100


def test_packed_weights_follow_the_parameters(emulated):
    net = cuda_mlp(emulated, n_in=4, n_out=2, width=16, depth=1)
    x = torch.rand(20, 4).half()
    y0 = net(x)
    with torch.no_grad():  # an in-place update through autograd's view: a new version
        net.weights[0].mul_(-1)
    y1 = net(x)
    assert not torch.equal(y0, y1)
    net.weights[0].data.mul_(-1)  # through .data: no version change, so say so
    assert torch.equal(net(x), y1)
    net.invalidate_packed()
    assert torch.equal(net(x), y0)


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "foreach"])
def test_packed_weights_follow_optimiser_steps(emulated, fused):
    """A fused optimiser updates the parameters without bumping their versions: the packed
    weights must follow it all the same (they once stayed as packed, and a radiance field
    trained on a GPU learnt with its networks frozen)."""
    net = cuda_mlp(emulated, n_in=4, n_out=2, width=16, depth=1)
    x = torch.rand(20, 4).half()
    opt = torch.optim.Adam(net.parameters(), lr=0.1, fused=fused, foreach=None if fused else True)
    net(x).float().square().mean().backward()
    opt.step()
    with torch.no_grad():
        y = net(x)
        ref = mlp_reference(x.float(), list(net.weights), None, "ReLU", "None", 1.0)
    torch.testing.assert_close(y.float(), ref, atol=3e-2, rtol=3e-2)


# -- the emulator itself -------------------------------------------------------------------------


def test_emulator_reports_what_the_kernels_reject(emulated):
    x = torch.zeros(10, 4, dtype=torch.float16)
    w = torch.zeros(10000, dtype=torch.float16)
    with pytest.raises(RuntimeError, match="kernel width"):
        emulated.kernels.mlp_cuda_forward(x, w, torch.empty(0), [4, 2, 48, 2, 1, 0, 0], 1.0, 0,
                                          False)


def test_emulator_counts_warp_instructions(emulated):
    spec = make_spec(16, 16, 16, 1)
    ws, _ = make_params(spec)
    before = emulated.warp_instructions()
    run(emulated, torch.rand(16 * 4, 16), ws, [], spec, 0)  # one warp: 4 row tiles of 16
    # layer 0: 1 k-tile x 1 n-pair: 1 ldmatrix + 2 x 4 mma; the output layer the same
    assert emulated.warp_instructions() - before == 2 * (1 + 8)
