"""The CUDA kernels on the CPU emulator (csrc/emulator/), for tests on machines without a GPU:
builds a shared library with the host compiler (the CUDA headers come from the toolkit next to
nvcc, for types only) and exposes it with the contracts of `fields.nn.mlp_cuda.MLPKernels` and
`fields.nn.grid_cuda.GridKernels`, on CPU tensors.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
from functools import cache
from pathlib import Path

import pytest
import torch

from fields.nn.activations import ACTIVATION_IDS
from fields.nn.mlp_cuda import NEEDS_PREACTIVATION

ROOT = Path(__file__).resolve().parents[1]
CSRC = ROOT / "csrc"
SOURCES = [CSRC / "emulator" / "warp_emulator.cpp", CSRC / "emulator" / "mlp_emulated.cpp",
           CSRC / "emulator" / "grid_emulated.cpp", CSRC / "emulator" / "march_emulated.cpp",
           CSRC / "emulator" / "batched_mlp_emulated.cpp"]
# every kernel source and header: a change to any of them rebuilds the emulated library
DEPENDS = [*SOURCES, CSRC / "emulator" / "warp_emulator.h",
           *sorted((CSRC / "kernels").glob("*_cuda*")), CSRC / "kernels" / "warp_ops.cuh",
           CSRC / "kernels" / "mlp_cpu.h"]
FLAGS = ["-O1", "-std=c++17", "-shared", "-fPIC", "-x", "c++"]


def cuda_include() -> Path | None:
    """The CUDA toolkit's include folder (CUDA_HOME, or next to nvcc), or None."""
    candidates = []
    if os.environ.get("CUDA_HOME"):
        candidates.append(Path(os.environ["CUDA_HOME"]) / "include")
    nvcc = shutil.which("nvcc")
    if nvcc:
        real = Path(nvcc).resolve()
        candidates.append(real.parent.parent / "include")
        # a wrapper script (exec /path/to/cuda/bin/nvcc) hides the toolkit: read it
        try:
            text = real.read_text(errors="ignore")[:4096]
        except OSError:
            text = ""
        for word in text.split():
            if word.endswith("/bin/nvcc"):
                candidates.append(Path(word).parent.parent / "include")
    candidates.append(Path("/usr/local/cuda/include"))
    for c in candidates:
        if (c / "cuda_runtime_api.h").exists():
            return c
    return None


def skip_reason(provider: str) -> str:
    """Why the tests of a kernel provider skip here ('' when they run): "emulated" needs g++
    and the CUDA headers; "cuda" a GPU and fields._C built with the CUDA kernels."""
    if provider == "emulated":
        return unavailable_reason()
    if not torch.cuda.is_available():
        return "needs a CUDA device"
    from fields import _ext

    return "" if _ext.has_cuda_kernels() else "fields._C was built without the CUDA kernels"


# The providers every CUDA-kernel test runs on: parametrize a fixture with these.
PROVIDERS = ["emulated", pytest.param("cuda", marks=pytest.mark.gpu)]


def unavailable_reason() -> str:
    if shutil.which("g++") is None:
        return "no g++ to build the CUDA emulator"
    if cuda_include() is None:
        return "no CUDA toolkit headers (nvcc / CUDA_HOME) for the CUDA emulator"
    return ""


@cache
def library() -> ctypes.CDLL:
    """Builds (once per source version, cached in ~/.cache/fields/emulator) and loads it."""
    inc = cuda_include()
    if inc is None:
        raise RuntimeError(unavailable_reason())
    h = hashlib.sha256()
    for p in DEPENDS:
        h.update(p.read_bytes())
    h.update(" ".join([*FLAGS, str(inc)]).encode())
    cache_root = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    cache_dir = cache_root / "fields" / "emulator"
    cache_dir.mkdir(parents=True, exist_ok=True)
    lib = cache_dir / f"mlp_emu_{h.hexdigest()[:16]}.so"
    if not lib.exists():
        with tempfile.TemporaryDirectory(dir=cache_dir) as tmp:
            out = Path(tmp) / lib.name
            cmd = ["g++", *FLAGS, f"-I{CSRC}", f"-I{inc}", *map(str, SOURCES), "-o", str(out)]
            r = subprocess.run(cmd, capture_output=True, text=True)
            if r.returncode != 0:
                raise RuntimeError(f"building the CUDA emulator failed:\n{' '.join(cmd)}\n"
                                   f"{r.stderr[-4000:]}")
            os.replace(out, lib)  # atomic: a concurrent build never sees half a library
    dll = ctypes.CDLL(str(lib))
    p, i64, f32, i32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_float, ctypes.c_int
    dll.fields_emu_mlp_forward.argtypes = [p, f32, i32, p, i64, p, p, p, i32, p, p, p, p, i32]
    dll.fields_emu_mlp_backward.argtypes = [p, f32, i32, p, i64, f32, p, p, p, p, i32, p, p, p, p,
                                            p, i32]
    dll.fields_emu_mlp_double_backward.argtypes = [p, f32, i32, p, i64, f32, p, f32, p, p, p, p,
                                                   i32, p, p, p, p, p, p, p, p, p, p, i32]
    for name in ("fields_emu_mlp_packed_size",):
        getattr(dll, name).argtypes = [p]
        getattr(dll, name).restype = i64
    for name in ("fields_emu_mlp_packed_offset", "fields_emu_mlp_bias_offset"):
        getattr(dll, name).argtypes = [p, i32]
        getattr(dll, name).restype = i64
    dll.fields_emu_warp_instructions.restype = ctypes.c_uint64
    dll.fields_emu_march.argtypes = [i32, p, i32, p, i32, f32, f32, f32, p, p, p, p, i64, p, p,
                                     p, p, p, p, i32]
    dll.fields_emu_grid.argtypes = [i32, i32, i32, i32, i32, p, p, i32, p, i64, p, p, i32, p, i32,
                                    p, p, p, i32]
    dll.fields_emu_batched_mlp.argtypes = [i32, p, f32, i64, p, p, p, p, i64, p, p, p, p, p, p,
                                           p, i32]
    dll.fields_emu_batched_mlp_saved_size.argtypes = [p, i64]
    dll.fields_emu_batched_mlp_saved_size.restype = i64
    return dll


def _ptr(t: torch.Tensor | None) -> int | None:
    return None if t is None or t.numel() == 0 else t.data_ptr()


def _dims(dims: list[int]) -> ctypes.Array:
    return (ctypes.c_int * 7)(*dims)


def _check(rc: int, err: ctypes.Array, what: str) -> None:
    if rc != 0:
        raise RuntimeError(f"emulated {what}: {err.value.decode()}")


# activation ids whose derivatives the kernels take from saved fp32 pre-activations
NEEDS_PRE = {ACTIVATION_IDS[a] for a in NEEDS_PREACTIVATION}
HAS_SECOND = set(range(3, 12))  # every activation but None, ReLU, LeakyReLU


class EmulatedKernels:
    """`MLPKernels` on the emulator: CPU tensors in and out, the kernels' own arithmetic."""

    host_memory = True  # FusedMLP: these kernels take CPU tensors

    def mlp_cuda_forward(self, x, weights, biases, dims, omega, half, save, out16=False,
                         stream=0):
        n_in, n_out, kw, depth, act, out_act, _ = dims
        rows = x.shape[0]
        assert x.is_contiguous() and x.shape[1] == n_in
        dtype16 = torch.bfloat16 if half else torch.float16
        y = torch.empty(rows, n_out, dtype=dtype16 if out16 else torch.float32)
        a = torch.empty(depth, rows, kw, dtype=dtype16) if save else torch.empty(0)
        z = torch.empty(depth, rows, kw) if save and act in NEEDS_PRE else torch.empty(0)
        z_out = torch.empty(rows, n_out) if save and out_act in NEEDS_PRE else torch.empty(0)
        err = ctypes.create_string_buffer(512)
        rc = library().fields_emu_mlp_forward(
            _dims(dims), omega, half, _ptr(x), rows, _ptr(weights.contiguous()), _ptr(biases),
            _ptr(y), int(out16), _ptr(a), _ptr(z), _ptr(z_out), err, 512)
        _check(rc, err, "forward")
        return [y, a, z, z_out] if save else [y]

    def mlp_cuda_backward(self, dy, scale, weights, a, z, y, z_out, dims, omega, half,
                          need_dx, stream=0):
        n_in, n_out, kw, depth, *_ = dims
        rows = dy.shape[0]
        dtype16 = torch.bfloat16 if half else torch.float16
        delta = torch.empty(depth, rows, kw, dtype=dtype16)
        delta_out = torch.empty(rows, n_out, dtype=dtype16)
        dx = torch.empty(rows, n_in) if need_dx else torch.empty(0)
        err = ctypes.create_string_buffer(512)
        rc = library().fields_emu_mlp_backward(
            _dims(dims), omega, half, _ptr(dy.contiguous()), rows, scale,
            _ptr(weights.contiguous()), _ptr(a), _ptr(z), _ptr(y), int(y.dtype != torch.float32),
            _ptr(z_out), _ptr(delta),
            _ptr(delta_out), _ptr(dx), err, 512)
        _check(rc, err, "backward")
        return [delta, delta_out, dx]

    def mlp_cuda_double_backward(self, dy, scale_v, u16, scale_u, weights, a, z, y, z_out, dims,
                                 omega, half, need_dx, need_dv, stream=0):
        n_in, n_out, kw, depth, act, *_ = dims
        rows = dy.shape[0]
        dtype16 = torch.bfloat16 if half else torch.float16
        t = torch.empty(depth, rows, kw) if act in HAS_SECOND else torch.empty(0)
        adot = torch.empty(depth, rows, kw, dtype=dtype16)
        delta = torch.empty(depth, rows, kw, dtype=dtype16)
        zbar = torch.empty(depth, rows, kw, dtype=dtype16)
        delta_out = torch.empty(rows, n_out, dtype=dtype16)
        zbar_out = torch.empty(rows, n_out, dtype=dtype16)
        dx = torch.empty(rows, n_in) if need_dx else torch.empty(0)
        dv = torch.empty(rows, n_out) if need_dv else torch.empty(0)
        err = ctypes.create_string_buffer(512)
        rc = library().fields_emu_mlp_double_backward(
            _dims(dims), omega, half, _ptr(dy.contiguous()), rows, scale_v,
            _ptr(u16.contiguous()), scale_u, _ptr(weights.contiguous()), _ptr(a), _ptr(z),
            _ptr(y), int(y.dtype != torch.float32), _ptr(z_out), _ptr(t), _ptr(adot),
            _ptr(delta), _ptr(delta_out), _ptr(zbar), _ptr(zbar_out), _ptr(dx), _ptr(dv), err,
            512)
        _check(rc, err, "double backward")
        return [adot, delta, delta_out, zbar, zbar_out, dx, dv]

    @staticmethod
    def packed_size(dims: list[int]) -> int:
        return int(library().fields_emu_mlp_packed_size(_dims(dims)))

    @staticmethod
    def packed_offset(dims: list[int], layer: int) -> int:
        return int(library().fields_emu_mlp_packed_offset(_dims(dims), layer))

    @staticmethod
    def warp_instructions() -> int:
        return int(library().fields_emu_warp_instructions())


class EmulatedGridKernels:
    """`GridKernels` on the emulator: CPU tensors in and out, the kernels' own arithmetic."""

    host_memory = True  # GridEncoding: these kernels take CPU tensors

    @staticmethod
    def _call(kind, x, params, scales, meta, n_features, interpolation, out=None, out16=False,
              dy=None, dparams=None, dx=None):
        sc = (ctypes.c_double * len(scales))(*scales)
        me = (ctypes.c_int64 * len(meta))(*meta)
        err = ctypes.create_string_buffer(512)
        rc = library().fields_emu_grid(
            kind, x.shape[1], n_features, len(scales), interpolation, sc, me,
            int(params.dtype == torch.float16), _ptr(x), x.shape[0], _ptr(params), _ptr(out),
            int(out16), _ptr(dy), int(dy is not None and dy.dtype == torch.float16),
            _ptr(dparams), _ptr(dx), err, 512)
        _check(rc, err, "grid")

    def grid_cuda_forward(self, x, params, scales, meta, n_features, interpolation, out16,
                          stream=0):
        assert x.dtype == torch.float32 and x.is_contiguous()
        out = torch.empty(x.shape[0], len(scales) * n_features,
                          dtype=torch.float16 if out16 else torch.float32)
        self._call(0, x, params.contiguous(), scales, meta, n_features, interpolation, out=out,
                   out16=out16)
        return out

    def grid_cuda_backward(self, dy, x, params, scales, meta, n_features, interpolation,
                           need_params, need_dx, stream=0):
        dy = dy.contiguous()
        dparams = torch.zeros(params.numel()) if need_params else torch.empty(0)
        dx = torch.empty_like(x) if need_dx else torch.empty(0)
        if need_params:
            self._call(1, x, params, scales, meta, n_features, interpolation, dy=dy,
                       dparams=dparams)
        if need_dx:
            self._call(2, x, params.contiguous(), scales, meta, n_features, interpolation, dy=dy,
                       dx=dx)
        return [dparams, dx]


class EmulatedMarchKernels:
    """`fields._C.march_rays_cuda` on the emulator: the binding's two passes (count, scan,
    fill) over the kernels' own arithmetic, on CPU tensors."""

    host_memory = True

    def march_rays_cuda(self, origins, directions, t_min, t_max, occupancy, aabb, contraction,
                        step_size, cone_angle, max_step, stream=0):
        n = origins.shape[0]
        occ = occupancy.to(torch.uint8).contiguous()
        keep = [occ, aabb.float().contiguous(), origins.contiguous(), directions.contiguous(),
                t_min.contiguous(), t_max.contiguous()]
        args = [occ.data_ptr(), occ.shape[0], keep[1].data_ptr(), contraction, step_size,
                cone_angle, max_step, _ptr(keep[2]), _ptr(keep[3]), _ptr(keep[4]),
                _ptr(keep[5]), n]
        counts = torch.zeros(n, dtype=torch.int64)
        err = ctypes.create_string_buffer(512)
        _check(library().fields_emu_march(0, *args, _ptr(counts), None, None, None, None, err,
                                          512), err, "march (count)")
        offsets = torch.zeros(n + 1, dtype=torch.int64)
        offsets[1:] = torch.cumsum(counts, 0)
        total = int(offsets[-1])
        ray_indices = torch.empty(total, dtype=torch.int64)
        t_starts = torch.empty(total)
        t_ends = torch.empty(total)
        if total:
            _check(library().fields_emu_march(1, *args, None, _ptr(offsets), _ptr(ray_indices),
                                              _ptr(t_starts), _ptr(t_ends), err, 512),
                   err, "march (fill)")
        return [ray_indices, t_starts, t_ends, offsets]


class EmulatedBatchedKernels:
    """`fields.nn.batched_mlp_cuda.BatchedKernels` on the emulator: CPU tensors in and out."""

    host_memory = True  # BatchedMLP: these kernels take CPU tensors

    @staticmethod
    def _pointers(tensors):
        return (ctypes.c_void_p * max(len(tensors), 1))(*[t.data_ptr() for t in tensors])

    @staticmethod
    def _dims(x_cols, weights, has_bias, width, act, out_act):
        return [x_cols, weights[-1].shape[1], width, len(weights) - 1, act, out_act,
                int(has_bias)]

    def batched_mlp_cuda_forward(self, x, offsets, weights, biases, width, activation,
                                 output_activation, omega, save, stream=0):
        assert x.is_contiguous() and x.dtype == torch.float32
        weights = [w.detach().contiguous() for w in weights]
        biases = [b.detach().contiguous() for b in biases]
        dims = self._dims(x.shape[1], weights, bool(biases), width, activation,
                          output_activation)
        rows = x.shape[0]
        y = torch.empty(rows, dims[1])
        z = (torch.empty(library().fields_emu_batched_mlp_saved_size(_dims(dims), rows))
             if save else torch.empty(0))
        err = ctypes.create_string_buffer(512)
        rc = library().fields_emu_batched_mlp(
            0, _dims(dims), omega, weights[0].shape[0], self._pointers(weights),
            self._pointers(biases), _ptr(x), _ptr(offsets), rows, _ptr(y), _ptr(z), None,
            None, None, None, err, 512)
        _check(rc, err, "batched forward")
        return [y, z] if save else [y]

    def batched_mlp_cuda_backward(self, dy, x, offsets, weights, has_bias, z, width,
                                  activation, output_activation, omega, need_dx, stream=0):
        weights = [w.detach().contiguous() for w in weights]
        dims = self._dims(x.shape[1], weights, has_bias, width, activation, output_activation)
        rows = x.shape[0]
        dx = torch.empty(rows, dims[0]) if need_dx else torch.empty(0)
        gw = [torch.zeros_like(w) for w in weights]
        gb = [torch.zeros(w.shape[0], w.shape[1]) for w in weights] if has_bias else []
        err = ctypes.create_string_buffer(512)
        rc = library().fields_emu_batched_mlp(
            1, _dims(dims), omega, weights[0].shape[0], self._pointers(weights), None, _ptr(x),
            _ptr(offsets), rows, None, _ptr(z), _ptr(dy.contiguous()), _ptr(dx),
            self._pointers(gw), self._pointers(gb), err, 512)
        _check(rc, err, "batched backward")
        return [dx, *gw, *gb]
