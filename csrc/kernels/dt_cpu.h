// Distance transform of a point set on a regular grid (the fast scene-flow loss): framework-free
// kernels on raw pointers.
//
// Conventions (shared with the torch reference, fields/flow.py `distance_grid_reference`):
//   the grid has dims (nx, ny, nz); cell (ix, iy, iz) is stored at (iz * ny + iy) * nx + ix
//   (x fastest, so that the buffer is a (nz, ny, nx) volume as torch's grid_sample reads it)
//   and its centre is origin + voxel * (ix, iy, iz);
//   every point is assigned to the cell whose centre is nearest (indices rounded, clamped to the
//   grid: points outside it are seeds of the nearest border cell);
//   out[cell] = Euclidean distance from the cell centre to the nearest point.
//
// Algorithm: (1) the squared Euclidean distance transform of the seed cells, in voxel units,
// with its feature transform (the index of the nearest seed cell), by three separable passes of
// Felzenszwalb and Huttenlocher's lower envelope of parabolas; (2) the exact distance to the
// points: for a cell whose nearest seed cell is within kExactRadius - sqrt(3) voxels, every point
// in the cells within kExactRadius voxels (a cube) is checked, which provably contains the
// nearest point (a point is at most sqrt(3) / 2 voxels from its cell centre); farther cells take
// the nearest point among the points of their nearest seed cell, which is within sqrt(3) voxels
// of the exact distance. So the distance is exact wherever it is below
// kExactRadius - 1.5 sqrt(3) = 2.4 voxels, and within sqrt(3) voxels of it everywhere else.
#pragma once

#include <cstdint>
#include <string>

namespace fields {
namespace dt_cpu {

constexpr int kExactRadius = 5;

struct GridSpec {
  float origin[3] = {0.f, 0.f, 0.f};
  float voxel = 1.f;
  int64_t dims[3] = {0, 0, 0};  // nx, ny, nz

  int64_t n_cells() const { return dims[0] * dims[1] * dims[2]; }
};

// Empty when the grid is supported (positive voxel, dims >= 1, fewer than 2^31 cells), else
// what is wrong.
std::string check(const GridSpec& g);

// The seed cell of each point: cell_of_point[i] for points [begin, end).
void seed_cells(const GridSpec& g, const float* points, int64_t begin, int64_t end,
                int32_t* cell_of_point);

// Initialises the squared distances and features of cells [begin, end): 0 and the cell's own
// index for seeded cells (has_points[c] != 0), +inf and -1 elsewhere.
void init_cells(const uint8_t* has_points, int64_t begin, int64_t end, float* sq, int32_t* feat);

// One separable pass of the squared distance transform along `axis` (0: x, 1: y, 2: z) over
// the grid lines [line_begin, line_end) of that axis (lines are numbered over the other two
// axes, lower axis fastest). sq and feat are read and written in place.
void edt_pass(const GridSpec& g, int axis, int64_t line_begin, int64_t line_end, float* sq,
              int32_t* feat);

// The exact (near) / bounded (far) distances of cells [begin, end), from the squared voxel
// distances and features of the passes above and the points bucketed by cell: the points of
// cell c are bucket_points[bucket_offsets[c] .. bucket_offsets[c + 1]). nearest[c] receives the
// index of the point that gave out[c] (the nearest point wherever the distance is exact).
void distances(const GridSpec& g, const float* points, const int64_t* bucket_offsets,
               const int32_t* bucket_points, const float* sq, const int32_t* feat, int64_t begin,
               int64_t end, float* out, int32_t* nearest);

}  // namespace dt_cpu
}  // namespace fields
