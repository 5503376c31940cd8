// A CPU emulator of the slice of the CUDA execution model the fields tensor-core kernels use,
// so that their index arithmetic, fragment layouts, padding and grid-stride loops are tested
// on machines without a GPU. Not a simulator of timing or of memory ordering.
//
// A launch runs its blocks one after another; the threads of a block are fibers (ucontext) on
// one OS thread. A fiber runs until it reaches a warp-wide instruction (mma, ldmatrix), a block
// barrier or its end; a warp-wide instruction is carried out once all 32 lanes of the warp
// have reached it (it is an error if they reached different instructions or some lanes ended:
// divergence), with every lane's registers, by the PTX ISA's fragment layouts. ldmatrix checks
// that each row address is 16-byte aligned and inside the block's shared memory. Dynamic shared
// memory starts filled with NaN bit patterns, so reading what was never staged shows.
//
// Kernels compiled this way include the CUDA headers for their types only (vector types,
// cudaError_t); the CUDA qualifiers are defined away here.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>

#ifndef __CUDACC__
#include <math.h>              // the device math functions' host namesakes (expf, sinf, ...)
#include <cuda_runtime_api.h>  // cudaError_t, cudaStream_t, dim3, uint3, float2
#include <vector_functions.h>  // make_float2
#ifndef __global__
#define __global__
#endif
#ifndef __device__
#define __device__
#endif
#ifndef __host__
#define __host__
#endif
#ifndef __forceinline__
#define __forceinline__ inline
#endif
#ifndef __launch_bounds__
#define __launch_bounds__(...)
#endif
#endif

namespace fields {
namespace emu {

// The running fiber's coordinates (the scheduler sets them before resuming a fiber).
extern uint3 g_thread_idx, g_block_idx;
extern dim3 g_block_dim, g_grid_dim;

// Runs kernel() for every thread of every block of the grid (1-D blocks, 1-D or 2-D grids,
// blocks in order, x fastest; the block size must be a multiple of 32). Throws
// std::runtime_error on divergence, deadlock, a bad ldmatrix address, or shared memory beyond
// `shared_bytes`.
void launch(dim3 grid, unsigned block, size_t shared_bytes, const std::function<void()>& kernel);
inline void launch(unsigned grid, unsigned block, size_t shared_bytes,
                   const std::function<void()>& kernel) {
  launch(dim3(grid, 1, 1), block, shared_bytes, kernel);
}

// Warp-wide and block-wide operations, called by each thread (fiber).
void mma_m16n8k16(int precision, float (&c)[4], const uint32_t (&a)[4], uint32_t b0,
                  uint32_t b1);
void ldmatrix_x4(uint32_t (&r)[4], const uint16_t* row_address, bool trans);
unsigned char* dynamic_shared();
void sync_block();
// Fibers never run at the same time: an atomic add is a plain one.
inline float atomic_add(float* p, float v) {
  const float old = *p;
  *p = old + v;
  return old;
}

// 16-bit formats (precision 0: IEEE fp16, 1: bfloat16), round to nearest even.
uint16_t bits16(int precision, float f);
float value16(int precision, uint16_t bits);
uint32_t pack16(int precision, float lo, float hi);
void unpack16(int precision, uint32_t u, float* lo, float* hi);

// How many warp-wide instructions the emulator has carried out (for tests).
uint64_t warp_instructions();

}  // namespace emu
}  // namespace fields

#ifndef __CUDACC__
#define threadIdx (::fields::emu::g_thread_idx)
#define blockIdx (::fields::emu::g_block_idx)
#define blockDim (::fields::emu::g_block_dim)
#define gridDim (::fields::emu::g_grid_dim)
#endif
