// Declarations of the torch-facing CUDA grid-encoding entry points (defined in grid_cuda.cpp,
// built only with CUDA). The contract is fields/nn/grid_cuda.py's GridKernels.
#pragma once

#include <ATen/ATen.h>

#include <vector>

namespace fields {

// x (N, D) float32, params flat float32/float16 -> (N, n_levels * n_features), fp16 if out16.
at::Tensor grid_cuda_forward(const at::Tensor& x, const at::Tensor& params,
                             const std::vector<double>& scales, const std::vector<int64_t>& meta,
                             int64_t n_features, int64_t interpolation, bool out16,
                             int64_t stream);

// -> {dparams (float32, or empty), dx (float32, or empty)}.
std::vector<at::Tensor> grid_cuda_backward(const at::Tensor& dy, const at::Tensor& x,
                                           const at::Tensor& params,
                                           const std::vector<double>& scales,
                                           const std::vector<int64_t>& meta, int64_t n_features,
                                           int64_t interpolation, bool need_params, bool need_x,
                                           int64_t stream);

}  // namespace fields
