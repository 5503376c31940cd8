// Declarations of the torch-facing CUDA batched-MLP entry points (defined in
// batched_mlp_cuda.cpp, built only with CUDA). The contract is fields/nn/batched_mlp_cuda.py's
// BatchedKernels.
#pragma once

#include <ATen/ATen.h>

#include <vector>

namespace fields {

// x (N, n_in) float32 grouped by network, offsets (nets + 1,) int64, weights[l] (nets, out,
// in), biases[l] (nets, out) or none -> {y (N, n_out)} or, with save, {y, z (saved
// pre-activations)}.
std::vector<at::Tensor> batched_mlp_cuda_forward(const at::Tensor& x, const at::Tensor& offsets,
                                                 const std::vector<at::Tensor>& weights,
                                                 const std::vector<at::Tensor>& biases,
                                                 int64_t width, int64_t activation,
                                                 int64_t output_activation, double omega,
                                                 bool save, int64_t stream);

// -> {dx (N, n_in), or empty unless need_dx, dweights..., dbiases...}.
std::vector<at::Tensor> batched_mlp_cuda_backward(const at::Tensor& dy, const at::Tensor& x,
                                                  const at::Tensor& offsets,
                                                  const std::vector<at::Tensor>& weights,
                                                  bool has_bias, const at::Tensor& z,
                                                  int64_t width, int64_t activation,
                                                  int64_t output_activation, double omega,
                                                  bool need_dx, int64_t stream);

}  // namespace fields
