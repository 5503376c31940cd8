"""BatchedMLP: the batched reference against one FusedMLP per network, and the fused CPU
kernels against the reference (values, input and weight gradients)."""

from __future__ import annotations

import pytest
import torch

from fields import _ext
from fields.nn.batched_mlp import BatchedMLP, batched_mlp_reference, group_rows
from fields.nn.mlp_reference import mlp_reference

needs_ext = pytest.mark.skipif(not _ext.available(), reason="fields._C not built")


def uneven_nets(n_nets: int, seed: int = 0) -> torch.Tensor:
    """Network indices in shuffled order with very uneven counts: empty networks, networks of
    one row, of a few rows, of more than one 96-row tile."""
    g = torch.Generator().manual_seed(seed)
    counts = torch.randint(0, 12, (n_nets,), generator=g)
    counts[0] = 0
    counts[1] = 1
    counts[2] = 250  # three tiles, the last short
    counts[3] = 96  # exactly one tile
    if n_nets > 5:
        counts[5] = 0
    net = torch.repeat_interleave(torch.arange(n_nets), counts)
    return net[torch.randperm(len(net), generator=g)]


def test_group_rows_orders_by_network():
    net = torch.tensor([2, 0, 2, 1, 0, 2])
    order, offsets = group_rows(net, 4)
    assert offsets.tolist() == [0, 2, 3, 6, 6]
    assert net[order].tolist() == [0, 0, 1, 2, 2, 2]
    assert order.tolist() == [1, 4, 3, 0, 2, 5]  # stable


@pytest.mark.parametrize("bias", [True, False])
def test_reference_is_one_mlp_per_network(bias):
    torch.manual_seed(0)
    m = BatchedMLP(6, 5, 3, width=16, depth=2, activation="ReLU", output_activation="Sigmoid",
                   bias=bias, backend="torch")
    net = uneven_nets(6)
    x = torch.randn(len(net), 5)
    y = m(x, net)
    for c in range(6):
        rows = net == c
        want = mlp_reference(x[rows], [w[c] for w in m.weights],
                             [b[c] for b in m.biases] if bias else None, "ReLU", "Sigmoid")
        torch.testing.assert_close(y[rows], want)


def test_networks_start_different_and_like_fused_mlp():
    m = BatchedMLP(4, 3, 2, width=32, depth=2, backend="torch")
    w = m.weights[0]
    assert not torch.equal(w[0], w[1])
    bound = (6.0 / 3) ** 0.5  # He-uniform, as FusedMLP's ReLU layers
    assert float(w.detach().abs().max()) <= bound
    assert float(m.biases[0].detach().abs().max()) == 0.0


def test_reference_gradients_are_exact():
    torch.manual_seed(1)
    n_nets = 4
    net = torch.tensor([3, 0, 0, 2, 3, 3, 0])
    x = torch.randn(7, 3, dtype=torch.float64, requires_grad=True)
    ws = [torch.randn(n_nets, o, i, dtype=torch.float64, requires_grad=True)
          for i, o in ((3, 8), (8, 8), (8, 2))]
    bs = [torch.randn(n_nets, o, dtype=torch.float64, requires_grad=True) for o in (8, 8, 2)]
    assert torch.autograd.gradcheck(
        lambda x, *p: batched_mlp_reference(x, net, p[:3], p[3:], "Tanh", "None"),
        (x, *ws, *bs))


@needs_ext
@pytest.mark.parametrize(
    "activation,output_activation,bias,width,depth",
    [("ReLU", "None", True, 32, 2), ("ReLU", "Sigmoid", False, 16, 1),
     ("Sine", "None", True, 32, 3), ("Softplus", "ReLU", True, 64, 2)],
)
def test_cpu_kernels_match_the_reference(activation, output_activation, bias, width, depth):
    torch.manual_seed(2)
    n_nets = 9
    m = BatchedMLP(n_nets, 7, 4, width=width, depth=depth, activation=activation,
                   output_activation=output_activation, bias=bias, backend="cpu")
    if bias:
        with torch.no_grad():
            for b in m.biases:
                b.normal_(0.0, 0.1)
    ref = BatchedMLP(n_nets, 7, 4, width=width, depth=depth, activation=activation,
                     output_activation=output_activation, bias=bias, backend="torch")
    ref.load_state_dict(m.state_dict())
    net = uneven_nets(n_nets)
    x = torch.randn(len(net), 7)
    dy = torch.randn(len(net), 4)
    outs = {}
    for name, mod in (("cpu", m), ("torch", ref)):
        xi = x.clone().requires_grad_(True)
        y = mod(xi, net)
        assert mod.last_backend == name
        (y * dy).sum().backward()
        outs[name] = (y.detach(), xi.grad, [p.grad for p in mod.parameters()])
    torch.testing.assert_close(outs["cpu"][0], outs["torch"][0], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(outs["cpu"][1], outs["torch"][1], rtol=1e-4, atol=1e-4)
    for got, want in zip(outs["cpu"][2], outs["torch"][2], strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    # the networks without rows get zero gradients
    assert float(outs["cpu"][2][0][0].abs().max()) == 0.0


@needs_ext
def test_cpu_second_derivative_goes_through_the_reference():
    torch.manual_seed(3)
    m = BatchedMLP(3, 2, 1, width=16, depth=2, activation="Softplus", backend="cpu")
    ref = BatchedMLP(3, 2, 1, width=16, depth=2, activation="Softplus", backend="torch")
    ref.load_state_dict(m.state_dict())
    net = torch.tensor([0, 2, 2, 1, 0])
    x = torch.randn(5, 2)
    grads = []
    for mod in (m, ref):
        xi = x.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(mod(xi, net).sum(), xi, create_graph=True)
        g.square().sum().backward()
        grads.append(mod.weights[0].grad)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-4, atol=1e-5)


@needs_ext
def test_cpu_kernels_take_no_rows_and_inference():
    m = BatchedMLP(5, 3, 2, width=16, backend="cpu")
    assert m(torch.zeros(0, 3), torch.zeros(0, dtype=torch.long)).shape == (0, 2)
    with torch.no_grad():
        net = torch.tensor([4, 4, 0])
        x = torch.randn(3, 3)
        want = batched_mlp_reference(x, net, list(m.weights), list(m.biases), "ReLU", "None")
        torch.testing.assert_close(m(x, net), want, rtol=1e-5, atol=1e-6)


def test_bad_input_is_named():
    m = BatchedMLP(4, 3, 2, width=16, backend="torch")
    with pytest.raises(ValueError, match=r"network indices must be in \[0, 4\), got \[0, 4\]"):
        m(torch.zeros(2, 3), torch.tensor([0, 4]))
    with pytest.raises(ValueError, match=r"x must have shape \(N, 3\)"):
        m(torch.zeros(2, 4), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="net must be"):
        m(torch.zeros(2, 3), torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="n_nets must be an integer"):
        BatchedMLP(0, 3, 2)
    if _ext.available():
        with pytest.raises(ValueError, match="multiple of 16"):
            BatchedMLP(2, 3, 2, width=20, backend="cpu")
