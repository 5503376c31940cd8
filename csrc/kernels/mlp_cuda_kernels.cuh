// The fused-MLP kernels on tensor cores, as templates (see mlp_cuda.h for the contract);
// mlp_cuda_f16.cu and mlp_cuda_bf16.cu instantiate them, one precision each, so that the
// two build in parallel (`make -j cuda-objects`); mlp_cuda.cu holds the host-side API.
//
// Fragment layouts of mma.sync.m16n8k16 (g = lane / 4, q = lane % 4), which everything
// below relies on:
//   A (16 x 16, row-major), 4 registers of two 16-bit values:
//     a0 = (row g, cols 2q, 2q+1), a1 = (row g+8, same), a2 = (row g, cols 2q+8, 2q+9),
//     a3 = (row g+8, cols 2q+8, 2q+9)
//   B (16 x 8, "col"): b0 = (rows 2q, 2q+1; col g), b1 = (rows 2q+8, 2q+9; col g)
//   C (16 x 8, fp32): c0, c1 = (row g, cols 2q, 2q+1), c2, c3 = (row g+8, same)
// so the C fragments of n-tiles 2k and 2k+1 of one layer, rounded to 16 bits, are exactly the
// A fragment of k-tile k of the next: activations never leave registers.
//
// Forward y = x W^T: B[k][n] = W[n][k], i.e. rows of W read by ldmatrix (non-transposed).
// Backward g = delta W: B[k][n] = W[k][n], read by ldmatrix.trans.
#pragma once

#include <algorithm>

#include "mlp_cpu.h"
#include "mlp_cuda.h"
#include "warp_ops.cuh"

namespace fields {
namespace mlp_cuda {

enum class Kind { kForward, kBackward, kDoubleBackward };

// One precision's kernels, launched (mlp_cuda_f16.cu, mlp_cuda_bf16.cu).
cudaError_t run_f16(Kind kind, const Dims& d, const void* args, cudaStream_t stream);
cudaError_t run_bf16(Kind kind, const Dims& d, const void* args, cudaStream_t stream);

namespace {

// Activation ids and constants: the CPU kernels' (mlp_cpu.h), the same as
// fields/nn/activations.py.
using mlp_cpu::kExponential;
using mlp_cpu::kFiner;
using mlp_cpu::kGaussian;
using mlp_cpu::kLeakyReLU;
using mlp_cpu::kLeakySlope;
using mlp_cpu::kNone;
using mlp_cpu::kNumActivations;
using mlp_cpu::kReLU;
using mlp_cpu::kSigmoid;
using mlp_cpu::kSiLU;
using mlp_cpu::kSine;
using mlp_cpu::kSoftplus;
using mlp_cpu::kSquareplus;
using mlp_cpu::kTanh;

// Activations whose derivatives the kernels compute from the fp32 pre-activation (saved by the
// training forward): those that cannot be recovered from act(z), and the saturating Tanh and
// Sigmoid, whose 16-bit outputs would lose their derivatives' precision (fp16 tanh(4) rounds
// to 0.99951: 1 - a^2 is then 27% off).
__host__ __device__ constexpr bool needs_pre(int act) {
  return act == kSiLU || act == kSine || act == kSquareplus || act == kGaussian ||
         act == kFiner || act == kTanh || act == kSigmoid;
}

__host__ __device__ constexpr int row_tiles(int width) {
  return width <= 32 ? 4 : (width <= 64 ? 2 : 1);
}

__device__ __forceinline__ float act_value(int act, float z, float omega) {
  switch (act) {
    case kReLU: return fmaxf(z, 0.f);
    case kLeakyReLU: return z > 0.f ? z : kLeakySlope * z;
    case kSoftplus: return z > 20.f ? z : log1pf(expf(z));
    case kSigmoid: return 1.f / (1.f + expf(-z));
    case kTanh: return tanhf(z);
    case kExponential: return expf(z);
    case kSiLU: return z / (1.f + expf(-z));
    case kSine: return sinf(omega * z);
    case kSquareplus: return 0.5f * (z + sqrtf(z * z + 4.f));
    case kGaussian: {
      const float u = omega * z;
      return expf(-u * u);
    }
    case kFiner: return sinf(omega * (fabsf(z) + 1.f) * z);
    default: return z;
  }
}

// d act / dz from the pre-activation z when needs_preactivation(act), else from a = act(z).
__device__ __forceinline__ float act_derivative(int act, float v, float omega) {
  switch (act) {
    case kReLU: return v > 0.f ? 1.f : 0.f;
    case kLeakyReLU: return v > 0.f ? 1.f : kLeakySlope;
    case kSoftplus: return -expm1f(-v);
    case kSigmoid: {  // from z
      const float a = 1.f / (1.f + expf(-v));
      return a * (1.f - a);
    }
    case kTanh: {  // from z
      const float a = tanhf(v);
      return 1.f - a * a;
    }
    case kExponential: return v;
    case kSiLU: {
      const float s = 1.f / (1.f + expf(-v));
      return s * (1.f + v * (1.f - s));
    }
    case kSine: return omega * cosf(omega * v);
    case kSquareplus: return 0.5f * (1.f + v / sqrtf(v * v + 4.f));
    case kGaussian: {
      const float u = omega * v;
      return -2.f * omega * u * expf(-u * u);
    }
    case kFiner:
      return omega * (2.f * fabsf(v) + 1.f) * cosf(omega * (fabsf(v) + 1.f) * v);
    default: return 1.f;
  }
}

// d^2 act / dz^2, from the pre-activation z when needs_preactivation(act), else from a = act(z).
__device__ __forceinline__ float act_second(int act, float v, float omega) {
  switch (act) {
    case kSoftplus: {
      const float s = -expm1f(-v);  // sigmoid(z)
      return s * (1.f - s);
    }
    case kSigmoid: {  // from z
      const float a = 1.f / (1.f + expf(-v));
      return a * (1.f - a) * (1.f - 2.f * a);
    }
    case kTanh: {  // from z
      const float a = tanhf(v);
      return -2.f * a * (1.f - a * a);
    }
    case kExponential: return v;
    case kSiLU: {
      const float s = 1.f / (1.f + expf(-v));
      return s * (1.f - s) * (2.f + v * (1.f - 2.f * s));
    }
    case kSine: return -omega * omega * sinf(omega * v);
    case kSquareplus: {
      const float r = sqrtf(v * v + 4.f);
      return 2.f / (r * r * r);
    }
    case kGaussian: {
      const float u = omega * v;
      return 2.f * omega * omega * expf(-u * u) * (2.f * u * u - 1.f);
    }
    case kFiner: {
      const float phi = omega * (fabsf(v) + 1.f) * v;
      const float dphi = omega * (2.f * fabsf(v) + 1.f);
      const float sgn = v > 0.f ? 1.f : (v < 0.f ? -1.f : 0.f);
      return -sinf(phi) * dphi * dphi + cosf(phi) * 2.f * omega * sgn;
    }
    default: return 0.f;  // None, ReLU, LeakyReLU (almost everywhere)
  }
}

__host__ __device__ constexpr bool second_nonzero(int act) {
  return !(act == kNone || act == kReLU || act == kLeakyReLU);
}

// The activation id as a compile-time constant: `with_act(act, f)` calls f(Act<id>{}) once,
// so that a kernel switches on the activation once per layer (or output tile) and each
// activation's epilogue is straight-line code. A switch per value, unrolled over a tile's
// 64 values, made the forward kernel 65k instructions long (about 1 MB of code): every layer
// walked all of it, and the instruction cache, not the tensor cores, set the speed.
template <int A>
struct Act {
  static constexpr int id = A;
};

template <typename F>
__device__ __forceinline__ void with_act(int act, F&& f) {
  switch (act) {
    case kReLU: f(Act<kReLU>{}); return;
    case kLeakyReLU: f(Act<kLeakyReLU>{}); return;
    case kSoftplus: f(Act<kSoftplus>{}); return;
    case kSigmoid: f(Act<kSigmoid>{}); return;
    case kTanh: f(Act<kTanh>{}); return;
    case kExponential: f(Act<kExponential>{}); return;
    case kSiLU: f(Act<kSiLU>{}); return;
    case kSine: f(Act<kSine>{}); return;
    case kSquareplus: f(Act<kSquareplus>{}); return;
    case kGaussian: f(Act<kGaussian>{}); return;
    case kFiner: f(Act<kFiner>{}); return;
    default: f(Act<kNone>{}); return;
  }
}

// Rows of a tile of the double-backward kernel: it holds two accumulators per warp.
__host__ __device__ constexpr int dbl_row_tiles(int width) { return width <= 32 ? 2 : 1; }

// The B fragments of two n-tiles (16 outputs from n0) for k-tile k0 of y = x W^T, W in shared
// memory with row stride ld: matrices (n0..+7, k0..+7), (n0..+7, k0+8..), (n0+8.., k0..),
// (n0+8.., k0+8..) -> r0, r1 = b0, b1 of n-tile n0; r2, r3 = those of n-tile n0 + 8.
__device__ __forceinline__ void load_b(uint32_t (&r)[4], const uint16_t* w, int ld, int n0,
                                       int k0, int lane) {
  warp::ldmatrix_x4(r, w + (n0 + (lane >> 4) * 8 + (lane & 7)) * ld + k0 + ((lane >> 3) & 1) * 8);
}

// The B fragments of two n-tiles (columns n0.. of W) for k-tile k0 (rows k0.. of W) of
// g = delta W: matrices (rows k0..+7, cols n0..+7) -> b0 of n-tile n0, (k0+8.., n0..) -> b1,
// (k0.., n0+8..) -> b0 of n-tile n0 + 8, (k0+8.., n0+8..) -> its b1.
__device__ __forceinline__ void load_bt(uint32_t (&r)[4], const uint16_t* w, int ld, int n0,
                                        int k0, int lane) {
  warp::ldmatrix_x4_trans(r, w + (k0 + ((lane >> 3) & 1) * 8 + (lane & 7)) * ld + n0 + (lane >> 4) * 8);
}

// The A fragment of rows r0.. and columns k0.. of a (rows, n) row-major 16-bit matrix, zero
// outside it. `pairs`: n is even and the base 4-byte aligned, so pairs load as one word.
__device__ __forceinline__ void load_a_global(uint32_t (&a)[4], const uint16_t* x, int64_t rows,
                                              int n, int64_t r0, int k0, int g, int q,
                                              bool pairs) {
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int64_t row = r0 + g + (i & 1) * 8;
    const int col = k0 + 2 * q + (i >> 1) * 8;
    uint32_t v = 0;
    if (row < rows && col < n) {
      const uint16_t* p = x + row * n + col;
      if (pairs) {
        v = *reinterpret_cast<const uint32_t*>(p);
      } else {
        v = p[0];
        if (col + 1 < n) v |= static_cast<uint32_t>(p[1]) << 16;
      }
    }
    a[i] = v;
  }
}

// Copies `count` 16-bit weights (a multiple of 8) and `n_bias` floats into shared memory.
__device__ __forceinline__ void stage(uint16_t* sw, const void* weights, size_t count,
                                      float* sb, const float* biases, int n_bias) {
  const uint4* src = reinterpret_cast<const uint4*>(weights);
  uint4* dst = reinterpret_cast<uint4*>(sw);
  for (size_t i = threadIdx.x; i < count / 8; i += blockDim.x) dst[i] = src[i];
  for (int i = threadIdx.x; i < n_bias; i += blockDim.x) sb[i] = biases[i];
  warp::sync_block();
}

template <int MT, int NT>
__device__ __forceinline__ void init_acc(float (&acc)[MT][NT][4], const float* bias, int q) {
#pragma unroll
  for (int nt = 0; nt < NT; ++nt) {
    const float b0 = bias ? bias[nt * 8 + 2 * q] : 0.f;
    const float b1 = bias ? bias[nt * 8 + 2 * q + 1] : 0.f;
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
      acc[mt][nt][0] = b0;
      acc[mt][nt][1] = b1;
      acc[mt][nt][2] = b0;
      acc[mt][nt][3] = b1;
    }
  }
}

// Rounds the accumulators of a W-wide layer to the A fragments of the next layer.
template <int P, int MT, int NT>
__device__ __forceinline__ void to_fragments(const float (&acc)[MT][NT][4],
                                             uint32_t (&frag)[MT][NT / 2][4]) {
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
    for (int kt = 0; kt < NT / 2; ++kt) {
      frag[mt][kt][0] = warp::pack<P>(acc[mt][2 * kt][0], acc[mt][2 * kt][1]);
      frag[mt][kt][1] = warp::pack<P>(acc[mt][2 * kt][2], acc[mt][2 * kt][3]);
      frag[mt][kt][2] = warp::pack<P>(acc[mt][2 * kt + 1][0], acc[mt][2 * kt + 1][1]);
      frag[mt][kt][3] = warp::pack<P>(acc[mt][2 * kt + 1][2], acc[mt][2 * kt + 1][3]);
    }
  }
}

// Weights of layer l in the packed buffer (16-bit values), W-wide hidden layers.
template <int W>
__device__ __forceinline__ size_t layer_offset(int l, int ld0) {
  return l == 0 ? 0 : static_cast<size_t>(W) * ld0 + static_cast<size_t>(l - 1) * W * (W + kSkew);
}

// Sets every accumulator to zero.
template <int MT, int NT>
__device__ __forceinline__ void zero(float (&acc)[MT][NT][4]) {
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int nt = 0; nt < NT; ++nt)
#pragma unroll
      for (int i = 0; i < 4; ++i) acc[mt][nt][i] = 0.f;
}

// The GEMMs of the kernels, each a loop of ldmatrix + mma over 16 x 16 tiles. "b": through
// W^T (forward: rows of W read as they are); "bt": through W (backward: transposed reads).

// acc += frag W^T over KT k-tiles: a hidden layer's forward, its input in registers.
template <int P, int MT, int NT, int KT>
__device__ __forceinline__ void gemm_b(float (&acc)[MT][NT][4], const uint32_t (&frag)[MT][KT][4],
                                       const uint16_t* w, int ld, int lane) {
#pragma unroll
  for (int kt = 0; kt < KT; ++kt) {
#pragma unroll
    for (int np = 0; np < NT / 2; ++np) {
      uint32_t b[4];
      load_b(b, w, ld, np * 16, kt * 16, lane);
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
        warp::mma<P>(acc[mt][2 * np], frag[mt][kt], b[0], b[1]);
        warp::mma<P>(acc[mt][2 * np + 1], frag[mt][kt], b[2], b[3]);
      }
    }
  }
}

// acc += X W^T for rows row0.. of a 16-bit (rows, n) matrix X read from global memory, over
// k_tiles of 16 columns: the first layer.
template <int P, int MT, int NT>
__device__ __forceinline__ void gemm_global_b(float (&acc)[MT][NT][4], const uint16_t* x,
                                              int64_t rows, int n, int64_t row0, int k_tiles,
                                              bool pairs, const uint16_t* w, int ld, int lane) {
  const int g = lane >> 2, q = lane & 3;
  for (int kt = 0; kt < k_tiles; ++kt) {
    uint32_t a[MT][4];
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
      load_a_global(a[mt], x, rows, n, row0 + mt * 16, kt * 16, g, q, pairs);
#pragma unroll
    for (int np = 0; np < NT / 2; ++np) {
      uint32_t b[4];
      load_b(b, w, ld, np * 16, kt * 16, lane);
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
        warp::mma<P>(acc[mt][2 * np], a[mt], b[0], b[1]);
        warp::mma<P>(acc[mt][2 * np + 1], a[mt], b[2], b[3]);
      }
    }
  }
}

// o += frag W[n0 .. n0 + 16)^T: 16 outputs of a layer whose KT input k-tiles are in frag.
template <int P, int MT, int KT>
__device__ __forceinline__ void tile_b(float (&o)[MT][2][4], const uint32_t (&frag)[MT][KT][4],
                                       const uint16_t* w, int ld, int n0, int lane) {
#pragma unroll
  for (int kt = 0; kt < KT; ++kt) {
    uint32_t b[4];
    load_b(b, w, ld, n0, kt * 16, lane);
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
      warp::mma<P>(o[mt][0], frag[mt][kt], b[0], b[1]);
      warp::mma<P>(o[mt][1], frag[mt][kt], b[2], b[3]);
    }
  }
}

// o += frag W[:, n0 .. n0 + 16): 16 columns of frag W, frag's KT k-tiles the rows of W.
template <int P, int MT, int KT>
__device__ __forceinline__ void tile_bt(float (&o)[MT][2][4], const uint32_t (&frag)[MT][KT][4],
                                        const uint16_t* w, int ld, int n0, int lane) {
#pragma unroll
  for (int kt = 0; kt < KT; ++kt) {
    uint32_t b[4];
    load_bt(b, w, ld, n0, kt * 16, lane);
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
      warp::mma<P>(o[mt][0], frag[mt][kt], b[0], b[1]);
      warp::mma<P>(o[mt][1], frag[mt][kt], b[2], b[3]);
    }
  }
}

// acc += a W[k0 .. k0 + 16, :]: one k-tile (16 rows of W, e.g. 16 outputs of the last layer)
// of the backward GEMM, for every column of acc.
template <int P, int MT, int NT>
__device__ __forceinline__ void gemm_bt_ktile(float (&acc)[MT][NT][4], const uint32_t (&a)[MT][1][4],
                                              const uint16_t* w, int ld, int k0, int lane) {
#pragma unroll
  for (int np = 0; np < NT / 2; ++np) {
    uint32_t b[4];
    load_bt(b, w, ld, np * 16, k0, lane);
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
      warp::mma<P>(acc[mt][2 * np], a[mt][0], b[0], b[1]);
      warp::mma<P>(acc[mt][2 * np + 1], a[mt][0], b[2], b[3]);
    }
  }
}

// acc += frag W over KT k-tiles: the backward through a hidden layer.
template <int P, int MT, int NT, int KT>
__device__ __forceinline__ void gemm_bt(float (&acc)[MT][NT][4], const uint32_t (&frag)[MT][KT][4],
                                        const uint16_t* w, int ld, int lane) {
#pragma unroll
  for (int kt = 0; kt < KT; ++kt) {
#pragma unroll
    for (int np = 0; np < NT / 2; ++np) {
      uint32_t b[4];
      load_bt(b, w, ld, np * 16, kt * 16, lane);
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
        warp::mma<P>(acc[mt][2 * np], frag[mt][kt], b[0], b[1]);
        warp::mma<P>(acc[mt][2 * np + 1], frag[mt][kt], b[2], b[3]);
      }
    }
  }
}

// dst[row, n0 + c] = o * scale for the 16 columns of o inside (rows, n).
template <int MT>
__device__ __forceinline__ void store_tile(const float (&o)[MT][2][4], float* dst, int64_t rows,
                                           int n, int64_t row0, int n0, float scale, int lane) {
  const int g = lane >> 2, q = lane & 3;
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
    for (int e = 0; e < 8; ++e) {
      const int t = e >> 2, i = e & 3;
      const int64_t row = row0 + mt * 16 + g + (i >> 1) * 8;
      const int col = n0 + t * 8 + 2 * q + (i & 1);
      if (row < rows && col < n) dst[row * n + col] = o[mt][t][i] * scale;
    }
  }
}

template <int P, int W>
__global__ void __launch_bounds__(kWarps * 32) forward_kernel(const Dims d, const ForwardArgs args) {
  constexpr int MT = row_tiles(W);
  constexpr int NT = W / 8;
  constexpr int KT = W / 16;
  constexpr int LD = W + kSkew;
  uint16_t* sw = reinterpret_cast<uint16_t*>(warp::dynamic_shared());
  const int in_pad0 = d.in_pad(0);
  const int ld0 = in_pad0 + kSkew;
  const int out_pad = d.out_pad(d.depth);
  const size_t n_w = layer_offset<W>(d.depth, ld0) + static_cast<size_t>(out_pad) * LD;
  float* sb = reinterpret_cast<float*>(sw + n_w);
  stage(sw, args.weights, n_w, sb, args.biases, d.bias ? d.depth * W + out_pad : 0);

  const int lane = threadIdx.x & 31;
  const int g = lane >> 2, q = lane & 3;
  const int64_t rows = args.rows;
  const uint16_t* x = static_cast<const uint16_t*>(args.x);
  uint16_t* a_save = static_cast<uint16_t*>(args.a);
  const bool x_pairs = (d.n_in % 2 == 0) && (reinterpret_cast<uintptr_t>(x) % 4 == 0);
  const int64_t n_tiles = (rows + 16 * MT - 1) / (16 * MT);
  const int64_t stride = static_cast<int64_t>(gridDim.x) * kWarps;

  for (int64_t tile = static_cast<int64_t>(blockIdx.x) * kWarps + (threadIdx.x >> 5);
       tile < n_tiles; tile += stride) {
    const int64_t row0 = tile * 16 * MT;
    float acc[MT][NT][4];
    uint32_t frag[MT][KT][4];

    for (int l = 0; l < d.depth; ++l) {
      const uint16_t* wl = sw + layer_offset<W>(l, ld0);
      init_acc<MT, NT>(acc, d.bias ? sb + l * W : nullptr, q);
      if (l == 0)
        gemm_global_b<P, MT, NT>(acc, x, rows, d.n_in, row0, in_pad0 / 16, x_pairs, wl, ld0,
                                 lane);
      else
        gemm_b<P, MT, NT, KT>(acc, frag, wl, LD, lane);
      // Epilogue: pre-activations saved (if asked), activation, post-activations saved.
      with_act(d.act, [&](auto act) {
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
          for (int nt = 0; nt < NT; ++nt) {
#pragma unroll
            for (int h = 0; h < 2; ++h) {
              const int64_t row = row0 + mt * 16 + g + h * 8;
              const int col = nt * 8 + 2 * q;
              const int64_t at = (static_cast<int64_t>(l) * rows + row) * W + col;
              float& z0 = acc[mt][nt][2 * h];
              float& z1 = acc[mt][nt][2 * h + 1];
              if (args.z && row < rows)
                *reinterpret_cast<float2*>(args.z + at) = make_float2(z0, z1);
              z0 = act_value(act.id, z0, d.omega);
              z1 = act_value(act.id, z1, d.omega);
              if (a_save && row < rows)
                *reinterpret_cast<uint32_t*>(a_save + at) = warp::pack<P>(z0, z1);
            }
          }
        }
      });
      to_fragments<P, MT, NT>(acc, frag);
    }

    // Output layer, 16 outputs at a time.
    const uint16_t* wo = sw + layer_offset<W>(d.depth, ld0);
    for (int np = 0; np < out_pad / 16; ++np) {
      float o[MT][2][4];
      init_acc<MT, 2>(o, d.bias ? sb + d.depth * W + np * 16 : nullptr, q);
      tile_b<P, MT, KT>(o, frag, wo, LD, np * 16, lane);
      with_act(d.out_act, [&](auto act) {
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
          for (int e = 0; e < 8; ++e) {
            const int t = e >> 2, i = e & 3;
            const int64_t row = row0 + mt * 16 + g + (i >> 1) * 8;
            const int col = np * 16 + t * 8 + 2 * q + (i & 1);
            if (row < rows && col < d.n_out) {
              const float z = o[mt][t][i];
              const int64_t at = row * d.n_out + col;
              if (args.z_out) args.z_out[at] = z;
              const float v = act_value(act.id, z, d.omega);
              if (args.y16)
                static_cast<uint16_t*>(args.y)[at] = warp::bits<P>(v);
              else
                static_cast<float*>(args.y)[at] = v;
            }
          }
        }
      });
    }
  }
}

// The forward's output y[at] (fp32 or 16-bit) as a float.
template <int P>
__device__ __forceinline__ float output(const BackwardArgs& args, int64_t at) {
  return args.y16 ? warp::value<P>(static_cast<const uint16_t*>(args.y)[at])
                  : static_cast<const float*>(args.y)[at];
}

template <int P, int W>
__global__ void __launch_bounds__(kWarps * 32) backward_kernel(const Dims d,
                                                               const BackwardArgs args) {
  constexpr int MT = row_tiles(W);
  constexpr int NT = W / 8;
  constexpr int KT = W / 16;
  constexpr int LD = W + kSkew;
  uint16_t* sw = reinterpret_cast<uint16_t*>(warp::dynamic_shared());
  const int in_pad0 = d.in_pad(0);
  const int ld0 = in_pad0 + kSkew;
  const int out_pad = d.out_pad(d.depth);
  const size_t n_w = layer_offset<W>(d.depth, ld0) + static_cast<size_t>(out_pad) * LD;
  stage(sw, args.weights, n_w, nullptr, nullptr, 0);

  const int lane = threadIdx.x & 31;
  const int g = lane >> 2, q = lane & 3;
  const int64_t rows = args.rows;
  const int n_out = d.n_out;
  const bool out_pre = needs_pre(d.out_act);
  const bool hid_pre = needs_pre(d.act);
  const uint16_t* a_saved = static_cast<const uint16_t*>(args.a);
  uint16_t* delta = static_cast<uint16_t*>(args.delta);
  uint16_t* delta_out = static_cast<uint16_t*>(args.delta_out);
  const int64_t n_tiles = (rows + 16 * MT - 1) / (16 * MT);
  const int64_t stride = static_cast<int64_t>(gridDim.x) * kWarps;

  for (int64_t tile = static_cast<int64_t>(blockIdx.x) * kWarps + (threadIdx.x >> 5);
       tile < n_tiles; tile += stride) {
    const int64_t row0 = tile * 16 * MT;
    float acc[MT][NT][4];
    uint32_t frag[MT][KT][4];
    zero<MT, NT>(acc);

    // Output layer: delta_out = scale * dy * out_act'; acc = delta_out W_depth.
    const uint16_t* wo = sw + layer_offset<W>(d.depth, ld0);
    for (int kt = 0; kt < out_pad / 16; ++kt) {
      uint32_t a[MT][1][4];
      with_act(d.out_act, [&](auto act) {
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
          for (int i = 0; i < 4; ++i) {
            const int64_t row = row0 + mt * 16 + g + (i & 1) * 8;
            const int col = kt * 16 + 2 * q + (i >> 1) * 8;
            float v[2] = {0.f, 0.f};
#pragma unroll
            for (int j = 0; j < 2; ++j) {
              if (row < rows && col + j < n_out) {
                const int64_t at = row * n_out + col + j;
                float dz = args.dy[at] * args.scale;
                if (act.id != kNone)
                  dz *= act_derivative(act.id,
                                       out_pre ? args.z_out[at] : output<P>(args, at), d.omega);
                v[j] = dz;
                delta_out[at] = warp::bits<P>(dz);
              }
            }
            a[mt][0][i] = warp::pack<P>(v[0], v[1]);
          }
        }
      });
      gemm_bt_ktile<P, MT, NT>(acc, a, wo, LD, kt * 16, lane);
    }

    // Hidden layers, last to first: delta_h = acc * act'(h); acc = delta_h W_h.
    for (int h = d.depth - 1; h >= 0; --h) {
      with_act(d.act, [&](auto act) {
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
          for (int nt = 0; nt < NT; ++nt) {
#pragma unroll
            for (int s = 0; s < 2; ++s) {
              const int64_t row = row0 + mt * 16 + g + s * 8;
              const int col = nt * 8 + 2 * q;
              const int64_t at = (static_cast<int64_t>(h) * rows + row) * W + col;
              float& d0 = acc[mt][nt][2 * s];
              float& d1 = acc[mt][nt][2 * s + 1];
              if (row < rows) {
                float2 v;
                if (hid_pre)
                  v = *reinterpret_cast<const float2*>(args.z + at);
                else
                  v = warp::unpack<P>(*reinterpret_cast<const uint32_t*>(a_saved + at));
                d0 *= act_derivative(act.id, v.x, d.omega);
                d1 *= act_derivative(act.id, v.y, d.omega);
                *reinterpret_cast<uint32_t*>(delta + at) = warp::pack<P>(d0, d1);
              } else {
                d0 = 0.f;
                d1 = 0.f;
              }
            }
          }
        }
      });
      to_fragments<P, MT, NT>(acc, frag);
      if (h == 0) break;
      zero<MT, NT>(acc);
      gemm_bt<P, MT, NT, KT>(acc, frag, sw + layer_offset<W>(h, ld0), LD, lane);
    }

    // dx = delta_0 W_0 / scale, 16 inputs at a time.
    if (args.dx) {
      for (int np = 0; np < in_pad0 / 16; ++np) {
        float o[MT][2][4];
        init_acc<MT, 2>(o, nullptr, q);
        tile_bt<P, MT, KT>(o, frag, sw, ld0, np * 16, lane);
        store_tile<MT>(o, args.dx, rows, d.n_in, row0, np * 16, 1.f / args.scale, lane);
      }
    }
  }
}

template <int P, int W>
__global__ void __launch_bounds__(kWarps * 32)
    double_backward_kernel(const Dims d, const DoubleBackwardArgs args) {
  constexpr int MT = dbl_row_tiles(W);
  constexpr int NT = W / 8;
  constexpr int KT = W / 16;
  constexpr int LD = W + kSkew;
  uint16_t* sw = reinterpret_cast<uint16_t*>(warp::dynamic_shared());
  const int in_pad0 = d.in_pad(0);
  const int ld0 = in_pad0 + kSkew;
  const int out_pad = d.out_pad(d.depth);
  const size_t n_w = layer_offset<W>(d.depth, ld0) + static_cast<size_t>(out_pad) * LD;
  stage(sw, args.weights, n_w, nullptr, nullptr, 0);

  const int lane = threadIdx.x & 31;
  const int g = lane >> 2, q = lane & 3;
  const int64_t rows = args.rows;
  const int n_out = d.n_out;
  const bool out_pre = needs_pre(d.out_act);
  const bool hid_pre = needs_pre(d.act);
  const bool hid_second = second_nonzero(d.act) && args.t != nullptr;
  const uint16_t* a_saved = static_cast<const uint16_t*>(args.a);
  const uint16_t* u = static_cast<const uint16_t*>(args.u);
  const bool u_pairs = (d.n_in % 2 == 0) && (reinterpret_cast<uintptr_t>(u) % 4 == 0);
  uint16_t* adot = static_cast<uint16_t*>(args.adot);
  uint16_t* delta = static_cast<uint16_t*>(args.delta);
  uint16_t* zbar = static_cast<uint16_t*>(args.zbar);
  uint16_t* delta_out = static_cast<uint16_t*>(args.delta_out);
  uint16_t* zbar_out = static_cast<uint16_t*>(args.zbar_out);
  const int64_t n_tiles = (rows + 16 * MT - 1) / (16 * MT);
  const int64_t stride = static_cast<int64_t>(gridDim.x) * kWarps;

  for (int64_t tile = static_cast<int64_t>(blockIdx.x) * kWarps + (threadIdx.x >> 5);
       tile < n_tiles; tile += stride) {
    const int64_t row0 = tile * 16 * MT;
    float acc[MT][NT][4];
    uint32_t frag[MT][KT][4];

    // 1. The tangent pass along u: zdot_l = W_l adot_{l-1}, adot_l = act'(z_l) zdot_l.
    for (int l = 0; l < d.depth; ++l) {
      zero<MT, NT>(acc);
      const uint16_t* wl = sw + layer_offset<W>(l, ld0);
      if (l == 0)
        gemm_global_b<P, MT, NT>(acc, u, rows, d.n_in, row0, in_pad0 / 16, u_pairs, wl, ld0,
                                 lane);
      else
        gemm_b<P, MT, NT, KT>(acc, frag, wl, LD, lane);
      with_act(d.act, [&](auto act) {
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
          for (int nt = 0; nt < NT; ++nt) {
#pragma unroll
            for (int h = 0; h < 2; ++h) {
              const int64_t row = row0 + mt * 16 + g + h * 8;
              const int col = nt * 8 + 2 * q;
              const int64_t at = (static_cast<int64_t>(l) * rows + row) * W + col;
              float& t0 = acc[mt][nt][2 * h];
              float& t1 = acc[mt][nt][2 * h + 1];
              if (row < rows) {
                const float2 v = hid_pre
                                     ? *reinterpret_cast<const float2*>(args.z + at)
                                     : warp::unpack<P>(
                                           *reinterpret_cast<const uint32_t*>(a_saved + at));
                if (hid_second)
                  *reinterpret_cast<float2*>(args.t + at) =
                      make_float2(act_second(act.id, v.x, d.omega) * t0,
                                  act_second(act.id, v.y, d.omega) * t1);
                t0 *= act_derivative(act.id, v.x, d.omega);
                t1 *= act_derivative(act.id, v.y, d.omega);
                *reinterpret_cast<uint32_t*>(adot + at) = warp::pack<P>(t0, t1);
              } else {
                t0 = 0.f;
                t1 = 0.f;
              }
            }
          }
        }
      });
      to_fragments<P, MT, NT>(acc, frag);
    }

    // 2. The output layer, 16 outputs at a time: zdot_L, then delta_L = v act_o'(z_L) and
    //    zbar_L = v act_o''(z_L) zdot_L, each the A fragment of a k-tile of the two backward
    //    GEMMs through W_L (acc: from delta, acc2: from zbar).
    float acc2[MT][NT][4];
    zero<MT, NT>(acc);
    zero<MT, NT>(acc2);
    const uint16_t* wo = sw + layer_offset<W>(d.depth, ld0);
    const float inv_u = 1.f / args.scale_u;
    for (int kt = 0; kt < out_pad / 16; ++kt) {
      float o[MT][2][4];
      init_acc<MT, 2>(o, nullptr, q);
      tile_b<P, MT, KT>(o, frag, wo, LD, kt * 16, lane);
      float dl[MT][2][4], zl[MT][2][4];
      with_act(d.out_act, [&](auto act) {
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
          for (int e = 0; e < 8; ++e) {
            const int t = e >> 2, i = e & 3;
            const int64_t row = row0 + mt * 16 + g + (i >> 1) * 8;
            const int col = kt * 16 + t * 8 + 2 * q + (i & 1);
            float dv = 0.f, zv = 0.f;
            if (row < rows && col < n_out) {
              const int64_t at = row * n_out + col;
              const float v = args.dy[at] * args.scale_v;
              const float zdot = o[mt][t][i];
              float d1 = 1.f, d2 = 0.f;
              if (act.id != kNone) {
                const float w = out_pre ? args.z_out[at]
                                        : (args.y16 ? warp::value<P>(static_cast<const uint16_t*>(
                                                          args.y)[at])
                                                    : static_cast<const float*>(args.y)[at]);
                d1 = act_derivative(act.id, w, d.omega);
                d2 = act_second(act.id, w, d.omega);
              }
              dv = v * d1;
              zv = v * d2 * zdot;
              delta_out[at] = warp::bits<P>(dv);
              zbar_out[at] = warp::bits<P>(zv);
              if (args.dv) args.dv[at] = d1 * zdot * inv_u;
            }
            dl[mt][t][i] = dv;
            zl[mt][t][i] = zv;
          }
        }
      });
      uint32_t fd[MT][1][4], fz[MT][1][4];
      to_fragments<P, MT, 2>(dl, fd);
      to_fragments<P, MT, 2>(zl, fz);
      gemm_bt_ktile<P, MT, NT>(acc, fd, wo, LD, kt * 16, lane);
      gemm_bt_ktile<P, MT, NT>(acc2, fz, wo, LD, kt * 16, lane);
    }

    // 3. Hidden layers, last to first: delta_h = acc act'(z_h),
    //    zbar_h = acc2 act'(z_h) + acc act''(z_h) zdot_h; then both through W_h.
    uint32_t frag2[MT][KT][4];
    for (int h = d.depth - 1; h >= 0; --h) {
      with_act(d.act, [&](auto act) {
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
          for (int nt = 0; nt < NT; ++nt) {
#pragma unroll
            for (int s = 0; s < 2; ++s) {
              const int64_t row = row0 + mt * 16 + g + s * 8;
              const int col = nt * 8 + 2 * q;
              const int64_t at = (static_cast<int64_t>(h) * rows + row) * W + col;
              float& d0 = acc[mt][nt][2 * s];
              float& d1 = acc[mt][nt][2 * s + 1];
              float& z0 = acc2[mt][nt][2 * s];
              float& z1 = acc2[mt][nt][2 * s + 1];
              if (row < rows) {
                const float2 v = hid_pre
                                     ? *reinterpret_cast<const float2*>(args.z + at)
                                     : warp::unpack<P>(
                                           *reinterpret_cast<const uint32_t*>(a_saved + at));
                const float s0 = act_derivative(act.id, v.x, d.omega);
                const float s1 = act_derivative(act.id, v.y, d.omega);
                float2 t = make_float2(0.f, 0.f);
                if (hid_second) t = *reinterpret_cast<const float2*>(args.t + at);
                z0 = z0 * s0 + d0 * t.x;
                z1 = z1 * s1 + d1 * t.y;
                d0 *= s0;
                d1 *= s1;
                *reinterpret_cast<uint32_t*>(delta + at) = warp::pack<P>(d0, d1);
                *reinterpret_cast<uint32_t*>(zbar + at) = warp::pack<P>(z0, z1);
              } else {
                d0 = d1 = z0 = z1 = 0.f;
              }
            }
          }
        }
      });
      to_fragments<P, MT, NT>(acc, frag);
      to_fragments<P, MT, NT>(acc2, frag2);
      if (h == 0) break;
      const uint16_t* wh = sw + layer_offset<W>(h, ld0);
      zero<MT, NT>(acc);
      zero<MT, NT>(acc2);
      gemm_bt<P, MT, NT, KT>(acc, frag, wh, LD, lane);
      gemm_bt<P, MT, NT, KT>(acc2, frag2, wh, LD, lane);
    }

    // 4. dS/dx = W_0^T zbar_0, unscaled, 16 inputs at a time.
    if (args.dx) {
      const float inv = 1.f / (args.scale_v * args.scale_u);
      for (int np = 0; np < in_pad0 / 16; ++np) {
        float o[MT][2][4];
        init_acc<MT, 2>(o, nullptr, q);
        tile_bt<P, MT, KT>(o, frag2, sw, ld0, np * 16, lane);
        store_tile<MT>(o, args.dx, rows, d.n_in, row0, np * 16, inv, lane);
      }
    }
  }
}


template <int P, int W>
cudaError_t launch(Kind kind, const Dims& d, const void* args, cudaStream_t stream) {
  const int64_t rows = kind == Kind::kForward    ? static_cast<const ForwardArgs*>(args)->rows
                       : kind == Kind::kBackward ? static_cast<const BackwardArgs*>(args)->rows
                                                 : static_cast<const DoubleBackwardArgs*>(args)->rows;
  if (rows == 0) return cudaSuccess;
  const size_t smem = kind == Kind::kForward ? shared_bytes(d) : packed_size(d) * 2;
  const int64_t rows_per_block =
      int64_t(16) * (kind == Kind::kDoubleBackward ? dbl_row_tiles(W) : row_tiles(W)) * kWarps;
  const int64_t wanted = (rows + rows_per_block - 1) / rows_per_block;
#ifdef FIELDS_WARP_EMULATOR
  // At most two blocks, so that the grid-stride loop runs more than once in the tests.
  (void)stream;
  const int grid = static_cast<int>(std::min<int64_t>(wanted, 2));
  switch (kind) {
    case Kind::kForward:
      emu::launch(grid, kWarps * 32, smem, [&] {
        forward_kernel<P, W>(d, *static_cast<const ForwardArgs*>(args));
      });
      break;
    case Kind::kBackward:
      emu::launch(grid, kWarps * 32, smem, [&] {
        backward_kernel<P, W>(d, *static_cast<const BackwardArgs*>(args));
      });
      break;
    case Kind::kDoubleBackward:
      emu::launch(grid, kWarps * 32, smem, [&] {
        double_backward_kernel<P, W>(d, *static_cast<const DoubleBackwardArgs*>(args));
      });
      break;
  }
  return cudaSuccess;
#else
  int dev = 0, sms = 0, per_sm = 0;
  cudaError_t e = cudaGetDevice(&dev);
  if (e != cudaSuccess) return e;
  e = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev);
  if (e != cudaSuccess) return e;
  const void* fn = kind == Kind::kForward    ? reinterpret_cast<const void*>(forward_kernel<P, W>)
                   : kind == Kind::kBackward ? reinterpret_cast<const void*>(backward_kernel<P, W>)
                                             : reinterpret_cast<const void*>(
                                                   double_backward_kernel<P, W>);
  e = cudaFuncSetAttribute(fn, cudaFuncAttributeMaxDynamicSharedMemorySize,
                           static_cast<int>(smem));
  if (e != cudaSuccess) return e;
  e = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, fn, kWarps * 32, smem);
  if (e != cudaSuccess) return e;
  if (per_sm < 1) return cudaErrorInvalidConfiguration;
  const int grid = static_cast<int>(std::min<int64_t>(wanted, int64_t(sms) * per_sm));
  switch (kind) {
    case Kind::kForward:
      forward_kernel<P, W><<<grid, kWarps * 32, smem, stream>>>(
          d, *static_cast<const ForwardArgs*>(args));
      break;
    case Kind::kBackward:
      backward_kernel<P, W><<<grid, kWarps * 32, smem, stream>>>(
          d, *static_cast<const BackwardArgs*>(args));
      break;
    case Kind::kDoubleBackward:
      double_backward_kernel<P, W><<<grid, kWarps * 32, smem, stream>>>(
          d, *static_cast<const DoubleBackwardArgs*>(args));
      break;
  }
  return cudaGetLastError();
#endif
}

template <int P>
cudaError_t dispatch(Kind kind, const Dims& d, const void* args, cudaStream_t s) {
  switch (d.width) {
    case 16: return launch<P, 16>(kind, d, args, s);
    case 32: return launch<P, 32>(kind, d, args, s);
    case 64: return launch<P, 64>(kind, d, args, s);
    case 128: return launch<P, 128>(kind, d, args, s);
    default: return cudaErrorInvalidValue;
  }
}

}  // namespace
}  // namespace mlp_cuda
}  // namespace fields
