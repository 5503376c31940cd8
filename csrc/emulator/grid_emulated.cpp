// The CUDA grid-encoding kernels (csrc/kernels/grid_cuda.cu) compiled as host code against the
// CPU emulator, behind a C API for ctypes (tests/cuda_emulator.py). Pointers are host memory.
#define FIELDS_WARP_EMULATOR 1
#include "../kernels/grid_cuda.cu"

#include <cstdio>
#include <exception>

namespace {

namespace gc = fields::grid_cuda;

// meta: 5 values per level (res, size, offset, tile, addressing), as fields/nn/grid.py's
// kernel_args() gives them.
gc::Grid make_grid(int n_dims, int n_features, int n_levels, int interpolation,
                   const double* scales, const int64_t* meta) {
  gc::Grid g;
  g.n_dims = n_dims;
  g.n_features = n_features;
  g.n_levels = n_levels;
  g.interpolation = interpolation;
  for (int l = 0; l < n_levels && l < gc::kMaxLevels; ++l) {
    g.levels[l].scale = static_cast<float>(scales[l]);
    g.levels[l].res = static_cast<uint32_t>(meta[l * 5 + 0]);
    g.levels[l].size = static_cast<uint32_t>(meta[l * 5 + 1]);
    g.levels[l].offset = static_cast<uint32_t>(meta[l * 5 + 2]);
    g.levels[l].tile = static_cast<uint32_t>(meta[l * 5 + 3]);
    g.levels[l].addressing = static_cast<int>(meta[l * 5 + 4]);
  }
  return g;
}

int fail(char* err, int len, const char* what) {
  if (err != nullptr && len > 0) std::snprintf(err, static_cast<size_t>(len), "%s", what);
  return 1;
}

}  // namespace

extern "C" {

// kind 0: forward (out, out16), 1: table gradient (dparams += ...), 2: input gradient (dx).
int fields_emu_grid(int kind, int n_dims, int n_features, int n_levels, int interpolation,
                    const double* scales, const int64_t* meta, int table16, const float* x,
                    int64_t n, const void* params, void* out, int out16, const void* dy,
                    int dy16, float* dparams, float* dx, char* err, int err_len) {
  try {
    if (n_levels > gc::kMaxLevels) return fail(err, err_len, "n_levels must be 1..64");
    const gc::Grid g = make_grid(n_dims, n_features, n_levels, interpolation, scales, meta);
    const char* why = gc::check_grid(g);
    if (why[0] != '\0') return fail(err, err_len, why);
    const auto t = table16 ? gc::kFloat16 : gc::kFloat32;
    cudaError_t e = cudaSuccess;
    if (kind == 0)
      e = gc::forward(g, t, x, n, params, out, out16 != 0, nullptr);
    else if (kind == 1)
      e = gc::backward_params(g, x, n, dy, dy16 != 0, dparams, nullptr);
    else
      e = gc::backward_input(g, t, x, n, params, dy, dy16 != 0, dx, nullptr);
    if (e != cudaSuccess) return fail(err, err_len, "launch failed");
    return 0;
  } catch (const std::exception& e) {
    return fail(err, err_len, e.what());
  }
}

}  // extern "C"
