// Declarations of the torch-facing MLP entry points (defined in mlp.cpp).
#pragma once

#include <ATen/ATen.h>

#include <string>
#include <vector>

namespace fields {

// Returns {y} or, when save, {y, saved activations...} for mlp_cpu_backward.
std::vector<at::Tensor> mlp_cpu_forward(const at::Tensor& x, const std::vector<at::Tensor>& weights,
                                        const std::vector<at::Tensor>& biases, int64_t width,
                                        int64_t activation, int64_t output_activation,
                                        double omega, bool save);

// Returns {dx (undefined unless need_dx), dweights..., dbiases...}.
std::vector<at::Tensor> mlp_cpu_backward(const at::Tensor& dy, const at::Tensor& x,
                                         const std::vector<at::Tensor>& weights, bool has_bias,
                                         const std::vector<at::Tensor>& saved, int64_t width,
                                         int64_t activation, int64_t output_activation,
                                         double omega, bool need_dx);

std::string mlp_cpu_isa();

}  // namespace fields
