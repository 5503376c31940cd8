// Ray marching through an occupancy grid on the CPU (see march_cpu.h for the conventions).
//
// The stepping is the dense one (every step of every ray is visited); what is kept cheap is
// the test of a step: a handful of float operations and one byte read from the grid. Skipping
// empty cells by jumping to their exit would change where the float32 steps land, and the
// reference must reproduce the kernel's samples exactly.
#include "march_cpu.h"

#include <algorithm>
#include <cmath>

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
};

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
  return f.occupancy[(ix * f.res + iy) * f.res + iz] != 0;
}

}  // namespace

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

void march(const Grid& g, const Stepping& s, const Rays& rays, int64_t begin, int64_t end,
           int64_t* counts, Samples& out) {
  const Frame f = make_frame(g);
  const float cone = s.cone_angle;
  const float step = s.step_size;
  const float max_step = s.max_step;
  for (int64_t r = begin; r < end; ++r) {
    const float* o = rays.origins + r * 3;
    const float* d = rays.directions + r * 3;
    const float t_max = rays.t_max[r];
    float t = rays.t_min[r];
    int64_t count = 0;
    if (std::isfinite(t) && std::isfinite(t_max)) {
      while (t < t_max) {
        const float dt = std::min(std::max(t * cone, step), max_step);
        const float t_next = t + dt;
        if (!(t_next > t)) break;  // the step no longer moves t
        const float t_end = std::min(t_next, t_max);
        const float mid = (t + t_end) * 0.5f;
        float p[3];
        for (int k = 0; k < 3; ++k) p[k] = o[k] + rounded(d[k] * mid);
        if (occupied_at(f, p)) {
          out.t_start.push_back(t);
          out.t_end.push_back(t_end);
          ++count;
        }
        t = t_next;
      }
    }
    counts[r] = count;
  }
}

}  // namespace march_cpu
}  // namespace fields
