// The warp-level instructions the tensor-core kernels use, in one place: mma.sync m16n8k16
// (fp16 / bf16 in, fp32 accumulate), ldmatrix (x4, plain and transposed), 16-bit packing, the
// block's dynamic shared memory and its barrier.
//
// Compiled by nvcc these are the PTX instructions themselves. Compiled by a host compiler with
// FIELDS_WARP_EMULATOR defined, they call the CPU emulator in csrc/emulator/, which runs every
// thread of a block as a fiber and carries out each warp-wide instruction on all 32 lanes'
// registers with the fragment layouts of the PTX ISA: the kernels' index arithmetic can then
// be tested on a machine without a GPU (tests/test_mlp_cuda.py, tests/test_grid_cuda.py,
// tests/test_march_cuda.py, through csrc/emulator/).
//
// Fragment layouts of mma.sync.m16n8k16 (g = lane / 4, q = lane % 4):
//   A (16 x 16, row-major), 4 registers of two 16-bit values (low half = lower column):
//     a0 = (row g, cols 2q, 2q+1), a1 = (row g+8, same), a2 = (row g, cols 2q+8, 2q+9),
//     a3 = (row g+8, cols 2q+8, 2q+9)
//   B (16 x 8, "col"): b0 = (rows 2q, 2q+1; col g), b1 = (rows 2q+8, 2q+9; col g)
//   C (16 x 8, fp32): c0, c1 = (row g, cols 2q, 2q+1), c2, c3 = (row g+8, same)
// ldmatrix.x4: lanes 8j..8j+7 give the row addresses (16 bytes each, 16-byte aligned) of 8x8
// matrix j; register j of lane t then holds row t/4, elements 2(t%4), 2(t%4)+1 of matrix j
// (.trans: column t/4, rows 2(t%4), 2(t%4)+1).
#pragma once

#include <cstdint>
#include <cstring>

#ifdef FIELDS_WARP_EMULATOR
#include "../emulator/warp_emulator.h"
#else
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#endif

namespace fields {
namespace warp {

enum Precision16 : int { kF16 = 0, kBF16 = 1 };

#ifdef FIELDS_WARP_EMULATOR

template <int P>
inline uint32_t pack(float lo, float hi) {
  return emu::pack16(P, lo, hi);
}
template <int P>
inline float2 unpack(uint32_t u) {
  float2 r;
  emu::unpack16(P, u, &r.x, &r.y);
  return r;
}
template <int P>
inline uint16_t bits(float f) {
  return emu::bits16(P, f);
}
template <int P>
inline float value(uint16_t b) {
  return emu::value16(P, b);
}
template <int P>
inline void mma(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  emu::mma_m16n8k16(P, c, a, b0, b1);
}
inline void ldmatrix_x4(uint32_t (&r)[4], const uint16_t* p) { emu::ldmatrix_x4(r, p, false); }
inline void ldmatrix_x4_trans(uint32_t (&r)[4], const uint16_t* p) {
  emu::ldmatrix_x4(r, p, true);
}
inline unsigned char* dynamic_shared() { return emu::dynamic_shared(); }
inline void sync_block() { emu::sync_block(); }
inline float atomic_add(float* p, float v) { return emu::atomic_add(p, v); }
// Round-to-nearest products and sums that the compiler may not fuse into an FMA.
inline float mul_rn(float a, float b) {
  volatile float r = a * b;
  return r;
}
inline float add_rn(float a, float b) {
  volatile float r = a + b;
  return r;
}

#else  // nvcc

template <int P>
__device__ __forceinline__ uint32_t pack(float lo, float hi) {
  uint32_t u;
  if constexpr (P == kF16) {
    const __half2 h = __floats2half2_rn(lo, hi);
    memcpy(&u, &h, 4);
  } else {
    const __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
    memcpy(&u, &h, 4);
  }
  return u;
}

template <int P>
__device__ __forceinline__ float2 unpack(uint32_t u) {
  if constexpr (P == kF16) {
    __half2 h;
    memcpy(&h, &u, 4);
    return __half22float2(h);
  } else {
    __nv_bfloat162 h;
    memcpy(&h, &u, 4);
    return __bfloat1622float2(h);
  }
}

template <int P>
__device__ __forceinline__ uint16_t bits(float f) {
  if constexpr (P == kF16)
    return __half_as_ushort(__float2half_rn(f));
  else
    return __bfloat16_as_ushort(__float2bfloat16_rn(f));
}

template <int P>
__device__ __forceinline__ float value(uint16_t b) {
  if constexpr (P == kF16)
    return __half2float(__ushort_as_half(b));
  else
    return __bfloat162float(__ushort_as_bfloat16(b));
}

// mma.sync.m16n8k16 with f16/bf16 needs sm_80 and ldmatrix sm_75: compiled for an older
// target these trap (setup.py builds for 8.0 and newer only; FusedMLP checks the GPU first).
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
#define FIELDS_NO_TENSOR_CORES 1
#endif

template <int P>
__device__ __forceinline__ void mma(float (&c)[4], const uint32_t (&a)[4], uint32_t b0,
                                    uint32_t b1) {
#ifdef FIELDS_NO_TENSOR_CORES
  __trap();
#else
  if constexpr (P == kF16) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 "
        "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  } else {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
        "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
#endif
}

__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const uint16_t* p) {
#ifdef FIELDS_NO_TENSOR_CORES
  __trap();
#else
  const unsigned addr = static_cast<unsigned>(__cvta_generic_to_shared(p));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
#endif
}

__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], const uint16_t* p) {
#ifdef FIELDS_NO_TENSOR_CORES
  __trap();
#else
  const unsigned addr = static_cast<unsigned>(__cvta_generic_to_shared(p));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
#endif
}

__device__ __forceinline__ unsigned char* dynamic_shared() {
  extern __shared__ __align__(16) unsigned char fields_dynamic_smem[];
  return fields_dynamic_smem;
}

__device__ __forceinline__ void sync_block() { __syncthreads(); }

__device__ __forceinline__ float atomic_add(float* p, float v) { return atomicAdd(p, v); }

// Round-to-nearest products and sums that the compiler may not fuse into an FMA.
__device__ __forceinline__ float mul_rn(float a, float b) { return __fmul_rn(a, b); }
__device__ __forceinline__ float add_rn(float a, float b) { return __fadd_rn(a, b); }

#endif

}  // namespace warp
}  // namespace fields
