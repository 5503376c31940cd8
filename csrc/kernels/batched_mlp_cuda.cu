// The batched MLP's kernels and host API (see batched_mlp_cuda.h). The activations and their
// derivatives are the fused MLP's (mlp_cuda_kernels.cuh), so both kinds of network compute
// the same functions.
#include "batched_mlp_cuda.h"

#include "mlp_cuda_kernels.cuh"

namespace fields {
namespace batched_mlp_cuda {
namespace {

using mlp_cuda::act_derivative;
using mlp_cuda::act_value;
using mlp_cuda::needs_pre;

__host__ __device__ inline int in_dim(const Dims& d, int l) { return l == 0 ? d.n_in : d.width; }
__host__ __device__ inline int out_dim(const Dims& d, int l) {
  return l == d.depth ? d.n_out : d.width;
}

// d act / dz at pre-activation z (act_derivative takes z or act(z), by needs_pre).
__device__ __forceinline__ float slope(int act, float z, float omega) {
  return act_derivative(act, needs_pre(act) ? z : act_value(act, z, omega), omega);
}

__global__ void __launch_bounds__(kThreads) forward_kernel(const Dims d, const Params p,
                                                           const float* x,
                                                           const int64_t* offsets,
                                                           int64_t rows, float* y, float* z) {
  float h[kMaxDim], o[kMaxDim];
  for (int64_t c = blockIdx.x; c < d.n_nets; c += gridDim.x) {
    const int64_t begin = offsets[c], end = offsets[c + 1];
    for (int64_t r = begin + threadIdx.x; r < end; r += blockDim.x) {
      for (int k = 0; k < d.n_in; ++k) h[k] = x[r * d.n_in + k];
      for (int l = 0; l <= d.depth; ++l) {
        const int n_i = in_dim(d, l), n_o = out_dim(d, l);
        const float* w = p.w[l] + c * n_o * n_i;
        const bool last = l == d.depth;
        const int act = last ? d.out_act : d.act;
        float* zl = z == nullptr ? nullptr
                    : last      ? z + static_cast<int64_t>(d.depth) * rows * d.width + r * n_o
                                : z + (static_cast<int64_t>(l) * rows + r) * d.width;
        for (int j = 0; j < n_o; ++j) {
          float acc = d.bias ? p.b[l][c * n_o + j] : 0.f;
          const float* wj = w + j * n_i;
          for (int k = 0; k < n_i; ++k) acc += wj[k] * h[k];
          if (zl != nullptr) zl[j] = acc;
          o[j] = act_value(act, acc, d.omega);
        }
        if (last) {
          for (int j = 0; j < n_o; ++j) y[r * n_o + j] = o[j];
        } else {
          for (int j = 0; j < n_o; ++j) h[j] = o[j];
        }
      }
    }
  }
}

// Shared memory: the chunk's deltas and layer inputs, kThreads rows of kMaxDim each.
constexpr size_t kSharedBytes = 2 * kThreads * kMaxDim * sizeof(float);

__global__ void __launch_bounds__(kThreads) backward_kernel(const Dims d, const Params p,
                                                            const float* x,
                                                            const int64_t* offsets,
                                                            int64_t rows, const float* z,
                                                            const float* dy, float* dx,
                                                            const Grads g) {
  float* sd = reinterpret_cast<float*>(warp::dynamic_shared());  // deltas [t][j]
  float* sa = sd + kThreads * kMaxDim;                             // layer inputs [t][k]
  float delta[kMaxDim], prev[kMaxDim];
  const int t = threadIdx.x;
  const float* z_out = z + static_cast<int64_t>(d.depth) * rows * d.width;
  // every loop bound below is the same for the whole block, so all threads reach each barrier
  for (int64_t c = blockIdx.x; c < d.n_nets; c += gridDim.x) {
    const int64_t begin = offsets[c], end = offsets[c + 1];
    for (int64_t r0 = begin; r0 < end; r0 += kThreads) {
      const int64_t r = r0 + t;
      const bool valid = r < end;
      for (int j = 0; j < d.n_out; ++j)
        delta[j] = valid ? dy[r * d.n_out + j] * slope(d.out_act, z_out[r * d.n_out + j], d.omega)
                         : 0.f;
      for (int l = d.depth; l >= 0; --l) {
        const int n_i = in_dim(d, l), n_o = out_dim(d, l);
        const float* zin = l > 0 ? z + (static_cast<int64_t>(l - 1) * rows + r) * d.width : nullptr;
        for (int j = 0; j < n_o; ++j) sd[t * kMaxDim + j] = delta[j];
        for (int k = 0; k < n_i; ++k) {
          float a = 0.f;
          if (valid) a = l == 0 ? x[r * d.n_in + k] : act_value(d.act, zin[k], d.omega);
          sa[t * kMaxDim + k] = a;
        }
        warp::sync_block();
        // this chunk's share of dW_l = delta^T a and db_l = sum of delta, in row order
        float* gw = g.w[l] + c * n_o * n_i;
        for (int e = t; e < n_o * n_i; e += kThreads) {
          const int j = e / n_i, k = e % n_i;
          float s = 0.f;
          for (int u = 0; u < kThreads; ++u) s += sd[u * kMaxDim + j] * sa[u * kMaxDim + k];
          gw[e] += s;
        }
        if (d.bias) {
          for (int j = t; j < n_o; j += kThreads) {
            float s = 0.f;
            for (int u = 0; u < kThreads; ++u) s += sd[u * kMaxDim + j];
            g.b[l][c * n_o + j] += s;
          }
        }
        warp::sync_block();  // the tiles are rewritten by the next layer
        // delta of the layer below (or dL/dx)
        const float* w = p.w[l] + c * n_o * n_i;
        for (int k = 0; k < n_i; ++k) {
          float s = 0.f;
          for (int j = 0; j < n_o; ++j) s += w[j * n_i + k] * delta[j];
          prev[k] = s;
        }
        if (l > 0) {
          for (int k = 0; k < n_i; ++k)
            delta[k] = valid ? prev[k] * slope(d.act, zin[k], d.omega) : 0.f;
        } else if (dx != nullptr && valid) {
          for (int k = 0; k < n_i; ++k) dx[r * d.n_in + k] = prev[k];
        }
      }
    }
  }
}

unsigned blocks_for(const Dims& d) {
  const int64_t most = 65535;
  return static_cast<unsigned>(d.n_nets < most ? (d.n_nets > 0 ? d.n_nets : 1) : most);
}

}  // namespace

const char* check_dims(const Dims& d) {
  if (d.n_in < 1 || d.n_in > kMaxDim) return "n_in must be 1..64";
  if (d.n_out < 1 || d.n_out > kMaxDim) return "n_out must be 1..64";
  if (d.width < 1 || d.width > kMaxDim) return "width must be 1..64";
  if (d.depth < 0 || d.depth > kMaxLayers - 1) return "depth must be 0..8";
  if (d.act < 0 || d.act >= mlp_cpu::kNumActivations || d.out_act < 0 ||
      d.out_act >= mlp_cpu::kNumActivations)
    return "unknown activation id";
  if (d.n_nets < 1) return "n_nets must be positive";
  return "";
}

size_t saved_size(const Dims& d, int64_t rows) {
  return static_cast<size_t>(rows) * (static_cast<size_t>(d.depth) * d.width + d.n_out);
}

cudaError_t forward(const Dims& d, const Params& p, const float* x, const int64_t* offsets,
                    int64_t rows, float* y, float* z, cudaStream_t stream) {
  if (check_dims(d)[0] != '\0') return cudaErrorInvalidValue;
  if (rows == 0) return cudaSuccess;
#ifdef FIELDS_WARP_EMULATOR
  (void)stream;
  emu::launch(blocks_for(d), kThreads, 0, [&] { forward_kernel(d, p, x, offsets, rows, y, z); });
  return cudaSuccess;
#else
  forward_kernel<<<blocks_for(d), kThreads, 0, stream>>>(d, p, x, offsets, rows, y, z);
  return cudaGetLastError();
#endif
}

cudaError_t backward(const Dims& d, const Params& p, const float* x, const int64_t* offsets,
                     int64_t rows, const float* z, const float* dy, float* dx, const Grads& g,
                     cudaStream_t stream) {
  if (check_dims(d)[0] != '\0') return cudaErrorInvalidValue;
  if (rows == 0) return cudaSuccess;
#ifdef FIELDS_WARP_EMULATOR
  (void)stream;
  emu::launch(blocks_for(d), kThreads, kSharedBytes,
              [&] { backward_kernel(d, p, x, offsets, rows, z, dy, dx, g); });
  return cudaSuccess;
#else
  backward_kernel<<<blocks_for(d), kThreads, kSharedBytes, stream>>>(d, p, x, offsets, rows, z,
                                                                    dy, dx, g);
  return cudaGetLastError();
#endif
}

}  // namespace batched_mlp_cuda
}  // namespace fields
