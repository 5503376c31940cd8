"""The Python side of the tensor-core MLP (`csrc/kernels/mlp_cuda.cu`): weight packing, the
autograd function, and the contract its kernels meet.

The kernels run the whole network per tile of rows with 16-bit inputs and weights (fp16 or
bf16) and fp32 accumulation; outputs and input gradients are fp32. They exist for hidden widths
16, 32, 64 and 128 (`KERNEL_WIDTHS`); other widths up to 128 run on the next of these with zero
weights in the extra rows and columns (the same function). Backward gives the deltas of every
layer and the input gradient; the weight gradients are GEMMs on the deltas and the saved
activations, done here.

`MLPKernels` is what the autograd function calls: `fields._C` on a CUDA build
(`cuda_kernels()`), or the CPU emulator of the same kernels in the tests
(`tests/cuda_emulator.py`), so that everything here is tested on machines without a GPU.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import torch

from fields.nn import backend
from fields.nn.activations import ACTIVATION_IDS
from fields.nn.backend import stream as _stream
from fields.nn.backend import warn_once
from fields.nn.mlp_reference import MLPSpec, mlp_reference

KERNEL_WIDTHS: tuple[int, ...] = (16, 32, 64, 128)
SKEW = 8  # 16-bit values of padding per packed weight row (csrc/kernels/mlp_cuda.h, kSkew)
MAX_DEPTH = 64
# Activations whose derivative the kernels take from the pre-activation (saved as fp32): those
# act(z) does not determine, and the saturating Tanh and Sigmoid (precision).
NEEDS_PREACTIVATION = frozenset({"SiLU", "Sine", "Squareplus", "Gaussian", "Finer", "Tanh",
                                 "Sigmoid"})
# fp16 deltas are scaled so that the largest |dL/dy| becomes about this (a power of two).
DELTA_TARGET = 2.0**8


def kernel_width(width: int) -> int:
    """The kernel a hidden width runs on (16, 32, 64 or 128); 0 above 128."""
    return next((k for k in KERNEL_WIDTHS if width <= k), 0)


def _pad16(n: int) -> int:
    return (n + 15) // 16 * 16


def layer_shapes(n_in: int, n_out: int, width: int, depth: int) -> list[tuple[int, int]]:
    """(out_pad, in_pad) of each packed layer: padded to multiples of 16, hidden layers to the
    kernel width."""
    kw = kernel_width(width)
    dims = [_pad16(n_in)] + [kw] * depth + [_pad16(n_out)]
    return [(dims[i + 1], dims[i]) for i in range(depth + 1)]


def pack_weights(weights: Sequence[torch.Tensor], n_in: int, n_out: int, width: int,
                 dtype: torch.dtype) -> torch.Tensor:
    """The packed 16-bit weights the kernels stage in shared memory.

    Args:
        weights: depth + 1 matrices, weights[l] of shape (out_dim, in_dim).
        dtype: torch.float16 or torch.bfloat16.
    Returns:
        (sum_l out_pad(l) * (in_pad(l) + SKEW),): layer by layer, each (out_pad, in_pad + SKEW)
        row-major with zeros outside the (out_dim, in_dim) weights.
    """
    blocks = []
    for w, (op, ip) in zip(weights, layer_shapes(n_in, n_out, width, len(weights) - 1),
                           strict=True):
        block = w.new_zeros((op, ip + SKEW), dtype=dtype)
        block[: w.shape[0], : w.shape[1]] = w.detach()
        blocks.append(block.reshape(-1))
    return torch.cat(blocks)


def pack_biases(biases: Sequence[torch.Tensor], n_in: int, n_out: int,
                width: int) -> torch.Tensor:
    """(sum_l out_pad(l),) float32: each layer's bias, zero-padded; empty without biases."""
    if not biases:
        return torch.empty(0)
    parts = []
    for b, (op, _) in zip(biases, layer_shapes(n_in, n_out, width, len(biases) - 1), strict=True):
        part = b.new_zeros(op, dtype=torch.float32)
        part[: b.shape[0]] = b.detach()
        parts.append(part)
    return torch.cat(parts)


class MLPKernels(Protocol):
    """The kernels' contract (`fields._C` on CUDA, or the emulator in the tests).

    ``dims`` is ``(n_in, n_out, kernel_width, depth, act_id, out_act_id, bias)``; ``half`` is 0
    for fp16 and 1 for bf16; ``stream`` the cudaStream_t to launch on, as an integer.
    """

    def mlp_cuda_forward(self, x: torch.Tensor, weights: torch.Tensor, biases: torch.Tensor,
                         dims: list[int], omega: float, half: int, save: bool, out16: bool,
                         stream: int) -> list[torch.Tensor]:
        """x (N, n_in) 16-bit -> [y (N, n_out) fp32, or 16-bit with out16] or, with save,
        [y, a (depth, N, kw) 16-bit,
        z (depth, N, kw) fp32 (empty unless the hidden activation needs it), z_out (N, n_out)
        fp32 (likewise for the output activation)]."""
        ...

    def mlp_cuda_double_backward(self, dy: torch.Tensor, scale_v: float, u: torch.Tensor,
                                 scale_u: float, weights: torch.Tensor, a: torch.Tensor,
                                 z: torch.Tensor, y: torch.Tensor, z_out: torch.Tensor,
                                 dims: list[int], omega: float, half: int, need_dx: bool,
                                 need_dv: bool, stream: int) -> list[torch.Tensor]:
        """Second derivatives (csrc/kernels/mlp_cuda.h, DoubleBackwardArgs): dy (N, n_out)
        fp32, u (N, n_in) 16-bit (dL/dg times scale_u) -> [adot, delta, delta_out, zbar,
        zbar_out (16-bit), dx, dv (fp32, empty unless asked)]."""
        ...

    def mlp_cuda_backward(self, dy: torch.Tensor, scale: float, weights: torch.Tensor,
                          a: torch.Tensor, z: torch.Tensor, y: torch.Tensor,
                          z_out: torch.Tensor, dims: list[int], omega: float, half: int,
                          need_dx: bool, stream: int) -> list[torch.Tensor]:
        """dy (N, n_out) fp32, y as the forward gave it -> [delta (depth, N, kw) 16-bit,
        delta_out (N, n_out) 16-bit, both times `scale`, dx (N, n_in) fp32 (empty unless
        need_dx)]."""
        ...


def cuda_kernels() -> MLPKernels | None:
    """`fields._C` when it was built with the CUDA kernels, else None."""
    return backend.cuda_kernels()


# Shared memory one block may use, by default: the H100's and H200's opt-in limit. `shared_limit`
# gives a device's own (A100: 163 KB).
DEFAULT_SHARED_LIMIT = 227 * 1024


def shared_bytes(n_in: int, n_out: int, width: int, depth: int, bias: bool) -> int:
    """Shared memory the forward kernel stages: the packed 16-bit weights, then fp32 biases
    (csrc/kernels/mlp_cuda.cu, shared_bytes)."""
    shapes = layer_shapes(n_in, n_out, width, depth)
    n = sum(op * (ip + SKEW) for op, ip in shapes) * 2
    return n + (sum(op for op, _ in shapes) * 4 if bias else 0)


@functools.cache
def _device_facts(index: int) -> tuple[int, str]:
    props = torch.cuda.get_device_properties(index)
    limit = int(getattr(props, "shared_memory_per_block_optin", DEFAULT_SHARED_LIMIT))
    major, minor = props.major, props.minor
    why = "" if major >= 8 else (f"the GPU has compute capability {major}.{minor}; the "
                                 "tensor-core kernels need 8.0 (Ampere) or newer")
    return limit, why


def _index(device: torch.device) -> int:
    return device.index if device.index is not None else torch.cuda.current_device()


def shared_limit(device: torch.device) -> int:
    """The opt-in shared memory per block of a CUDA device (DEFAULT_SHARED_LIMIT elsewhere)."""
    return _device_facts(_index(device))[0] if device.type == "cuda" else DEFAULT_SHARED_LIMIT


def compute_capability_reason(device: torch.device) -> str:
    """'' when the device runs the kernels (mma.sync m16n8k16 needs compute capability 8.0)."""
    return _device_facts(_index(device))[1] if device.type == "cuda" else ""


def unsupported(n_in: int, n_out: int, width: int, depth: int, bias: bool = False,
                limit: int = DEFAULT_SHARED_LIMIT) -> str:
    """Why these kernels cannot run the network ('' when they can)."""
    if kernel_width(width) == 0:
        return f"width {width} exceeds {KERNEL_WIDTHS[-1]}"
    if depth > MAX_DEPTH:
        return f"depth {depth} exceeds {MAX_DEPTH}"
    need = shared_bytes(n_in, n_out, width, depth, bias)
    if need > limit:
        return (f"its weights need {need} bytes of shared memory, more than the {limit} one "
                "block may have (too deep or too wide)")
    return ""


def _mm_f32(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a @ b in fp32 from 16-bit operands: fp32 accumulation and output (no fp16 overflow of
    the sum over millions of rows)."""
    if a.is_cuda:
        try:
            return torch.mm(a, b, out_dtype=torch.float32)
        except (RuntimeError, TypeError):
            pass
    return torch.mm(a.float(), b.float())


def delta_scale(dy: torch.Tensor, half: int, target: float = DELTA_TARGET) -> float:
    """A power of two that brings max |dy| near `target`, so that fp16 deltas neither
    underflow (a mean over millions of rows makes dy tiny) nor overflow; 1 for bf16."""
    if half == 1:
        return 1.0
    m = float(dy.abs().max()) if dy.numel() else 0.0
    if not math.isfinite(m) or m == 0.0:
        return 1.0
    return 2.0 ** max(-24, min(100, round(math.log2(target / m))))


def _finite(tensors: Sequence[torch.Tensor | None]) -> bool:
    """All of them finite (one device synchronisation)."""
    flags = [torch.isfinite(t).all() for t in tensors if t is not None and t.numel()]
    return bool(torch.stack(flags).all()) if flags else True


def _nonfinite(named: Sequence[tuple[str, torch.Tensor | None]]) -> str:
    """The names of those that are not finite (called once an overflow is known: a
    synchronisation each)."""
    return ", ".join(name for name, t in named
                     if t is not None and t.numel() and not bool(torch.isfinite(t).all()))


def _warn_overflow(what: str, where: str = "") -> None:
    warn_once(f"cuda-overflow-{what}",
               f"FusedMLP(backend='cuda'): fp16 overflowed in the {what}"
               + (f" ({where} not finite)" if where else "")
               + " (derivatives beyond fp16's range, e.g. SIREN or FINER with a large omega0); "
               "such calls take their gradients from the torch reference (correct, slower). "
               "bfloat16 inputs keep the kernels' range.")


def dims_of(spec: MLPSpec, has_bias: bool) -> list[int]:
    """The kernels' dims: (n_in, n_out, kernel_width, depth, act_id, out_act_id, bias)."""
    return [spec.n_in, spec.n_out, kernel_width(spec.width), spec.depth,
            ACTIVATION_IDS[spec.activation], ACTIVATION_IDS[spec.output_activation],
            int(has_bias)]


def pack(spec: MLPSpec, weights: Sequence[torch.Tensor], biases: Sequence[torch.Tensor],
         half: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(packed 16-bit weights, packed fp32 biases) on the weights' device."""
    dtype16 = torch.bfloat16 if half == 1 else torch.float16
    pw = pack_weights(weights, spec.n_in, spec.n_out, spec.width, dtype16)
    pb = pack_biases(biases, spec.n_in, spec.n_out, spec.width).to(pw.device)
    return pw, pb


def infer(x: torch.Tensor, spec: MLPSpec, kernels: MLPKernels, half: int, out16: bool,
          packed: tuple[torch.Tensor, torch.Tensor], has_bias: bool) -> torch.Tensor:
    """Forward only (no autograd node, nothing saved): x (N, n_in) -> (N, n_out)."""
    x16 = x.to(torch.bfloat16 if half == 1 else torch.float16).contiguous()
    return kernels.mlp_cuda_forward(x16, packed[0], packed[1], dims_of(spec, has_bias),
                                    spec.omega0, half, False, out16, _stream(x))[0]


@dataclass(frozen=True)
class _Meta:
    """What the backward functions need besides tensors."""

    spec: MLPSpec
    kernels: MLPKernels
    half: int
    dims: tuple[int, ...]

    @property
    def dtype16(self) -> torch.dtype:
        return torch.bfloat16 if self.half == 1 else torch.float16


def _reference_grads(meta: _Meta, dy: torch.Tensor, x: torch.Tensor,
                     params: Sequence[torch.Tensor], needs: Sequence[bool]):
    """(dx, dparams) of the torch reference, differentiable (create_graph): the fallback for
    derivatives the kernels do not give."""
    spec = meta.spec
    n = spec.n_layers
    inputs = [t for t, need in zip((x, *params), needs, strict=True) if need]
    with torch.enable_grad():
        # in the parameters' dtype (a 16-bit input with fp32 parameters: fp32, the input's
        # gradient cast back to its own dtype by autograd)
        ref = mlp_reference(x.to(params[0].dtype), params[:n], list(params[n:]) or None,
                            spec.activation, spec.output_activation, spec.omega0).to(dy.dtype)
        grads = iter(torch.autograd.grad(ref, inputs, dy, create_graph=True))
    dx = next(grads) if needs[0] else None
    return dx, [next(grads) if need else None for need in needs[1:]]


def _first_backward(meta: _Meta, dy: torch.Tensor, x: torch.Tensor, x16: torch.Tensor,
                    pw: torch.Tensor, y: torch.Tensor, a: torch.Tensor, z: torch.Tensor,
                    z_out: torch.Tensor, params: Sequence[torch.Tensor], needs: Sequence[bool]):
    """dL/dx and dL/d(weights, biases) from dL/dy on the kernels: `needs` for (x, *params).
    None when fp16 overflowed (the caller falls back to the reference)."""
    spec = meta.spec
    n = spec.n_layers
    weights, biases = params[:n], params[n:]
    dy = dy.float().contiguous()
    scale = delta_scale(dy, meta.half)
    delta, delta_out, dx = meta.kernels.mlp_cuda_backward(
        dy, scale, pw, a, z, y, z_out, list(meta.dims), spec.omega0, meta.half, bool(needs[0]),
        _stream(dy))
    inv = 1.0 / scale
    w_needs, b_needs = needs[1 : 1 + n], needs[1 + n :]
    dws: list[torch.Tensor | None] = []
    dbs: list[torch.Tensor | None] = []
    for layer in range(n):
        d_l = delta_out if layer == spec.depth else delta[layer, :, : spec.width]
        if w_needs[layer]:
            prev = x16 if layer == 0 else a[layer - 1, :, : spec.width]
            dws.append((_mm_f32(d_l.t(), prev) * inv).to(weights[layer].dtype))
        else:
            dws.append(None)
        if biases:
            dbs.append((d_l.float().sum(0) * inv).to(biases[layer].dtype)
                       if b_needs[layer] else None)
    if not _finite([dx if needs[0] else None, *dws, *dbs]):
        _warn_overflow("backward", _nonfinite(
            [("dx", dx if needs[0] else None), ("the deltas", delta), ("the output deltas",
             delta_out)] + [(f"dW{i}", w) for i, w in enumerate(dws)]
            + [(f"db{i}", b) for i, b in enumerate(dbs)]))
        return None
    dx_out = dx.to(x.dtype) if needs[0] else None
    return dx_out, dws + dbs


class CudaMLP(torch.autograd.Function):
    """Forward and backward on the tensor-core kernels. With create_graph the backward is
    itself differentiable (`_CudaMLPGrad`): second derivatives run on the kernels too.

    ``apply(x, spec, kernels, half, out16, packed_w, packed_b, *weights, *biases)``: `packed_*`
    from `pack` of the same weights and biases (the caller may cache them while the parameters
    do not change).
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, spec: MLPSpec, kernels: MLPKernels, half: int, out16: bool,
                packed_w: torch.Tensor, packed_b: torch.Tensor,
                *params: torch.Tensor) -> torch.Tensor:
        n = spec.n_layers
        has_bias = len(params) > n
        dims = dims_of(spec, has_bias)
        x16 = x.to(torch.bfloat16 if half == 1 else torch.float16).contiguous()
        save = any(ctx.needs_input_grad)
        outs = kernels.mlp_cuda_forward(x16, packed_w, packed_b, dims, spec.omega0, half, save,
                                        out16, _stream(x))
        ctx.meta = _Meta(spec, kernels, half, tuple(dims))
        if save:
            ctx.save_for_backward(x, x16, packed_w, *outs, *params)
        return outs[0]

    @staticmethod
    def backward(ctx, dy: torch.Tensor):
        x, x16, pw, y, a, z, z_out, *params = ctx.saved_tensors
        needs = (ctx.needs_input_grad[0], *ctx.needs_input_grad[7:])
        skip = (None,) * 6  # spec, kernels, half, out16, packed_w, packed_b
        if torch.is_grad_enabled():  # create_graph: a differentiable backward
            outs = _CudaMLPGrad.apply(dy, x, x16, pw, y.detach(), a, z, z_out, ctx.meta, needs,
                                      *params)
            return (outs[0], *skip, *outs[1:])
        got = _first_backward(ctx.meta, dy, x, x16, pw, y, a, z, z_out, params, needs)
        if got is None:
            dx, dparams = _reference_grads(ctx.meta, dy, x, params, needs)
            dx = dx.detach() if dx is not None else None
            dparams = [g.detach() if g is not None else None for g in dparams]
        else:
            dx, dparams = got
        return (dx, *skip, *dparams)


class _CudaMLPGrad(torch.autograd.Function):
    """The first backward as a function of (dy, x, weights, biases), so that a loss on its
    result (an eikonal term on dL/dx) differentiates through it: backward runs the kernels'
    second derivatives (`mlp_cuda_double_backward`). Higher orders, and losses on the weight
    gradients themselves, go through the torch reference (a warning)."""

    @staticmethod
    def forward(ctx, dy, x, x16, pw, y, a, z, z_out, meta: _Meta, needs, *params):
        got = _first_backward(meta, dy, x, x16, pw, y, a, z, z_out, params, needs)
        if got is None:
            dx, dparams = _reference_grads(meta, dy, x, params, needs)
            dx = dx.detach() if dx is not None else None
            dparams = [g.detach() if g is not None else None for g in dparams]
        else:
            dx, dparams = got
        ctx.meta, ctx.needs = meta, needs
        ctx.set_materialize_grads(False)  # unused outputs (the weight gradients) come as None
        ctx.save_for_backward(dy, x, x16, pw, y, a, z, z_out, *params)
        return (dx, *dparams)

    @staticmethod
    def backward(ctx, gdx, *gparams):
        dy, x, x16, pw, y, a, z, z_out, *params = ctx.saved_tensors
        meta: _Meta = ctx.meta
        spec = meta.spec
        n = spec.n_layers
        need_dy, need_x = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        p_needs = ctx.needs_input_grad[10:]
        skip = (None,) * 8  # x16, pw, y, a, z, z_out, meta, needs
        if torch.is_grad_enabled() or any(g is not None for g in gparams) or gdx is None:
            warn_once("cuda-third-order",
                       "FusedMLP(backend='cuda'): a derivative beyond the second (or of the "
                       "weight gradients) was requested; it runs through the torch reference "
                       "(correct, slower).")
            return _reference_double_backward(meta, dy, x, params, ctx.needs, gdx, gparams,
                                              (need_dy, need_x, *p_needs), skip)
        u = gdx.float()
        # both scales multiply in zbar: each brings its factor near 1 (not DELTA_TARGET)
        scale_u = delta_scale(u, meta.half, target=1.0)
        scale_v = delta_scale(dy.float(), meta.half, target=1.0)
        u16 = (u * scale_u).to(meta.dtype16).contiguous()
        adot, delta, delta_out, zbar, zbar_out, dx, dv = meta.kernels.mlp_cuda_double_backward(
            dy.float().contiguous(), scale_v, u16, scale_u, pw, a, z, y, z_out, list(meta.dims),
            spec.omega0, meta.half, bool(need_x), bool(need_dy), _stream(dy))
        inv = 1.0 / (scale_v * scale_u)
        weights, biases = params[:n], params[n:]
        dws: list[torch.Tensor | None] = []
        dbs: list[torch.Tensor | None] = []
        for layer in range(n):
            last = layer == spec.depth
            zb = zbar_out if last else zbar[layer, :, : spec.width]
            dl = delta_out if last else delta[layer, :, : spec.width]
            if p_needs[layer]:
                prev = x16 if layer == 0 else a[layer - 1, :, : spec.width]
                prev_dot = u16 if layer == 0 else adot[layer - 1, :, : spec.width]
                g = _mm_f32(zb.t(), prev) + _mm_f32(dl.t(), prev_dot)
                dws.append((g * inv).to(weights[layer].dtype))
            else:
                dws.append(None)
            if biases:
                dbs.append((zb.float().sum(0) * inv).to(biases[layer].dtype)
                           if p_needs[n + layer] else None)
        if not _finite([dx if need_x else None, dv if need_dy else None, *dws, *dbs]):
            _warn_overflow("second derivatives")
            return _reference_double_backward(meta, dy, x, params, ctx.needs, gdx, gparams,
                                              (need_dy, need_x, *p_needs), skip)
        return (dv.to(dy.dtype) if need_dy else None, dx.to(x.dtype) if need_x else None,
                *skip, *dws, *dbs)


def _reference_double_backward(meta, dy, x, params, needs, gdx, gparams, wanted, skip):
    """The backward of `_CudaMLPGrad` through the torch reference (any order)."""
    higher = torch.is_grad_enabled()  # autograd asked for a graph of this backward
    with torch.enable_grad():
        # dy keeps its own graph when it has one and a higher order is being built
        keep = higher and dy.requires_grad
        dy_r = dy if keep or not wanted[0] else dy.detach().requires_grad_(True)
        dx, dparams = _reference_grads(meta, dy_r, x, params, needs)
        outs, grads_out = [], []
        for t, g in zip((dx, *dparams), (gdx, *gparams), strict=True):
            if t is not None and g is not None:
                outs.append(t)
                grads_out.append(g)
        targets = [t for t, w in zip((dy_r, x, *params), wanted, strict=True) if w]
        got = iter(torch.autograd.grad(outs, targets, grads_out, allow_unused=True,
                                       create_graph=higher)
                   if outs else [None] * len(targets))
    res = [next(got) if w else None for w in wanted]
    return (res[0], res[1], *skip, *res[2:])
