// Sizes, weight packing, gradient reduction and instruction-set dispatch of the fused CPU MLP.
#include "mlp_cpu.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>

namespace fields {
namespace mlp_cpu {

#define FIELDS_MLP_ISA_DECL(ns)                                                                \
  namespace ns {                                                                               \
  void forward(const Dims& d, const float* packed, const float* x, float* y, int64_t rows,     \
               int64_t tile_begin, int64_t tile_end, float* ws, const Saved* saved);          \
  void backward(const Dims& d, const float* packed_t, const float* x, const float* dy,        \
                float* dx, int64_t rows, int64_t tile_begin, int64_t tile_end,                 \
                const Saved& saved, float* ws, float* wgrad);                                  \
  }
FIELDS_MLP_ISA_DECL(generic)
#if defined(__x86_64__) || defined(_M_X64)
FIELDS_MLP_ISA_DECL(avx2)
FIELDS_MLP_ISA_DECL(avx512)
#endif
#undef FIELDS_MLP_ISA_DECL

namespace {
enum class Isa { kGeneric, kAvx2, kAvx512 };

// The widest instruction set the CPU runs; FIELDS_CPU_ISA=generic|avx2|avx512 forces one (to
// test each on one machine). Forcing one the CPU lacks falls back to the widest it has.
Isa chosen() {
  static const Isa isa = [] {
#if defined(__x86_64__) || defined(_M_X64)
    const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    const bool avx512 = avx2 && __builtin_cpu_supports("avx512f") &&
                        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
    const char* force = std::getenv("FIELDS_CPU_ISA");
    if (force != nullptr && std::strcmp(force, "generic") == 0) return Isa::kGeneric;
    if (force != nullptr && std::strcmp(force, "avx2") == 0 && avx2) return Isa::kAvx2;
    if (avx512) return Isa::kAvx512;
    if (avx2) return Isa::kAvx2;
#endif
    return Isa::kGeneric;
  }();
  return isa;
}
}  // namespace

const char* isa() {
  switch (chosen()) {
    case Isa::kAvx512: return "avx512+fma";
    case Isa::kAvx2: return "avx2+fma";
    default: return "generic";
  }
}

bool needs_preactivation(int act) {
  return act == kSiLU || act == kSine || act == kSquareplus || act == kGaussian || act == kFiner;
}

int Dims::max_pad() const {
  return std::max({round_up(width, kColBlock), out_pad(depth), in_pad(0)});
}

const char* check_dims(const Dims& d) {
  if (d.n_in < 1) return "n_in must be >= 1";
  if (d.n_out < 1) return "n_out must be >= 1";
  if (d.depth < 1 || d.depth > 62) return "depth (hidden layers) must be in [1, 62]";
  if (d.width < kColBlock || d.width % kColBlock != 0 || d.width > 1024)
    return "width must be a multiple of 16 in [16, 1024]";
  if (d.act < 0 || d.act >= kNumActivations) return "unknown hidden activation id";
  if (d.out_act < 0 || d.out_act >= kNumActivations) return "unknown output activation id";
  return "";
}

size_t packed_forward_size(const Dims& d) {
  size_t n = 0;
  for (int l = 0; l < d.n_layers(); ++l)
    n += static_cast<size_t>(d.in_dim(l)) * d.out_pad(l) + (d.bias ? d.out_pad(l) : 0);
  return n;
}

void pack_forward(const Dims& d, const float* const* weights, const float* const* biases,
                  float* packed) {
  float* p = packed;
  for (int l = 0; l < d.n_layers(); ++l) {
    const int K = d.in_dim(l), N = d.out_dim(l), n_pad = d.out_pad(l);
    const float* w = weights[l];
    for (int nb = 0; nb < n_pad / kColBlock; ++nb)
      for (int k = 0; k < K; ++k)
        for (int j = 0; j < kColBlock; ++j) {
          const int n = nb * kColBlock + j;
          *p++ = n < N ? w[static_cast<size_t>(n) * K + k] : 0.f;
        }
    if (d.bias) {
      for (int n = 0; n < n_pad; ++n) *p++ = n < N ? biases[l][n] : 0.f;
    }
  }
}

size_t packed_backward_size(const Dims& d) {
  size_t n = 0;
  for (int l = 0; l < d.n_layers(); ++l) n += static_cast<size_t>(d.in_pad(l)) * d.out_pad(l);
  return n;
}

void pack_backward(const Dims& d, const float* const* weights, float* packed) {
  float* p = packed;
  for (int l = 0; l < d.n_layers(); ++l) {
    const int K = d.in_dim(l), N = d.out_dim(l), n_pad = d.out_pad(l), k_pad = d.in_pad(l);
    const float* w = weights[l];
    for (int kb = 0; kb < k_pad / kColBlock; ++kb)
      for (int n = 0; n < n_pad; ++n)
        for (int j = 0; j < kColBlock; ++j) {
          const int k = kb * kColBlock + j;
          *p++ = (n < N && k < K) ? w[static_cast<size_t>(n) * K + k] : 0.f;
        }
  }
}

size_t forward_workspace_size(const Dims& d) {
  return static_cast<size_t>(kTileRows) * (d.n_in + 2 * d.max_pad());
}

size_t backward_workspace_size(const Dims& d) { return forward_workspace_size(d); }

size_t weight_grad_size(const Dims& d) {
  size_t n = 0;
  for (int l = 0; l < d.n_layers(); ++l)
    n += static_cast<size_t>(d.in_dim(l)) * d.out_pad(l) + d.out_pad(l);
  return n;
}

void forward(const Dims& d, const float* packed, const float* x, float* y, int64_t rows,
             int64_t tile_begin, int64_t tile_end, float* workspace, const Saved* saved) {
#if defined(__x86_64__) || defined(_M_X64)
  if (chosen() == Isa::kAvx512) {
    avx512::forward(d, packed, x, y, rows, tile_begin, tile_end, workspace, saved);
    return;
  }
  if (chosen() == Isa::kAvx2) {
    avx2::forward(d, packed, x, y, rows, tile_begin, tile_end, workspace, saved);
    return;
  }
#endif
  generic::forward(d, packed, x, y, rows, tile_begin, tile_end, workspace, saved);
}

void backward(const Dims& d, const float* packed_t, const float* x, const float* dy, float* dx,
              int64_t rows, int64_t tile_begin, int64_t tile_end, const Saved& saved,
              float* workspace, float* wgrad) {
#if defined(__x86_64__) || defined(_M_X64)
  if (chosen() == Isa::kAvx512) {
    avx512::backward(d, packed_t, x, dy, dx, rows, tile_begin, tile_end, saved, workspace,
                     wgrad);
    return;
  }
  if (chosen() == Isa::kAvx2) {
    avx2::backward(d, packed_t, x, dy, dx, rows, tile_begin, tile_end, saved, workspace, wgrad);
    return;
  }
#endif
  generic::backward(d, packed_t, x, dy, dx, rows, tile_begin, tile_end, saved, workspace, wgrad);
}

void reduce_weight_grads(const Dims& d, const float* wgrad, int n_chunks, float* const* dweights,
                         float* const* dbiases) {
  const size_t stride = weight_grad_size(d);
  size_t off = 0;
  for (int l = 0; l < d.n_layers(); ++l) {
    const int K = d.in_dim(l), N = d.out_dim(l), n_pad = d.out_pad(l);
    float* dw = dweights[l];
    // Transposing (K, n_pad) -> (N, K) in blocks of 16 inputs keeps the rows read in L1.
    for (int k0 = 0; k0 < K; k0 += 16) {
      const int kn = std::min(16, K - k0);
      for (int n = 0; n < N; ++n) {
        for (int kk = 0; kk < kn; ++kk) {
          const size_t at = off + static_cast<size_t>(k0 + kk) * n_pad + n;
          float s = wgrad[at];
          for (int c = 1; c < n_chunks; ++c) s += wgrad[c * stride + at];
          dw[static_cast<size_t>(n) * K + k0 + kk] = s;
        }
      }
    }
    if (d.bias && dbiases != nullptr) {
      const size_t at = off + static_cast<size_t>(K) * n_pad;
      for (int n = 0; n < N; ++n) {
        float s = wgrad[at + n];
        for (int c = 1; c < n_chunks; ++c) s += wgrad[c * stride + at + n];
        dbiases[l][n] = s;
      }
    }
    off += static_cast<size_t>(K) * n_pad + n_pad;
  }
}

}  // namespace mlp_cpu
}  // namespace fields
