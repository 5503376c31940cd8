// torch binding of the CUDA ray marcher (csrc/kernels/march_cuda.h): checks tensors, counts the
// samples per ray, scans the counts into offsets (ATen's cumsum on the stream), allocates the
// packed outputs (one synchronisation, to read their size) and fills them. Only in builds with
// CUDA (FIELDS_WITH_CUDA); ATen's core and the CUDA runtime API alone, so that a CPU-only torch
// can check that it compiles (.ci/run).
#ifdef FIELDS_WITH_CUDA

#include "march_cuda.h"

#include <cuda_runtime_api.h>

#include <algorithm>
#include <string>

#include "../kernels/march_cuda.h"
#include "cuda_check.h"

namespace fields {
namespace {


void check_float(const at::Tensor& t, const char* name, at::IntArrayRef shape,
                 const at::Tensor& like) {
  TORCH_CHECK(t.device() == like.device() && t.scalar_type() == at::kFloat,
              "fields._C march_rays_cuda: ", name, " must be float32 on ", like.device(),
              ", got ", t.scalar_type(), " on ", t.device());
  TORCH_CHECK(t.sizes() == shape, "fields._C march_rays_cuda: ", name, " must have shape ",
              shape, ", got ", t.sizes());
}

}  // namespace

std::vector<at::Tensor> march_rays_cuda(const at::Tensor& origins_in,
                                        const at::Tensor& directions_in,
                                        const at::Tensor& t_min_in, const at::Tensor& t_max_in,
                                        const at::Tensor& occupancy_in, const at::Tensor& aabb_in,
                                        int64_t contraction, double step_size,
                                        double cone_angle, double max_step, int64_t stream) {
  TORCH_CHECK(origins_in.is_cuda() && origins_in.dim() == 2 && origins_in.size(1) == 3,
              "fields._C march_rays_cuda: origins must be a (n, 3) CUDA tensor, got ",
              origins_in.sizes(), " on ", origins_in.device());
  const int64_t n = origins_in.size(0);
  check_float(origins_in, "origins", {n, 3}, origins_in);
  check_float(directions_in, "directions", {n, 3}, origins_in);
  check_float(t_min_in, "t_min", {n}, origins_in);
  check_float(t_max_in, "t_max", {n}, origins_in);
  TORCH_CHECK(aabb_in.numel() == 6, "fields._C march_rays_cuda: aabb must hold 6 values");
  TORCH_CHECK(occupancy_in.device() == origins_in.device() &&
                  (occupancy_in.scalar_type() == at::kBool ||
                   occupancy_in.scalar_type() == at::kByte),
              "fields._C march_rays_cuda: occupancy must be bool or uint8 on ",
              origins_in.device());
  TORCH_CHECK(occupancy_in.dim() == 3 && occupancy_in.size(0) == occupancy_in.size(1) &&
                  occupancy_in.size(0) == occupancy_in.size(2) && occupancy_in.size(0) >= 1,
              "fields._C march_rays_cuda: occupancy must have shape (G, G, G), got ",
              occupancy_in.sizes());

  const DeviceScope scope(origins_in);
  const at::Tensor origins = origins_in.contiguous();
  const at::Tensor directions = directions_in.contiguous();
  const at::Tensor t_min = t_min_in.contiguous();
  const at::Tensor t_max = t_max_in.contiguous();
  const at::Tensor occupancy = occupancy_in.contiguous();
  const at::Tensor aabb = aabb_in.to(at::kCPU, at::kFloat).contiguous();

  march_cuda::Grid grid;
  grid.occupancy = static_cast<const uint8_t*>(occupancy.data_ptr());
  grid.res = static_cast<int32_t>(occupancy.size(0));
  grid.contraction = static_cast<int>(contraction);
  const float* ap = aabb.data_ptr<float>();
  std::copy(ap, ap + 6, grid.aabb);
  march_cuda::Stepping stepping;
  stepping.step_size = static_cast<float>(step_size);
  stepping.cone_angle = static_cast<float>(cone_angle);
  stepping.max_step = static_cast<float>(max_step);
  const std::string err = march_cuda::check(grid, stepping);
  TORCH_CHECK(err.empty(), "fields._C march_rays_cuda: ", err);

  march_cuda::Rays rays;
  rays.origins = origins.data_ptr<float>();
  rays.directions = directions.data_ptr<float>();
  rays.t_min = t_min.data_ptr<float>();
  rays.t_max = t_max.data_ptr<float>();
  rays.n = n;

  const auto s = reinterpret_cast<cudaStream_t>(stream);
  const auto long_opts = origins.options().dtype(at::kLong);
  at::Tensor counts = at::empty({n}, long_opts);
  cuda_check(march_cuda::count(grid, stepping, rays, counts.data_ptr<int64_t>(), s),
             "march_rays_cuda", "count");
  at::Tensor offsets = at::zeros({n + 1}, long_opts);
  if (n > 0) offsets.slice(0, 1).copy_(at::cumsum(counts, 0));
  const int64_t total = n > 0 ? offsets[n].item<int64_t>() : 0;
  at::Tensor ray_indices = at::empty({total}, long_opts);
  at::Tensor t_starts = at::empty({total}, origins.options());
  at::Tensor t_ends = at::empty({total}, origins.options());
  if (total > 0)
    cuda_check(march_cuda::fill(grid, stepping, rays, offsets.data_ptr<int64_t>(),
                                ray_indices.data_ptr<int64_t>(), t_starts.data_ptr<float>(),
                                t_ends.data_ptr<float>(), s),
               "march_rays_cuda", "fill");
  return {ray_indices, t_starts, t_ends, offsets};
}

}  // namespace fields

#endif  // FIELDS_WITH_CUDA
