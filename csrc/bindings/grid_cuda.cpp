// torch binding of the CUDA grid encoding (csrc/kernels/grid_cuda.h): checks tensors, builds
// the level table, launches on the stream the caller passes. Only in builds with CUDA
// (FIELDS_WITH_CUDA); the contract is fields/nn/grid_cuda.py's GridKernels. Like mlp_cuda.cpp,
// it needs the CUDA runtime API and ATen's core alone, so a CPU-only torch can check that it
// compiles (.ci/run).
#ifdef FIELDS_WITH_CUDA

#include "grid_cuda.h"

#include <cuda_runtime_api.h>

#include <string>

#include "../kernels/grid_cuda.h"
#include "cuda_check.h"

namespace fields {
namespace {

namespace gc = grid_cuda;



gc::Grid make_grid(const at::Tensor& x, const at::Tensor& params, const std::vector<double>& scales,
                   const std::vector<int64_t>& meta, int64_t n_features, int64_t interpolation) {
  TORCH_CHECK(x.is_cuda() && x.scalar_type() == at::kFloat && x.dim() == 2 && x.is_contiguous(),
              "fields._C grid_cuda: x must be a contiguous float32 (N, n_dims) CUDA tensor, got ",
              x.scalar_type(), " ", x.sizes(), " on ", x.device());
  TORCH_CHECK(params.device() == x.device() && params.dim() == 1 && params.is_contiguous() &&
                  (params.scalar_type() == at::kFloat || params.scalar_type() == at::kHalf),
              "fields._C grid_cuda: params must be a flat contiguous float32 or float16 tensor "
              "on ", x.device());
  const int64_t n_levels = static_cast<int64_t>(scales.size());
  TORCH_CHECK(n_levels >= 1 && n_levels <= gc::kMaxLevels,
              "fields._C grid_cuda: 1 to 64 levels, got ", n_levels);
  TORCH_CHECK(meta.size() == scales.size() * 5,
              "fields._C grid_cuda: meta must hold 5 values per level");
  gc::Grid g;
  g.n_dims = static_cast<int>(x.size(1));
  g.n_features = static_cast<int>(n_features);
  g.n_levels = static_cast<int>(n_levels);
  g.interpolation = static_cast<int>(interpolation);
  int64_t needed = 0;
  for (int64_t l = 0; l < n_levels; ++l) {
    gc::Level& lv = g.levels[l];
    lv.scale = static_cast<float>(scales[l]);
    lv.res = static_cast<uint32_t>(meta[l * 5 + 0]);
    lv.size = static_cast<uint32_t>(meta[l * 5 + 1]);
    lv.offset = static_cast<uint32_t>(meta[l * 5 + 2]);
    lv.tile = static_cast<uint32_t>(meta[l * 5 + 3]);
    lv.addressing = static_cast<int>(meta[l * 5 + 4]);
    needed = std::max<int64_t>(needed, (meta[l * 5 + 2] + meta[l * 5 + 1]) * n_features);
  }
  TORCH_CHECK(params.numel() >= needed, "fields._C grid_cuda: params must hold at least ",
              needed, " values, got ", params.numel());
  const std::string err = gc::check_grid(g);
  TORCH_CHECK(err.empty(), "fields._C grid_cuda: ", err);
  return g;
}

gc::TableType table_type(const at::Tensor& params) {
  return params.scalar_type() == at::kHalf ? gc::kFloat16 : gc::kFloat32;
}

}  // namespace

at::Tensor grid_cuda_forward(const at::Tensor& x, const at::Tensor& params,
                             const std::vector<double>& scales, const std::vector<int64_t>& meta,
                             int64_t n_features, int64_t interpolation, bool out16,
                             int64_t stream) {
  const gc::Grid g = make_grid(x, params, scales, meta, n_features, interpolation);
  const DeviceScope scope(x);
  at::Tensor out = at::empty({x.size(0), g.n_levels * n_features},
                             x.options().dtype(out16 ? at::kHalf : at::kFloat));
  cuda_check(gc::forward(g, table_type(params), x.data_ptr<float>(), x.size(0),
                         params.data_ptr(), out.data_ptr(), out16,
                         reinterpret_cast<cudaStream_t>(stream)),
             "grid_cuda", "forward");
  return out;
}

std::vector<at::Tensor> grid_cuda_backward(const at::Tensor& dy, const at::Tensor& x,
                                           const at::Tensor& params,
                                           const std::vector<double>& scales,
                                           const std::vector<int64_t>& meta, int64_t n_features,
                                           int64_t interpolation, bool need_params, bool need_x,
                                           int64_t stream) {
  const gc::Grid g = make_grid(x, params, scales, meta, n_features, interpolation);
  TORCH_CHECK(dy.device() == x.device() && dy.is_contiguous() && dy.dim() == 2 &&
                  dy.size(0) == x.size(0) && dy.size(1) == g.n_levels * n_features &&
                  (dy.scalar_type() == at::kFloat || dy.scalar_type() == at::kHalf),
              "fields._C grid_cuda: dy must be a contiguous float32/float16 (N, ",
              g.n_levels * n_features, ") tensor on ", x.device(), ", got ", dy.sizes());
  const DeviceScope scope(x);
  const bool dy16 = dy.scalar_type() == at::kHalf;
  const auto s = reinterpret_cast<cudaStream_t>(stream);
  const auto f32 = x.options().dtype(at::kFloat);
  at::Tensor dparams = need_params ? at::zeros({params.numel()}, f32) : at::empty({0}, f32);
  at::Tensor dx = need_x ? at::empty_like(x) : at::empty({0}, f32);
  if (need_params)
    cuda_check(gc::backward_params(g, x.data_ptr<float>(), x.size(0), dy.data_ptr(), dy16,
                                   dparams.data_ptr<float>(), s),
               "grid_cuda", "table gradient");
  if (need_x)
    cuda_check(gc::backward_input(g, table_type(params), x.data_ptr<float>(), x.size(0),
                                  params.data_ptr(), dy.data_ptr(), dy16, dx.data_ptr<float>(),
                                  s),
               "grid_cuda", "input gradient");
  return {dparams, dx};
}

}  // namespace fields

#endif  // FIELDS_WITH_CUDA
