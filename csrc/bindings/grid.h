// Declarations of the torch-facing grid-encoding entry points (defined in grid.cpp).
#pragma once

#include <ATen/ATen.h>

#include <vector>

namespace fields {

// Level description shared by the entry points: scales (L), and meta (L * 5) holding per level
// res, size, offset, tile, addressing (see csrc/kernels/grid_cpu.h).

// (N, n_levels * n_features) encoding of x (N, n_dims).
at::Tensor grid_cpu_forward(const at::Tensor& x, const at::Tensor& params,
                            const std::vector<double>& scales, const std::vector<int64_t>& meta,
                            int64_t n_features, int64_t interpolation);

// {dparams (undefined unless need_params), dx (undefined unless need_dx)}.
std::vector<at::Tensor> grid_cpu_backward(const at::Tensor& dy, const at::Tensor& x,
                                          const at::Tensor& params,
                                          const std::vector<double>& scales,
                                          const std::vector<int64_t>& meta, int64_t n_features,
                                          int64_t interpolation, bool need_params,
                                          bool need_dx);

// Asks the kernel to back the (untouched part of the) tensor's memory with huge pages; grid
// tables are read and written at random, so TLB misses matter. Returns false if not applied.
bool advise_huge_pages(const at::Tensor& t);

}  // namespace fields
