// Fully-fused MLP on NVIDIA GPUs (tensor cores): framework-free host API on raw device pointers.
//
// Same network as the CPU kernels (mlp_cpu.h): `depth` hidden layers of `width` neurons
// between `n_in` inputs and `n_out` outputs, depth + 1 row-major weights W_l of shape
// (out_dim, in_dim), optional biases, the same activation ids and formulas.
//
// Widths: the kernels exist for 16, 32, 64 and 128 hidden neurons; other widths run on the next
// of these (kernel_width) with zero weights in the extra rows and columns, which computes the
// same function (an extra neuron's outgoing weights are zero, whatever its activation).
// `Dims::width` is the kernel width; the caller pads.
//
// Precision: inputs, weights, saved activations and back-propagated deltas are 16-bit
// (fp16 or bf16, `Precision`); every product is accumulated in fp32 (mma.sync m16n8k16);
// outputs are fp32 or 16-bit (y16), input gradients fp32. Each warp runs 16 * row_tiles(width) rows through the
// whole network with activations in registers (the accumulator fragment of one layer is the
// A fragment of the next); all weights of the network sit in shared memory, read with ldmatrix.
//
// Packed weights (what the kernels copy to shared memory as is): for each layer l, out_pad(l)
// rows of in_pad(l) + kSkew 16-bit values, zero in the padded rows and columns; the skew keeps
// ldmatrix's eight row reads on distinct banks. Biases (optional): fp32, out_pad(l) per layer.
//
// Backward computes the deltas dL/dz_l of every layer (scaled by `scale` so that fp16 keeps
// them in range: the caller divides what it derives from them by the same scale) and,
// optionally, dL/dx. Weight gradients are GEMMs on the deltas and the saved activations,
// left to the caller's BLAS (they need a reduction over every row, which a fused per-row
// kernel cannot give without atomics). Double backward (second derivatives, below) likewise.
//
// The kernels also compile with a host compiler against the CPU emulator (FIELDS_WARP_EMULATOR,
// csrc/emulator/), which is how they are tested on machines without a GPU.
#pragma once

#ifdef FIELDS_WARP_EMULATOR
#include "../emulator/warp_emulator.h"
#else
#include <cuda_runtime_api.h>
#endif

#include <cstddef>
#include <cstdint>

#ifdef __CUDACC__
#define FIELDS_HD __host__ __device__
#else
#define FIELDS_HD
#endif

namespace fields {
namespace mlp_cuda {

enum Precision : int { kHalf = 0, kBFloat16 = 1 };

constexpr int kSkew = 8;         // 16-bit values of padding per shared-memory weight row
constexpr int kMaxWidth = 128;   // the widest kernel
constexpr int kWarps = 8;        // warps per block
constexpr int kMaxDepth = 64;

struct Dims {
  int n_in = 0, n_out = 0, width = 0, depth = 1;
  int act = 1, out_act = 0;
  float omega = 1.0f;
  bool bias = false;

  FIELDS_HD int n_layers() const { return depth + 1; }
  FIELDS_HD int in_dim(int l) const { return l == 0 ? n_in : width; }
  FIELDS_HD int out_dim(int l) const { return l == depth ? n_out : width; }
  FIELDS_HD int in_pad(int l) const { return (in_dim(l) + 15) / 16 * 16; }
  FIELDS_HD int out_pad(int l) const { return (out_dim(l) + 15) / 16 * 16; }
};

// The kernel a hidden width runs on: 16, 32, 64 or 128 (0 above 128).
inline int kernel_width(int width) {
  return width <= 16 ? 16 : width <= 32 ? 32 : width <= 64 ? 64 : width <= 128 ? 128 : 0;
}

// True when the derivative of `act` is computed from the pre-activation (saved as fp32).
bool needs_preactivation(int act);

// Offsets (in 16-bit values) of each layer in the packed weights, and the total.
size_t packed_offset(const Dims& d, int layer);
size_t packed_size(const Dims& d);
// Offsets (in floats) of each layer's bias, and the total.
size_t bias_offset(const Dims& d, int layer);
size_t bias_size(const Dims& d);
// Shared memory one block needs (weights, then biases).
size_t shared_bytes(const Dims& d);

// Empty when the network runs on these kernels with `shared_limit` bytes of shared memory per
// block (the device's opt-in maximum), else why not.
const char* check_dims(const Dims& d, size_t shared_limit);

struct ForwardArgs {
  const void* x = nullptr;         // (rows, n_in) 16-bit, row-major
  int64_t rows = 0;
  const void* weights = nullptr;   // packed, 16-bit
  const float* biases = nullptr;   // packed, or nullptr without bias
  void* y = nullptr;               // (rows, n_out): fp32, or 16-bit when y16
  bool y16 = false;
  // Training: a (depth, rows, width) 16-bit post-activations; z (depth, rows, width) fp32
  // pre-activations when needs_preactivation(act); z_out (rows, n_out) fp32 output
  // pre-activations when needs_preactivation(out_act). nullptr for inference.
  void* a = nullptr;
  float* z = nullptr;
  float* z_out = nullptr;
};

struct BackwardArgs {
  const float* dy = nullptr;       // (rows, n_out) dL/dy
  int64_t rows = 0;
  float scale = 1.0f;              // deltas are stored times this
  const void* weights = nullptr;   // packed, as in forward
  const void* a = nullptr;         // from the training forward
  const float* z = nullptr;
  const void* y = nullptr;         // the forward's output (out activation derivative)
  bool y16 = false;                // y is 16-bit
  const float* z_out = nullptr;
  // Outputs: delta (depth, rows, width) 16-bit for the hidden layers, delta_out (rows, n_out)
  // 16-bit for the output layer; dx (rows, n_in) fp32 (unscaled), or nullptr.
  void* delta = nullptr;
  void* delta_out = nullptr;
  float* dx = nullptr;
};

// Second derivatives. The first backward maps v = dL/dy to g = dL/dx = J^T v (J = dy/dx). When
// a loss depends on g (an eikonal term), its gradient needs the derivative of g with respect to
// the weights, x and v, given u = dL/dg. With S = sum over rows of u . g = v . (J u), J u is the
// network's tangent along u (forward mode), and reverse mode through the forward and tangent
// passes gives, per layer l (z pre-activation, a = act(z), zdot the tangent of z):
//   delta_l = (W_{l+1}^T delta_{l+1}) * act'(z_l)                      (the first backward's)
//   zbar_l  = (W_{l+1}^T zbar_{l+1}) * act'(z_l) + (W_{l+1}^T delta_{l+1}) * act''(z_l) zdot_l
// from delta_L = v act_o'(z_L), zbar_L = v act_o''(z_L) zdot_L, and then
//   dS/dW_l = zbar_l^T a_{l-1} + delta_l^T adot_{l-1}    (a_{-1} = x, adot_{-1} = u)
//   dS/db_l = sum zbar_l,  dS/dx = W_0^T zbar_0,  dS/dv = act_o'(z_L) zdot_L.
// The kernel runs the tangent pass and both backward recursions per tile of rows, on chip, and
// writes what the weight gradients need (the GEMMs are the caller's, as for backward).
struct DoubleBackwardArgs {
  const float* dy = nullptr;       // (rows, n_out) v, the first backward's dL/dy
  int64_t rows = 0;
  float scale_v = 1.0f;            // v is multiplied by this (as the first backward's scale)
  const void* u = nullptr;         // (rows, n_in) 16-bit: u = dL/dg times scale_u, rounded
  float scale_u = 1.0f;
  const void* weights = nullptr;   // packed, as in forward
  const void* a = nullptr;         // from the training forward
  const float* z = nullptr;
  const void* y = nullptr;
  bool y16 = false;
  const float* z_out = nullptr;
  // Scratch: (depth, rows, width) fp32 for act''(z_l) zdot_l, unless act'' is zero (ReLU,
  // LeakyReLU, None): then nullptr.
  float* t = nullptr;
  // Outputs, each times scale_v * scale_u where they carry both: adot (depth, rows, width)
  // 16-bit (times scale_u); delta (depth, rows, width) and delta_out (rows, n_out) 16-bit (times
  // scale_v); zbar (depth, rows, width) and zbar_out (rows, n_out) 16-bit (times both);
  // dx (rows, n_in) fp32 and dv (rows, n_out) fp32, unscaled, or nullptr.
  void* adot = nullptr;
  void* delta = nullptr;
  void* delta_out = nullptr;
  void* zbar = nullptr;
  void* zbar_out = nullptr;
  float* dx = nullptr;
  float* dv = nullptr;
};

// True when act'' is not identically zero (the scratch `t` is needed).
bool has_second_derivative(int act);

cudaError_t forward(const Dims& d, Precision p, const ForwardArgs& args, cudaStream_t stream);
cudaError_t backward(const Dims& d, Precision p, const BackwardArgs& args, cudaStream_t stream);
cudaError_t double_backward(const Dims& d, Precision p, const DoubleBackwardArgs& args,
                            cudaStream_t stream);

}  // namespace mlp_cuda
}  // namespace fields
