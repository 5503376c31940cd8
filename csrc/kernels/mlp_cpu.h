// Fully-fused MLP on the CPU: framework-free kernels on raw float pointers.
//
// The network is `depth` hidden layers of `width` neurons between an input of `n_in` and an
// output of `n_out` features, so it has `depth + 1` weight matrices. Layer l maps
// in_dim(l) -> out_dim(l) with a row-major weight W_l of shape (out_dim, in_dim), the torch
// `nn.Linear` convention, and an optional bias of shape (out_dim,).
//
// Rows (samples) are processed in tiles of kTileRows. For each tile the whole network runs
// with activations kept in cache; tiles are independent, so a caller spreads contiguous
// ranges of tiles over threads ("chunks"), each chunk with its own workspace.
//
// Weights are repacked once per call into column panels of kColBlock outputs
// (see pack_forward / pack_backward), which is what the register-blocked inner kernel reads.
#pragma once

#include <cstddef>
#include <cstdint>

namespace fields {
namespace mlp_cpu {

// Activation ids; the Python side (fields/nn/activations.py) uses the same numbers.
enum Activation : int {
  kNone = 0,
  kReLU = 1,
  kLeakyReLU = 2,
  kSoftplus = 3,
  kSigmoid = 4,
  kTanh = 5,
  kExponential = 6,
  kSiLU = 7,
  kSine = 8,
  kSquareplus = 9,
  kGaussian = 10,  // exp(-(omega z)^2)
  kFiner = 11,     // sin(omega (|z| + 1) z)  (FINER's variable-periodic sine)
  kNumActivations = 12,
};

constexpr int kColBlock = 16;   // outputs per register block (2 x 8 floats)
constexpr int kRowBlock = 6;    // rows per register block
constexpr int kTileRows = 96;   // rows per tile, a multiple of kRowBlock
constexpr float kLeakySlope = 0.01f;

inline int round_up(int v, int m) { return (v + m - 1) / m * m; }

// True when the activation's derivative must be computed from the pre-activation z
// (for the others it follows from the output a = act(z)).
bool needs_preactivation(int act);

struct Dims {
  int n_in = 0, n_out = 0, width = 0, depth = 1;
  int act = kReLU, out_act = kNone;
  float omega = 1.0f;  // Sine: sin(omega z); Gaussian: exp(-(omega z)^2); Finer: see above
  bool bias = false;

  int n_layers() const { return depth + 1; }
  int in_dim(int l) const { return l == 0 ? n_in : width; }
  int out_dim(int l) const { return l == depth ? n_out : width; }
  int out_pad(int l) const { return round_up(out_dim(l), kColBlock); }
  int in_pad(int l) const { return round_up(in_dim(l), kColBlock); }
  int max_pad() const;  // widest padded row of any tile buffer
};

// Returns an empty string when the dims are supported, else what is wrong.
const char* check_dims(const Dims& d);

// Number of tiles covering `rows` rows, and rows rounded up to whole tiles.
inline int64_t n_tiles(int64_t rows) { return (rows + kTileRows - 1) / kTileRows; }
inline int64_t rows_padded(int64_t rows) { return n_tiles(rows) * kTileRows; }

// Packed forward weights: for each layer, for each block of kColBlock outputs, an
// (in_dim x kColBlock) panel, zero in the padded outputs; then, when d.bias, the bias
// padded with zeros to out_pad. biases: one pointer per layer, or nullptr without bias.
size_t packed_forward_size(const Dims& d);
void pack_forward(const Dims& d, const float* const* weights, const float* const* biases,
                  float* packed);

// Packed transposed weights (for input gradients): for each layer, for each block of
// kColBlock inputs, an (out_pad x kColBlock) panel.
size_t packed_backward_size(const Dims& d);
void pack_backward(const Dims& d, const float* const* weights, float* packed);

// What a training forward keeps for the backward pass. Every buffer has rows_padded(rows)
// rows. a[l], l < depth: post-activation of hidden layer l, (rows_pad, width). z[l]: its
// pre-activation, only when needs_preactivation(act), else nullptr. out: only when
// out_act != None, (rows_pad, out_pad(depth)), holding the output pre-activation when
// needs_preactivation(out_act), else the post-activation.
struct Saved {
  float* const* a = nullptr;
  float* const* z = nullptr;
  float* out = nullptr;
};

// Workspace floats one chunk needs.
size_t forward_workspace_size(const Dims& d);
size_t backward_workspace_size(const Dims& d);
// Per-chunk weight-gradient accumulators: sum over layers of in_dim * out_pad (+ out_pad
// for the bias), stored transposed (in_dim, out_pad).
size_t weight_grad_size(const Dims& d);

// y = mlp(x) for tiles [tile_begin, tile_end). x: (rows, n_in), y: (rows, n_out), both
// row-major and contiguous. saved: nullptr for inference, else the buffers above, filled
// for these tiles.
void forward(const Dims& d, const float* packed, const float* x, float* y, int64_t rows,
             int64_t tile_begin, int64_t tile_end, float* workspace, const Saved* saved);

// Backward of forward() for tiles [tile_begin, tile_end): accumulates the transposed
// weight (and bias) gradients into wgrad (weight_grad_size floats, zeroed by the caller)
// and, when dx is not nullptr, writes dL/dx (rows, n_in).
void backward(const Dims& d, const float* packed_t, const float* x, const float* dy, float* dx,
              int64_t rows, int64_t tile_begin, int64_t tile_end, const Saved& saved,
              float* workspace, float* wgrad);

// Sums n_chunks per-chunk accumulators into dweights[l] (out_dim, in_dim) and, when biases
// are on, dbiases[l] (out_dim,).
void reduce_weight_grads(const Dims& d, const float* wgrad, int n_chunks, float* const* dweights,
                         float* const* dbiases);

// Which instruction set the kernels dispatch to on this machine ("avx2+fma" or "generic").
const char* isa();

}  // namespace mlp_cpu
}  // namespace fields
