// Ray marching through an occupancy grid on the CPU (the NeRF renderer's sampler): framework-free
// kernels on raw pointers. Rays are stepped with a constant or cone-growing step and a sample
// is kept when the grid cell of its midpoint is occupied; samples come out packed, ray by ray.
//
// Conventions (shared with the torch reference, fields/render/occupancy.py):
//   occupancy: res^3 bytes (nonzero = occupied), x-major: cell (ix, iy, iz) at
//   (ix * res + iy) * res + iz;
//   aabb = (min x, y, z, max x, y, z); contraction kNone: the grid covers the aabb, grid
//   coordinate g = (x - min) / (max - min), and a point outside the aabb is never occupied;
//   contraction kMipNerf360: y = (x - centre) / half_size, c = y if |y|^2 <= 1 else
//   y * ((2 - 1 / |y|) / |y|), g = (c + 2) * 0.25 (the grid covers c in [-2, 2]^3);
//   cell = floor(g * res) clamped to [0, res - 1] (NaN -> 0);
//   per ray: t = t_min; while t < t_max: dt = min(max(t * cone_angle, step_size), max_step),
//   t_end = min(t + dt, t_max), midpoint o + d * ((t + t_end) * 0.5); the sample [t, t_end] is
//   kept iff its midpoint's cell is occupied; t = t + dt (stop if t + dt does not exceed t).
//   Every value is computed in float32 with one rounding per operation (no fused
//   multiply-adds), in the order written, so that the reference reproduces it bit for bit.
//   Rays with a non-finite t_min or t_max have no samples.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace fields {
namespace march_cpu {

enum Contraction : int { kNone = 0, kMipNerf360 = 1 };

struct Grid {
  const uint8_t* occupancy = nullptr;  // res^3 bytes, x-major
  // Optional: the same grid as bits (bit i % 8 of byte i / 8 for cell i; pack_bits), read
  // instead of the bytes when given: 8x less memory for the steps' scattered reads.
  const uint8_t* bits = nullptr;
  // Optional: whether each block of kCoarse^3 cells holds an occupied one ((res / kCoarse)^3
  // bytes, x-major; pack_coarse), for skipping empty space (res a multiple of kCoarse).
  const uint8_t* coarse = nullptr;
  int32_t res = 0;
  float aabb[6] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
  int contraction = kNone;
};

struct Stepping {
  float step_size = 0.f;   // > 0
  float cone_angle = 0.f;  // >= 0; 0: constant steps
  float max_step = 0.f;    // > 0
};

struct Rays {
  const float* origins = nullptr;     // (n, 3)
  const float* directions = nullptr;  // (n, 3)
  const float* t_min = nullptr;       // (n,)
  const float* t_max = nullptr;       // (n,)
};

// Samples of a run of consecutive rays, ray by ray, each ray's in increasing t.
struct Samples {
  std::vector<float> t_start;
  std::vector<float> t_end;
};

constexpr int kCoarse = 4;  // cells per side of a block of the coarse grid

// coarse[b] (the (res / kCoarse)^3 blocks, x-major) = whether a cell within one cell of block
// b is occupied, from the packed bits (res a multiple of 8).
void pack_coarse(const uint8_t* bits, int32_t res, uint8_t* coarse);

// bits[j] = the occupancy (nonzero or not) of cells 8 j .. 8 j + 7, bit k for cell 8 j + k, for
// j in [begin, end) (bytes of the packed grid; cells past n count as empty).
void pack_bits(const uint8_t* occupancy, int64_t n, int64_t begin, int64_t end, uint8_t* bits);

// The grid space of points x[i] (rows [begin, end) of (n, 3)) as fields.render.occupancy.contract
// computes it, operation by operation in float32 (torch's order, one rounding each; bit for bit
// for kNone, within an ulp for kMipNerf360, where torch's vectorised sqrt and reciprocal are not
// always correctly rounded): gc[i] that point clamped to [0, 1]^3 (NaN stays NaN), in_unit[i] =
// 1 iff every coordinate of the unclamped point is in [0, 1] (0 for NaN). aabb as in Grid;
// contraction kNone or kMipNerf360.
void contract_points(const float aabb[6], int contraction, const float* x, int64_t begin,
                     int64_t end, float* gc, bool* in_unit);

// Empty when the grid and stepping are supported, else what is wrong.
std::string check(const Grid& g, const Stepping& s);

// Marches rays [begin, end): appends their samples to `out` and writes each ray's sample count
// to counts[r] (counts is indexed by ray, like the ray arrays).
void march(const Grid& g, const Stepping& s, const Rays& rays, int64_t begin, int64_t end,
           int64_t* counts, Samples& out);

// One ray's samples in installments, for rendering with early termination (a ray's later
// samples are marched only while it is still seen through): constant steps (cone angle 0) and
// contraction kNone, with the empty-space skipping of `march` where g.coarse is given. The
// samples of the installments, one after the other, are `march`'s for that ray, bit for bit.
class RayMarcher {
 public:
  // dt: the step (min(max(0, step_size), max_step)); g must pass `check` with cone 0 and have
  // contraction kNone and res <= 1024.
  RayMarcher(const Grid& g, float dt) : grid_(g), dt_(dt) {}
  // Marches the ray (o, d) on from *t (its t_min, or where the last call stopped) towards
  // t_max: writes at most `budget` samples [ts[i], te[i]) and returns how many; *t becomes
  // where the next call goes on, *span_end (-inf before the first call) keeps the end of the
  // marked stretch of the coarse grid the ray is in, and *done is set once the ray has no
  // samples left (a call that fills its budget may leave that to the next call, which then
  // returns none).
  int next(const float o[3], const float d[3], float* t, float* span_end, float t_max,
           int budget, float* ts, float* te, bool* done);

 private:
  Grid grid_;
  float dt_;
  std::vector<std::pair<float, float>> spans_;
};

}  // namespace march_cpu
}  // namespace fields
