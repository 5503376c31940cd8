// The CUDA fused-MLP kernels (csrc/kernels/mlp_cuda*.cu) compiled as host code against the CPU
// emulator, behind a C API for ctypes (tests/cuda_emulator.py). Pointers are host memory.
#define FIELDS_WARP_EMULATOR 1
#include "../kernels/mlp_cuda.cu"
#include "../kernels/mlp_cuda_bf16.cu"
#include "../kernels/mlp_cuda_f16.cu"

#include <cstdio>
#include <exception>

namespace {

fields::mlp_cuda::Dims make_dims(const int* dims, float omega) {
  fields::mlp_cuda::Dims d;
  d.n_in = dims[0];
  d.n_out = dims[1];
  d.width = dims[2];
  d.depth = dims[3];
  d.act = dims[4];
  d.out_act = dims[5];
  d.bias = dims[6] != 0;
  d.omega = omega;
  return d;
}

int fail(char* err, int len, const char* what) {
  if (err != nullptr && len > 0) std::snprintf(err, static_cast<size_t>(len), "%s", what);
  return 1;
}

}  // namespace

extern "C" {

// dims: n_in, n_out, width (a kernel width), depth, act, out_act, bias.
// Returns 0, or 1 with the reason in err.
int fields_emu_mlp_forward(const int* dims, float omega, int precision, const void* x,
                           int64_t rows, const void* weights, const float* biases, void* y,
                           int y16, void* a, float* z, float* z_out, char* err, int err_len) {
  try {
    const auto d = make_dims(dims, omega);
    const char* why = fields::mlp_cuda::check_dims(d, 227 * 1024);
    if (why[0] != '\0') return fail(err, err_len, why);
    fields::mlp_cuda::ForwardArgs args;
    args.x = x;
    args.rows = rows;
    args.weights = weights;
    args.biases = biases;
    args.y = y;
    args.y16 = y16 != 0;
    args.a = a;
    args.z = z;
    args.z_out = z_out;
    const auto p = static_cast<fields::mlp_cuda::Precision>(precision);
    if (fields::mlp_cuda::forward(d, p, args, nullptr) != cudaSuccess)
      return fail(err, err_len, "forward: launch failed");
    return 0;
  } catch (const std::exception& e) {
    return fail(err, err_len, e.what());
  }
}

int fields_emu_mlp_backward(const int* dims, float omega, int precision, const float* dy,
                            int64_t rows, float scale, const void* weights, const void* a,
                            const float* z, const void* y, int y16, const float* z_out,
                            void* delta,
                            void* delta_out, float* dx, char* err, int err_len) {
  try {
    const auto d = make_dims(dims, omega);
    const char* why = fields::mlp_cuda::check_dims(d, 227 * 1024);
    if (why[0] != '\0') return fail(err, err_len, why);
    fields::mlp_cuda::BackwardArgs args;
    args.dy = dy;
    args.rows = rows;
    args.scale = scale;
    args.weights = weights;
    args.a = a;
    args.z = z;
    args.y = y;
    args.y16 = y16 != 0;
    args.z_out = z_out;
    args.delta = delta;
    args.delta_out = delta_out;
    args.dx = dx;
    const auto p = static_cast<fields::mlp_cuda::Precision>(precision);
    if (fields::mlp_cuda::backward(d, p, args, nullptr) != cudaSuccess)
      return fail(err, err_len, "backward: launch failed");
    return 0;
  } catch (const std::exception& e) {
    return fail(err, err_len, e.what());
  }
}

int fields_emu_mlp_double_backward(const int* dims, float omega, int precision,
                                   const float* dy, int64_t rows, float scale_v, const void* u,
                                   float scale_u, const void* weights, const void* a,
                                   const float* z, const void* y, int y16, const float* z_out,
                                   float* t, void* adot, void* delta, void* delta_out,
                                   void* zbar, void* zbar_out, float* dx, float* dv, char* err,
                                   int err_len) {
  try {
    const auto d = make_dims(dims, omega);
    const char* why = fields::mlp_cuda::check_dims(d, 227 * 1024);
    if (why[0] != '\0') return fail(err, err_len, why);
    fields::mlp_cuda::DoubleBackwardArgs args;
    args.dy = dy;
    args.rows = rows;
    args.scale_v = scale_v;
    args.u = u;
    args.scale_u = scale_u;
    args.weights = weights;
    args.a = a;
    args.z = z;
    args.y = y;
    args.y16 = y16 != 0;
    args.z_out = z_out;
    args.t = t;
    args.adot = adot;
    args.delta = delta;
    args.delta_out = delta_out;
    args.zbar = zbar;
    args.zbar_out = zbar_out;
    args.dx = dx;
    args.dv = dv;
    const auto p = static_cast<fields::mlp_cuda::Precision>(precision);
    if (fields::mlp_cuda::double_backward(d, p, args, nullptr) != cudaSuccess)
      return fail(err, err_len, "double backward: launch failed");
    return 0;
  } catch (const std::exception& e) {
    return fail(err, err_len, e.what());
  }
}

int64_t fields_emu_mlp_packed_size(const int* dims) {
  return static_cast<int64_t>(fields::mlp_cuda::packed_size(make_dims(dims, 1.f)));
}

int64_t fields_emu_mlp_packed_offset(const int* dims, int layer) {
  return static_cast<int64_t>(fields::mlp_cuda::packed_offset(make_dims(dims, 1.f), layer));
}

int64_t fields_emu_mlp_bias_offset(const int* dims, int layer) {
  return static_cast<int64_t>(fields::mlp_cuda::bias_offset(make_dims(dims, 1.f), layer));
}

uint64_t fields_emu_warp_instructions() { return fields::emu::warp_instructions(); }

}  // extern "C"
