// Declaration of the torch-facing distance-transform entry point (defined in dt.cpp).
#pragma once

#include <ATen/ATen.h>

#include <vector>

namespace fields {

// Distance from every cell centre of a regular grid to the nearest of `points` (conventions in
// csrc/kernels/dt_cpu.h). points (n, 3) f32 with n >= 1; origin: the centre of cell (0, 0, 0);
// dims: (nx, ny, nz). Returns {distance (nz, ny, nx) f32, index of that nearest point
// (nz, ny, nx) int32}.
std::vector<at::Tensor> distance_transform_cpu(const at::Tensor& points,
                                               std::vector<double> origin, double voxel,
                                               std::vector<int64_t> dims);

}  // namespace fields
