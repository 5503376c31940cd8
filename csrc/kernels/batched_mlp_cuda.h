// Batched MLP on NVIDIA GPUs: many small networks of one shape, each row of the input run
// through its own network (KiloNeRF's thousands of tiny MLPs). Framework-free host API on raw
// device pointers; fields/nn/batched_mlp_cuda.py is the Python side.
//
// Networks: `depth` hidden layers of `width` neurons between `n_in` inputs and `n_out`
// outputs, the activation ids of the CPU kernels (mlp_cpu.h). Network c's layer l has the
// row-major weight matrix w[l] + c * out_l * in_l of shape (out_l, in_l) (in_0 = n_in,
// out_depth = n_out, width otherwise) and, with biases, b[l] + c * out_l: the layout of
// BatchedMLP's (n_nets, out_l, in_l) parameters, one pointer per layer.
//
// Rows are grouped by network: network c's rows are offsets[c] .. offsets[c + 1] (int64,
// n_nets + 1 values, non-decreasing, on the device). One block handles one network at a time
// (a grid-stride loop over networks), its threads one row each, everything in fp32. The
// forward keeps a row's activations in registers and reads the weights through the cache
// (every thread of the block reads the same weight at once). The backward recomputes nothing:
// it takes the pre-activations the training forward saved, carries each row's deltas back
// layer by layer and reduces the weight gradients of its network over the block's rows in
// shared memory: a network belongs to one block, so its gradients are summed in a fixed order
// without atomics (deterministic), into gradient buffers the caller zeroed.
//
// Limits: width, n_in and n_out at most kMaxDim, depth at most kMaxLayers - 1.
//
// Like the fused MLP, the kernels also compile with a host compiler against the CPU emulator
// (FIELDS_WARP_EMULATOR, csrc/emulator/), which is how they are tested without a GPU.
#pragma once

#ifdef FIELDS_WARP_EMULATOR
#include "../emulator/warp_emulator.h"
#else
#include <cuda_runtime_api.h>
#endif

#include <cstddef>
#include <cstdint>

namespace fields {
namespace batched_mlp_cuda {

constexpr int kMaxDim = 64;     // widest layer (inputs, hidden, outputs)
constexpr int kMaxLayers = 9;   // depth + 1
constexpr int kThreads = 64;    // rows per block and chunk

struct Dims {
  int n_in = 0, n_out = 0, width = 0, depth = 1;
  int act = 1, out_act = 0;
  float omega = 1.0f;
  bool bias = true;
  int64_t n_nets = 0;
};

// One pointer per layer (depth + 1 used).
struct Params {
  const float* w[kMaxLayers] = {};
  const float* b[kMaxLayers] = {};
};
struct Grads {
  float* w[kMaxLayers] = {};
  float* b[kMaxLayers] = {};
};

// Why the kernels cannot run these dims ("" when they can).
const char* check_dims(const Dims& d);

// Floats of pre-activations the training forward saves: depth * rows * width hidden ones,
// then rows * n_out of the output layer.
size_t saved_size(const Dims& d, int64_t rows);

// y (rows, n_out) = network(x (rows, n_in)), row r through the network whose offsets range
// holds it. z: nullptr, or saved_size floats (what backward takes).
cudaError_t forward(const Dims& d, const Params& p, const float* x, const int64_t* offsets,
                    int64_t rows, float* y, float* z, cudaStream_t stream);

// From dL/dy (rows, n_out) and the forward's z: dL/dx (rows, n_in) when dx is not null, and
// the weight (and bias) gradients added to g (the caller zeroes them).
cudaError_t backward(const Dims& d, const Params& p, const float* x, const int64_t* offsets,
                     int64_t rows, const float* z, const float* dy, float* dx, const Grads& g,
                     cudaStream_t stream);

}  // namespace batched_mlp_cuda
}  // namespace fields
