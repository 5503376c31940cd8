// Declaration of the torch-facing CUDA ray marcher (defined in march_cuda.cpp, built only with
// CUDA). Same arguments and outputs as march_rays_cpu, plus the stream.
#pragma once

#include <ATen/ATen.h>

#include <vector>

namespace fields {

// -> {ray_indices (S,) int64, t_starts (S,) f32, t_ends (S,) f32, offsets (R + 1,) int64}.
std::vector<at::Tensor> march_rays_cuda(const at::Tensor& origins, const at::Tensor& directions,
                                        const at::Tensor& t_min, const at::Tensor& t_max,
                                        const at::Tensor& occupancy, const at::Tensor& aabb,
                                        int64_t contraction, double step_size,
                                        double cone_angle, double max_step, int64_t stream);

}  // namespace fields
