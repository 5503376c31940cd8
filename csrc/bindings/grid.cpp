// torch binding of the CPU grid encoding: checks tensors, builds the level table and spreads
// the work over torch's thread pool (points for the forward and the input gradient; levels
// for the table gradient, so that no two threads add into the same entry).
#include "grid.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <string>

#if defined(__linux__)
#include <sys/mman.h>
#endif

#include "../kernels/grid_cpu.h"

namespace fields {
namespace {

constexpr int64_t kGrain = 2048;  // points per task at least

struct GridDesc {
  std::vector<grid_cpu::Level> levels;
  grid_cpu::Grid grid;
};

GridDesc make_grid(const at::Tensor& x, const at::Tensor& params, const std::vector<double>& scales,
                   const std::vector<int64_t>& meta, int64_t n_features, int64_t interpolation) {
  TORCH_CHECK(x.dim() == 2, "fields._C grid_cpu: x must have shape (N, n_dims), got ", x.sizes());
  for (const auto* t : {&x, &params}) {
    TORCH_CHECK(t->device().is_cpu() && t->scalar_type() == at::kFloat,
                "fields._C grid_cpu: tensors must be float32 on the CPU, got ", t->scalar_type(),
                " on ", t->device());
  }
  TORCH_CHECK(meta.size() == scales.size() * 5, "fields._C grid_cpu: meta must hold 5 values per level");
  GridDesc desc;
  const int64_t n_levels = static_cast<int64_t>(scales.size());
  int64_t needed = 0;
  for (int64_t l = 0; l < n_levels; ++l) {
    grid_cpu::Level lv;
    lv.scale = static_cast<float>(scales[l]);
    lv.res = static_cast<uint32_t>(meta[l * 5 + 0]);
    lv.size = static_cast<uint32_t>(meta[l * 5 + 1]);
    lv.offset = static_cast<uint32_t>(meta[l * 5 + 2]);
    lv.tile = static_cast<uint32_t>(meta[l * 5 + 3]);
    lv.addressing = static_cast<int>(meta[l * 5 + 4]);
    needed = std::max<int64_t>(needed, (meta[l * 5 + 2] + meta[l * 5 + 1]) * n_features);
    desc.levels.push_back(lv);
  }
  TORCH_CHECK(params.dim() == 1 && params.numel() >= needed,
              "fields._C grid_cpu: params must be a flat tensor of at least ", needed,
              " values, got ", params.sizes());
  desc.grid.n_dims = static_cast<int>(x.size(1));
  desc.grid.n_features = static_cast<int>(n_features);
  desc.grid.n_levels = static_cast<int>(n_levels);
  desc.grid.interpolation = static_cast<int>(interpolation);
  desc.grid.levels = desc.levels.data();
  const std::string err = grid_cpu::check_grid(desc.grid);
  TORCH_CHECK(err.empty(), "fields._C grid_cpu: ", err);
  return desc;
}

}  // namespace

bool advise_huge_pages(const at::Tensor& t) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  // Only the 2 MiB-aligned interior of the buffer can be backed by huge pages; this is a hint
  // (it takes effect for pages not yet touched) and failure is harmless.
  constexpr uintptr_t kHuge = uintptr_t{1} << 21;
  const auto begin = reinterpret_cast<uintptr_t>(t.data_ptr());
  const uintptr_t end = begin + static_cast<uintptr_t>(t.numel() * t.element_size());
  const uintptr_t lo = (begin + kHuge - 1) & ~(kHuge - 1);
  const uintptr_t hi = end & ~(kHuge - 1);
  if (hi <= lo) return false;
  return madvise(reinterpret_cast<void*>(lo), hi - lo, MADV_HUGEPAGE) == 0;
#else
  (void)t;
  return false;
#endif
}

at::Tensor grid_cpu_forward(const at::Tensor& x_in, const at::Tensor& params_in,
                            const std::vector<double>& scales, const std::vector<int64_t>& meta,
                            int64_t n_features, int64_t interpolation) {
  const GridDesc desc = make_grid(x_in, params_in, scales, meta, n_features, interpolation);
  const at::Tensor x = x_in.contiguous();
  const at::Tensor params = params_in.contiguous();
  const int64_t n = x.size(0);
  at::Tensor out = at::empty({n, desc.grid.n_levels * n_features}, x.options());
  const float* xp = x.data_ptr<float>();
  const float* pp = params.data_ptr<float>();
  float* op = out.data_ptr<float>();
  at::parallel_for(0, n, kGrain, [&](int64_t begin, int64_t end) {
    grid_cpu::forward(desc.grid, xp, begin, end, pp, op);
  });
  return out;
}

std::vector<at::Tensor> grid_cpu_backward(const at::Tensor& dy_in, const at::Tensor& x_in,
                                          const at::Tensor& params_in,
                                          const std::vector<double>& scales,
                                          const std::vector<int64_t>& meta, int64_t n_features,
                                          int64_t interpolation, bool need_params,
                                          bool need_dx) {
  const GridDesc desc = make_grid(x_in, params_in, scales, meta, n_features, interpolation);
  const at::Tensor x = x_in.contiguous();
  const at::Tensor params = params_in.contiguous();
  const at::Tensor dy = dy_in.contiguous();
  const int64_t n = x.size(0);
  TORCH_CHECK(dy.scalar_type() == at::kFloat && dy.dim() == 2 && dy.size(0) == n &&
                  dy.size(1) == desc.grid.n_levels * n_features,
              "fields._C grid_cpu: grad_output must be float32 (", n, ", ",
              desc.grid.n_levels * n_features, "), got ", dy.scalar_type(), " ", dy.sizes());
  const float* xp = x.data_ptr<float>();
  const float* pp = params.data_ptr<float>();
  const float* gp = dy.data_ptr<float>();
  at::Tensor dparams, dx;
  if (need_params) {
    // Every level's range is zeroed by the thread that owns it (in parallel, and the first
    // touch of fresh pages happens where they are used); the padding past the last level
    // is zeroed here.
    dparams = at::empty_like(params);
    advise_huge_pages(dparams);  // fewer page faults and TLB misses in the scatter
    const auto& last = desc.levels.back();
    const int64_t used = (static_cast<int64_t>(last.offset) + last.size) * n_features;
    if (used < dparams.numel()) dparams.narrow(0, used, dparams.numel() - used).zero_();
    float* dp = dparams.data_ptr<float>();
    const int64_t owners = std::max<int64_t>(
        1, std::min<int64_t>({at::get_num_threads(), desc.grid.n_levels, n / kGrain + 1}));
    at::parallel_for(0, owners, 1, [&](int64_t begin, int64_t end) {
      for (int64_t t = begin; t < end; ++t) {
        grid_cpu::backward_params(desc.grid, xp, n, gp, static_cast<int>(t),
                                  static_cast<int>(owners), dp);
      }
    });
  }
  if (need_dx) {
    dx = at::empty_like(x);
    float* dxp = dx.data_ptr<float>();
    at::parallel_for(0, n, kGrain, [&](int64_t begin, int64_t end) {
      grid_cpu::backward_input(desc.grid, xp, begin, end, pp, gp, dxp);
    });
  }
  return {dparams, dx};
}

}  // namespace fields
