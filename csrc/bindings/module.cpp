// The fields._C extension module: the only place that names the Python-visible functions.
#include <torch/extension.h>

#include "batched_mlp.h"
#include "batched_mlp_cuda.h"
#include "cpu_cache.h"
#include "dt.h"
#include "grid.h"
#include "grid_cuda.h"
#include "march.h"
#include "march_cuda.h"
#include "mlp.h"
#include "mlp_cuda.h"
#include "volrend.h"

namespace fields {
std::vector<std::string> peak_cpu_isas();
std::pair<double, double> peak_cpu_run(const std::string& isa, int64_t iterations,
                                       int64_t threads);
}  // namespace fields

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "fields native kernels (C++; CUDA when built with it)";
  m.def("mlp_cpu_forward", &fields::mlp_cpu_forward, "Fused MLP forward on the CPU",
        py::arg("x"), py::arg("weights"), py::arg("biases"), py::arg("width"),
        py::arg("activation"), py::arg("output_activation"), py::arg("omega"), py::arg("save"));
  m.def("mlp_cpu_backward", &fields::mlp_cpu_backward, "Fused MLP backward on the CPU",
        py::arg("grad_output"), py::arg("x"), py::arg("weights"), py::arg("has_bias"),
        py::arg("saved"), py::arg("width"), py::arg("activation"),
        py::arg("output_activation"), py::arg("omega"), py::arg("need_dx"));
  m.def("batched_mlp_cpu_forward", &fields::batched_mlp_cpu_forward,
        "Batched MLP forward on the CPU (rows grouped by network)", py::arg("x"),
        py::arg("offsets"), py::arg("weights"), py::arg("biases"), py::arg("width"),
        py::arg("activation"), py::arg("output_activation"), py::arg("omega"), py::arg("save"));
  m.def("batched_mlp_cpu_backward", &fields::batched_mlp_cpu_backward,
        "Batched MLP backward on the CPU", py::arg("grad_output"), py::arg("x"),
        py::arg("offsets"), py::arg("weights"), py::arg("has_bias"), py::arg("saved"),
        py::arg("width"), py::arg("activation"), py::arg("output_activation"),
        py::arg("omega"), py::arg("need_dx"));
  m.def("kilo_forward_cpu", &fields::kilo_forward_cpu,
        "KiloNeRF's field (cells of tiny networks) at world points, inference", py::arg("x"),
        py::arg("view"), py::arg("aabb"), py::arg("cells"), py::arg("frequencies"),
        py::arg("density_weights"), py::arg("density_biases"), py::arg("colour_weights"),
        py::arg("colour_biases"), py::arg("width"), py::arg("density_bias"),
        py::arg("packed") = py::none(), py::arg("view_index") = py::none());
  m.def("kilo_render_cpu", &fields::kilo_render_cpu,
        "KiloNeRF's field rendered: marching in rounds, the tiny networks and compositing in "
        "one pass (inference)",
        py::arg("origins"), py::arg("directions"), py::arg("near"), py::arg("far"),
        py::arg("occupancy"), py::arg("grid_aabb"), py::arg("step_size"), py::arg("view"),
        py::arg("sh_degree"), py::arg("background"), py::arg("threshold"), py::arg("round_samples"), py::arg("aabb"),
        py::arg("cells"), py::arg("frequencies"), py::arg("density_weights"),
        py::arg("density_biases"), py::arg("colour_weights"), py::arg("colour_biases"),
        py::arg("width"), py::arg("density_bias"), py::arg("packed"),
        py::arg("packed_grid") = py::none());
  m.def("kilo_pack_cpu", &fields::kilo_pack_cpu,
        "Every cell's two KiloNeRF networks packed for kilo_forward_cpu", py::arg("cells"),
        py::arg("frequencies"), py::arg("density_weights"), py::arg("density_biases"),
        py::arg("colour_weights"), py::arg("colour_biases"), py::arg("width"));
  m.def("mlp_cpu_isa", &fields::mlp_cpu_isa,
        "Instruction set the CPU MLP kernels dispatch to on this machine");
  m.def("grid_cpu_forward", &fields::grid_cpu_forward, "Grid encoding forward on the CPU",
        py::arg("x"), py::arg("params"), py::arg("scales"), py::arg("meta"),
        py::arg("n_features"), py::arg("interpolation"));
  m.def("grid_cpu_backward", &fields::grid_cpu_backward, "Grid encoding backward on the CPU",
        py::arg("grad_output"), py::arg("x"), py::arg("params"), py::arg("scales"),
        py::arg("meta"), py::arg("n_features"), py::arg("interpolation"),
        py::arg("need_params"), py::arg("need_dx"));
  m.def("advise_huge_pages", &fields::advise_huge_pages,
        "Hint the OS to back a (large, untouched) CPU tensor with huge pages", py::arg("t"));
  m.def("peak_cpu_isas", &fields::peak_cpu_isas,
        "Instruction sets this CPU runs (avx512, avx2, generic), for the FMA peak");
  m.def("peak_cpu_run", &fields::peak_cpu_run,
        "Runs the FMA peak loop on threads at once: (seconds, flops)", py::arg("isa"),
        py::arg("iterations"), py::arg("threads"));
  m.def("install_cpu_cache", &fields::install_cpu_cache,
        "Make the caching allocator torch's CPU allocator (it caches tensors of 1 MiB or "
        "more), keeping at most limit_bytes of freed blocks", py::arg("limit_bytes"));
  m.def("cpu_cache_installed", &fields::cpu_cache_installed,
        "Whether the caching allocator is torch's CPU allocator");
  m.def("cpu_cache_stats", &fields::cpu_cache_stats,
        "[cached bytes, hits, misses] of the caching CPU allocator");
  m.def("cpu_cache_empty", &fields::cpu_cache_empty,
        "Return every cached CPU block to the system");
  m.def("march_rays_cpu", &fields::march_rays_cpu,
        "Ray marching through an occupancy grid on the CPU (packed samples)",
        py::arg("origins"), py::arg("directions"), py::arg("t_min"), py::arg("t_max"),
        py::arg("occupancy"), py::arg("aabb"), py::arg("contraction"), py::arg("step_size"),
        py::arg("cone_angle"), py::arg("max_step"), py::arg("packed") = py::none());
  m.def("pack_occupancy_cpu", &fields::pack_occupancy_cpu,
        "An occupancy grid packed as the CPU marchers read it: {bits, coarse blocks}",
        py::arg("occupancy"));
  m.def("contract_points_cpu", &fields::contract_points_cpu,
        "Points in grid space, clamped to [0, 1]^3, and whether they were inside: {gc, in_unit}",
        py::arg("x"), py::arg("aabb"), py::arg("contraction"));
  m.def("prune_picks_cpu", &fields::prune_picks_cpu,
        "One round's samples of early ray termination: {pick, lengths}", py::arg("offsets"),
        py::arg("rays"), py::arg("lo"), py::arg("size"), py::arg("row"), py::arg("base"));
  m.def("prune_accumulate_cpu", &fields::prune_accumulate_cpu,
        "Adds one round's densities to the rays' optical depth and kept counts; the live rays",
        py::arg("sigma"), py::arg("t_starts"), py::arg("t_ends"), py::arg("offsets"),
        py::arg("rays"), py::arg("lengths"), py::arg("lo"), py::arg("size"), py::arg("depth"),
        py::arg("n_keep"), py::arg("threshold"));
  m.def("gather_rows_cpu", &fields::gather_rows_cpu,
        "Rows of the concatenation of float32 parts, without concatenating", py::arg("parts"),
        py::arg("idx"));
  m.def("sample_points_cpu", &fields::sample_points_cpu,
        "Midpoints of packed samples (all, or those picked)", py::arg("origins"),
        py::arg("directions"), py::arg("ray_indices"), py::arg("t_starts"), py::arg("t_ends"),
        py::arg("pick"));
  m.def("composite_forward_cpu", &fields::composite_forward_cpu,
        "Compositing of packed samples: {rgb, opacity, depth, weights}", py::arg("sigmas"),
        py::arg("rgbs"), py::arg("t_starts"), py::arg("t_ends"), py::arg("offsets"));
  m.def("composite_backward_cpu", &fields::composite_backward_cpu,
        "Gradients {sigmas, rgbs} of the compositing", py::arg("grad_rgb"),
        py::arg("grad_opacity"), py::arg("grad_depth"), py::arg("grad_weights"),
        py::arg("sigmas"), py::arg("rgbs"), py::arg("t_starts"), py::arg("t_ends"),
        py::arg("offsets"), py::arg("weights"), py::arg("opacity"), py::arg("depth"));
  m.def("distance_transform_cpu", &fields::distance_transform_cpu,
        "Distance from every cell centre of a grid to the nearest point, on the CPU",
        py::arg("points"), py::arg("origin"), py::arg("voxel"), py::arg("dims"));
#ifdef FIELDS_WITH_CUDA
  m.def("mlp_cuda_forward", &fields::mlp_cuda_forward,
        "Fused MLP forward on tensor cores (16-bit in, fp32 accumulate)", py::arg("x"),
        py::arg("weights"), py::arg("biases"), py::arg("dims"), py::arg("omega"),
        py::arg("half"), py::arg("save"), py::arg("out16"), py::arg("stream"));
  m.def("mlp_cuda_backward", &fields::mlp_cuda_backward,
        "Fused MLP backward on tensor cores: scaled deltas and dx", py::arg("dy"),
        py::arg("scale"), py::arg("weights"), py::arg("a"), py::arg("z"), py::arg("y"),
        py::arg("z_out"), py::arg("dims"), py::arg("omega"), py::arg("half"),
        py::arg("need_dx"), py::arg("stream"));
  m.def("mlp_cuda_double_backward", &fields::mlp_cuda_double_backward,
        "Fused MLP second derivatives on tensor cores (tangent pass and both backward "
        "recursions)",
        py::arg("dy"), py::arg("scale_v"), py::arg("u"), py::arg("scale_u"), py::arg("weights"),
        py::arg("a"), py::arg("z"), py::arg("y"), py::arg("z_out"), py::arg("dims"),
        py::arg("omega"), py::arg("half"), py::arg("need_dx"), py::arg("need_dv"),
        py::arg("stream"));
  m.def("grid_cuda_forward", &fields::grid_cuda_forward, "Grid encoding forward on CUDA",
        py::arg("x"), py::arg("params"), py::arg("scales"), py::arg("meta"),
        py::arg("n_features"), py::arg("interpolation"), py::arg("out16"), py::arg("stream"));
  m.def("grid_cuda_backward", &fields::grid_cuda_backward, "Grid encoding backward on CUDA",
        py::arg("grad_output"), py::arg("x"), py::arg("params"), py::arg("scales"),
        py::arg("meta"), py::arg("n_features"), py::arg("interpolation"),
        py::arg("need_params"), py::arg("need_dx"), py::arg("stream"));
  m.def("march_rays_cuda", &fields::march_rays_cuda,
        "Ray marching through an occupancy grid on CUDA (packed samples)", py::arg("origins"),
        py::arg("directions"), py::arg("t_min"), py::arg("t_max"), py::arg("occupancy"),
        py::arg("aabb"), py::arg("contraction"), py::arg("step_size"), py::arg("cone_angle"),
        py::arg("max_step"), py::arg("stream"));
  m.def("batched_mlp_cuda_forward", &fields::batched_mlp_cuda_forward,
        "Batched MLP forward on CUDA (fp32; rows grouped by network)", py::arg("x"),
        py::arg("offsets"), py::arg("weights"), py::arg("biases"), py::arg("width"),
        py::arg("activation"), py::arg("output_activation"), py::arg("omega"), py::arg("save"),
        py::arg("stream"));
  m.def("batched_mlp_cuda_backward", &fields::batched_mlp_cuda_backward,
        "Batched MLP backward on CUDA: dx and the per-network weight gradients", py::arg("dy"),
        py::arg("x"), py::arg("offsets"), py::arg("weights"), py::arg("has_bias"), py::arg("z"),
        py::arg("width"), py::arg("activation"), py::arg("output_activation"),
        py::arg("omega"), py::arg("need_dx"), py::arg("stream"));
  m.attr("has_cuda") = true;
#else
  m.attr("has_cuda") = false;
#endif
}
