// torch binding of the CPU distance transform: checks the points, buckets them by cell, runs
// the three separable passes in parallel over grid lines, then the exact distances in parallel
// over cells. Every cell is computed by one thread from inputs fixed before its pass starts, so
// the result does not depend on the number of threads.
#include "dt.h"

#include <ATen/Parallel.h>

#include <cstdint>
#include <string>
#include <vector>

#include "../kernels/dt_cpu.h"

namespace fields {

std::vector<at::Tensor> distance_transform_cpu(const at::Tensor& points_in,
                                               std::vector<double> origin, double voxel,
                                               std::vector<int64_t> dims) {
  TORCH_CHECK(points_in.device().is_cpu() && points_in.scalar_type() == at::kFloat,
              "fields._C distance_transform_cpu: points must be float32 on the CPU, got ",
              points_in.scalar_type(), " on ", points_in.device());
  TORCH_CHECK(points_in.dim() == 2 && points_in.size(1) == 3 && points_in.size(0) >= 1,
              "fields._C distance_transform_cpu: points must have shape (n >= 1, 3), got ",
              points_in.sizes());
  TORCH_CHECK(origin.size() == 3 && dims.size() == 3,
              "fields._C distance_transform_cpu: origin and dims must have 3 entries");
  dt_cpu::GridSpec g;
  for (int a = 0; a < 3; ++a) {
    g.origin[a] = static_cast<float>(origin[a]);
    g.dims[a] = dims[a];
  }
  g.voxel = static_cast<float>(voxel);
  const std::string err = dt_cpu::check(g);
  TORCH_CHECK(err.empty(), "fields._C distance_transform_cpu: ", err);
  TORCH_CHECK(points_in.size(0) < (int64_t{1} << 31),
              "fields._C distance_transform_cpu: too many points");

  const at::Tensor points = points_in.contiguous();
  const float* pts = points.data_ptr<float>();
  const int64_t n = points.size(0);
  const int64_t cells = g.n_cells();

  // bucket the points by seed cell (CSR over all cells, points in increasing index)
  std::vector<int32_t> cell_of_point(static_cast<size_t>(n));
  at::parallel_for(0, n, 4096, [&](int64_t b, int64_t e) {
    dt_cpu::seed_cells(g, pts, b, e, cell_of_point.data());
  });
  std::vector<int64_t> offsets(static_cast<size_t>(cells) + 1, 0);
  for (int64_t i = 0; i < n; ++i) ++offsets[cell_of_point[i] + 1];
  for (int64_t c = 0; c < cells; ++c) offsets[c + 1] += offsets[c];
  std::vector<int32_t> bucket(static_cast<size_t>(n));
  {
    std::vector<int64_t> fill(offsets.begin(), offsets.end() - 1);
    for (int64_t i = 0; i < n; ++i) bucket[fill[cell_of_point[i]]++] = static_cast<int32_t>(i);
  }
  std::vector<uint8_t> has_points(static_cast<size_t>(cells));
  for (int64_t c = 0; c < cells; ++c) has_points[c] = offsets[c + 1] > offsets[c];

  std::vector<float> sq(static_cast<size_t>(cells));
  std::vector<int32_t> feat(static_cast<size_t>(cells));
  at::parallel_for(0, cells, 1 << 16, [&](int64_t b, int64_t e) {
    dt_cpu::init_cells(has_points.data(), b, e, sq.data(), feat.data());
  });
  for (int axis = 0; axis < 3; ++axis) {
    const int64_t lines = cells / g.dims[axis];
    at::parallel_for(0, lines, 64, [&](int64_t b, int64_t e) {
      dt_cpu::edt_pass(g, axis, b, e, sq.data(), feat.data());
    });
  }
  at::Tensor out = at::empty({g.dims[2], g.dims[1], g.dims[0]}, points.options());
  at::Tensor nearest =
      at::empty({g.dims[2], g.dims[1], g.dims[0]}, points.options().dtype(at::kInt));
  float* op = out.data_ptr<float>();
  int32_t* np_ = nearest.data_ptr<int32_t>();
  at::parallel_for(0, cells, 4096, [&](int64_t b, int64_t e) {
    dt_cpu::distances(g, pts, offsets.data(), bucket.data(), sq.data(), feat.data(), b, e, op,
                      np_);
  });
  return {out, nearest};
}

}  // namespace fields
