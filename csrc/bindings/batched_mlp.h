// Declarations of the torch-facing batched MLP entry points (defined in batched_mlp.cpp):
// many small networks of one shape, each row evaluated by its own network.
#pragma once

#include <ATen/ATen.h>

#include <optional>
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

// KiloNeRF's field at world points x (n, 3), no gradients: each point's cell of the cells^3
// grid over aabb (6,), its local coordinates frequency-encoded (`frequencies` bands, sin/cos
// per band, dimension-major), the cell's density network (ReLU, no output activation) ->
// sigma = exp(out[0] + density_bias) inside the box, 0 outside; with view (n, dims) given,
// the cell's colour network on [view, out[1:]] -> rgb (sigmoid). Returns {sigma (n,)} or
// {sigma, rgb (n, 3)}. packed: kilo_pack_cpu's packing of these weights (or none: each cell's
// networks are packed as they are used). view_index (n,): point i's view is row
// view_index[i] of view (one row per ray, when rendering), instead of row i.
std::vector<at::Tensor> kilo_forward_cpu(const at::Tensor& x,
                                         const std::optional<at::Tensor>& view,
                                         const at::Tensor& aabb, int64_t cells,
                                         int64_t frequencies,
                                         const std::vector<at::Tensor>& density_weights,
                                         const std::vector<at::Tensor>& density_biases,
                                         const std::vector<at::Tensor>& colour_weights,
                                         const std::vector<at::Tensor>& colour_biases,
                                         int64_t width, double density_bias,
                                         const std::optional<at::Tensor>& packed,
                                         const std::optional<at::Tensor>& view_index);

// KiloNeRF's field rendered (no gradients): rays (origins, directions (n, 3)) over their span
// in the box grid_aabb (6,) within [near, far] ((n,) each; OccupancyGrid.sample's span),
// marched through the occupancy grid (G, G, G) over that box with constant steps `step_size`
// (march_rays_cpu's samples, bit for bit), in rounds of `round_samples` samples a ray, for the
// rays whose transmittance is still above `threshold` (the samples kept are
// prune_in_rounds'); each sample's density and colour from its cell's networks
// (kilo_forward_cpu's values; packed: kilo_pack_cpu's), seen with its ray's view encoding:
// view (n, dims), or without view, the real spherical harmonics of degree `sh_degree` of the
// direction (fields.nn.SphericalHarmonics); composited as composite_forward_cpu on background
// (n, 3). packed_grid: pack_occupancy_cpu's packing of occupancy, or none. Returns {rgb (n, 3),
// opacity (n, 1), depth (n, 1), counts (2,) int64: the samples composited and the samples
// evaluated}.
std::vector<at::Tensor> kilo_render_cpu(
    const at::Tensor& origins, const at::Tensor& directions, const at::Tensor& near,
    const at::Tensor& far, const at::Tensor& occupancy, const at::Tensor& grid_aabb,
    double step_size, const std::optional<at::Tensor>& view, int64_t sh_degree,
    const at::Tensor& background, double threshold, int64_t round_samples,
    const at::Tensor& aabb, int64_t cells, int64_t frequencies,
    const std::vector<at::Tensor>& density_weights,
    const std::vector<at::Tensor>& density_biases,
    const std::vector<at::Tensor>& colour_weights,
    const std::vector<at::Tensor>& colour_biases, int64_t width, double density_bias,
    const at::Tensor& packed, const std::optional<std::vector<at::Tensor>>& packed_grid);

// Every cell's two networks packed for kilo_forward_cpu: (cells^3, floats per cell).
at::Tensor kilo_pack_cpu(int64_t cells, int64_t frequencies,
                         const std::vector<at::Tensor>& density_weights,
                         const std::vector<at::Tensor>& density_biases,
                         const std::vector<at::Tensor>& colour_weights,
                         const std::vector<at::Tensor>& colour_biases, int64_t width);

}  // namespace fields
