"""`BatchedMLP`: many small networks of one shape, each input row evaluated by its own network
(KiloNeRF's thousands of tiny MLPs, one per cell of a coarse grid).

Backends (`fields.nn.backend`):

- ``"torch"``: the reference, `batched_mlp_reference`: the rows sorted by network and padded
  into one (networks, most rows, features) batch of matrix products; any dtype, device and
  derivative order.
- ``"cpu"``: the fused C++ kernels of `FusedMLP` run network by network on the rows of each
  (`csrc/bindings/batched_mlp.cpp`): float32, widths a multiple of 16, first derivatives (a
  second derivative differentiates the reference, with a warning the first time).
- ``"cuda"``: the CUDA kernels (`fields.nn.batched_mlp_cuda`, `csrc/kernels/batched_mlp_cuda.cu`):
  float32, one row per thread, widths up to 64, first derivatives.
- ``"auto"``: ``"cuda"`` for CUDA inputs where the kernels can run the call, ``"cpu"`` where
  the C++ kernels can, else the reference.

Parameters: ``weights[l]`` of shape ``(n_nets, out_dim, in_dim)`` and, with ``bias=True``,
``biases[l]`` of shape ``(n_nets, out_dim)``: network ``c`` is ``FusedMLP`` with
``weights[l][c]`` and ``biases[l][c]``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from fields import _ext
from fields.nn import batched_mlp_cuda
from fields.nn.activations import ACTIVATION_IDS, apply_activation, canonical_activation
from fields.nn.backend import NO_CUDA_KERNELS, check_backend, scope, select_backend, warn_once
from fields.nn.backend import stream as _stream
from fields.nn.mlp import FusedMLP, cpu_shape_unsupported
from fields.nn.mlp_reference import MLPSpec

__all__ = ["BatchedMLP", "batched_mlp_reference", "group_rows"]


def group_rows(net: torch.Tensor, n_nets: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The rows grouped by network: (order, offsets), `order` (N,) the row indices sorted by
    network (stable), `offsets` (n_nets + 1,) int64 where network c's rows are
    ``order[offsets[c]:offsets[c + 1]]``."""
    order = torch.argsort(net, stable=True)
    counts = torch.bincount(net, minlength=n_nets)
    offsets = torch.zeros(n_nets + 1, dtype=torch.int64, device=net.device)
    torch.cumsum(counts, 0, out=offsets[1:])
    return order, offsets


def check_net_index(owner: str, net: torch.Tensor, n_rows: int, n_nets: int) -> None:
    """ValueError naming `owner` unless `net` is (n_rows,) integers in [0, n_nets)."""
    if net.dtype not in (torch.int64, torch.int32) or net.shape != (n_rows,):
        raise ValueError(f"{owner}: net must be ({n_rows},) int64 network indices, got "
                         f"{net.dtype} {tuple(net.shape)}")
    if n_rows and (int(net.min()) < 0 or int(net.max()) >= n_nets):
        raise ValueError(f"{owner}: network indices must be in [0, {n_nets}), got "
                         f"[{int(net.min())}, {int(net.max())}]")


def batched_mlp_reference(
    x: torch.Tensor,
    net: torch.Tensor,
    weights: Sequence[torch.Tensor],
    biases: Sequence[torch.Tensor] | None,
    activation: str,
    output_activation: str,
    omega0: float = 30.0,
) -> torch.Tensor:
    """The batched MLP in plain torch ops: row i through network net[i].

    Args:
        x: (N, n_in) inputs.
        net: (N,) int64 network of each row, in [0, n_nets).
        weights: depth + 1 tensors, weights[l] of shape (n_nets, out_dim, in_dim).
        biases: None or depth + 1 tensors of shape (n_nets, out_dim).
        activation, output_activation: canonical activation names.
        omega0: frequency of the Sine activation.
    Returns:
        (N, n_out) outputs.
    """
    n_nets = weights[0].shape[0]
    n = x.shape[0]
    order, offsets = group_rows(net.long(), n_nets)
    sorted_net = net.long()[order]
    slot = torch.arange(n, device=x.device) - offsets[sorted_net]
    counts = offsets[1:] - offsets[:-1]
    most = int(counts.max()) if n else 0
    h = x.new_zeros(n_nets, most, x.shape[1])
    h = h.index_put((sorted_net, slot), x[order])
    last = len(weights) - 1
    for i, w in enumerate(weights):
        h = torch.bmm(h, w.transpose(1, 2))
        if biases:
            h = h + biases[i].unsqueeze(1)
        h = apply_activation(output_activation if i == last else activation, h, omega0)
    y_sorted = h[sorted_net, slot]
    return y_sorted.new_empty(y_sorted.shape).index_put((order,), y_sorted)


class _KernelBatchedMLP(torch.autograd.Function):
    """Fused forward/backward on rows grouped by network, through `calls` (`_CpuCalls` or
    `_CudaCalls`); a double backward goes through the reference."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, net: torch.Tensor, offsets: torch.Tensor, spec: MLPSpec,
                calls: _CpuCalls, *params: torch.Tensor) -> torch.Tensor:
        n = spec.n_layers
        save = any(ctx.needs_input_grad)
        with scope("kernel:batched mlp forward"):
            outs = calls.forward(x, offsets, list(params[:n]), list(params[n:]), spec, save)
        ctx.spec, ctx.calls = spec, calls
        ctx.n_params = len(params)
        if save:
            ctx.save_for_backward(x, net, offsets, *params, *outs[1:])
        return outs[0]

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        spec: MLPSpec = ctx.spec
        x, net, offsets, *rest = ctx.saved_tensors
        params = rest[: ctx.n_params]
        saved = rest[ctx.n_params:]
        n = spec.n_layers
        weights, biases = params[:n], params[n:]
        needs = ctx.needs_input_grad
        if torch.is_grad_enabled():
            warn_once(
                f"{ctx.calls.name}-batched-double-backward",
                f"BatchedMLP(backend='{ctx.calls.name}'): a higher-order derivative was "
                "requested; the fused kernels compute first derivatives only, so this backward "
                "runs through the torch reference (correct, slower).",
            )
            inputs = [t for t, need in zip((x, *params), (needs[0], *needs[5:]), strict=False)
                      if need]
            y = batched_mlp_reference(x, net, weights, biases or None, spec.activation,
                                      spec.output_activation, spec.omega0)
            grads = iter(torch.autograd.grad(y, inputs, grad_out, create_graph=True))
            dx = next(grads) if needs[0] else None
            return (dx, None, None, None, None,
                    *[next(grads) if nd else None for nd in needs[5:]])
        with scope("kernel:batched mlp backward"):
            outs = ctx.calls.backward(grad_out.contiguous(), x, offsets, list(weights),
                                      bool(biases), list(saved), spec, bool(needs[0]))
        dx = outs[0] if needs[0] else None
        return (dx, None, None, None, None, *outs[1:])


class _CpuCalls:
    """The C++ kernels (`fields._C`, csrc/bindings/batched_mlp.cpp)."""

    name = "cpu"

    @staticmethod
    def forward(x: torch.Tensor, offsets: torch.Tensor, weights: list[torch.Tensor],
                biases: list[torch.Tensor], spec: MLPSpec, save: bool) -> list[torch.Tensor]:
        return _ext.extension().batched_mlp_cpu_forward(
            x, offsets, weights, biases, spec.width, ACTIVATION_IDS[spec.activation],
            ACTIVATION_IDS[spec.output_activation], spec.omega0, save)

    @staticmethod
    def backward(dy: torch.Tensor, x: torch.Tensor, offsets: torch.Tensor,
                 weights: list[torch.Tensor], has_bias: bool, saved: list[torch.Tensor],
                 spec: MLPSpec, need_dx: bool) -> list[torch.Tensor]:
        return _ext.extension().batched_mlp_cpu_backward(
            dy, x, offsets, weights, has_bias, saved, spec.width,
            ACTIVATION_IDS[spec.activation], ACTIVATION_IDS[spec.output_activation],
            spec.omega0, need_dx)


class _CudaCalls:
    """The CUDA kernels (`fields.nn.batched_mlp_cuda.BatchedKernels`: `fields._C`, or the
    emulator in the tests)."""

    name = "cuda"

    def __init__(self, kernels: batched_mlp_cuda.BatchedKernels) -> None:
        self.kernels = kernels

    def forward(self, x: torch.Tensor, offsets: torch.Tensor, weights: list[torch.Tensor],
                biases: list[torch.Tensor], spec: MLPSpec, save: bool) -> list[torch.Tensor]:
        return self.kernels.batched_mlp_cuda_forward(
            x, offsets, weights, biases, spec.width, ACTIVATION_IDS[spec.activation],
            ACTIVATION_IDS[spec.output_activation], spec.omega0, save, _stream(x))

    def backward(self, dy: torch.Tensor, x: torch.Tensor, offsets: torch.Tensor,
                 weights: list[torch.Tensor], has_bias: bool, saved: list[torch.Tensor],
                 spec: MLPSpec, need_dx: bool) -> list[torch.Tensor]:
        return self.kernels.batched_mlp_cuda_backward(
            dy, x, offsets, weights, has_bias, saved[0], spec.width,
            ACTIVATION_IDS[spec.activation], ACTIVATION_IDS[spec.output_activation],
            spec.omega0, need_dx, _stream(x))


class BatchedMLP(nn.Module):
    """`n_nets` networks ``n_in -> width x depth -> n_out``; row i runs through network net[i].

    Args:
        n_nets: number of networks.
        n_in, n_out, width, depth, activation, output_activation, bias, omega0: each
            network's shape, as `FusedMLP`'s (and its initialisation, network by network).
        backend: "auto", "torch", "cpu" or "cuda".
        dtype, device: of the parameters.

    Input x (N, n_in) and net (N,) integer network indices; output (N, n_out).
    """

    def __init__(
        self,
        n_nets: int,
        n_in: int,
        n_out: int,
        width: int = 32,
        depth: int = 2,
        activation: str = "ReLU",
        output_activation: str = "None",
        *,
        bias: bool = True,
        backend: str = "auto",
        omega0: float = 30.0,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        for value, name in ((n_nets, "n_nets"), (n_in, "n_in"), (n_out, "n_out"),
                            (width, "width"), (depth, "depth")):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"BatchedMLP: {name} must be an integer >= 1, got {value!r}")
        check_backend("BatchedMLP", backend)
        if not (isinstance(omega0, (int, float)) and math.isfinite(omega0) and omega0 > 0):
            raise ValueError(f"BatchedMLP: omega0 must be a positive number, got {omega0!r}")
        self.n_nets = n_nets
        self.spec = MLPSpec(
            n_in=n_in, n_out=n_out, width=width, depth=depth,
            activation=canonical_activation(activation, "activation"),
            output_activation=canonical_activation(output_activation, "output_activation"),
            bias=bool(bias), omega0=float(omega0),
        )
        self.backend = backend
        self.last_backend: str | None = None
        # the CUDA kernels to use instead of fields._C's (the tests' emulator)
        self.kernels_override: batched_mlp_cuda.BatchedKernels | None = None
        if backend == "cuda":
            why = (NO_CUDA_KERNELS if batched_mlp_cuda.cuda_kernels() is None
                   else batched_mlp_cuda.unsupported(self.spec))
            if why:
                raise ValueError(f"BatchedMLP: backend='cuda' is unavailable: {why}")
        if backend == "cpu" and self._cpu_unsupported_static():
            raise ValueError("BatchedMLP: backend='cpu' cannot run this network: "
                             f"{self._cpu_unsupported_static()}")
        factory = {"dtype": dtype, "device": device}
        self.weights = nn.ParameterList(
            [nn.Parameter(torch.empty(n_nets, o, i, **factory))
             for i, o in self.spec.layer_dims()])
        self.biases = nn.ParameterList(
            [nn.Parameter(torch.empty(n_nets, o, **factory)) for _, o in self.spec.layer_dims()]
            if bias else [])
        self.reset_parameters()

    @property
    def n_input_dims(self) -> int:
        return self.spec.n_in

    @property
    def n_output_dims(self) -> int:
        return self.spec.n_out

    def reset_parameters(self) -> None:
        """Every network initialised as a `FusedMLP` of the same shape would be."""
        s = self.spec
        one = FusedMLP(s.n_in, s.n_out, s.width, s.depth, s.activation, s.output_activation,
                       bias=s.bias, backend="torch", omega0=s.omega0)
        with torch.no_grad():
            for c in range(self.n_nets):
                one.reset_parameters()
                for dst, src in zip([*self.weights, *self.biases],
                                    [*one.weights, *one.biases], strict=True):
                    dst[c].copy_(src)

    def _cpu_unsupported_static(self) -> str:
        reason = cpu_shape_unsupported(self.spec)
        if not reason and not hasattr(_ext.extension(), "batched_mlp_cpu_forward"):
            return "fields._C predates the batched MLP kernels (rebuild it: make setup)"
        return reason

    def _cpu_unsupported(self, x: torch.Tensor) -> str:
        reason = self._cpu_unsupported_static()
        if reason:
            return reason
        if x.device.type != "cpu":
            return f"the input is on {x.device}"
        if x.dtype != torch.float32:
            return f"the input is {x.dtype}, not float32"
        if any(p.dtype != torch.float32 or p.device.type != "cpu" for p in self.parameters()):
            return "the parameters are not float32 on the CPU"
        return ""

    def _cuda_unsupported(self, x: torch.Tensor) -> str:
        kernels = self.kernels_override or batched_mlp_cuda.cuda_kernels()
        if kernels is None:
            return NO_CUDA_KERNELS
        if x.device.type != "cuda" and not getattr(kernels, "host_memory", False):
            return f"the input is on {x.device}"
        if x.dtype != torch.float32:
            return f"the input is {x.dtype}, not float32"
        if any(p.dtype != torch.float32 or p.device != x.device for p in self.parameters()):
            return f"the parameters are not float32 on {x.device}"
        return batched_mlp_cuda.unsupported(self.spec)

    def forward(self, x: torch.Tensor, net: torch.Tensor,
                offsets: torch.Tensor | None = None) -> torch.Tensor:
        """(N, n_out): row i of x (N, n_in) through network net[i]. `offsets`: given when the
        rows are already grouped by network (net non-decreasing; `group_rows`' offsets, network
        c's rows at offsets[c]:offsets[c + 1]): the rows are then used in place, unsorted."""
        if x.dim() != 2 or x.shape[1] != self.spec.n_in:
            raise ValueError(f"BatchedMLP: x must have shape (N, {self.spec.n_in}), got "
                             f"{tuple(x.shape)}")
        check_net_index("BatchedMLP", net, x.shape[0], self.n_nets)
        backend = select_backend("BatchedMLP", self.backend, x,
                                 lambda: self._cpu_unsupported(x),
                                 lambda auto: self._cuda_unsupported(x))
        self.last_backend = backend
        s = self.spec
        if backend == "torch":
            return batched_mlp_reference(x, net, list(self.weights), list(self.biases) or None,
                                         s.activation, s.output_activation, s.omega0)
        calls = (_CpuCalls() if backend == "cpu" else
                 _CudaCalls(self.kernels_override or batched_mlp_cuda.cuda_kernels()))
        if offsets is not None:
            if offsets.shape != (self.n_nets + 1,) or offsets.dtype != torch.int64:
                raise ValueError(f"BatchedMLP: offsets must be ({self.n_nets + 1},) int64, got "
                                 f"{offsets.dtype} {tuple(offsets.shape)}")
            return _KernelBatchedMLP.apply(x.contiguous(), net.long(), offsets, s, calls,
                                           *self.weights, *self.biases)
        order, offsets = group_rows(net.long(), self.n_nets)
        y_sorted = _KernelBatchedMLP.apply(x[order].contiguous(), net.long()[order], offsets, s,
                                           calls, *self.weights, *self.biases)
        return y_sorted.new_empty(y_sorted.shape).index_put((order,), y_sorted)
