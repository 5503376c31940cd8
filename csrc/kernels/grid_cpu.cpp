// Multiresolution grid encoding on the CPU (see grid_cpu.h for the conventions).
//
// Work is organised level by level so that one level's table stays hot in cache while the
// points stream past it. Per point and level the cell is located once; its 2^D corners are
// addressed by combining per-dimension contributions (added for dense/tiled tables, xor-ed for
// hashed ones), so a corner costs D integer operations and one gather of F floats.
#include "grid_cpu.h"

#include <algorithm>
#include <cmath>
#include <cstddef>

namespace fields {
namespace grid_cpu {
namespace {

// The spatial hash of Teschner et al. as used by instant-ngp: xor of coordinate * prime, with
// 1 for the first dimension so that neighbours along x stay close in memory.
constexpr uint32_t kPrimes[4] = {1u, 2654435761u, 805459861u, 3674653429u};

// x * s + 0.5 rounded twice (as the torch reference does), never fused into one FMA: a fused
// result can land on the other side of an integer and pick another cell.
inline float scaled_position(float x, float s) {
  float sx = x * s;
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
  asm("" : "+x"(sx));
#elif defined(__GNUC__)
  asm("" : "+w"(sx));
#endif
  return sx + 0.5f;
}

template <int D>
struct Cell {
  uint32_t lo[D];  // address contribution of the lower corner along d
  uint32_t hi[D];  // ... of the upper corner
  float w[D];      // interpolation weight of the upper corner along d (0 for nearest)
  float dw[D];     // d w / d x_d (0 outside the box or for nearest)
};

// Locates point `xi` in level `lv`: clamps to [0, 1], finds the cell and the weights.
template <int D, int A>
inline void locate(const Level& lv, int interpolation, const float* xi, Cell<D>& c) {
  const uint32_t top = lv.res - 1;
  uint32_t stride = 1;
  for (int d = 0; d < D; ++d) {
    const float xr = xi[d];
    const bool inside = xr >= 0.f && xr <= 1.f;  // false for NaN
    const float xv = inside ? xr : (xr > 1.f ? 1.f : 0.f);
    const float pos = scaled_position(xv, lv.scale);
    const int32_t cell = static_cast<int32_t>(pos);  // floor: pos >= 0.5
    const float f = pos - static_cast<float>(cell);
    const uint32_t p = std::min(static_cast<uint32_t>(cell), top);
    const uint32_t q = std::min(p + 1, top);
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
    if (A == kHash) {
      c.lo[d] = p * kPrimes[d];
      c.hi[d] = q * kPrimes[d];
    } else if (A == kTiled) {
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
template <int D, int A>
inline uint32_t corner_index(const Level& lv, const Cell<D>& c, int k) {
  uint32_t idx = 0;
  for (int d = 0; d < D; ++d) {
    const uint32_t v = (k >> d) & 1 ? c.hi[d] : c.lo[d];
    idx = A == kHash ? (idx ^ v) : (idx + v);
  }
  return A == kHash ? idx & (lv.size - 1) : idx;
}

template <int D>
inline float corner_weight(const Cell<D>& c, int k) {
  float w = 1.f;
  for (int d = 0; d < D; ++d) w *= (k >> d) & 1 ? c.w[d] : 1.f - c.w[d];
  return w;
}

// Points are processed in blocks: the corner addresses and weights of a whole block are
// computed, and their table rows prefetched, before the rows are read, so that the cache
// misses of the hashed levels overlap instead of queueing one behind another.
constexpr int kBlock = 16;

template <int D>
struct Block {
  static constexpr int kCorners = 1 << D;
  Cell<D> cell[kBlock];
  uint32_t idx[kBlock][kCorners];
  float w[kBlock][kCorners];
};

template <int D, int F, int A>
inline void fill_block(const Grid& g, const Level& lv, const float* x, int64_t i0, int nb,
                       const float* table, Block<D>& blk) {
  constexpr int kCorners = 1 << D;
  for (int b = 0; b < nb; ++b) {
    Cell<D>& c = blk.cell[b];
    locate<D, A>(lv, g.interpolation, x + (i0 + b) * D, c);
    for (int k = 0; k < kCorners; ++k) {
      const uint32_t idx = corner_index<D, A>(lv, c, k);
      blk.idx[b][k] = idx;
      blk.w[b][k] = corner_weight<D>(c, k);
      __builtin_prefetch(table + static_cast<size_t>(idx) * F);
    }
  }
}

// Calls body(block, i0, nb) for the blocks of points [begin, end) of level lv, each block
// filled (addresses, weights, prefetches) first.
template <int D, int F, int A, typename Body>
inline void for_each_block(const Grid& g, const Level& lv, const float* x, int64_t begin,
                           int64_t end, const float* table, Body&& body) {
  Block<D> blk;
  for (int64_t i0 = begin; i0 < end; i0 += kBlock) {
    const int nb = static_cast<int>(std::min<int64_t>(kBlock, end - i0));
    fill_block<D, F, A>(g, lv, x, i0, nb, table, blk);
    body(blk, i0, nb);
  }
}

template <int D, int F, int A>
void forward_level(const Grid& g, int l, const float* x, int64_t begin, int64_t end,
                   const float* params, float* out) {
  constexpr int kCorners = 1 << D;
  const int64_t row = static_cast<int64_t>(g.n_levels) * F;
  const Level& lv = g.levels[l];
  const float* table = params + static_cast<size_t>(lv.offset) * F;
  for_each_block<D, F, A>(g, lv, x, begin, end, table,
                          [&](const Block<D>& blk, int64_t i0, int nb) {
    for (int b = 0; b < nb; ++b) {
      float acc[F] = {};
      for (int k = 0; k < kCorners; ++k) {
        const float w = blk.w[b][k];
        const float* v = table + static_cast<size_t>(blk.idx[b][k]) * F;
        for (int f = 0; f < F; ++f) acc[f] += w * v[f];
      }
      float* o = out + (i0 + b) * row + l * F;
      for (int f = 0; f < F; ++f) o[f] = acc[f];
    }
  });
}

template <int D, int F, int A>
void backward_params_level(const Grid& g, int l, const float* x, int64_t n, const float* dy,
                           float* dparams) {
  constexpr int kCorners = 1 << D;
  const int64_t row = static_cast<int64_t>(g.n_levels) * F;
  const Level& lv = g.levels[l];
  float* table = dparams + static_cast<size_t>(lv.offset) * F;
  std::fill(table, table + static_cast<size_t>(lv.size) * F, 0.f);  // first touch here
  for_each_block<D, F, A>(g, lv, x, 0, n, table, [&](const Block<D>& blk, int64_t i0, int nb) {
    for (int b = 0; b < nb; ++b) {
      const float* gi = dy + (i0 + b) * row + l * F;
      for (int k = 0; k < kCorners; ++k) {
        const float w = blk.w[b][k];
        float* v = table + static_cast<size_t>(blk.idx[b][k]) * F;
        for (int f = 0; f < F; ++f) v[f] += w * gi[f];
      }
    }
  });
}

template <int D, int F, int A>
void backward_input_level(const Grid& g, int l, const float* x, int64_t begin, int64_t end,
                          const float* params, const float* dy, float* dx) {
  constexpr int kCorners = 1 << D;
  const int64_t row = static_cast<int64_t>(g.n_levels) * F;
  const Level& lv = g.levels[l];
  const float* table = params + static_cast<size_t>(lv.offset) * F;
  for_each_block<D, F, A>(g, lv, x, begin, end, table,
                          [&](const Block<D>& blk, int64_t i0, int nb) {
    for (int b = 0; b < nb; ++b) {
      // d out / d x_d = dw_d * sum over the cell's edges along d of (other dims' weights) *
      // (upper value - lower value); projected on dy first, one dot product per corner.
      const Cell<D>& c = blk.cell[b];
      const float* gi = dy + (i0 + b) * row + l * F;
      float dot[kCorners];
      for (int k = 0; k < kCorners; ++k) {
        const float* v = table + static_cast<size_t>(blk.idx[b][k]) * F;
        float s = 0.f;
        for (int f = 0; f < F; ++f) s += gi[f] * v[f];
        dot[k] = s;
      }
      float acc[D];
      for (int d = 0; d < D; ++d) {
        float s = 0.f;
        for (int k = 0; k < kCorners; ++k) {
          if ((k >> d) & 1) continue;
          float w = 1.f;
          for (int e = 0; e < D; ++e) {
            if (e != d) w *= (k >> e) & 1 ? c.w[e] : 1.f - c.w[e];
          }
          s += w * (dot[k | (1 << d)] - dot[k]);
        }
        acc[d] = c.dw[d] * s;
      }
      for (int d = 0; d < D; ++d) dx[(i0 + b) * D + d] += acc[d];
    }
  });
}

// Runs K<D, F, A>::run(g, l, args...) for the grid's (n_dims, n_features) and level l's
// addressing, so that every loop inside has compile-time bounds and no per-corner branch.
template <template <int, int, int> class K, int D, int F, typename... Args>
void dispatch_addressing(const Grid& g, int l, Args... args) {
  switch (g.levels[l].addressing) {
    case kHash: K<D, F, kHash>::run(g, l, args...); break;
    case kTiled: K<D, F, kTiled>::run(g, l, args...); break;
    default: K<D, F, kDense>::run(g, l, args...); break;
  }
}

template <template <int, int, int> class K, typename... Args>
void dispatch(const Grid& g, int l, Args... args) {
#define FIELDS_GRID_F(D)                                                        \
  switch (g.n_features) {                                                       \
    case 1: dispatch_addressing<K, D, 1>(g, l, args...); break;                 \
    case 2: dispatch_addressing<K, D, 2>(g, l, args...); break;                 \
    case 4: dispatch_addressing<K, D, 4>(g, l, args...); break;                 \
    case 8: dispatch_addressing<K, D, 8>(g, l, args...); break;                 \
    case 16: dispatch_addressing<K, D, 16>(g, l, args...); break;               \
    case 32: dispatch_addressing<K, D, 32>(g, l, args...); break;               \
    default: break;                                                             \
  }
  switch (g.n_dims) {
    case 1: FIELDS_GRID_F(1) break;
    case 2: FIELDS_GRID_F(2) break;
    case 3: FIELDS_GRID_F(3) break;
    case 4: FIELDS_GRID_F(4) break;
    default: break;
  }
#undef FIELDS_GRID_F
}

template <int D, int F, int A>
struct Forward {
  static void run(const Grid& g, int l, const float* x, int64_t begin, int64_t end,
                  const float* params, float* out) {
    forward_level<D, F, A>(g, l, x, begin, end, params, out);
  }
};

template <int D, int F, int A>
struct BackwardParams {
  static void run(const Grid& g, int l, const float* x, int64_t n, const float* dy,
                  float* dparams) {
    backward_params_level<D, F, A>(g, l, x, n, dy, dparams);
  }
};

template <int D, int F, int A>
struct BackwardInput {
  static void run(const Grid& g, int l, const float* x, int64_t begin, int64_t end,
                  const float* params, const float* dy, float* dx) {
    backward_input_level<D, F, A>(g, l, x, begin, end, params, dy, dx);
  }
};

}  // namespace

std::string check_grid(const Grid& g) {
  if (g.n_dims < 1 || g.n_dims > 4) return "n_dims must be 1..4";
  const int f = g.n_features;
  if (f != 1 && f != 2 && f != 4 && f != 8 && f != 16 && f != 32) {
    return "n_features must be 1, 2, 4, 8, 16 or 32";
  }
  if (g.n_levels < 1 || g.levels == nullptr) return "at least one level is needed";
  if (g.interpolation < kNearest || g.interpolation > kSmoothstep) return "bad interpolation";
  for (int l = 0; l < g.n_levels; ++l) {
    const Level& lv = g.levels[l];
    if (lv.res < 1 || lv.size < 1) return "a level has no vertices";
    if (!(lv.scale >= 0.f)) return "a level has a negative scale";
    if (lv.addressing == kHash && (lv.size & (lv.size - 1)) != 0) {
      return "a hashed level's size must be a power of two";
    }
    if (lv.addressing == kTiled && lv.tile < 1) return "a tiled level needs tile >= 1";
    if (lv.addressing < kDense || lv.addressing > kTiled) return "bad addressing";
  }
  return "";
}

void forward(const Grid& g, const float* x, int64_t begin, int64_t end, const float* params,
             float* out) {
  for (int l = 0; l < g.n_levels; ++l) dispatch<Forward>(g, l, x, begin, end, params, out);
}

void backward_params(const Grid& g, const float* x, int64_t n, const float* dy, int first,
                     int step, float* dparams) {
  for (int l = first; l < g.n_levels; l += step) {
    dispatch<BackwardParams>(g, l, x, n, dy, dparams);
  }
}

void backward_input(const Grid& g, const float* x, int64_t begin, int64_t end,
                    const float* params, const float* dy, float* dx) {
  std::fill(dx + begin * g.n_dims, dx + end * g.n_dims, 0.f);
  if (g.interpolation == kNearest) return;  // piecewise constant: zero almost everywhere
  for (int l = 0; l < g.n_levels; ++l) {
    dispatch<BackwardInput>(g, l, x, begin, end, params, dy, dx);
  }
}

}  // namespace grid_cpu
}  // namespace fields
