// Declarations of the torch-facing batched MLP entry points (defined in batched_mlp.cpp):
// many small networks of one shape, each row evaluated by its own network.
#pragma once

#include <ATen/ATen.h>

#include <vector>

namespace fields {

// x: (N, n_in) rows sorted by network; offsets: (nets + 1,) int64, network c's rows are
// [offsets[c], offsets[c + 1]); weights[l]: (nets, out_dim, in_dim); biases[l]: (nets,
// out_dim) or none. Returns {y (N, n_out)} or, when save, {y, saved activations...} for
// batched_mlp_cpu_backward (rows padded per network to whole register blocks).
std::vector<at::Tensor> batched_mlp_cpu_forward(const at::Tensor& x, const at::Tensor& offsets,
                                                const std::vector<at::Tensor>& weights,
                                                const std::vector<at::Tensor>& biases,
                                                int64_t width, int64_t activation,
                                                int64_t output_activation, double omega,
                                                bool save);

// Returns {dx (undefined unless need_dx), dweights... (nets, out, in), dbiases... (nets, out)};
// the networks without rows get zero gradients.
std::vector<at::Tensor> batched_mlp_cpu_backward(const at::Tensor& dy, const at::Tensor& x,
                                                 const at::Tensor& offsets,
                                                 const std::vector<at::Tensor>& weights,
                                                 bool has_bias,
                                                 const std::vector<at::Tensor>& saved,
                                                 int64_t width, int64_t activation,
                                                 int64_t output_activation, double omega,
                                                 bool need_dx);

}  // namespace fields
