// Ray marching through an occupancy grid on the CPU (see march_cpu.h for the conventions).
//
// Every step of a ray follows the reference's chain of float32 additions; what is kept cheap
// is the test of a step (a handful of float operations, 4 steps at a time, and one bit read
// from the grid) and, for bounded scenes with constant steps, the steps through empty space:
// blocks of the grid with nothing occupied are crossed by jumping along the same chain
// (`skip_steps`), so that the samples stay the reference's bit for bit.
#include "march_cpu.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <utility>
#include <vector>

namespace fields {
namespace march_cpu {
namespace {

// A product rounded to float32 on its own, never fused with the addition that follows into
// one FMA (the build allows contraction; the torch reference rounds every operation).
inline float rounded(float v) {
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
  asm("" : "+x"(v));
#elif defined(__GNUC__)
  asm("" : "+w"(v));
#endif
  return v;
}

// Constants derived from the aabb, computed as the reference computes them.
struct Frame {
  float lo[3], hi[3], extent[3], centre[3], half[3];
  float res_f, top_f;
  int32_t res;
  int contraction;
  const uint8_t* occupancy;
  const uint8_t* bits;
};

inline bool cell_occupied(const Frame& f, int64_t flat) {
  return f.bits != nullptr ? ((f.bits[flat >> 3] >> (flat & 7)) & 1) != 0
                           : f.occupancy[flat] != 0;
}

Frame make_frame(const Grid& g) {
  Frame f;
  for (int k = 0; k < 3; ++k) {
    f.lo[k] = g.aabb[k];
    f.hi[k] = g.aabb[3 + k];
    f.extent[k] = f.hi[k] - f.lo[k];
    f.centre[k] = (f.lo[k] + f.hi[k]) * 0.5f;
    f.half[k] = f.extent[k] * 0.5f;
  }
  f.res = g.res;
  f.res_f = static_cast<float>(g.res);
  f.top_f = static_cast<float>(g.res - 1);
  f.contraction = g.contraction;
  f.occupancy = g.occupancy;
  f.bits = g.bits;
  return f;
}

// floor(gc * res) clamped to [0, res - 1]; NaN -> 0.
inline int32_t cell_of(const Frame& f, float gc) {
  float v = gc * f.res_f;
  v = v >= 0.f ? v : 0.f;
  v = v <= f.top_f ? v : f.top_f;
  return static_cast<int32_t>(v);  // truncation is floor for v >= 0
}

inline bool occupied_at(const Frame& f, const float p[3]) {
  float gc[3];
  if (f.contraction == kNone) {
    for (int k = 0; k < 3; ++k) {
      if (!(p[k] >= f.lo[k] && p[k] <= f.hi[k])) return false;  // false for NaN too
      gc[k] = (p[k] - f.lo[k]) / f.extent[k];
    }
  } else {
    float y[3];
    for (int k = 0; k < 3; ++k) y[k] = (p[k] - f.centre[k]) / f.half[k];
    float n2 = rounded(y[0] * y[0]) + rounded(y[1] * y[1]);
    n2 = n2 + rounded(y[2] * y[2]);
    if (n2 <= 1.f) {
      for (int k = 0; k < 3; ++k) gc[k] = (y[k] + 2.f) * 0.25f;
    } else {
      const float n = std::sqrt(n2);
      const float s = (2.f - 1.f / n) / n;
      for (int k = 0; k < 3; ++k) gc[k] = (rounded(y[k] * s) + 2.f) * 0.25f;
    }
  }
  const int64_t ix = cell_of(f, gc[0]);
  const int64_t iy = cell_of(f, gc[1]);
  const int64_t iz = cell_of(f, gc[2]);
  return cell_occupied(f, (ix * f.res + iy) * f.res + iz);
}

}  // namespace

void pack_bits(const uint8_t* occupancy, int64_t n, int64_t begin, int64_t end, uint8_t* bits) {
  for (int64_t j = begin; j < end; ++j) {
    uint8_t b = 0;
    const int64_t c0 = 8 * j;
    for (int k = 0; k < 8 && c0 + k < n; ++k) b |= static_cast<uint8_t>(occupancy[c0 + k] != 0) << k;
    bits[j] = b;
  }
}

void pack_coarse(const uint8_t* bits, int32_t res, uint8_t* coarse) {
  // Block b is marked when a cell within one cell of it is occupied (the blocks are dilated by
  // a cell, so that a point computed in float32 a hair across a block's face, where the exact
  // ray runs along it, still finds its cell inside a marked block). The dilation runs on the
  // bits, axis by axis (z within each row's bytes, then y and x across rows).
  static_assert(kCoarse == 4, "a block's row is half a byte of bits");
  const int64_t rb = res / 8, n_rows = static_cast<int64_t>(res) * res;
  std::vector<uint8_t> a(static_cast<size_t>(n_rows * rb)), b(a.size());
  for (int64_t row = 0; row < n_rows; ++row) {
    const uint8_t* r = bits + row * rb;
    uint8_t* o = a.data() + row * rb;
    for (int64_t j = 0; j < rb; ++j) {
      const uint8_t v = r[j];
      o[j] = static_cast<uint8_t>(v | (v << 1) | (v >> 1) | (j > 0 ? r[j - 1] >> 7 : 0) |
                                  (j + 1 < rb ? r[j + 1] << 7 : 0));
    }
  }
  for (int64_t ix = 0; ix < res; ++ix)
    for (int64_t iy = 0; iy < res; ++iy) {
      uint8_t* o = b.data() + (ix * res + iy) * rb;
      const uint8_t* m = a.data() + (ix * res + iy) * rb;
      const uint8_t* lo = iy > 0 ? m - rb : m;
      const uint8_t* hi = iy + 1 < res ? m + rb : m;
      for (int64_t j = 0; j < rb; ++j) o[j] = lo[j] | m[j] | hi[j];
    }
  for (int64_t ix = 0; ix < res; ++ix) {
    uint8_t* o = a.data() + ix * res * rb;
    const uint8_t* m = b.data() + ix * res * rb;
    const uint8_t* lo = ix > 0 ? m - res * rb : m;
    const uint8_t* hi = ix + 1 < res ? m + res * rb : m;
    for (int64_t j = 0; j < res * rb; ++j) o[j] = lo[j] | m[j] | hi[j];
  }
  const int64_t cr = res / kCoarse;
  std::fill(coarse, coarse + cr * cr * cr, 0);
  for (int64_t ix = 0; ix < res; ++ix)
    for (int64_t iy = 0; iy < res; ++iy) {
      const uint8_t* r = a.data() + (ix * res + iy) * rb;
      uint8_t* c = coarse + ((ix / kCoarse) * cr + iy / kCoarse) * cr;
      for (int64_t j = 0; j < rb; ++j) {
        c[2 * j] |= (r[j] & 0x0f) != 0;
        c[2 * j + 1] |= (r[j] & 0xf0) != 0;
      }
    }
}

void contract_points(const float aabb[6], int contraction, const float* x, int64_t begin,
                     int64_t end, float* gc, bool* in_unit) {
  float lo[3], hi[3], extent[3], centre[3], half[3];
  for (int k = 0; k < 3; ++k) {
    lo[k] = aabb[k];
    hi[k] = aabb[3 + k];
    extent[k] = hi[k] - lo[k];
    centre[k] = (lo[k] + hi[k]) * 0.5f;
    half[k] = extent[k] * 0.5f;
  }
  for (int64_t i = begin; i < end; ++i) {
    const float* p = x + i * 3;
    float g[3];
    if (contraction == kNone) {
      for (int k = 0; k < 3; ++k) g[k] = (p[k] - lo[k]) / extent[k];
    } else {
      float y[3];
      for (int k = 0; k < 3; ++k) y[k] = (p[k] - centre[k]) / half[k];
      float n2 = rounded(y[0] * y[0]) + rounded(y[1] * y[1]);
      n2 = n2 + rounded(y[2] * y[2]);
      if (n2 <= 1.f) {
        for (int k = 0; k < 3; ++k) g[k] = (y[k] + 2.f) * 0.25f;
      } else {  // n2 > 1 (NaN took the other branch, as torch.where does with a false test)
        const float n = std::sqrt(n2);
        const float s = (2.f - 1.f / n) / n;
        for (int k = 0; k < 3; ++k) g[k] = (rounded(y[k] * s) + 2.f) * 0.25f;
      }
    }
    bool unit = true;
    for (int k = 0; k < 3; ++k) {
      unit = unit && g[k] >= 0.f && g[k] <= 1.f;
      // torch.clamp(0, 1): NaN stays NaN
      gc[i * 3 + k] = g[k] != g[k] ? g[k] : std::min(std::max(g[k], 0.f), 1.f);
    }
    in_unit[i] = unit;
  }
}

std::string check(const Grid& g, const Stepping& s) {
  if (g.res < 1 || g.occupancy == nullptr) return "the occupancy grid is empty";
  if (g.contraction != kNone && g.contraction != kMipNerf360) return "bad contraction";
  for (int k = 0; k < 3; ++k) {
    if (!(g.aabb[k] < g.aabb[3 + k]) || !std::isfinite(g.aabb[k]) ||
        !std::isfinite(g.aabb[3 + k])) {
      return "the aabb must be finite with min < max on every axis";
    }
  }
  if (!(s.step_size > 0.f) || !std::isfinite(s.step_size)) {
    return "step_size must be positive and finite";
  }
  if (!(s.cone_angle >= 0.f) || !std::isfinite(s.cone_angle)) {
    return "cone_angle must be >= 0 and finite";
  }
  if (!(s.max_step > 0.f)) return "max_step must be positive";
  return "";
}

namespace {

// The occupancy test of 4 steps at once (SSE vectors, the baseline of x86-64; portable vector
// code elsewhere), with the same float32 operations as occupied_at: `vrounded` keeps every
// product its own rounding, as `rounded` does.
typedef float f4 __attribute__((vector_size(16)));
typedef int32_t i4 __attribute__((vector_size(16)));

inline f4 vrounded(f4 v) {
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
  asm("" : "+x"(v));
#elif defined(__GNUC__) && defined(__aarch64__)
  asm("" : "+w"(v));
#endif
  return v;
}

inline f4 splat(float v) { return f4{v, v, v, v}; }

inline i4 vcell_of(const Frame& f, f4 gc) {
  f4 v = gc * splat(f.res_f);
  const f4 zero = splat(0.f), top = splat(f.top_f);
  v = v >= zero ? v : zero;  // NaN -> 0
  v = v <= top ? v : top;
  return __builtin_convertvector(v, i4);  // truncation is floor for v >= 0
}

// occ[i] = occupancy of the midpoints of steps [ts[i], tes[i]), i < 4.
inline void occupied4(const Frame& f, const float o[3], const float d[3], const float* ts,
                      const float* tes, uint8_t* occ) {
  f4 t, te;
  std::memcpy(&t, ts, sizeof(f4));
  std::memcpy(&te, tes, sizeof(f4));
  const f4 mid = (t + te) * splat(0.5f);
  f4 p[3];
  for (int k = 0; k < 3; ++k) p[k] = splat(o[k]) + vrounded(splat(d[k]) * mid);
  f4 gc[3];
  i4 inside = i4{-1, -1, -1, -1};
  if (f.contraction == kNone) {
    for (int k = 0; k < 3; ++k) {
      inside &= (p[k] >= splat(f.lo[k])) & (p[k] <= splat(f.hi[k]));  // false for NaN too
      gc[k] = (p[k] - splat(f.lo[k])) / splat(f.extent[k]);
    }
  } else {
    f4 y[3];
    for (int k = 0; k < 3; ++k) y[k] = (p[k] - splat(f.centre[k])) / splat(f.half[k]);
    f4 n2 = vrounded(y[0] * y[0]) + vrounded(y[1] * y[1]);
    n2 = n2 + vrounded(y[2] * y[2]);
    const i4 in_ball = n2 <= splat(1.f);
#if defined(__SSE__)
    const f4 n = __builtin_ia32_sqrtps(n2);
#else
    const f4 n = f4{std::sqrt(n2[0]), std::sqrt(n2[1]), std::sqrt(n2[2]), std::sqrt(n2[3])};
#endif
    const f4 sc = (splat(2.f) - splat(1.f) / n) / n;
    for (int k = 0; k < 3; ++k) {
      const f4 inner = (y[k] + splat(2.f)) * splat(0.25f);
      const f4 outer = (vrounded(y[k] * sc) + splat(2.f)) * splat(0.25f);
      gc[k] = in_ball ? inner : outer;
    }
  }
  const i4 ix = vcell_of(f, gc[0]), iy = vcell_of(f, gc[1]), iz = vcell_of(f, gc[2]);
  const i4 res = i4{f.res, f.res, f.res, f.res};
  const i4 flat = (ix * res + iy) * res + iz;
  for (int i = 0; i < 4; ++i)
    occ[i] = static_cast<uint8_t>(inside[i] != 0 && cell_occupied(f, flat[i]));
}

// Up to kChunkSteps steps of a ray's chain from *t while *t < limit, as the reference takes
// them: [t, min(t + dt, t_max)) with dt = dt_of(t), t <- t + dt; *more = false where a step
// no longer moves t. Returns how many (ts, tes get them).
constexpr int kChunkSteps = 64;
template <typename Dt>
inline int chain_steps(float* t, float limit, float t_max, Dt dt_of, float* ts, float* tes,
                       bool* more, int max_steps = kChunkSteps) {
  int n = 0;
  while (n < max_steps && *t < limit) {
    const float t_next = *t + dt_of(*t);
    if (!(t_next > *t)) {  // the step no longer moves t
      *more = false;
      break;
    }
    ts[n] = *t;
    tes[n] = std::min(t_next, t_max);
    ++n;
    *t = t_next;
  }
  return n;
}

// occ[i] = occupancy of the midpoints of steps [ts[i], tes[i]), i < n, 4 at a time (ts and tes
// padded in place to a multiple of 4, with room for it).
inline void occupied_steps(const Frame& f, const float o[3], const float d[3], float* ts,
                           float* tes, int n, uint8_t* occ) {
  for (int i = n; i < ((n + 3) & ~3); ++i) ts[i] = tes[i] = ts[n - 1];
  for (int i = 0; i < n; i += 4) occupied4(f, o, d, ts + i, tes + i, occ + i);
}

// Appends the steps [ts[i], tes[i]) with occ[i] (0 or 1) set, i < n, without branches;
// returns how many.
inline int append_kept(const float* ts, const float* tes, const uint8_t* occ, int n,
                       Samples& out) {
  const size_t base = out.t_start.size();
  out.t_start.resize(base + n);
  out.t_end.resize(base + n);
  float* os = out.t_start.data() + base;
  float* oe = out.t_end.data() + base;
  int kept = 0;
  for (int i = 0; i < n; ++i) {
    os[kept] = ts[i];
    oe[kept] = tes[i];
    kept += occ[i];
  }
  out.t_start.resize(base + kept);
  out.t_end.resize(base + kept);
  return kept;
}

// -- empty-space skipping (bounded scenes, constant steps) --
//
// The samples must be the reference's bit for bit, so the steps still follow its chain of
// float32 additions t <- t + dt; what is skipped is the occupancy test of steps whose midpoints
// lie in blocks of the coarse grid with no occupied cell (dilated by a cell), and most of the
// chain itself: within one binade [2^(e-1), 2^e) every addition of dt adds the same delta
// (the sum is rounded to the same grid of multiples of the binade's ulp), so k steps are one
// exact addition of k * delta. (Where dt falls exactly halfway between two multiples of the
// ulp, the rounding depends on t's last bit; that binade is then stepped one by one.)

// The first value of the chain from t whose next value exceeds a (every step before it ends
// at or before a), or the value where the chain stalls (t + dt == t).
inline float skip_steps(float t, float dt, float a) {
  for (;;) {
    const float tn = t + dt;
    if (!(tn > t) || tn > a) return t;
    if (t >= 1e-30f) {  // a normal, positive t: whole binades at once
      int e = 0;
      std::frexp(t, &e);
      const float top = std::ldexp(1.0f, e);
      const float t2 = std::nextafter(t, top);
      if (tn < top && t2 + dt < top) {
        const float delta = tn - t;  // exact: both in the binade
        if ((t2 + dt) - t2 == delta) {  // not a tie: every step of the binade adds delta
          const double by_a = std::floor((static_cast<double>(a) - t) / delta) - 1.0;
          const double by_top = std::floor((static_cast<double>(top) - t) / delta) - 2.0;
          const double k = std::min(by_a, by_top);
          if (k >= 1.0) {
            t = static_cast<float>(static_cast<double>(t) + k * static_cast<double>(delta));
            continue;
          }
        }
      }
    }
    t = tn;
  }
}

// The t-intervals of a ray (in [t0, t1]) through marked blocks of the coarse grid, by a 3D DDA
// over the blocks, each widened by `margin` and merged where they touch; `first_only`: only the
// first (the DDA stops at the first unmarked block after it).
void coarse_spans(const Frame& f, const uint8_t* coarse, const float o[3], const float d[3],
                  float t0, float t1, std::vector<std::pair<float, float>>* spans,
                  bool first_only = false) {
  spans->clear();
  const int32_t cr = f.res / kCoarse;
  const double crd = cr;
  double A[3], B[3];
  double lo = t0, hi = t1;
  for (int k = 0; k < 3; ++k) {
    A[k] = (static_cast<double>(o[k]) - f.lo[k]) / f.extent[k] * crd;
    B[k] = static_cast<double>(d[k]) / f.extent[k] * crd;
    if (B[k] == 0.0) {
      if (A[k] < -1e-3 || A[k] > crd + 1e-3) return;  // runs beside the box
    } else {
      double a = (0.0 - A[k]) / B[k], b = (crd - A[k]) / B[k];
      if (a > b) std::swap(a, b);
      lo = std::max(lo, a);
      hi = std::min(hi, b);
    }
  }
  double bmax = 0.0;
  for (int k = 0; k < 3; ++k) bmax = std::max(bmax, std::fabs(B[k]));
  // a thousandth of a block along the ray, and never less than float32's reach at these t
  const double margin = std::max(bmax > 0.0 ? 1e-3 / bmax : 0.0,
                                 4e-6 * std::max(std::fabs(lo), std::fabs(hi)));
  lo -= margin;
  hi += margin;
  if (!(lo < hi)) return;
  int32_t c[3], step[3];
  double t_next[3], t_delta[3];
  const double start = lo + margin;  // inside the box's widened span
  for (int k = 0; k < 3; ++k) {
    const double u = A[k] + B[k] * start;
    c[k] = static_cast<int32_t>(std::min(std::max(std::floor(u), 0.0), crd - 1.0));
    if (B[k] > 0.0) {
      step[k] = 1;
      t_next[k] = (c[k] + 1 - A[k]) / B[k];
      t_delta[k] = 1.0 / B[k];
    } else if (B[k] < 0.0) {
      step[k] = -1;
      t_next[k] = (c[k] - A[k]) / B[k];
      t_delta[k] = -1.0 / B[k];
    } else {
      step[k] = 0;
      t_next[k] = INFINITY;
      t_delta[k] = INFINITY;
    }
  }
  double t = lo;
  for (;;) {
    const int axis = t_next[0] <= t_next[1] ? (t_next[0] <= t_next[2] ? 0 : 2)
                                            : (t_next[1] <= t_next[2] ? 1 : 2);
    const double exit = std::min(t_next[axis], hi);
    if (coarse[(static_cast<int64_t>(c[0]) * cr + c[1]) * cr + c[2]] != 0) {
      const float a = static_cast<float>(t - margin), b = static_cast<float>(exit + margin);
      if (!spans->empty() && spans->back().second >= a) spans->back().second = b;
      else spans->emplace_back(a, b);
    } else if (first_only && !spans->empty()) {
      break;
    }
    if (exit >= hi) break;
    t = exit;
    c[axis] += step[axis];
    if (c[axis] < 0 || c[axis] >= cr) break;
    t_next[axis] += t_delta[axis];
  }
}

void march_skipping(const Frame& f, const uint8_t* coarse, float dt, const Rays& rays,
                    int64_t begin, int64_t end, int64_t* counts, Samples& out) {
  alignas(16) float ts[kChunkSteps + 4], tes[kChunkSteps + 4];
  alignas(16) uint8_t occ[kChunkSteps + 4];
  std::vector<std::pair<float, float>> spans;
  for (int64_t r = begin; r < end; ++r) {
    const float* o = rays.origins + r * 3;
    const float* d = rays.directions + r * 3;
    const float t_max = rays.t_max[r];
    float t = rays.t_min[r];
    int64_t count = 0;
    if (std::isfinite(t) && std::isfinite(t_max) && t < t_max)
      coarse_spans(f, coarse, o, d, t, t_max, &spans);
    else
      spans.clear();
    bool more = true;
    for (size_t i = 0; i < spans.size() && more && t < t_max; ++i) {
      t = skip_steps(t, dt, spans[i].first);
      const float limit = std::min(t_max, spans[i].second);
      while (more && t < limit) {
        const int n = chain_steps(&t, limit, t_max, [dt](float) { return dt; }, ts, tes, &more);
        if (n == 0) break;
        occupied_steps(f, o, d, ts, tes, n, occ);
        count += append_kept(ts, tes, occ, n, out);
      }
    }
    counts[r] = count;
  }
}

}  // namespace

int RayMarcher::next(const float o[3], const float d[3], float* t_io, float* span_end,
                     float t_max, int budget, float* out_s, float* out_e, bool* done) {
  float t = *t_io;
  *done = false;
  if (!(std::isfinite(t) && std::isfinite(t_max) && t < t_max)) {
    *done = true;
    return 0;
  }
  const Frame f = make_frame(grid_);
  alignas(16) float ts[kChunkSteps + 4], tes[kChunkSteps + 4];
  alignas(16) uint8_t occ[kChunkSteps + 4];
  const float dt = dt_;
  int count = 0;
  bool more = true;
  while (count < budget) {
    if (!more || !(t < t_max)) {
      *done = true;
      break;
    }
    if (grid_.coarse != nullptr && !(t < *span_end)) {
      // past the marked span the last call was in (or none known yet): the next one ahead
      coarse_spans(f, grid_.coarse, o, d, t, t_max, &spans_, true);
      if (spans_.empty()) {
        *done = true;
        break;
      }
      t = skip_steps(t, dt, spans_[0].first);
      // (a span that ends where t is would not move the marching on: step densely instead)
      *span_end = spans_[0].second > t ? spans_[0].second : t_max;
      continue;
    }
    const float limit = grid_.coarse != nullptr ? std::min(t_max, *span_end) : t_max;
    // no more steps than the samples still wanted (each kept step is one), 4 at a time
    const int want = std::min(kChunkSteps, (budget - count + 3) & ~3);
    const int n =
        chain_steps(&t, limit, t_max, [dt](float) { return dt; }, ts, tes, &more, want);
    if (n == 0) continue;  // at the span's end, the ray's end, or the chain stalled
    occupied_steps(f, o, d, ts, tes, n, occ);
    for (int j = 0; j < n; ++j) {
      if (!occ[j]) continue;
      out_s[count] = ts[j];
      out_e[count] = tes[j];
      if (++count == budget) {
        if (j + 1 < n) t = ts[j + 1];  // the next call goes on from the step after it
        break;
      }
    }
  }
  *t_io = t;
  return count;
}

void march(const Grid& g, const Stepping& s, const Rays& rays, int64_t begin, int64_t end,
           int64_t* counts, Samples& out) {
  const Frame f = make_frame(g);
  if (g.coarse != nullptr && s.cone_angle == 0.f && g.contraction == kNone && f.res <= 1024 &&
      f.res % 8 == 0) {
    march_skipping(f, g.coarse, std::min(std::max(0.f, s.step_size), s.max_step), rays, begin,
                   end, counts, out);
    return;
  }
  const float cone = s.cone_angle;
  const float step = s.step_size;
  const float max_step = s.max_step;
  // Each ray in chunks of kChunkSteps steps: the step boundaries first (a sequential chain of
  // additions, as the reference), then the occupancy tests 4 at a time, then the kept ones
  // appended without branches. The 4-wide test needs res^3 in int32.
  const float fixed_dt = std::min(std::max(0.f, step), max_step);
  const bool wide = f.res <= 1024;
  alignas(16) float ts[kChunkSteps + 4], tes[kChunkSteps + 4];
  alignas(16) uint8_t occ[kChunkSteps + 4];
  for (int64_t r = begin; r < end; ++r) {
    const float* o = rays.origins + r * 3;
    const float* d = rays.directions + r * 3;
    const float t_max = rays.t_max[r];
    float t = rays.t_min[r];
    int64_t count = 0;
    if (std::isfinite(t) && std::isfinite(t_max)) {
      bool more = true;
      while (more && t < t_max) {
        // (cone 0: t * 0 is +-0 for the finite t here, so dt is the constant fixed_dt)
        const int n = chain_steps(
            &t, t_max, t_max,
            [&](float tt) {
              return cone == 0.f ? fixed_dt : std::min(std::max(tt * cone, step), max_step);
            },
            ts, tes, &more);
        if (n == 0) break;
        if (wide) {
          occupied_steps(f, o, d, ts, tes, n, occ);
        } else {
          for (int i = 0; i < n; ++i) {
            const float mid = (ts[i] + tes[i]) * 0.5f;
            float p[3];
            for (int k = 0; k < 3; ++k) p[k] = o[k] + rounded(d[k] * mid);
            occ[i] = occupied_at(f, p) ? 1 : 0;
          }
        }
        count += append_kept(ts, tes, occ, n, out);
      }
    }
    counts[r] = count;
  }
}

}  // namespace march_cpu
}  // namespace fields
