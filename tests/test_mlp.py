"""FusedMLP: every backend against the torch reference (values and gradients)."""

import warnings

import pytest
import torch

from fields import _ext
from fields.nn import ACTIVATIONS, FusedMLP, mlp_reference

needs_ext = pytest.mark.skipif(not _ext.available(), reason="fields._C not built")


def reference_of(net: FusedMLP, x: torch.Tensor) -> torch.Tensor:
    s = net.spec
    return mlp_reference(
        x, list(net.weights), list(net.biases) or None, s.activation, s.output_activation, s.omega0
    )


def grads(y: torch.Tensor, x: torch.Tensor, net: FusedMLP, g: torch.Tensor):
    return torch.autograd.grad(y, [x, *net.parameters()], g)


def assert_matches(net: FusedMLP, x: torch.Tensor, rtol: float = 2e-4, atol: float = 2e-5):
    x = x.clone().requires_grad_(True)
    y = net(x)
    assert net.last_backend == net.backend
    y_ref = reference_of(net, x)
    scale = y_ref.abs().max().clamp_min(1.0)
    torch.testing.assert_close(y / scale, y_ref / scale, rtol=rtol, atol=atol)
    g = torch.randn_like(y)
    for got, want in zip(grads(y, x, net, g), grads(y_ref, x, net, g), strict=True):
        s = want.abs().max().clamp_min(1e-3)
        torch.testing.assert_close(got / s, want / s, rtol=rtol, atol=atol)


@needs_ext
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("bias", [False, True])
def test_cpu_matches_reference_every_activation(activation, bias):
    torch.manual_seed(0)
    net = FusedMLP(7, 5, 32, 3, activation, "None", bias=bias, backend="cpu", omega0=3.0)
    if activation == "Exponential":  # exp(exp(exp(.))) overflows float32 at default scale
        with torch.no_grad():
            for w in net.weights:
                w.mul_(0.3)
    assert_matches(net, torch.randn(203, 7))


@needs_ext
@pytest.mark.parametrize("output_activation", ACTIVATIONS)
def test_cpu_matches_reference_every_output_activation(output_activation):
    torch.manual_seed(1)
    net = FusedMLP(3, 4, 16, 2, "Tanh", output_activation, bias=True, backend="cpu", omega0=2.0)
    assert_matches(net, torch.randn(150, 3))


@needs_ext
@pytest.mark.parametrize("width", [16, 32, 64, 128])
@pytest.mark.parametrize("activation", ["ReLU", "LeakyReLU", "Sine"])
def test_cpu_matches_reference_every_width(width, activation):
    torch.manual_seed(2)
    net = FusedMLP(32, 16, width, 4, activation, backend="cpu", omega0=1.0)
    assert_matches(net, torch.rand(1000, 32))


@needs_ext
@pytest.mark.parametrize("rows", [0, 1, 5, 95, 96, 97, 193, 3000])
def test_cpu_any_batch_size(rows):
    torch.manual_seed(3)
    net = FusedMLP(3, 1, 64, 2, bias=True, backend="cpu")
    x = torch.randn(rows, 3)
    if rows == 0:
        assert net(x).shape == (0, 1)
        return
    assert_matches(net, x)


@needs_ext
def test_cpu_keeps_leading_dims_and_non_contiguous_input():
    torch.manual_seed(4)
    net = FusedMLP(4, 2, 16, 1, backend="cpu")
    x = torch.randn(6, 10, 8)[..., ::2]  # (6, 10, 4), non-contiguous
    y = net(x)
    assert y.shape == (6, 10, 2)
    torch.testing.assert_close(y, reference_of(net, x.reshape(-1, 4)).reshape(6, 10, 2))


@needs_ext
def test_cpu_weight_grads_only_when_input_needs_none():
    torch.manual_seed(5)
    net = FusedMLP(8, 3, 32, 2, backend="cpu")
    x = torch.randn(300, 8)
    net(x).square().sum().backward()
    got = [p.grad.clone() for p in net.parameters()]
    net.zero_grad()
    reference_of(net, x).square().sum().backward()
    for a, b in zip(got, [p.grad for p in net.parameters()], strict=True):
        torch.testing.assert_close(a, b, rtol=2e-4, atol=1e-4)


def test_reference_gradcheck_float64():
    torch.manual_seed(6)
    for act in ("Softplus", "Sine", "SiLU", "Tanh"):
        net = FusedMLP(
            3, 2, 8, 2, act, "Sigmoid", bias=True, backend="torch", dtype=torch.float64, omega0=2.0
        )
        x = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
        params = list(net.parameters())

        def f(x, *ps, net=net):
            return mlp_reference(
                x, ps[:3], ps[3:], net.spec.activation, net.spec.output_activation, net.spec.omega0
            )

        assert torch.autograd.gradcheck(f, (x, *params))
        assert torch.autograd.gradgradcheck(f, (x, *params))


@needs_ext
def test_cpu_second_derivative_falls_back_to_reference_with_warning():
    torch.manual_seed(7)
    net = FusedMLP(3, 1, 32, 2, "Softplus", backend="cpu", bias=True)
    x = torch.randn(50, 3, requires_grad=True)

    def laplacian_like(y_fn):
        y = y_fn(x)
        (g,) = torch.autograd.grad(y.sum(), x, create_graph=True)
        (gg,) = torch.autograd.grad(g.square().sum(), x)
        return g, gg

    with pytest.warns(UserWarning, match="higher-order derivative"):
        g, gg = laplacian_like(net)
    g_ref, gg_ref = laplacian_like(lambda t: reference_of(net, t))
    torch.testing.assert_close(g, g_ref, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(gg, gg_ref, rtol=1e-4, atol=1e-5)


@needs_ext
def test_training_reaches_same_loss_on_cpu_and_torch():
    def train(backend: str) -> float:
        torch.manual_seed(8)
        net = FusedMLP(2, 1, 32, 2, "ReLU", bias=True, backend=backend)
        opt = torch.optim.Adam(net.parameters(), lr=3e-3)
        x = torch.rand(512, 2) * 2 - 1
        target = torch.sin(3 * x[:, :1]) * torch.cos(2 * x[:, 1:])
        for _ in range(300):
            opt.zero_grad()
            loss = (net(x) - target).square().mean()
            loss.backward()
            opt.step()
        return loss.item()

    cpu, ref = train("cpu"), train("torch")
    assert cpu < 0.02, cpu  # it learned something
    assert abs(cpu - ref) <= 0.05 * ref + 1e-5, (cpu, ref)


@needs_ext
def test_state_dict_moves_between_backends():
    torch.manual_seed(9)
    a = FusedMLP(5, 3, 64, 3, "SiLU", bias=True, backend="cpu")
    b = FusedMLP(5, 3, 64, 3, "SiLU", bias=True, backend="torch")
    b.load_state_dict(a.state_dict())
    x = torch.randn(40, 5)
    torch.testing.assert_close(a(x), b(x), rtol=1e-4, atol=1e-5)
    assert sorted(a.state_dict()) == sorted(b.state_dict())


@needs_ext
def test_auto_picks_cpu_for_float32_and_reference_otherwise():
    net = FusedMLP(3, 2, 64, 2)
    net(torch.randn(10, 3))
    assert net.last_backend == "cpu"
    net64 = FusedMLP(3, 2, 64, 2, dtype=torch.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # float64 is an explicit request: no warning
        net64(torch.randn(10, 3, dtype=torch.float64))
    assert net64.last_backend == "torch"
    odd = FusedMLP(3, 2, 40, 2)
    with pytest.warns(UserWarning, match="width 40"):
        odd(torch.randn(10, 3))
    assert odd.last_backend == "torch"


@needs_ext
def test_explicit_cpu_rejects_what_it_cannot_run():
    with pytest.raises(ValueError, match="width 40"):
        FusedMLP(3, 2, 40, 2, backend="cpu")
    net = FusedMLP(3, 2, 32, 2, backend="cpu")
    with pytest.raises(ValueError, match="float32"):
        net(torch.randn(4, 3, dtype=torch.float64))


def test_bad_arguments_are_clear_errors():
    with pytest.raises(ValueError, match="did you mean 'ReLU'"):
        FusedMLP(3, 2, activation="Relu6")
    with pytest.raises(ValueError, match="backend"):
        FusedMLP(3, 2, backend="metal")
    with pytest.raises(ValueError, match="depth"):
        FusedMLP(3, 2, depth=0)
    with pytest.raises(ValueError, match=r"expected input \(\.\.\., 3\)"):
        FusedMLP(3, 2, backend="torch")(torch.randn(4, 5))


def test_sine_uses_siren_initialisation():
    net = FusedMLP(2, 1, 64, 3, "Sine", omega0=30.0, backend="torch")
    assert net.weights[0].abs().max() <= 1 / 2
    bound = (6 / 64) ** 0.5 / 30
    assert net.weights[1].abs().max() <= bound
    assert net.weights[1].abs().max() > 0.8 * bound


ISA_CHECK = """
import sys
import torch
from fields import _ext
from fields.nn import FusedMLP, mlp_reference
assert _ext.cpu_isa() == sys.argv[1], _ext.cpu_isa()
torch.manual_seed(0)
# 130 and 138 rows: a short last tile of whole 12-row blocks, and one with a 6-row rest;
# n_in 5 and 32: weight-gradient blocks of 12, 6 and fewer inputs; n_in 32 / n_out 16 with
# no output activation: whole tiles read x and dy and write y and dx in place; widths 64, 80
# and 128: AVX-512's blocks of 4 column blocks, alone, with a single block beside them, twice;
# 1 to 4 outputs: the narrow output layer (dot products per row), 5: the padded GEMM again
for act, n_in, width, rows, n_out, out in (
        ("ReLU", 5, 32, 130, 3, "Sigmoid"), ("LeakyReLU", 32, 64, 138, 3, "Sigmoid"),
        ("Tanh", 5, 32, 138, 3, "Sigmoid"), ("Sine", 32, 32, 130, 3, "Sigmoid"),
        ("SiLU", 7, 48, 138, 3, "Sigmoid"), ("ReLU", 31, 64, 200, 3, "Sigmoid"),
        ("ReLU", 32, 64, 250, 16, "None"), ("ReLU", 32, 64, 250, 16, "ReLU"),
        ("ReLU", 30, 80, 138, 20, "None"), ("Tanh", 64, 128, 130, 3, "Sigmoid"),
        ("ReLU", 7, 32, 250, 1, "ReLU"), ("LeakyReLU", 9, 16, 130, 4, "LeakyReLU"),
        ("Sine", 5, 64, 250, 2, "None"), ("ReLU", 31, 48, 138, 5, "None")):
    net = FusedMLP(n_in, n_out, width, 2, act, out, bias=True, backend="cpu", omega0=2.0)
    x = torch.randn(rows, n_in, requires_grad=True)
    y = net(x)
    y_ref = mlp_reference(x, list(net.weights), list(net.biases), act, out, 2.0)
    torch.testing.assert_close(y, y_ref, rtol=1e-4, atol=1e-5)
    g = torch.randn_like(y)
    for a, b in zip(torch.autograd.grad(y, [x, *net.parameters()], g),
                    torch.autograd.grad(y_ref, [x, *net.parameters()], g)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
print("ok")
"""

ISA_NAMES = {"generic": "generic", "avx2": "avx2+fma", "avx512": "avx512+fma"}


@needs_ext
@pytest.mark.parametrize("isa", ["generic", "avx2", "avx512"])
def test_each_instruction_set_matches_reference(isa):
    """Every build of the kernels, forced by FIELDS_CPU_ISA: the portable one (what an ARM
    machine runs), AVX2 and AVX-512 (where this CPU runs them)."""
    import os
    import subprocess
    import sys

    from fields import _ext

    if isa not in _ext.extension().peak_cpu_isas():
        pytest.skip(f"this CPU does not run {isa}")
    env = {**os.environ, "FIELDS_CPU_ISA": isa}
    out = subprocess.run(
        [sys.executable, "-c", ISA_CHECK, ISA_NAMES[isa]], env=env, capture_output=True,
        text=True, timeout=120,
    )
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr
