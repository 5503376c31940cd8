// Declarations of the torch-facing tensor-core MLP entry points (defined in mlp_cuda.cpp, built
// only with CUDA). The contract is fields/nn/mlp_cuda.py's MLPKernels.
#pragma once

#include <ATen/ATen.h>

#include <vector>

namespace fields {

// `stream`: the cudaStream_t to launch on, as an integer (torch.cuda.current_stream().cuda_stream).
// x (N, n_in) fp16/bf16, packed weights and biases -> {y} or, with save, {y, a, z, z_out};
// y is fp32, or 16-bit (x's type) with out16.
std::vector<at::Tensor> mlp_cuda_forward(const at::Tensor& x, const at::Tensor& weights,
                                         const at::Tensor& biases,
                                         const std::vector<int64_t>& dims, double omega,
                                         int64_t half, bool save, bool out16,
                                         int64_t stream);

// dy (N, n_out) fp32 -> {delta, delta_out (both times scale, 16-bit), dx (fp32, or empty)}.
std::vector<at::Tensor> mlp_cuda_backward(const at::Tensor& dy, double scale,
                                          const at::Tensor& weights, const at::Tensor& a,
                                          const at::Tensor& z, const at::Tensor& y,
                                          const at::Tensor& z_out,
                                          const std::vector<int64_t>& dims, double omega,
                                          int64_t half, bool need_dx, int64_t stream);

// Second derivatives (mlp_cuda.h, DoubleBackwardArgs): dy (N, n_out) fp32, u (N, n_in) 16-bit
// (dL/dg times scale_u) -> {adot, delta, delta_out, zbar, zbar_out (16-bit), dx, dv (fp32 or
// empty)}.
std::vector<at::Tensor> mlp_cuda_double_backward(
    const at::Tensor& dy, double scale_v, const at::Tensor& u, double scale_u,
    const at::Tensor& weights, const at::Tensor& a, const at::Tensor& z, const at::Tensor& y,
    const at::Tensor& z_out, const std::vector<int64_t>& dims, double omega, int64_t half,
    bool need_dx, bool need_dv, int64_t stream);

}  // namespace fields
