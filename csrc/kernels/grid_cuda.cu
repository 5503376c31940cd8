// Multiresolution grid encoding on NVIDIA GPUs (see grid_cuda.h for the contract).
//
// Per point and level the cell is located once; its 2^D corners are addressed by combining
// per-dimension contributions (added for dense/tiled tables, xor-ed for hashed ones, as in
// grid_cpu.cpp), so a corner costs D integer operations and one gather of F values.
#include <algorithm>

#include "grid_cuda.h"
#include "warp_ops.cuh"

namespace fields {
namespace grid_cuda {
namespace {

constexpr int kThreads = 256;

// The spatial hash of Teschner et al. as used by instant-ngp: xor of coordinate * prime, with
// 1 for the first dimension so that neighbours along x stay close in memory.
__device__ __forceinline__ uint32_t prime(int d) {
  return d == 0 ? 1u : (d == 1 ? 2654435761u : (d == 2 ? 805459861u : 3674653429u));
}

template <int D>
struct Cell {
  uint32_t lo[D];  // address contribution of the lower corner along d
  uint32_t hi[D];  // ... of the upper corner
  float w[D];      // interpolation weight of the upper corner along d (0 for nearest)
  float dw[D];     // d w / d x_d (0 outside the box or for nearest)
};

// Locates point `xi` in level `lv`: clamps to [0, 1], finds the cell and the weights.
template <int D>
__device__ __forceinline__ void locate(const Level& lv, int interpolation, const float* xi,
                                       Cell<D>& c) {
  const uint32_t top = lv.res - 1;
  uint32_t stride = 1;
#pragma unroll
  for (int d = 0; d < D; ++d) {
    const float xr = xi[d];
    const bool inside = xr >= 0.f && xr <= 1.f;  // false for NaN
    const float xv = inside ? xr : (xr > 1.f ? 1.f : 0.f);
    const float pos = warp::add_rn(warp::mul_rn(xv, lv.scale), 0.5f);
    const int32_t cell = static_cast<int32_t>(pos);  // floor: pos >= 0.5
    const float f = pos - static_cast<float>(cell);
    const uint32_t p = static_cast<uint32_t>(cell) < top ? static_cast<uint32_t>(cell) : top;
    const uint32_t q = p + 1 < top ? p + 1 : top;
    if (interpolation == kSmoothstep) {
      c.w[d] = f * f * (3.f - 2.f * f);
      c.dw[d] = inside ? 6.f * f * (1.f - f) * lv.scale : 0.f;
    } else if (interpolation == kLinear) {
      c.w[d] = f;
      c.dw[d] = inside ? lv.scale : 0.f;
    } else {  // nearest: all the weight on the lower corner
      c.w[d] = 0.f;
      c.dw[d] = 0.f;
    }
    if (lv.addressing == kHash) {
      c.lo[d] = p * prime(d);
      c.hi[d] = q * prime(d);
    } else if (lv.addressing == kTiled) {
      c.lo[d] = (p % lv.tile) * stride;
      c.hi[d] = (q % lv.tile) * stride;
      stride *= lv.tile;
    } else {
      c.lo[d] = p * stride;
      c.hi[d] = q * stride;
      stride *= lv.res;
    }
  }
}

// Table entry of corner k (bit d set: upper along d).
template <int D>
__device__ __forceinline__ uint32_t corner_index(const Level& lv, const Cell<D>& c, int k) {
  const bool hashed = lv.addressing == kHash;
  uint32_t idx = 0;
#pragma unroll
  for (int d = 0; d < D; ++d) {
    const uint32_t v = (k >> d) & 1 ? c.hi[d] : c.lo[d];
    idx = hashed ? (idx ^ v) : (idx + v);
  }
  return hashed ? idx & (lv.size - 1) : idx;
}

template <int D>
__device__ __forceinline__ float corner_weight(const Cell<D>& c, int k) {
  float w = 1.f;
#pragma unroll
  for (int d = 0; d < D; ++d) w *= (k >> d) & 1 ? c.w[d] : 1.f - c.w[d];
  return w;
}

template <int T>
__device__ __forceinline__ float load(const void* table, size_t i) {
  if constexpr (T == kFloat16)
    return warp::value<warp::kF16>(static_cast<const uint16_t*>(table)[i]);
  else
    return static_cast<const float*>(table)[i];
}

__device__ __forceinline__ float load_dy(const void* dy, bool dy16, int64_t i) {
  return dy16 ? warp::value<warp::kF16>(static_cast<const uint16_t*>(dy)[i])
              : static_cast<const float*>(dy)[i];
}

template <int D, int F, int T>
__global__ void __launch_bounds__(kThreads) forward_kernel(const Grid g, const float* x, int64_t n,
                                                           const void* params, void* out,
                                                           bool out16) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  const int l = blockIdx.y;
  if (i >= n) return;
  const Level& lv = g.levels[l];
  Cell<D> c;
  locate<D>(lv, g.interpolation, x + i * D, c);
  float acc[F];
#pragma unroll
  for (int f = 0; f < F; ++f) acc[f] = 0.f;
#pragma unroll
  for (int k = 0; k < (1 << D); ++k) {
    const float w = corner_weight<D>(c, k);
    const size_t base = (static_cast<size_t>(lv.offset) + corner_index<D>(lv, c, k)) * F;
#pragma unroll
    for (int f = 0; f < F; ++f) acc[f] += w * load<T>(params, base + f);
  }
  const int64_t o = i * g.n_levels * F + l * F;
#pragma unroll
  for (int f = 0; f < F; ++f) {
    if (out16)
      static_cast<uint16_t*>(out)[o + f] = warp::bits<warp::kF16>(acc[f]);
    else
      static_cast<float*>(out)[o + f] = acc[f];
  }
}

template <int D, int F>
__global__ void __launch_bounds__(kThreads) backward_params_kernel(const Grid g, const float* x,
                                                                   int64_t n, const void* dy,
                                                                   bool dy16, float* dparams) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  const int l = blockIdx.y;
  if (i >= n) return;
  const Level& lv = g.levels[l];
  Cell<D> c;
  locate<D>(lv, g.interpolation, x + i * D, c);
  float gi[F];
  const int64_t o = i * g.n_levels * F + l * F;
#pragma unroll
  for (int f = 0; f < F; ++f) gi[f] = load_dy(dy, dy16, o + f);
#pragma unroll
  for (int k = 0; k < (1 << D); ++k) {
    const float w = corner_weight<D>(c, k);
    if (w == 0.f) continue;  // nearest, or a point on a cell face: nothing to add
    const size_t base = (static_cast<size_t>(lv.offset) + corner_index<D>(lv, c, k)) * F;
#pragma unroll
    for (int f = 0; f < F; ++f) warp::atomic_add(dparams + base + f, w * gi[f]);
  }
}

template <int D, int F, int T>
__global__ void __launch_bounds__(kThreads) backward_input_kernel(const Grid g, const float* x,
                                                                  int64_t n, const void* params,
                                                                  const void* dy, bool dy16,
                                                                  float* dx) {
  constexpr int kCorners = 1 << D;
  const int64_t i = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (i >= n) return;
  float acc[D];
#pragma unroll
  for (int d = 0; d < D; ++d) acc[d] = 0.f;
  if (g.interpolation != kNearest) {  // piecewise constant: zero almost everywhere
    for (int l = 0; l < g.n_levels; ++l) {
      const Level& lv = g.levels[l];
      Cell<D> c;
      locate<D>(lv, g.interpolation, x + i * D, c);
      const int64_t o = i * g.n_levels * F + l * F;
      // d out / d x_d = dw_d * sum over the cell's edges along d of (other dims' weights) *
      // (upper value - lower value); projected on dy first, one dot product per corner.
      float dot[kCorners];
#pragma unroll
      for (int k = 0; k < kCorners; ++k) {
        const size_t base = (static_cast<size_t>(lv.offset) + corner_index<D>(lv, c, k)) * F;
        float s = 0.f;
#pragma unroll
        for (int f = 0; f < F; ++f) s += load_dy(dy, dy16, o + f) * load<T>(params, base + f);
        dot[k] = s;
      }
#pragma unroll
      for (int d = 0; d < D; ++d) {
        float s = 0.f;
#pragma unroll
        for (int k = 0; k < kCorners; ++k) {
          if ((k >> d) & 1) continue;
          float w = 1.f;
#pragma unroll
          for (int e = 0; e < D; ++e) {
            if (e != d) w *= (k >> e) & 1 ? c.w[e] : 1.f - c.w[e];
          }
          s += w * (dot[k | (1 << d)] - dot[k]);
        }
        acc[d] += c.dw[d] * s;
      }
    }
  }
#pragma unroll
  for (int d = 0; d < D; ++d) dx[i * D + d] = acc[d];
}

enum class Kind { kForward, kParams, kInput };

struct Args {
  const float* x;
  int64_t n;
  const void* params;
  void* out;
  bool out16;
  const void* dy;
  bool dy16;
  float* dparams;
  float* dx;
};

template <int D, int F, int T>
cudaError_t launch(Kind kind, const Grid& g, const Args& a, cudaStream_t stream) {
  if (a.n == 0) return cudaSuccess;
  const unsigned blocks = static_cast<unsigned>((a.n + kThreads - 1) / kThreads);
  const dim3 grid(blocks, kind == Kind::kInput ? 1 : static_cast<unsigned>(g.n_levels), 1);
#ifdef FIELDS_WARP_EMULATOR
  (void)stream;
  switch (kind) {
    case Kind::kForward:
      emu::launch(grid, kThreads, 0, [&] {
        forward_kernel<D, F, T>(g, a.x, a.n, a.params, a.out, a.out16);
      });
      break;
    case Kind::kParams:
      emu::launch(grid, kThreads, 0, [&] {
        backward_params_kernel<D, F>(g, a.x, a.n, a.dy, a.dy16, a.dparams);
      });
      break;
    case Kind::kInput:
      emu::launch(grid, kThreads, 0, [&] {
        backward_input_kernel<D, F, T>(g, a.x, a.n, a.params, a.dy, a.dy16, a.dx);
      });
      break;
  }
  return cudaSuccess;
#else
  switch (kind) {
    case Kind::kForward:
      forward_kernel<D, F, T><<<grid, kThreads, 0, stream>>>(g, a.x, a.n, a.params, a.out,
                                                             a.out16);
      break;
    case Kind::kParams:
      backward_params_kernel<D, F><<<grid, kThreads, 0, stream>>>(g, a.x, a.n, a.dy, a.dy16,
                                                                   a.dparams);
      break;
    case Kind::kInput:
      backward_input_kernel<D, F, T><<<grid, kThreads, 0, stream>>>(g, a.x, a.n, a.params,
                                                                    a.dy, a.dy16, a.dx);
      break;
  }
  return cudaGetLastError();
#endif
}

template <int D, int F>
cudaError_t by_table(Kind kind, const Grid& g, TableType t, const Args& a, cudaStream_t s) {
  return t == kFloat16 ? launch<D, F, kFloat16>(kind, g, a, s)
                       : launch<D, F, kFloat32>(kind, g, a, s);
}

template <int D>
cudaError_t by_features(Kind kind, const Grid& g, TableType t, const Args& a, cudaStream_t s) {
  switch (g.n_features) {
    case 1: return by_table<D, 1>(kind, g, t, a, s);
    case 2: return by_table<D, 2>(kind, g, t, a, s);
    case 4: return by_table<D, 4>(kind, g, t, a, s);
    case 8: return by_table<D, 8>(kind, g, t, a, s);
    default: return cudaErrorInvalidValue;
  }
}

cudaError_t run(Kind kind, const Grid& g, TableType t, const Args& a, cudaStream_t s) {
  if (check_grid(g)[0] != '\0') return cudaErrorInvalidValue;
  switch (g.n_dims) {
    case 1: return by_features<1>(kind, g, t, a, s);
    case 2: return by_features<2>(kind, g, t, a, s);
    case 3: return by_features<3>(kind, g, t, a, s);
    case 4: return by_features<4>(kind, g, t, a, s);
    default: return cudaErrorInvalidValue;
  }
}

}  // namespace

const char* check_grid(const Grid& g) {
  if (g.n_dims < 1 || g.n_dims > 4) return "n_dims must be 1..4";
  const int f = g.n_features;
  if (f != 1 && f != 2 && f != 4 && f != 8) return "n_features must be 1, 2, 4 or 8";
  if (g.n_levels < 1 || g.n_levels > kMaxLevels) return "n_levels must be 1..64";
  if (g.interpolation < kNearest || g.interpolation > kSmoothstep) return "bad interpolation";
  for (int l = 0; l < g.n_levels; ++l) {
    const Level& lv = g.levels[l];
    if (lv.res < 1 || lv.size < 1) return "a level has no vertices";
    if (!(lv.scale >= 0.f)) return "a level has a negative scale";
    if (lv.addressing == kHash && (lv.size & (lv.size - 1)) != 0)
      return "a hashed level's size must be a power of two";
    if (lv.addressing == kTiled && lv.tile < 1) return "a tiled level needs tile >= 1";
    if (lv.addressing < kDense || lv.addressing > kTiled) return "bad addressing";
  }
  return "";
}

cudaError_t forward(const Grid& g, TableType table, const float* x, int64_t n,
                    const void* params, void* out, bool out16, cudaStream_t stream) {
  Args a{x, n, params, out, out16, nullptr, false, nullptr, nullptr};
  return run(Kind::kForward, g, table, a, stream);
}

cudaError_t backward_params(const Grid& g, const float* x, int64_t n, const void* dy,
                            bool dy16, float* dparams, cudaStream_t stream) {
  Args a{x, n, nullptr, nullptr, false, dy, dy16, dparams, nullptr};
  return run(Kind::kParams, g, kFloat32, a, stream);
}

cudaError_t backward_input(const Grid& g, TableType table, const float* x, int64_t n,
                           const void* params, const void* dy, bool dy16, float* dx,
                           cudaStream_t stream) {
  Args a{x, n, params, nullptr, false, dy, dy16, nullptr, dx};
  return run(Kind::kInput, g, table, a, stream);
}

}  // namespace grid_cuda
}  // namespace fields
