// torch binding of the CPU ray marcher: checks tensors, marches fixed blocks of rays in
// parallel (each block into its own buffer, so that the result does not depend on the number
// of threads), then packs the blocks' samples into the output tensors.
#include "march.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <string>

#include "../kernels/march_cpu.h"

namespace fields {
namespace {

constexpr int64_t kRaysPerBlock = 64;

void check_float(const at::Tensor& t, const char* name, at::IntArrayRef shape) {
  TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == at::kFloat,
              "fields._C march_rays_cpu: ", name, " must be float32 on the CPU, got ",
              t.scalar_type(), " on ", t.device());
  TORCH_CHECK(t.sizes() == shape, "fields._C march_rays_cpu: ", name, " must have shape ",
              shape, ", got ", t.sizes());
}

}  // namespace

void pack_grid(const at::Tensor& occupancy_in, const at::Tensor& aabb_in, int64_t contraction,
               const char* who, PackedGrid* out,
               const std::optional<std::vector<at::Tensor>>& packed) {
  TORCH_CHECK(aabb_in.device().is_cpu() && aabb_in.scalar_type() == at::kFloat &&
                  aabb_in.numel() == 6,
              "fields._C ", who, ": aabb must be 6 float32 values on the CPU");
  TORCH_CHECK(occupancy_in.device().is_cpu() && (occupancy_in.scalar_type() == at::kBool ||
                                                 occupancy_in.scalar_type() == at::kByte),
              "fields._C ", who, ": occupancy must be bool or uint8 on the CPU, got ",
              occupancy_in.scalar_type(), " on ", occupancy_in.device());
  TORCH_CHECK(occupancy_in.dim() == 3 && occupancy_in.size(0) == occupancy_in.size(1) &&
                  occupancy_in.size(0) == occupancy_in.size(2) && occupancy_in.size(0) >= 1,
              "fields._C ", who, ": occupancy must have shape (G, G, G), got ",
              occupancy_in.sizes());
  TORCH_CHECK(occupancy_in.size(0) <= (int64_t{1} << 20),
              "fields._C ", who, ": occupancy resolution too large");
  out->occupancy = occupancy_in.contiguous();
  march_cpu::Grid& grid = out->grid;
  grid = march_cpu::Grid();
  grid.occupancy = static_cast<const uint8_t*>(out->occupancy.data_ptr());
  grid.res = static_cast<int32_t>(out->occupancy.size(0));
  grid.contraction = static_cast<int>(contraction);
  const at::Tensor aabb = aabb_in.contiguous();
  const float* ap = aabb.data_ptr<float>();
  std::copy(ap, ap + 6, grid.aabb);
  const int64_t cells = grid.res * static_cast<int64_t>(grid.res) * grid.res;
  const int64_t n_bits = (cells + 7) / 8;
  const int64_t cr = grid.res / march_cpu::kCoarse;
  const int64_t n_coarse = grid.res % 8 == 0 ? cr * cr * cr : 0;
  if (packed.has_value()) {
    const auto& pk = *packed;
    TORCH_CHECK(pk.size() == 2, "fields._C ", who, ": packed must be pack_occupancy_cpu's "
                "{bits, coarse}");
    for (int i = 0; i < 2; ++i)
      TORCH_CHECK(pk[i].device().is_cpu() && pk[i].scalar_type() == at::kByte &&
                      pk[i].dim() == 1 && pk[i].is_contiguous() &&
                      pk[i].numel() == (i == 0 ? n_bits : n_coarse),
                  "fields._C ", who, ": packed[", i, "] must be pack_occupancy_cpu's (",
                  i == 0 ? n_bits : n_coarse, ",) uint8 for this ", grid.res, "^3 grid, got ",
                  pk[i].scalar_type(), " ", pk[i].sizes());
    out->packed = pk;
    grid.bits = pk[0].data_ptr<uint8_t>();
    grid.coarse = n_coarse > 0 ? pk[1].data_ptr<uint8_t>() : nullptr;
    return;
  }
  // the bits (8x less memory for the steps' scattered reads), packed in parallel
  at::Tensor bits = at::empty({n_bits}, out->occupancy.options().dtype(at::kByte));
  uint8_t* bp = bits.data_ptr<uint8_t>();
  at::parallel_for(0, n_bits, 4096, [&](int64_t b0, int64_t b1) {
    march_cpu::pack_bits(grid.occupancy, cells, b0, b1, bp);
  });
  grid.bits = bp;
  // blocks of 4^3 cells that hold an occupied one, for skipping empty space (bounded scenes
  // with constant steps; see march_cpu::march)
  at::Tensor coarse = at::empty({n_coarse}, bits.options());
  if (n_coarse > 0) {
    march_cpu::pack_coarse(bp, grid.res, coarse.data_ptr<uint8_t>());
    grid.coarse = coarse.data_ptr<uint8_t>();
  }
  out->packed = {bits, coarse};
}

std::vector<at::Tensor> pack_occupancy_cpu(const at::Tensor& occupancy) {
  PackedGrid pg;
  const at::Tensor unit = at::tensor({0.f, 0.f, 0.f, 1.f, 1.f, 1.f});
  pack_grid(occupancy, unit, march_cpu::kNone, "pack_occupancy_cpu", &pg);
  return pg.packed;
}

std::vector<at::Tensor> march_rays_cpu(const at::Tensor& origins_in,
                                       const at::Tensor& directions_in,
                                       const at::Tensor& t_min_in, const at::Tensor& t_max_in,
                                       const at::Tensor& occupancy_in, const at::Tensor& aabb_in,
                                       int64_t contraction, double step_size, double cone_angle,
                                       double max_step,
                                       const std::optional<std::vector<at::Tensor>>& packed_in) {
  TORCH_CHECK(origins_in.dim() == 2 && origins_in.size(1) == 3,
              "fields._C march_rays_cpu: origins must have shape (n, 3), got ",
              origins_in.sizes());
  const int64_t n = origins_in.size(0);
  check_float(origins_in, "origins", {n, 3});
  check_float(directions_in, "directions", {n, 3});
  check_float(t_min_in, "t_min", {n});
  check_float(t_max_in, "t_max", {n});
  check_float(aabb_in, "aabb", {6});
  PackedGrid packed;
  pack_grid(occupancy_in, aabb_in, contraction, "march_rays_cpu", &packed, packed_in);
  const march_cpu::Grid& grid = packed.grid;
  const at::Tensor origins = origins_in.contiguous();
  const at::Tensor directions = directions_in.contiguous();
  const at::Tensor t_min = t_min_in.contiguous();
  const at::Tensor t_max = t_max_in.contiguous();
  march_cpu::Stepping stepping;
  stepping.step_size = static_cast<float>(step_size);
  stepping.cone_angle = static_cast<float>(cone_angle);
  stepping.max_step = static_cast<float>(max_step);
  const std::string err = march_cpu::check(grid, stepping);
  TORCH_CHECK(err.empty(), "fields._C march_rays_cpu: ", err);

  march_cpu::Rays rays;
  rays.origins = origins.data_ptr<float>();
  rays.directions = directions.data_ptr<float>();
  rays.t_min = t_min.data_ptr<float>();
  rays.t_max = t_max.data_ptr<float>();

  const auto long_opts = origins.options().dtype(at::kLong);
  at::Tensor offsets = at::empty({n + 1}, long_opts);
  int64_t* op = offsets.data_ptr<int64_t>();
  op[0] = 0;
  int64_t* counts = op + 1;  // counts first, turned into offsets below
  const int64_t n_blocks = (n + kRaysPerBlock - 1) / kRaysPerBlock;
  std::vector<march_cpu::Samples> blocks(static_cast<size_t>(n_blocks));
  at::parallel_for(0, n_blocks, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t begin = b * kRaysPerBlock;
      const int64_t end = std::min(n, begin + kRaysPerBlock);
      march_cpu::march(grid, stepping, rays, begin, end, counts, blocks[b]);
    }
  });
  for (int64_t r = 0; r < n; ++r) op[r + 1] += op[r];
  const int64_t total = op[n];

  at::Tensor ray_indices = at::empty({total}, long_opts);
  at::Tensor t_starts = at::empty({total}, origins.options());
  at::Tensor t_ends = at::empty({total}, origins.options());
  int64_t* rip = ray_indices.data_ptr<int64_t>();
  float* tsp = t_starts.data_ptr<float>();
  float* tep = t_ends.data_ptr<float>();
  at::parallel_for(0, n_blocks, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t begin = b * kRaysPerBlock;
      const int64_t end = std::min(n, begin + kRaysPerBlock);
      march_cpu::Samples& s = blocks[b];
      std::copy(s.t_start.begin(), s.t_start.end(), tsp + op[begin]);
      std::copy(s.t_end.begin(), s.t_end.end(), tep + op[begin]);
      for (int64_t r = begin; r < end; ++r) std::fill(rip + op[r], rip + op[r + 1], r);
      s = march_cpu::Samples();  // release the block's memory
    }
  });
  return {ray_indices, t_starts, t_ends, offsets};
}

std::vector<at::Tensor> contract_points_cpu(const at::Tensor& x_in, const at::Tensor& aabb_in,
                                            int64_t contraction) {
  TORCH_CHECK(x_in.dim() == 2 && x_in.size(1) == 3 && x_in.device().is_cpu() &&
                  x_in.scalar_type() == at::kFloat,
              "fields._C contract_points_cpu: x must be (n, 3) float32 on the CPU, got ",
              x_in.scalar_type(), " ", x_in.sizes(), " on ", x_in.device());
  TORCH_CHECK(aabb_in.numel() == 6 && aabb_in.device().is_cpu() &&
                  aabb_in.scalar_type() == at::kFloat,
              "fields._C contract_points_cpu: aabb must be 6 float32 values on the CPU");
  TORCH_CHECK(contraction == march_cpu::kNone || contraction == march_cpu::kMipNerf360,
              "fields._C contract_points_cpu: contraction must be 0 or 1, got ", contraction);
  const at::Tensor x = x_in.contiguous();
  const at::Tensor aabb = aabb_in.contiguous();
  float box[6];
  std::copy(aabb.data_ptr<float>(), aabb.data_ptr<float>() + 6, box);
  const int64_t n = x.size(0);
  at::Tensor gc = at::empty({n, 3}, x.options());
  at::Tensor in_unit = at::empty({n}, x.options().dtype(at::kBool));
  const float* xp = x.data_ptr<float>();
  float* gp = gc.data_ptr<float>();
  bool* up = in_unit.data_ptr<bool>();
  at::parallel_for(0, n, 8192, [&](int64_t b, int64_t e) {
    march_cpu::contract_points(box, static_cast<int>(contraction), xp, b, e, gp, up);
  });
  return {gc, in_unit};
}

}  // namespace fields
