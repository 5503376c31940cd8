// Ray marching through an occupancy grid on NVIDIA GPUs (the NeRF renderer's sampler):
// framework-free host API on raw device pointers. The same samples as the CPU kernel
// (march_cpu.h, whose conventions these follow bit for bit: every product and sum rounded on
// its own, never fused) and the torch reference (fields/render/occupancy.py).
//
// Two passes, one thread per ray: `count` writes each ray's number of samples; the caller
// turns them into offsets (an exclusive scan, offsets[0] = 0, offsets[r + 1] = offsets[r] +
// counts[r]) and allocates the packed outputs; `fill` marches again and writes each ray's
// samples at its offset. Marching twice costs less than a global append with atomics would,
// and keeps the samples in ray order.
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
namespace march_cuda {

enum Contraction : int { kNone = 0, kMipNerf360 = 1 };

struct Grid {
  const uint8_t* occupancy = nullptr;  // res^3 bytes, x-major (device memory)
  int32_t res = 0;
  float aabb[6] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
  int contraction = kNone;
};

struct Stepping {
  float step_size = 0.f;   // > 0
  float cone_angle = 0.f;  // >= 0; 0: constant steps
  float max_step = 0.f;    // > 0
};

struct Rays {
  const float* origins = nullptr;     // (n, 3)
  const float* directions = nullptr;  // (n, 3)
  const float* t_min = nullptr;       // (n,)
  const float* t_max = nullptr;       // (n,)
  int64_t n = 0;
};

// Empty when the grid and stepping are supported, else what is wrong.
const char* check(const Grid& g, const Stepping& s);

// counts (n,) int64: each ray's number of samples.
cudaError_t count(const Grid& g, const Stepping& s, const Rays& rays, int64_t* counts,
                  cudaStream_t stream);

// offsets (n + 1,) int64 from `count`; writes ray_indices, t_starts, t_ends (offsets[n],).
cudaError_t fill(const Grid& g, const Stepping& s, const Rays& rays, const int64_t* offsets,
                 int64_t* ray_indices, float* t_starts, float* t_ends, cudaStream_t stream);

}  // namespace march_cuda
}  // namespace fields
