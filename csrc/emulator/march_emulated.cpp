// The CUDA ray-marching kernels (csrc/kernels/march_cuda.cu) compiled as host code against the
// CPU emulator, behind a C API for ctypes (tests/cuda_emulator.py). Pointers are host memory.
#define FIELDS_WARP_EMULATOR 1
#include "../kernels/march_cuda.cu"

#include <cstdio>
#include <exception>

extern "C" {

// kind 0: counts (n,); kind 1: fill from offsets (n + 1,). Returns 0, or 1 with err.
int fields_emu_march(int kind, const uint8_t* occupancy, int res, const float* aabb,
                     int contraction, float step_size, float cone_angle, float max_step,
                     const float* origins, const float* directions, const float* t_min,
                     const float* t_max, int64_t n, int64_t* counts, const int64_t* offsets,
                     int64_t* ray_indices, float* t_starts, float* t_ends, char* err,
                     int err_len) {
  namespace mc = fields::march_cuda;
  try {
    mc::Grid g;
    g.occupancy = occupancy;
    g.res = res;
    for (int k = 0; k < 6; ++k) g.aabb[k] = aabb[k];
    g.contraction = contraction;
    mc::Stepping s;
    s.step_size = step_size;
    s.cone_angle = cone_angle;
    s.max_step = max_step;
    const char* why = mc::check(g, s);
    if (why[0] != '\0') {
      std::snprintf(err, static_cast<size_t>(err_len), "%s", why);
      return 1;
    }
    mc::Rays rays;
    rays.origins = origins;
    rays.directions = directions;
    rays.t_min = t_min;
    rays.t_max = t_max;
    rays.n = n;
    const cudaError_t e = kind == 0 ? mc::count(g, s, rays, counts, nullptr)
                                    : mc::fill(g, s, rays, offsets, ray_indices, t_starts,
                                               t_ends, nullptr);
    if (e != cudaSuccess) {
      std::snprintf(err, static_cast<size_t>(err_len), "launch failed");
      return 1;
    }
    return 0;
  } catch (const std::exception& ex) {
    std::snprintf(err, static_cast<size_t>(err_len), "%s", ex.what());
    return 1;
  }
}

}  // extern "C"
