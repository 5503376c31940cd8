// Multiresolution grid encoding (Müller et al. 2022) on the CPU: framework-free kernels on raw
// pointers. One level of a grid is a table of `size` entries of `n_features` floats, addressed
// densely, by a spatial hash, or by a periodic tile; a point is encoded per level by
// interpolating the 2^D table entries at the corners of its grid cell.
//
// Conventions (shared with the torch reference, fields/nn/grid.py):
//   inputs are clamped to [0, 1] (the gradient of an input outside the box is 0);
//   pos = x * scale + 0.5, cell = floor(pos), frac = pos - cell; corner coordinates are
//   clamped to [0, res - 1] (clamp-to-edge);
//   output (N, n_levels * n_features), level-major: out[i, l * F + f];
//   params: one flat array, level l's entry e at (offset_l + e) * F.
#pragma once

#include <cstdint>
#include <string>

namespace fields {
namespace grid_cpu {

enum Interpolation : int { kNearest = 0, kLinear = 1, kSmoothstep = 2 };
enum Addressing : int { kDense = 0, kHash = 1, kTiled = 2 };

struct Level {
  float scale = 0.f;     // pos = x * scale + 0.5
  uint32_t res = 0;      // grid vertices per dimension
  uint32_t size = 0;     // table entries (a power of two when hashed)
  uint32_t offset = 0;   // first entry of this level in the flat table
  uint32_t tile = 0;     // period in vertices (kTiled)
  int addressing = kDense;
};

struct Grid {
  int n_dims = 3;        // 1..4
  int n_features = 2;    // 1, 2, 4, 8, 16 or 32
  int n_levels = 0;
  int interpolation = kLinear;
  const Level* levels = nullptr;
};

// Empty when the grid is supported, else what is wrong.
std::string check_grid(const Grid& g);

// out[i, l*F + f] for points [begin, end) and every level.
void forward(const Grid& g, const float* x, int64_t begin, int64_t end, const float* params,
             float* out);

// Writes the table gradient of levels {first, first + step, ...} into dparams (all n points;
// each of these levels' ranges is zeroed first, other ranges are not touched). Levels are
// disjoint table ranges, so threads that own different levels never write the same entry.
void backward_params(const Grid& g, const float* x, int64_t n, const float* dy, int first,
                     int step, float* dparams);

// dx[i, d] = sum over levels and features of dy * d out / d x, for points [begin, end).
void backward_input(const Grid& g, const float* x, int64_t begin, int64_t end,
                    const float* params, const float* dy, float* dx);

}  // namespace grid_cpu
}  // namespace fields
