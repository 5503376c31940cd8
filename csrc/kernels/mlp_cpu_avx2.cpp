// The fused CPU MLP compiled for AVX2 + FMA (x86-64 only); chosen at run time by mlp_cpu.cpp.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "mlp_cpu.h"

#if defined(__x86_64__) || defined(_M_X64)
#pragma GCC target("avx2,fma")

namespace fields {
namespace mlp_cpu {
namespace avx2 {
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
}  // namespace avx2
}  // namespace mlp_cpu
}  // namespace fields
#endif
