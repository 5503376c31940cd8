// Declarations of the CPU helpers of `fields.render.volrend` (volrend.cpp): the bookkeeping
// of one round of `prune_in_rounds` and the compositing, each in one pass instead of a chain
// of torch ops.
#pragma once

#include <ATen/ATen.h>

#include <optional>
#include <vector>

namespace fields {

// The samples of one round: for each live ray r = rays[l], its packed samples
// [offsets[r] + lo, offsets[r] + lo + lengths[l]) with lengths[l] = min(count_r - lo, size)
// (count_r = offsets[r + 1] - offsets[r] > lo for a live ray), concatenated in ray order.
// If `row` (n_samples,) int64 is given, row[pick[p]] = base + p.
// Returns {pick (P,) int64, lengths (L,) int64}.
std::vector<at::Tensor> prune_picks_cpu(const at::Tensor& offsets, const at::Tensor& rays,
                                        int64_t lo, int64_t size, const std::optional<at::Tensor>& row,
                                        int64_t base);

// Adds one round's densities sigma (P,) f32 (in `prune_picks_cpu`'s order) to the rays' state:
// sd = min(nan_to_num(sigma * (t_end - t_start)), 50) in f32; a sample is kept while
// exp(-(optical depth before it)) > threshold (n_keep[r] += 1), depth[r] (f64) += sd.
// Returns the rays of `rays` still alive: transmittance above threshold and samples past
// `lo + size`.
at::Tensor prune_accumulate_cpu(const at::Tensor& sigma, const at::Tensor& t_starts,
                                const at::Tensor& t_ends, const at::Tensor& offsets,
                                const at::Tensor& rays, const at::Tensor& lengths, int64_t lo,
                                int64_t size, at::Tensor depth, at::Tensor n_keep,
                                double threshold);

// Rows idx (P,) int64 of the concatenation of parts (each (n_i, C) float32), without forming
// the concatenation: (P, C).
at::Tensor gather_rows_cpu(const std::vector<at::Tensor>& parts, const at::Tensor& idx);

// Sample midpoints: origins[ri] + directions[ri] * (t_start + t_end) / 2 for the packed
// samples `pick` (all of them when not given); (P, 3) f32.
at::Tensor sample_points_cpu(const at::Tensor& origins, const at::Tensor& directions,
                             const at::Tensor& ray_indices, const at::Tensor& t_starts,
                             const at::Tensor& t_ends,
                             const std::optional<at::Tensor>& pick);

}  // namespace fields

namespace fields {

// Compositing of packed samples along rays (fields.render.volrend.composite without the
// background): with sd = sigma * (t_end - t_start), T_i = exp(-sum_{j<i} sd_j) (the sum in
// f64), w_i = T_i (1 - exp(-sd_i)). Returns {rgb (R, 3) = sum w c, opacity (R, 1) = sum w,
// depth (R, 1) = sum w t_mid / max(opacity, 1e-10), weights (S,)}.
std::vector<at::Tensor> composite_forward_cpu(const at::Tensor& sigmas, const at::Tensor& rgbs,
                                              const at::Tensor& t_starts,
                                              const at::Tensor& t_ends,
                                              const at::Tensor& offsets);

// Gradients {d sigmas (S,), d rgbs (S, 3)} of composite_forward_cpu's outputs' gradients
// (grad_weights may be absent).
std::vector<at::Tensor> composite_backward_cpu(
    const at::Tensor& grad_rgb, const at::Tensor& grad_opacity, const at::Tensor& grad_depth,
    const std::optional<at::Tensor>& grad_weights, const at::Tensor& sigmas,
    const at::Tensor& rgbs, const at::Tensor& t_starts, const at::Tensor& t_ends,
    const at::Tensor& offsets, const at::Tensor& weights, const at::Tensor& opacity,
    const at::Tensor& depth);

}  // namespace fields
