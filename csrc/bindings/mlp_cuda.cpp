// torch binding of the tensor-core MLP (csrc/kernels/mlp_cuda.h): checks tensors, allocates
// outputs on the input's device, launches on the stream the caller passes (torch's current
// one). Only in builds with CUDA (FIELDS_WITH_CUDA); the contract is fields/nn/mlp_cuda.py's
// MLPKernels. It uses the CUDA runtime API and ATen's core alone (no c10/cuda headers), so that
// a CPU-only torch can check that it compiles (.ci/run).
#ifdef FIELDS_WITH_CUDA

#include "mlp_cuda.h"

#include <cuda_runtime_api.h>

#include <string>

#include "../kernels/mlp_cuda.h"
#include "cuda_check.h"

namespace fields {
namespace {

namespace mc = mlp_cuda;



mc::Dims make_dims(const std::vector<int64_t>& dims, double omega, const at::Tensor& on) {
  TORCH_CHECK(dims.size() == 7,
              "fields._C mlp_cuda: dims must be (n_in, n_out, kernel_width, depth, act, "
              "out_act, bias), got ", dims.size(), " values");
  mc::Dims d;
  d.n_in = static_cast<int>(dims[0]);
  d.n_out = static_cast<int>(dims[1]);
  d.width = static_cast<int>(dims[2]);
  d.depth = static_cast<int>(dims[3]);
  d.act = static_cast<int>(dims[4]);
  d.out_act = static_cast<int>(dims[5]);
  d.bias = dims[6] != 0;
  d.omega = static_cast<float>(omega);
  int limit = 0;
  cuda_check(cudaDeviceGetAttribute(&limit, cudaDevAttrMaxSharedMemoryPerBlockOptin,
                                    on.get_device()),
             "mlp_cuda", "cudaDeviceGetAttribute");
  const std::string err = mc::check_dims(d, static_cast<size_t>(limit));
  TORCH_CHECK(err.empty(), "fields._C mlp_cuda: ", err);
  return d;
}

at::ScalarType half_type(int64_t half) {
  TORCH_CHECK(half == 0 || half == 1, "fields._C mlp_cuda: half must be 0 (fp16) or 1 (bf16)");
  return half == 1 ? at::kBFloat16 : at::kHalf;
}

void check(const at::Tensor& t, const char* name, at::ScalarType type, const at::Tensor& like) {
  TORCH_CHECK(t.is_cuda() && t.device() == like.device(), "fields._C mlp_cuda: ", name,
              " must be on ", like.device(), ", got ", t.device());
  TORCH_CHECK(t.scalar_type() == type, "fields._C mlp_cuda: ", name, " must be ", type,
              ", got ", t.scalar_type());
  TORCH_CHECK(t.is_contiguous(), "fields._C mlp_cuda: ", name, " must be contiguous");
}

const void* ptr_or_null(const at::Tensor& t) { return t.numel() ? t.data_ptr() : nullptr; }

}  // namespace

std::vector<at::Tensor> mlp_cuda_forward(const at::Tensor& x, const at::Tensor& weights,
                                         const at::Tensor& biases,
                                         const std::vector<int64_t>& dims, double omega,
                                         int64_t half, bool save, bool out16,
                                         int64_t stream) {
  const at::ScalarType h = half_type(half);
  check(x, "x", h, x);
  check(weights, "weights", h, x);
  const DeviceScope scope(x);
  const mc::Dims d = make_dims(dims, omega, x);
  TORCH_CHECK(x.dim() == 2 && x.size(1) == d.n_in, "fields._C mlp_cuda: x must be (N, ", d.n_in,
              "), got ", x.sizes());
  TORCH_CHECK(weights.numel() == static_cast<int64_t>(mc::packed_size(d)),
              "fields._C mlp_cuda: packed weights must have ", mc::packed_size(d),
              " values, got ", weights.numel());
  if (d.bias) {
    check(biases, "biases", at::kFloat, x);
    TORCH_CHECK(biases.numel() == static_cast<int64_t>(mc::bias_size(d)),
                "fields._C mlp_cuda: packed biases must have ", mc::bias_size(d), " values");
  }
  const int64_t rows = x.size(0);
  const auto f32 = x.options().dtype(at::kFloat);
  at::Tensor y = at::empty({rows, d.n_out}, out16 ? x.options() : f32);
  at::Tensor a, z, z_out;
  if (save) {
    a = at::empty({d.depth, rows, d.width}, x.options());
    z = mc::needs_preactivation(d.act) ? at::empty({d.depth, rows, d.width}, f32)
                                       : at::empty({0}, f32);
    z_out = mc::needs_preactivation(d.out_act) ? at::empty({rows, d.n_out}, f32)
                                               : at::empty({0}, f32);
  }
  mc::ForwardArgs args;
  args.x = x.data_ptr();
  args.rows = rows;
  args.weights = weights.data_ptr();
  args.biases = d.bias ? biases.data_ptr<float>() : nullptr;
  args.y = y.data_ptr();
  args.y16 = out16;
  if (save) {
    args.a = a.data_ptr();
    args.z = z.numel() ? z.data_ptr<float>() : nullptr;
    args.z_out = z_out.numel() ? z_out.data_ptr<float>() : nullptr;
  }
  const auto p = half == 1 ? mc::kBFloat16 : mc::kHalf;
  cuda_check(mc::forward(d, p, args, reinterpret_cast<cudaStream_t>(stream)), "mlp_cuda",
             "forward");
  if (!save) return {y};
  return {y, a, z, z_out};
}

std::vector<at::Tensor> mlp_cuda_backward(const at::Tensor& dy, double scale,
                                          const at::Tensor& weights, const at::Tensor& a,
                                          const at::Tensor& z, const at::Tensor& y,
                                          const at::Tensor& z_out,
                                          const std::vector<int64_t>& dims, double omega,
                                          int64_t half, bool need_dx, int64_t stream) {
  const at::ScalarType h = half_type(half);
  check(dy, "dy", at::kFloat, dy);
  check(weights, "weights", h, dy);
  check(a, "a", h, dy);
  const bool y16 = y.scalar_type() != at::kFloat;
  check(y, "y", y16 ? h : at::kFloat, dy);
  const DeviceScope scope(dy);
  const mc::Dims d = make_dims(dims, omega, dy);
  const int64_t rows = dy.size(0);
  TORCH_CHECK(dy.dim() == 2 && dy.size(1) == d.n_out, "fields._C mlp_cuda: dy must be (N, ",
              d.n_out, "), got ", dy.sizes());
  TORCH_CHECK(a.dim() == 3 && a.size(0) == d.depth && a.size(1) == rows && a.size(2) == d.width,
              "fields._C mlp_cuda: a must be (depth, N, kernel_width), got ", a.sizes());
  if (mc::needs_preactivation(d.act)) {
    check(z, "z", at::kFloat, dy);
    TORCH_CHECK(z.sizes() == a.sizes(), "fields._C mlp_cuda: z must be shaped like a");
  }
  if (mc::needs_preactivation(d.out_act)) check(z_out, "z_out", at::kFloat, dy);
  TORCH_CHECK(scale > 0, "fields._C mlp_cuda: scale must be positive");
  at::Tensor delta = at::empty({d.depth, rows, d.width}, a.options());
  at::Tensor delta_out = at::empty({rows, d.n_out}, a.options());
  at::Tensor dx = need_dx ? at::empty({rows, d.n_in}, dy.options()) : at::empty({0}, dy.options());
  mc::BackwardArgs args;
  args.dy = dy.data_ptr<float>();
  args.rows = rows;
  args.scale = static_cast<float>(scale);
  args.weights = weights.data_ptr();
  args.a = a.data_ptr();
  args.z = static_cast<const float*>(ptr_or_null(z));
  args.y = y.data_ptr();
  args.y16 = y16;
  args.z_out = static_cast<const float*>(ptr_or_null(z_out));
  args.delta = delta.data_ptr();
  args.delta_out = delta_out.data_ptr();
  args.dx = need_dx ? dx.data_ptr<float>() : nullptr;
  const auto p = half == 1 ? mc::kBFloat16 : mc::kHalf;
  cuda_check(mc::backward(d, p, args, reinterpret_cast<cudaStream_t>(stream)), "mlp_cuda",
             "backward");
  return {delta, delta_out, dx};
}

std::vector<at::Tensor> mlp_cuda_double_backward(
    const at::Tensor& dy, double scale_v, const at::Tensor& u, double scale_u,
    const at::Tensor& weights, const at::Tensor& a, const at::Tensor& z, const at::Tensor& y,
    const at::Tensor& z_out, const std::vector<int64_t>& dims, double omega, int64_t half,
    bool need_dx, bool need_dv, int64_t stream) {
  const at::ScalarType h = half_type(half);
  check(dy, "dy", at::kFloat, dy);
  check(u, "u", h, dy);
  check(weights, "weights", h, dy);
  check(a, "a", h, dy);
  const bool y16 = y.scalar_type() != at::kFloat;
  check(y, "y", y16 ? h : at::kFloat, dy);
  const DeviceScope scope(dy);
  const mc::Dims d = make_dims(dims, omega, dy);
  const int64_t rows = dy.size(0);
  TORCH_CHECK(dy.dim() == 2 && dy.size(1) == d.n_out, "fields._C mlp_cuda: dy must be (N, ",
              d.n_out, "), got ", dy.sizes());
  TORCH_CHECK(u.dim() == 2 && u.size(0) == rows && u.size(1) == d.n_in,
              "fields._C mlp_cuda: u must be (N, ", d.n_in, "), got ", u.sizes());
  TORCH_CHECK(a.dim() == 3 && a.size(0) == d.depth && a.size(1) == rows && a.size(2) == d.width,
              "fields._C mlp_cuda: a must be (depth, N, kernel_width), got ", a.sizes());
  if (mc::needs_preactivation(d.act)) check(z, "z", at::kFloat, dy);
  if (mc::needs_preactivation(d.out_act)) check(z_out, "z_out", at::kFloat, dy);
  TORCH_CHECK(scale_v > 0 && scale_u > 0, "fields._C mlp_cuda: scales must be positive");
  const auto f32 = dy.options();
  at::Tensor t = mc::has_second_derivative(d.act) ? at::empty({d.depth, rows, d.width}, f32)
                                                  : at::empty({0}, f32);
  at::Tensor adot = at::empty({d.depth, rows, d.width}, a.options());
  at::Tensor delta = at::empty({d.depth, rows, d.width}, a.options());
  at::Tensor zbar = at::empty({d.depth, rows, d.width}, a.options());
  at::Tensor delta_out = at::empty({rows, d.n_out}, a.options());
  at::Tensor zbar_out = at::empty({rows, d.n_out}, a.options());
  at::Tensor dx = need_dx ? at::empty({rows, d.n_in}, f32) : at::empty({0}, f32);
  at::Tensor dv = need_dv ? at::empty({rows, d.n_out}, f32) : at::empty({0}, f32);
  mc::DoubleBackwardArgs args;
  args.dy = dy.data_ptr<float>();
  args.rows = rows;
  args.scale_v = static_cast<float>(scale_v);
  args.u = u.data_ptr();
  args.scale_u = static_cast<float>(scale_u);
  args.weights = weights.data_ptr();
  args.a = a.data_ptr();
  args.z = static_cast<const float*>(ptr_or_null(z));
  args.y = y.data_ptr();
  args.y16 = y16;
  args.z_out = static_cast<const float*>(ptr_or_null(z_out));
  args.t = t.numel() ? t.data_ptr<float>() : nullptr;
  args.adot = adot.data_ptr();
  args.delta = delta.data_ptr();
  args.delta_out = delta_out.data_ptr();
  args.zbar = zbar.data_ptr();
  args.zbar_out = zbar_out.data_ptr();
  args.dx = need_dx ? dx.data_ptr<float>() : nullptr;
  args.dv = need_dv ? dv.data_ptr<float>() : nullptr;
  const auto p = half == 1 ? mc::kBFloat16 : mc::kHalf;
  cuda_check(mc::double_backward(d, p, args, reinterpret_cast<cudaStream_t>(stream)),
             "mlp_cuda", "double backward");
  return {adot, delta, delta_out, zbar, zbar_out, dx, dv};
}

}  // namespace fields

#endif  // FIELDS_WITH_CUDA
