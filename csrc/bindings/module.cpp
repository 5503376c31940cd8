// The fields._C extension module: the only place that names the Python-visible functions.
#include <torch/extension.h>

#include "dt.h"
#include "grid.h"
#include "march.h"
#include "mlp.h"

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "fields native kernels (C++; CUDA when built with it)";
  m.def("mlp_cpu_forward", &fields::mlp_cpu_forward, "Fused MLP forward on the CPU",
        py::arg("x"), py::arg("weights"), py::arg("biases"), py::arg("width"),
        py::arg("activation"), py::arg("output_activation"), py::arg("omega"), py::arg("save"));
  m.def("mlp_cpu_backward", &fields::mlp_cpu_backward, "Fused MLP backward on the CPU",
        py::arg("grad_output"), py::arg("x"), py::arg("weights"), py::arg("has_bias"),
        py::arg("saved"), py::arg("width"), py::arg("activation"),
        py::arg("output_activation"), py::arg("omega"), py::arg("need_dx"));
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
  m.def("march_rays_cpu", &fields::march_rays_cpu,
        "Ray marching through an occupancy grid on the CPU (packed samples)",
        py::arg("origins"), py::arg("directions"), py::arg("t_min"), py::arg("t_max"),
        py::arg("occupancy"), py::arg("aabb"), py::arg("contraction"), py::arg("step_size"),
        py::arg("cone_angle"), py::arg("max_step"));
  m.def("distance_transform_cpu", &fields::distance_transform_cpu,
        "Distance from every cell centre of a grid to the nearest point, on the CPU",
        py::arg("points"), py::arg("origin"), py::arg("voxel"), py::arg("dims"));
#ifdef FIELDS_WITH_CUDA
  m.attr("has_cuda") = true;
#else
  m.attr("has_cuda") = false;
#endif
}
