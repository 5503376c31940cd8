// Declaration of the torch-facing ray-marching entry point (defined in march.cpp).
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <optional>
#include <vector>

#include "../kernels/march_cpu.h"

namespace fields {

// An occupancy grid (G, G, G) bool or uint8 and its aabb (6,) f32 as march_cpu reads them,
// checked (`who` names the caller in errors): the bytes, the bits (8x less memory for the
// steps' scattered reads) and, where G is a multiple of 8, the coarse blocks for skipping
// empty space; `grid` points into the other members.
struct PackedGrid {
  march_cpu::Grid grid;
  at::Tensor occupancy;
  std::vector<at::Tensor> packed;  // {bits, coarse}, as pack_occupancy_cpu returns them
};
// `packed`: pack_occupancy_cpu's {bits, coarse} of this occupancy, read instead of packing
// the grid again (rendering a fixed grid in many calls).
void pack_grid(const at::Tensor& occupancy, const at::Tensor& aabb, int64_t contraction,
               const char* who, PackedGrid* out,
               const std::optional<std::vector<at::Tensor>>& packed = std::nullopt);

// The occupancy grid (G, G, G) packed as the marchers read it: {bits ((G^3 + 7) / 8,) uint8,
// coarse ((G / 4)^3,) uint8, empty unless G is a multiple of 8}.
std::vector<at::Tensor> pack_occupancy_cpu(const at::Tensor& occupancy);

// Marches rays through an occupancy grid (conventions in csrc/kernels/march_cpu.h).
// origins, directions (n, 3) f32; t_min, t_max (n,) f32; occupancy (G, G, G) bool or uint8;
// aabb (6,) f32; contraction 0 (none) or 1 (mip-NeRF 360).
// packed: pack_occupancy_cpu's packing of occupancy, or none (packed here).
// Returns {ray_indices (S,) int64, t_starts (S,) f32, t_ends (S,) f32, offsets (n + 1,) int64}.
std::vector<at::Tensor> march_rays_cpu(const at::Tensor& origins, const at::Tensor& directions,
                                       const at::Tensor& t_min, const at::Tensor& t_max,
                                       const at::Tensor& occupancy, const at::Tensor& aabb,
                                       int64_t contraction, double step_size, double cone_angle,
                                       double max_step,
                                       const std::optional<std::vector<at::Tensor>>& packed);

// fields.render.occupancy.contract of points x (n, 3) f32, clamped to [0, 1]^3, and whether
// each unclamped point lies in [0, 1]^3: {gc (n, 3) f32, in_unit (n,) bool}; the torch ops'
// values (march_cpu::contract_points).
std::vector<at::Tensor> contract_points_cpu(const at::Tensor& x, const at::Tensor& aabb,
                                            int64_t contraction);

}  // namespace fields
