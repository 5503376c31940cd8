// The fused CPU MLP compiled for AVX-512 (F, VL, DQ) + FMA (x86-64 only): 16-float vectors.
// GEMMs in blocks of 6 rows x 4 column blocks (64 columns, 24 of its 32 registers), weight
// gradients in blocks of 4 inputs x 64 columns; where widths do not allow, 12-row blocks of one
// column block (16 inputs for weight gradients); chosen at run time by mlp_cpu.cpp.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "mlp_cpu.h"

#if defined(__x86_64__) || defined(_M_X64)
#define FIELDS_MLP_VEC 16
#define FIELDS_MLP_MR 12
#define FIELDS_MLP_WGRAD_MR 16
#define FIELDS_MLP_NB 4
#define FIELDS_MLP_NB_MR 6
#define FIELDS_MLP_WGRAD_NB 4
#define FIELDS_MLP_WGRAD_NB_MR 4
#pragma GCC target("avx512f,avx512vl,avx512dq,avx2,fma")

namespace fields {
namespace mlp_cpu {
namespace avx512 {
#include "mlp_cpu_impl.h"

void forward(const Dims& d, const float* packed, const float* x, float* y, int64_t rows,
             int64_t tile_begin, int64_t tile_end, float* ws, const Saved* saved) {
  forward_impl(d, packed, x, y, rows, tile_begin, tile_end, ws, saved);
}

void backward(const Dims& d, const float* packed_t, const float* x, const float* dy, float* dx,
              int64_t rows, int64_t tile_begin, int64_t tile_end, const Saved& saved, float* ws,
              float* wgrad) {
  backward_impl(d, packed_t, x, dy, dx, rows, tile_begin, tile_end, saved, ws, wgrad);
}
}  // namespace avx512
}  // namespace mlp_cpu
}  // namespace fields
#endif
