// The CUDA batched-MLP kernels (csrc/kernels/batched_mlp_cuda.cu) compiled as host code against
// the CPU emulator, behind a C API for ctypes (tests/cuda_emulator.py). Pointers are host memory.
#define FIELDS_WARP_EMULATOR 1
#include "../kernels/batched_mlp_cuda.cu"

#include <cstdio>
#include <exception>

namespace {

namespace bc = fields::batched_mlp_cuda;

int fail(char* err, int len, const char* what) {
  if (err != nullptr && len > 0) std::snprintf(err, static_cast<size_t>(len), "%s", what);
  return 1;
}

}  // namespace

extern "C" {

// kind 0: forward (y, and z when not null), 1: backward (dx when not null, gw / gb added to).
// dims: n_in, n_out, width, depth, act, out_act, bias. w, b, gw, gb: depth + 1 pointers each
// (b and gb ignored without bias). Returns 0, or 1 with the reason in err.
int fields_emu_batched_mlp(int kind, const int* dims, float omega, int64_t n_nets,
                           const float* const* w, const float* const* b, const float* x,
                           const int64_t* offsets, int64_t rows, float* y, float* z,
                           const float* dy, float* dx, float* const* gw, float* const* gb,
                           char* err, int err_len) {
  try {
    bc::Dims d;
    d.n_in = dims[0];
    d.n_out = dims[1];
    d.width = dims[2];
    d.depth = dims[3];
    d.act = dims[4];
    d.out_act = dims[5];
    d.bias = dims[6] != 0;
    d.omega = omega;
    d.n_nets = n_nets;
    const char* why = bc::check_dims(d);
    if (why[0] != '\0') return fail(err, err_len, why);
    bc::Params p;
    bc::Grads g;
    for (int l = 0; l <= d.depth; ++l) {
      p.w[l] = w[l];
      p.b[l] = d.bias && b != nullptr ? b[l] : nullptr;
      if (kind == 1) {
        g.w[l] = gw[l];
        g.b[l] = d.bias ? gb[l] : nullptr;
      }
    }
    const cudaError_t e = kind == 0 ? bc::forward(d, p, x, offsets, rows, y, z, nullptr)
                                    : bc::backward(d, p, x, offsets, rows, z, dy, dx, g, nullptr);
    if (e != cudaSuccess) return fail(err, err_len, "launch failed");
    return 0;
  } catch (const std::exception& e) {
    return fail(err, err_len, e.what());
  }
}

int64_t fields_emu_batched_mlp_saved_size(const int* dims, int64_t rows) {
  bc::Dims d;
  d.n_out = dims[1];
  d.width = dims[2];
  d.depth = dims[3];
  return static_cast<int64_t>(bc::saved_size(d, rows));
}

}  // extern "C"
