// Multiresolution grid encoding (Müller et al. 2022) on NVIDIA GPUs: framework-free host API on
// raw device pointers. The same function as the CPU kernels (grid_cpu.h) and the torch
// reference (fields/nn/grid.py), with their conventions:
//   inputs are clamped to [0, 1] (the gradient of an input outside the box is 0);
//   pos = x * scale + 0.5 (two roundings, never one FMA), cell = floor(pos), frac = pos - cell;
//   corner coordinates are clamped to [0, res - 1] (clamp-to-edge);
//   output (N, n_levels * n_features), level-major: out[i, l * F + f];
//   params: one flat array, level l's entry e at (offset_l + e) * F.
//
// One thread per (point, level); a block's threads share a level (blockIdx.y), so the
// addressing and the table range are uniform across a warp. The table is fp32 or fp16 (the
// "fp16 table" option); interpolation and accumulation are fp32; the table gradient is fp32,
// accumulated with atomics; the input gradient sums the levels in registers (one thread per
// point, no atomics).
//
// The kernels also compile with a host compiler against the CPU emulator
// (FIELDS_WARP_EMULATOR, csrc/emulator/), which is how they are tested without a GPU.
#pragma once

#ifdef FIELDS_WARP_EMULATOR
#include "../emulator/warp_emulator.h"
#else
#include <cuda_runtime_api.h>
#endif

#include <cstdint>

namespace fields {
namespace grid_cuda {

constexpr int kMaxLevels = 64;

enum Interpolation : int { kNearest = 0, kLinear = 1, kSmoothstep = 2 };
enum Addressing : int { kDense = 0, kHash = 1, kTiled = 2 };
enum TableType : int { kFloat32 = 0, kFloat16 = 1 };

struct Level {
  float scale = 0.f;     // pos = x * scale + 0.5
  uint32_t res = 0;      // grid vertices per dimension
  uint32_t size = 0;     // table entries (a power of two when hashed)
  uint32_t offset = 0;   // first entry of this level in the flat table
  uint32_t tile = 0;     // period in vertices (kTiled)
  int addressing = kDense;
};

// Passed to the kernels by value (about 1.6 KB).
struct Grid {
  int n_dims = 3;        // 1..4
  int n_features = 2;    // 1, 2, 4 or 8
  int n_levels = 0;      // 1..kMaxLevels
  int interpolation = kLinear;
  Level levels[kMaxLevels];
};

// Empty when the grid is supported, else what is wrong.
const char* check_grid(const Grid& g);

// out (n, n_levels * n_features): fp32, or fp16 when out16.
cudaError_t forward(const Grid& g, TableType table, const float* x, int64_t n,
                    const void* params, void* out, bool out16, cudaStream_t stream);

// dparams (fp32, as many values as params) += the table gradient for dy (n, n_levels *
// n_features), fp32 or fp16 (dy16). The caller zeroes dparams first.
cudaError_t backward_params(const Grid& g, const float* x, int64_t n, const void* dy,
                            bool dy16, float* dparams, cudaStream_t stream);

// dx (n, n_dims) = sum over levels and features of dy * d out / d x (0 for Nearest).
cudaError_t backward_input(const Grid& g, TableType table, const float* x, int64_t n,
                           const void* params, const void* dy, bool dy16, float* dx,
                           cudaStream_t stream);

}  // namespace grid_cuda
}  // namespace fields
