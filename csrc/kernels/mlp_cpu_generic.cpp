// The fused CPU MLP for any target (portable SIMD through GCC vector extensions).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "mlp_cpu.h"

namespace fields {
namespace mlp_cpu {
namespace generic {
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
}  // namespace generic
}  // namespace mlp_cpu
}  // namespace fields
