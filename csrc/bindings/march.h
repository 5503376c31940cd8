// Declaration of the torch-facing ray-marching entry point (defined in march.cpp).
#pragma once

#include <ATen/ATen.h>

#include <vector>

namespace fields {

// Marches rays through an occupancy grid (conventions in csrc/kernels/march_cpu.h).
// origins, directions (n, 3) f32; t_min, t_max (n,) f32; occupancy (G, G, G) bool or uint8;
// aabb (6,) f32; contraction 0 (none) or 1 (mip-NeRF 360).
// Returns {ray_indices (S,) int64, t_starts (S,) f32, t_ends (S,) f32, offsets (n + 1,) int64}.
std::vector<at::Tensor> march_rays_cpu(const at::Tensor& origins, const at::Tensor& directions,
                                       const at::Tensor& t_min, const at::Tensor& t_max,
                                       const at::Tensor& occupancy, const at::Tensor& aabb,
                                       int64_t contraction, double step_size, double cone_angle,
                                       double max_step);

// fields.render.occupancy.contract of points x (n, 3) f32, clamped to [0, 1]^3, and whether
// each unclamped point lies in [0, 1]^3: {gc (n, 3) f32, in_unit (n,) bool}; the torch ops'
// values (march_cpu::contract_points).
std::vector<at::Tensor> contract_points_cpu(const at::Tensor& x, const at::Tensor& aabb,
                                            int64_t contraction);

}  // namespace fields
