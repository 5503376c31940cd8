// torch binding of the CUDA batched MLP (csrc/kernels/batched_mlp_cuda.h): checks tensors and
// launches on the stream the caller passes. Only in builds with CUDA (FIELDS_WITH_CUDA); the
// contract is fields/nn/batched_mlp_cuda.py's BatchedKernels. Like grid_cuda.cpp, it needs the
// CUDA runtime API and ATen's core alone, so a CPU-only torch can check that it compiles
// (.ci/run).
#ifdef FIELDS_WITH_CUDA

#include "batched_mlp_cuda.h"

#include <cuda_runtime_api.h>

#include <string>

#include "../kernels/batched_mlp_cuda.h"
#include "cuda_check.h"

namespace fields {
namespace {

namespace bc = batched_mlp_cuda;

void check_f32(const at::Tensor& t, const at::Tensor& x, const char* name) {
  TORCH_CHECK(t.device() == x.device() && t.scalar_type() == at::kFloat && t.is_contiguous(),
              "fields._C batched_mlp_cuda: ", name, " must be a contiguous float32 tensor on ",
              x.device(), ", got ", t.scalar_type(), " on ", t.device());
}

// The dims of the call, with every tensor checked against them.
bc::Dims make_dims(const at::Tensor& x, const at::Tensor& offsets,
                   const std::vector<at::Tensor>& weights, bool has_bias, int64_t width,
                   int64_t activation, int64_t output_activation, double omega) {
  TORCH_CHECK(x.is_cuda() && x.dim() == 2, "fields._C batched_mlp_cuda: x must be an (N, n_in) "
              "CUDA tensor, got ", x.sizes(), " on ", x.device());
  check_f32(x, x, "x");
  const int64_t layers = static_cast<int64_t>(weights.size());
  TORCH_CHECK(layers >= 2 && layers <= bc::kMaxLayers, "fields._C batched_mlp_cuda: 2 to ",
              bc::kMaxLayers, " layers, got ", layers);
  const int64_t nets = weights[0].size(0);
  TORCH_CHECK(offsets.device() == x.device() && offsets.scalar_type() == at::kLong &&
                  offsets.dim() == 1 && offsets.numel() == nets + 1 && offsets.is_contiguous(),
              "fields._C batched_mlp_cuda: offsets must be (", nets + 1, ",) int64 on ",
              x.device());
  bc::Dims d;
  d.n_in = static_cast<int>(x.size(1));
  d.n_out = static_cast<int>(weights.back().size(1));
  d.width = static_cast<int>(width);
  d.depth = static_cast<int>(layers - 1);
  d.act = static_cast<int>(activation);
  d.out_act = static_cast<int>(output_activation);
  d.omega = static_cast<float>(omega);
  d.bias = has_bias;
  d.n_nets = nets;
  for (int64_t l = 0; l < layers; ++l) {
    check_f32(weights[l], x, "weights");
    const int64_t in = l == 0 ? d.n_in : d.width, out = l == d.depth ? d.n_out : d.width;
    TORCH_CHECK(weights[l].dim() == 3 && weights[l].size(0) == nets && weights[l].size(1) == out &&
                    weights[l].size(2) == in,
                "fields._C batched_mlp_cuda: weights[", l, "] must be (", nets, ", ", out, ", ",
                in, "), got ", weights[l].sizes());
  }
  const std::string why = bc::check_dims(d);
  TORCH_CHECK(why.empty(), "fields._C batched_mlp_cuda: ", why);
  return d;
}

}  // namespace

std::vector<at::Tensor> batched_mlp_cuda_forward(const at::Tensor& x, const at::Tensor& offsets,
                                                 const std::vector<at::Tensor>& weights,
                                                 const std::vector<at::Tensor>& biases,
                                                 int64_t width, int64_t activation,
                                                 int64_t output_activation, double omega,
                                                 bool save, int64_t stream) {
  const bc::Dims d = make_dims(x, offsets, weights, !biases.empty(), width, activation,
                               output_activation, omega);
  TORCH_CHECK(biases.empty() || biases.size() == weights.size(),
              "fields._C batched_mlp_cuda: one bias per layer, or none");
  bc::Params p;
  for (size_t l = 0; l < weights.size(); ++l) {
    p.w[l] = weights[l].data_ptr<float>();
    if (d.bias) {
      check_f32(biases[l], x, "biases");
      TORCH_CHECK(biases[l].numel() == weights[l].size(0) * weights[l].size(1),
                  "fields._C batched_mlp_cuda: biases[", l, "] must be (nets, out)");
      p.b[l] = biases[l].data_ptr<float>();
    }
  }
  const DeviceScope scope(x);
  const int64_t rows = x.size(0);
  at::Tensor y = at::empty({rows, d.n_out}, x.options());
  at::Tensor z = save ? at::empty({static_cast<int64_t>(bc::saved_size(d, rows))}, x.options())
                      : at::Tensor();
  cuda_check(bc::forward(d, p, x.data_ptr<float>(), offsets.data_ptr<int64_t>(), rows,
                         y.data_ptr<float>(), save ? z.data_ptr<float>() : nullptr,
                         reinterpret_cast<cudaStream_t>(stream)),
             "batched_mlp_cuda", "forward");
  if (save) return {y, z};
  return {y};
}

std::vector<at::Tensor> batched_mlp_cuda_backward(const at::Tensor& dy, const at::Tensor& x,
                                                  const at::Tensor& offsets,
                                                  const std::vector<at::Tensor>& weights,
                                                  bool has_bias, const at::Tensor& z,
                                                  int64_t width, int64_t activation,
                                                  int64_t output_activation, double omega,
                                                  bool need_dx, int64_t stream) {
  const bc::Dims d = make_dims(x, offsets, weights, has_bias, width, activation,
                               output_activation, omega);
  const int64_t rows = x.size(0);
  check_f32(dy, x, "dy");
  TORCH_CHECK(dy.dim() == 2 && dy.size(0) == rows && dy.size(1) == d.n_out,
              "fields._C batched_mlp_cuda: dy must be (", rows, ", ", d.n_out, ")");
  check_f32(z, x, "z");
  TORCH_CHECK(z.numel() == static_cast<int64_t>(bc::saved_size(d, rows)),
              "fields._C batched_mlp_cuda: z is not this call's saved forward");
  bc::Params p;
  bc::Grads g;
  std::vector<at::Tensor> out;
  out.push_back(need_dx ? at::empty_like(x) : at::empty({0}, x.options()));
  for (size_t l = 0; l < weights.size(); ++l) {
    p.w[l] = weights[l].data_ptr<float>();
    out.push_back(at::zeros_like(weights[l]));
    g.w[l] = out.back().data_ptr<float>();
  }
  if (has_bias) {
    for (size_t l = 0; l < weights.size(); ++l) {
      out.push_back(at::zeros({weights[l].size(0), weights[l].size(1)}, x.options()));
      g.b[l] = out.back().data_ptr<float>();
    }
  }
  const DeviceScope scope(x);
  cuda_check(bc::backward(d, p, x.data_ptr<float>(), offsets.data_ptr<int64_t>(), rows,
                          z.data_ptr<float>(), dy.data_ptr<float>(),
                          need_dx ? out[0].data_ptr<float>() : nullptr, g,
                          reinterpret_cast<cudaStream_t>(stream)),
             "batched_mlp_cuda", "backward");
  return out;
}

}  // namespace fields

#endif  // FIELDS_WITH_CUDA
