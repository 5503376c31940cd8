"""`FusedMLP`: a coordinate MLP with interchangeable backends that share one parameter layout.

Backends:

- ``"torch"``: the reference, plain torch ops (`mlp_reference`); any dtype, device and
  derivative order.
- ``"cpu"``: the fused C++ kernels (`csrc/kernels/mlp_cpu*`), float32. The whole network runs
  per tile of 96 rows with activations in cache; forward and backward (input and weight
  gradients) are fused kernels. A second derivative (``create_graph=True``) is computed by
  differentiating the reference instead, with a warning the first time.
- ``"cuda"``: the tensor-core kernels (`csrc/kernels/mlp_cuda.cu`, `fields.nn.mlp_cuda`):
  fp16 or bf16 inputs and weights (fp32 parameters are rounded per call), fp32 accumulation,
  widths up to 128, output in the input's 16-bit type (fp32 for other inputs). Forward,
  backward and second derivatives (a loss on the input gradient) are fused kernels; third
  and higher orders differentiate the reference (a warning).
  Needs `fields._C` built where torch has CUDA and nvcc is present, and a GPU of compute
  capability 8.0 or newer.
- ``"auto"``: picks, per call, the fastest backend that supports the request (``"cuda"`` for
  fp16/bf16 CUDA tensors when built with it; ``"cpu"`` for float32 CPU tensors and a width
  that is a multiple of 16; else ``"torch"``), and says which (``last_backend``; a warning
  once when it has to fall back to the reference).

Parameters: ``weights[l]`` of shape ``(out_dim, in_dim)`` (the ``nn.Linear`` convention) and,
with ``bias=True``, ``biases[l]`` of shape ``(out_dim,)``, for the ``depth + 1`` layers
``n_in -> width -> ... -> width -> n_out``. A state dict therefore loads into any backend.
"""

from __future__ import annotations

import logging
import math

import torch
from torch import nn
from torch.optim.optimizer import register_optimizer_step_post_hook

from fields import _ext
from fields.nn import mlp_cuda
from fields.nn.activations import ACTIVATION_IDS, canonical_activation
from fields.nn.backend import (
    BACKENDS,
    NO_CUDA_KERNELS,
    check_backend,
    cpu_kernels_reason,
    scope,
    select_backend,
    warn_once,
)
from fields.nn.mlp_reference import MLPSpec, mlp_reference

logger = logging.getLogger("fields")

# Optimiser steps taken in this process (any torch.optim optimiser). The packed CUDA weights
# are keyed on it as well as on the parameters' versions: the fused optimisers (Adam(fused=True),
# what the NeRF task uses) update parameters in place without bumping their version counters,
# so the versions alone would leave the kernels running on the weights they were packed from.
_optimizer_steps = 0


def _count_optimizer_step(optimizer: torch.optim.Optimizer, args: object, kwargs: object) -> None:
    global _optimizer_steps
    _optimizer_steps += 1


register_optimizer_step_post_hook(_count_optimizer_step)

__all__ = ["BACKENDS", "CPU_MAX_WIDTH", "FusedMLP", "MLPSpec", "mlp_reference",
           "use_cuda_kernels"]

CPU_MAX_WIDTH = 1024


def _cpu_forward(
    x: torch.Tensor,
    spec: MLPSpec,
    weights: list[torch.Tensor],
    biases: list[torch.Tensor],
    save: bool,
) -> list[torch.Tensor]:
    """The fused CPU forward: [y (N, n_out)] or, with save, [y, activations for backward...]."""
    with scope("kernel:mlp forward"):
        return _ext.extension().mlp_cpu_forward(
            x,
            weights,
            biases,
            spec.width,
            ACTIVATION_IDS[spec.activation],
            ACTIVATION_IDS[spec.output_activation],
            spec.omega0,
            save,
        )


class _CpuMLP(torch.autograd.Function):
    """Fused CPU forward/backward; double backward goes through the reference."""

    @staticmethod
    def forward(
        ctx, x: torch.Tensor, spec: MLPSpec, save: bool, *params: torch.Tensor
    ) -> torch.Tensor:
        n = spec.n_layers
        save = save and any(ctx.needs_input_grad)
        outs = _cpu_forward(x, spec, list(params[:n]), list(params[n:]), save)
        ctx.spec = spec
        ctx.n_params = len(params)
        if save:
            ctx.save_for_backward(x, *params, *outs[1:])
        return outs[0]

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        spec: MLPSpec = ctx.spec
        x, *rest = ctx.saved_tensors
        params = rest[: ctx.n_params]
        saved = rest[ctx.n_params :]
        n = spec.n_layers
        weights, biases = params[:n], params[n:]
        needs = ctx.needs_input_grad
        if torch.is_grad_enabled():
            # create_graph=True: the fused kernels give first derivatives only, so
            # differentiate the reference, whose backward is itself differentiable.
            warn_once(
                "cpu-double-backward",
                "FusedMLP(backend='cpu'): a higher-order derivative was requested; the fused "
                "CPU kernels compute first derivatives only, so this backward runs through "
                "the torch reference (correct, slower).",
            )
            inputs = [
                t for t, need in zip((x, *params), (needs[0], *needs[3:]), strict=False) if need
            ]
            y = mlp_reference(
                x, weights, biases or None, spec.activation, spec.output_activation, spec.omega0
            )
            grads = iter(torch.autograd.grad(y, inputs, grad_out, create_graph=True))
            dx = next(grads) if needs[0] else None
            dparams = [next(grads) if need else None for need in needs[3:]]
            return (dx, None, None, *dparams)
        with scope("kernel:mlp backward"):
            outs = _ext.extension().mlp_cpu_backward(
                grad_out.contiguous(),
                x,
                list(weights),
                bool(biases),
                list(saved),
                spec.width,
                ACTIVATION_IDS[spec.activation],
                ACTIVATION_IDS[spec.output_activation],
                spec.omega0,
                bool(needs[0]),
            )
        dx = outs[0] if needs[0] else None
        return (dx, None, None, *outs[1:])


def cpu_shape_unsupported(spec: MLPSpec) -> str:
    """Why the fused CPU kernels cannot run a network of this shape ('' when they can)."""
    if cpu_kernels_reason():
        return cpu_kernels_reason()
    if spec.width % 16 != 0 or spec.width > CPU_MAX_WIDTH:
        return f"width {spec.width} is not a multiple of 16 in [16, {CPU_MAX_WIDTH}]"
    if spec.depth > 62:
        return f"depth {spec.depth} exceeds 62"
    return ""


def _check_positive_int(value: object, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"FusedMLP: {name} must be an integer >= {minimum}, got {value!r}")
    return value


class FusedMLP(nn.Module):
    """A fully-connected network ``n_in -> width x depth -> n_out``.

    Args:
        n_in: input features.
        n_out: output features.
        width: neurons per hidden layer (the fused CPU kernels take multiples of 16:
            16, 32, 64, 128, ...; other widths run on the torch reference).
        depth: number of hidden layers (>= 1); the network has depth + 1 weight matrices.
        activation: hidden activation (see `fields.nn.activations`).
        output_activation: activation of the output layer.
        bias: add a bias to every layer (tiny-cuda-nn's networks have none; default False).
        backend: "auto", "torch", "cpu" or "cuda".
        omega0: frequency of the Sine and Finer activations (SIREN's omega_0, default 30),
            inverse width of the Gaussian one.
        dtype, device: of the parameters.

    Input (..., n_in), output (..., n_out).
    """

    def __init__(
        self,
        n_in: int,
        n_out: int,
        width: int = 64,
        depth: int = 2,
        activation: str = "ReLU",
        output_activation: str = "None",
        *,
        bias: bool = False,
        backend: str = "auto",
        omega0: float = 30.0,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        _check_positive_int(n_in, "n_in")
        _check_positive_int(n_out, "n_out")
        _check_positive_int(width, "width")
        _check_positive_int(depth, "depth")
        check_backend("FusedMLP", backend)
        if not (isinstance(omega0, (int, float)) and math.isfinite(omega0) and omega0 > 0):
            raise ValueError(f"FusedMLP: omega0 must be a positive number, got {omega0!r}")
        self.spec = MLPSpec(
            n_in=n_in,
            n_out=n_out,
            width=width,
            depth=depth,
            activation=canonical_activation(activation, "activation"),
            output_activation=canonical_activation(output_activation, "output_activation"),
            bias=bool(bias),
            omega0=float(omega0),
        )
        self.backend = backend
        self.last_backend: str | None = None
        self._static_reason: str | None = None  # why the CPU kernels cannot run, once known
        # kernels to use instead of fields._C's CUDA ones (the tests' CPU emulator)
        self.kernels_override: mlp_cuda.MLPKernels | None = None
        self._packed: tuple[tuple, tuple[torch.Tensor, torch.Tensor]] | None = None
        if backend == "cpu":
            reason = self._cpu_unsupported_static()
            if reason:
                raise ValueError(f"FusedMLP: backend='cpu' cannot run this network: {reason}")
        if backend == "cuda":
            reason = self._cuda_unsupported_static()
            if reason:
                raise ValueError(f"FusedMLP: backend='cuda' cannot run this network: {reason}")
        factory = {"dtype": dtype, "device": device}
        self.weights = nn.ParameterList(
            [nn.Parameter(torch.empty(o, i, **factory)) for i, o in self.spec.layer_dims()]
        )
        self.biases = nn.ParameterList(
            [nn.Parameter(torch.empty(o, **factory)) for _, o in self.spec.layer_dims()]
            if bias
            else []
        )
        self.reset_parameters()

    # -- shape accessors (tiny-cuda-nn names) --
    @property
    def n_input_dims(self) -> int:
        return self.spec.n_in

    @property
    def n_output_dims(self) -> int:
        return self.spec.n_out

    def reset_parameters(self) -> None:
        """SIREN initialisation for Sine and Finer (FINER keeps SIREN's weights); nn.Linear's
        uniform(+-1/sqrt(fan_in)) for Gaussian hidden layers; He-uniform for ReLU-like hidden
        layers; Glorot (Xavier) uniform otherwise. Biases start at zero (uniform in
        +-1/sqrt(fan_in) for Sine, Finer and Gaussian).
        """
        spec = self.spec
        sine_like = spec.activation in ("Sine", "Finer")
        relu_like = spec.activation in ("ReLU", "LeakyReLU", "SiLU", "Softplus", "Squareplus")
        with torch.no_grad():
            for i, w in enumerate(self.weights):
                fan_out, fan_in = w.shape
                last = i == spec.depth
                act = spec.output_activation if last else spec.activation
                if sine_like:
                    bound = 1.0 / fan_in if i == 0 else math.sqrt(6.0 / fan_in) / spec.omega0
                elif act in ("Sine", "Finer"):
                    bound = math.sqrt(6.0 / fan_in) / spec.omega0
                elif spec.activation == "Gaussian" and not last:
                    bound = 1.0 / math.sqrt(fan_in)
                elif relu_like and not last:
                    bound = math.sqrt(6.0 / fan_in)
                else:
                    bound = math.sqrt(6.0 / (fan_in + fan_out))
                w.uniform_(-bound, bound)
            for b, w in zip(self.biases, self.weights, strict=False):  # no biases: empty
                if sine_like or spec.activation == "Gaussian":
                    b.uniform_(-1.0 / math.sqrt(w.shape[1]), 1.0 / math.sqrt(w.shape[1]))
                else:
                    b.zero_()

    # -- backend selection --
    def _cpu_unsupported_static(self) -> str:
        return cpu_shape_unsupported(self.spec)

    @property
    def cuda_kernels(self) -> mlp_cuda.MLPKernels | None:
        return self.kernels_override or mlp_cuda.cuda_kernels()

    def _cuda_unsupported_static(self, limit: int = mlp_cuda.DEFAULT_SHARED_LIMIT) -> str:
        if self.cuda_kernels is None:
            return NO_CUDA_KERNELS
        s = self.spec
        return mlp_cuda.unsupported(s.n_in, s.n_out, s.width, s.depth, s.bias, limit)

    def _cuda_unsupported(self, x: torch.Tensor, strict_dtype: bool) -> str:
        on_host = bool(getattr(self.cuda_kernels, "host_memory", False))
        reason = self._cuda_unsupported_static(
            mlp_cuda.DEFAULT_SHARED_LIMIT if on_host else mlp_cuda.shared_limit(x.device))
        if reason:
            return reason
        if x.device.type != "cuda" and not on_host:
            return f"the input is on {x.device}"
        reason = mlp_cuda.compute_capability_reason(x.device)
        if reason:
            return reason
        if strict_dtype and x.dtype not in (torch.float16, torch.bfloat16):
            return f"the input is {x.dtype}, not float16 or bfloat16"
        weights, biases = self._params()
        if any(p.device != x.device for p in weights + biases):
            return f"the parameters are not on the input's device {x.device}"
        return ""

    def invalidate_packed(self) -> None:
        """Forgets the packed CUDA weights. They are rebuilt when a parameter's version changes,
        which in-place edits through `.data` do not record: call this after such edits."""
        self._packed = None

    def _cuda_packed(self, weights: list[torch.Tensor], biases: list[torch.Tensor],
                     half: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The packed 16-bit weights, rebuilt only when a parameter changed: its version, or an
        optimiser step anywhere (fused optimisers leave the versions as they were)."""
        try:
            key = (half, _optimizer_steps,
                   *((p.data_ptr(), p._version) for p in weights + biases))
        except RuntimeError:  # inference tensors have no version counter: always repack
            key = None
        if key is None or self._packed is None or self._packed[0] != key:
            packed = mlp_cuda.pack(self.spec, weights, biases, half)
            self._packed = None if key is None else (key, packed)
            return packed
        return self._packed[1]

    def _params(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        # ParameterList's own iteration is slow on a per-call path; read its dict directly.
        return list(self.weights._parameters.values()), list(self.biases._parameters.values())

    def _cpu_unsupported(self, x: torch.Tensor, params: list[torch.Tensor]) -> str:
        if self._static_reason is None:
            self._static_reason = self._cpu_unsupported_static()
        if self._static_reason:
            return self._static_reason
        if x.device.type != "cpu":
            return f"the input is on {x.device}"
        if x.dtype != torch.float32 or any(
            p.dtype != torch.float32 or p.device.type != "cpu" for p in params
        ):
            return f"the input or parameters are not float32 on the CPU (input {x.dtype})"
        return ""

    def select_backend(self, x: torch.Tensor) -> str:
        """The backend a call with input `x` runs on."""
        weights, biases = self._params()
        return self._select(x, weights + biases)

    def _select(self, x: torch.Tensor, params: list[torch.Tensor]) -> str:
        return select_backend(
            "FusedMLP", self.backend, x,
            cpu_reason=lambda: self._cpu_unsupported(x, params),
            cuda_reason=lambda strict: self._cuda_unsupported(x, strict_dtype=strict),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        spec = self.spec
        if x.shape[-1] != spec.n_in:
            raise ValueError(f"FusedMLP: expected input (..., {spec.n_in}), got {tuple(x.shape)}")
        lead = x.shape[:-1]
        x2 = x.reshape(-1, spec.n_in)
        weights, biases = self._params()
        backend = self._select(x2, weights + biases)
        if backend != self.last_backend:
            logger.info("FusedMLP: running on backend %r", backend)
            self.last_backend = backend
        if backend == "cuda":
            y = self._cuda_forward(x2, weights, biases)
        elif backend == "cpu":
            grad = torch.is_grad_enabled() and (
                x2.requires_grad or any(p.requires_grad for p in weights + biases)
            )
            if grad:
                y = _CpuMLP.apply(x2, spec, True, *weights, *biases)
            else:  # inference: straight to the kernel, no autograd node
                y = _cpu_forward(x2, spec, weights, biases, save=False)[0]
        else:
            y = mlp_reference(
                x2, weights, biases or None, spec.activation, spec.output_activation, spec.omega0
            )
        return y.reshape(*lead, spec.n_out)

    def _cuda_forward(self, x: torch.Tensor, weights: list[torch.Tensor],
                      biases: list[torch.Tensor]) -> torch.Tensor:
        half = 1 if x.dtype == torch.bfloat16 else 0
        out16 = x.dtype in (torch.float16, torch.bfloat16)
        packed = self._cuda_packed(weights, biases, half)
        kernels = self.cuda_kernels
        if torch.is_grad_enabled() and (
            x.requires_grad or any(p.requires_grad for p in weights + biases)
        ):
            return mlp_cuda.CudaMLP.apply(x, self.spec, kernels, half, out16, *packed, *weights,
                                          *biases)
        return mlp_cuda.infer(x, self.spec, kernels, half, out16, packed, bool(biases))

    def extra_repr(self) -> str:
        s = self.spec
        return (
            f"n_in={s.n_in}, n_out={s.n_out}, width={s.width}, depth={s.depth}, "
            f"activation={s.activation}, output_activation={s.output_activation}, "
            f"bias={s.bias}, backend={self.backend}"
            + (f", omega0={s.omega0}"
               if {"Sine", "Finer", "Gaussian"} & {s.activation, s.output_activation} else "")
        )


def use_cuda_kernels(module: nn.Module) -> list[str]:
    """Switches every `FusedMLP` of `module` left on ``"auto"`` to ``"cuda"`` where the CUDA
    kernels can run its shape, so that float32 inputs run the 16-bit tensor-core kernels
    (fp32 accumulation, output in fp32) instead of the fp32 reference that ``"auto"`` keeps
    for them: what a radiance field trained on a GPU wants (tiny-cuda-nn's networks are
    fp16 throughout). Returns why each network left on ``"auto"`` could not switch."""
    kept = []
    for name, m in module.named_modules():
        if isinstance(m, FusedMLP) and m.backend == "auto":
            reason = m._cuda_unsupported_static()
            if reason:
                kept.append(f"{name or type(m).__name__}: {reason}")
            else:
                m.backend = "cuda"
    return kept
