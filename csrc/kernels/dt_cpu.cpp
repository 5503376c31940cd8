// Distance transform of a point set on a regular grid; see dt_cpu.h for the conventions.
#include "dt_cpu.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

namespace fields {
namespace dt_cpu {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();

inline int64_t clamp_index(float v, int64_t n) {
  if (!(v == v)) return 0;  // NaN
  const float r = std::nearbyint(v);
  if (r <= 0.f) return 0;
  if (r >= static_cast<float>(n - 1)) return n - 1;
  return static_cast<int64_t>(r);
}

// Lower envelope of the parabolas (p - q)^2 + f[q] over a line of length n (Felzenszwalb and
// Huttenlocher 2012), carrying the feature of the minimising q. f and feat hold the line's
// input; d and fout receive the result. v, z: scratch of n and n + 1 entries.
void envelope_1d(const double* f, const int32_t* feat, int64_t n, double* d, int32_t* fout,
                 int64_t* v, double* z) {
  int64_t k = -1;
  for (int64_t q = 0; q < n; ++q) {
    if (!std::isfinite(f[q])) continue;
    if (k < 0) {
      k = 0;
      v[0] = q;
      z[0] = -std::numeric_limits<double>::infinity();
      z[1] = std::numeric_limits<double>::infinity();
      continue;
    }
    double s = 0.0;
    while (k >= 0) {
      const int64_t vk = v[k];
      s = ((f[q] + double(q) * double(q)) - (f[vk] + double(vk) * double(vk))) /
          (2.0 * double(q - vk));
      if (s <= z[k]) {
        --k;
      } else {
        break;
      }
    }
    if (k < 0) {
      k = 0;
      v[0] = q;
      z[0] = -std::numeric_limits<double>::infinity();
    } else {
      ++k;
      v[k] = q;
      z[k] = s;
    }
    z[k + 1] = std::numeric_limits<double>::infinity();
  }
  if (k < 0) {  // no seed on this line
    for (int64_t p = 0; p < n; ++p) {
      d[p] = std::numeric_limits<double>::infinity();
      fout[p] = -1;
    }
    return;
  }
  k = 0;
  for (int64_t p = 0; p < n; ++p) {
    while (z[k + 1] < double(p)) ++k;
    const double dp = double(p - v[k]);
    d[p] = dp * dp + f[v[k]];
    fout[p] = feat[v[k]];
  }
}

inline float point_distance_sq(const float* points, int32_t i, float cx, float cy, float cz) {
  const float dx = points[3 * i] - cx;
  const float dy = points[3 * i + 1] - cy;
  const float dz = points[3 * i + 2] - cz;
  return dx * dx + dy * dy + dz * dz;
}

}  // namespace

std::string check(const GridSpec& g) {
  if (!(g.voxel > 0.f) || !std::isfinite(g.voxel)) return "voxel size must be positive and finite";
  for (int a = 0; a < 3; ++a) {
    if (g.dims[a] < 1) return "grid dimensions must be >= 1";
    if (!std::isfinite(g.origin[a])) return "grid origin must be finite";
  }
  if (g.dims[0] > (int64_t{1} << 30) || g.dims[1] > (int64_t{1} << 30) ||
      g.dims[2] > (int64_t{1} << 30) || g.n_cells() >= (int64_t{1} << 31))
    return "grid has 2^31 cells or more; use a larger voxel";
  return "";
}

void seed_cells(const GridSpec& g, const float* points, int64_t begin, int64_t end,
                int32_t* cell_of_point) {
  const float inv = 1.f / g.voxel;
  for (int64_t i = begin; i < end; ++i) {
    const int64_t ix = clamp_index((points[3 * i] - g.origin[0]) * inv, g.dims[0]);
    const int64_t iy = clamp_index((points[3 * i + 1] - g.origin[1]) * inv, g.dims[1]);
    const int64_t iz = clamp_index((points[3 * i + 2] - g.origin[2]) * inv, g.dims[2]);
    cell_of_point[i] = static_cast<int32_t>((iz * g.dims[1] + iy) * g.dims[0] + ix);
  }
}

void init_cells(const uint8_t* has_points, int64_t begin, int64_t end, float* sq, int32_t* feat) {
  for (int64_t c = begin; c < end; ++c) {
    const bool seeded = has_points[c] != 0;
    sq[c] = seeded ? 0.f : kInf;
    feat[c] = seeded ? static_cast<int32_t>(c) : -1;
  }
}

void edt_pass(const GridSpec& g, int axis, int64_t line_begin, int64_t line_end, float* sq,
              int32_t* feat) {
  const int64_t nx = g.dims[0], ny = g.dims[1];
  const int64_t n = g.dims[axis];
  const int64_t stride = axis == 0 ? 1 : (axis == 1 ? nx : nx * ny);
  // the other two axes, lower one fastest
  const int a0 = axis == 0 ? 1 : 0;
  const int64_t n0 = g.dims[a0];
  const int64_t s0 = a0 == 0 ? 1 : nx;
  const int a1 = axis == 2 ? 1 : 2;
  const int64_t s1 = a1 == 1 ? nx : nx * ny;
  std::vector<double> f(n), d(n), z(n + 1);
  std::vector<int32_t> fin(n), fout(n);
  std::vector<int64_t> v(n);
  for (int64_t line = line_begin; line < line_end; ++line) {
    const int64_t base = (line % n0) * s0 + (line / n0) * s1;
    bool any = false;
    for (int64_t p = 0; p < n; ++p) {
      const int64_t c = base + p * stride;
      f[p] = sq[c];
      fin[p] = feat[c];
      any = any || std::isfinite(sq[c]);
    }
    if (!any) continue;  // nothing to propagate: the line stays +inf / -1
    envelope_1d(f.data(), fin.data(), n, d.data(), fout.data(), v.data(), z.data());
    for (int64_t p = 0; p < n; ++p) {
      const int64_t c = base + p * stride;
      sq[c] = static_cast<float>(d[p]);
      feat[c] = fout[p];
    }
  }
}

void distances(const GridSpec& g, const float* points, const int64_t* bucket_offsets,
               const int32_t* bucket_points, const float* sq, const int32_t* feat, int64_t begin,
               int64_t end, float* out, int32_t* nearest) {
  const int64_t nx = g.dims[0], ny = g.dims[1], nz = g.dims[2];
  const float near_sq = (kExactRadius - 1.7320508f) * (kExactRadius - 1.7320508f);
  for (int64_t c = begin; c < end; ++c) {
    const int64_t ix = c % nx, iy = (c / nx) % ny, iz = c / (nx * ny);
    const float cx = g.origin[0] + g.voxel * static_cast<float>(ix);
    const float cy = g.origin[1] + g.voxel * static_cast<float>(iy);
    const float cz = g.origin[2] + g.voxel * static_cast<float>(iz);
    float best = kInf;
    int32_t best_i = -1;
    if (feat[c] < 0) {
      out[c] = kInf;
      nearest[c] = -1;
      continue;
    }
    if (sq[c] <= near_sq) {
      // exact: every point in the cube of cells within kExactRadius of this cell
      for (int64_t z = std::max<int64_t>(iz - kExactRadius, 0);
           z <= std::min<int64_t>(iz + kExactRadius, nz - 1); ++z) {
        for (int64_t y = std::max<int64_t>(iy - kExactRadius, 0);
             y <= std::min<int64_t>(iy + kExactRadius, ny - 1); ++y) {
          const int64_t row = (z * ny + y) * nx;
          const int64_t x0 = std::max<int64_t>(ix - kExactRadius, 0);
          const int64_t x1 = std::min<int64_t>(ix + kExactRadius, nx - 1);
          for (int64_t k = bucket_offsets[row + x0]; k < bucket_offsets[row + x1 + 1]; ++k) {
            const float d = point_distance_sq(points, bucket_points[k], cx, cy, cz);
            if (d < best) {
              best = d;
              best_i = bucket_points[k];
            }
          }
        }
      }
    } else {
      const int64_t s = feat[c];
      for (int64_t k = bucket_offsets[s]; k < bucket_offsets[s + 1]; ++k) {
        const float d = point_distance_sq(points, bucket_points[k], cx, cy, cz);
        if (d < best) {
          best = d;
          best_i = bucket_points[k];
        }
      }
    }
    out[c] = std::sqrt(best);
    nearest[c] = best_i;
  }
}

}  // namespace dt_cpu
}  // namespace fields
