// Ray marching through an occupancy grid on NVIDIA GPUs (see march_cuda.h for the contract).
//
// The stepping is the dense one of the CPU kernel (every step of every ray is visited); each
// product and sum goes through warp::mul_rn / add_rn (no fused multiply-adds), divisions and
// square roots are IEEE round-to-nearest (nvcc's defaults without --use_fast_math), so the
// samples are bit for bit the CPU kernel's and the reference's.
#include <cmath>

#include "march_cuda.h"
#include "warp_ops.cuh"

namespace fields {
namespace march_cuda {
namespace {

constexpr int kThreads = 256;

using warp::add_rn;
using warp::mul_rn;

// Constants derived from the aabb, computed as the reference computes them.
struct Frame {
  float lo[3], hi[3], extent[3], centre[3], half[3];
  float res_f, top_f;
  int32_t res;
  int contraction;
  const uint8_t* occupancy;
};

__host__ __device__ inline Frame make_frame(const Grid& g) {
  Frame f;
  for (int k = 0; k < 3; ++k) {
    f.lo[k] = g.aabb[k];
    f.hi[k] = g.aabb[3 + k];
    f.extent[k] = f.hi[k] - f.lo[k];
    f.centre[k] = (f.lo[k] + f.hi[k]) * 0.5f;
    f.half[k] = f.extent[k] * 0.5f;
  }
  f.res = g.res;
  f.res_f = static_cast<float>(g.res);
  f.top_f = static_cast<float>(g.res - 1);
  f.contraction = g.contraction;
  f.occupancy = g.occupancy;
  return f;
}

// floor(gc * res) clamped to [0, res - 1]; NaN -> 0.
__device__ __forceinline__ int32_t cell_of(const Frame& f, float gc) {
  float v = mul_rn(gc, f.res_f);
  v = v >= 0.f ? v : 0.f;
  v = v <= f.top_f ? v : f.top_f;
  return static_cast<int32_t>(v);  // truncation is floor for v >= 0
}

__device__ __forceinline__ bool occupied_at(const Frame& f, const float p[3]) {
  float gc[3];
  if (f.contraction == kNone) {
    for (int k = 0; k < 3; ++k) {
      if (!(p[k] >= f.lo[k] && p[k] <= f.hi[k])) return false;  // false for NaN too
      gc[k] = (p[k] - f.lo[k]) / f.extent[k];
    }
  } else {
    float y[3];
    for (int k = 0; k < 3; ++k) y[k] = (p[k] - f.centre[k]) / f.half[k];
    float n2 = add_rn(mul_rn(y[0], y[0]), mul_rn(y[1], y[1]));
    n2 = add_rn(n2, mul_rn(y[2], y[2]));
    if (n2 <= 1.f) {
      for (int k = 0; k < 3; ++k) gc[k] = mul_rn(add_rn(y[k], 2.f), 0.25f);
    } else {
      const float n = sqrtf(n2);
      const float s = (2.f - 1.f / n) / n;
      for (int k = 0; k < 3; ++k) gc[k] = mul_rn(add_rn(mul_rn(y[k], s), 2.f), 0.25f);
    }
  }
  const int64_t ix = cell_of(f, gc[0]);
  const int64_t iy = cell_of(f, gc[1]);
  const int64_t iz = cell_of(f, gc[2]);
  return f.occupancy[(ix * f.res + iy) * f.res + iz] != 0;
}

// Marches ray r; calls emit(t_start, t_end) for every kept sample, in order; returns the count.
template <typename Emit>
__device__ __forceinline__ int64_t march_ray(const Frame& f, const Stepping& s, const Rays& rays,
                                             int64_t r, Emit&& emit) {
  const float* o = rays.origins + r * 3;
  const float* d = rays.directions + r * 3;
  const float t_max = rays.t_max[r];
  float t = rays.t_min[r];
  int64_t count = 0;
  if (!isfinite(t) || !isfinite(t_max)) return 0;
  while (t < t_max) {
    const float grown = mul_rn(t, s.cone_angle);
    const float lower = grown > s.step_size ? grown : s.step_size;
    const float dt = lower < s.max_step ? lower : s.max_step;
    const float t_next = add_rn(t, dt);
    if (!(t_next > t)) break;  // the step no longer moves t
    const float t_end = t_next < t_max ? t_next : t_max;
    const float mid = mul_rn(add_rn(t, t_end), 0.5f);
    float p[3];
    for (int k = 0; k < 3; ++k) p[k] = add_rn(o[k], mul_rn(d[k], mid));
    if (occupied_at(f, p)) {
      emit(count, t, t_end);
      ++count;
    }
    t = t_next;
  }
  return count;
}

__global__ void __launch_bounds__(kThreads) count_kernel(const Frame f, const Stepping s,
                                                         const Rays rays, int64_t* counts) {
  const int64_t r = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (r >= rays.n) return;
  counts[r] = march_ray(f, s, rays, r, [](int64_t, float, float) {});
}

__global__ void __launch_bounds__(kThreads) fill_kernel(const Frame f, const Stepping s,
                                                        const Rays rays, const int64_t* offsets,
                                                        int64_t* ray_indices, float* t_starts,
                                                        float* t_ends) {
  const int64_t r = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (r >= rays.n) return;
  const int64_t base = offsets[r];
  const int64_t room = offsets[r + 1] - base;
  march_ray(f, s, rays, r, [&](int64_t i, float t0, float t1) {
    if (i < room) {  // never past the ray's slot, whatever the counts said
      ray_indices[base + i] = r;
      t_starts[base + i] = t0;
      t_ends[base + i] = t1;
    }
  });
}

}  // namespace

const char* check(const Grid& g, const Stepping& s) {
  if (g.res < 1 || g.occupancy == nullptr) return "the occupancy grid is empty";
  if (g.contraction != kNone && g.contraction != kMipNerf360) return "bad contraction";
  for (int k = 0; k < 3; ++k) {
    if (!(g.aabb[k] < g.aabb[3 + k]) || !std::isfinite(g.aabb[k]) ||
        !std::isfinite(g.aabb[3 + k]))
      return "the aabb must be finite with min < max on every axis";
  }
  if (!(s.step_size > 0.f) || !std::isfinite(s.step_size))
    return "step_size must be positive and finite";
  if (!(s.cone_angle >= 0.f) || !std::isfinite(s.cone_angle))
    return "cone_angle must be >= 0 and finite";
  if (!(s.max_step > 0.f)) return "max_step must be positive";
  return "";
}

cudaError_t count(const Grid& g, const Stepping& s, const Rays& rays, int64_t* counts,
                  cudaStream_t stream) {
  if (check(g, s)[0] != '\0') return cudaErrorInvalidValue;
  if (rays.n == 0) return cudaSuccess;
  const Frame f = make_frame(g);
  const unsigned blocks = static_cast<unsigned>((rays.n + kThreads - 1) / kThreads);
#ifdef FIELDS_WARP_EMULATOR
  (void)stream;
  emu::launch(blocks, kThreads, 0, [&] { count_kernel(f, s, rays, counts); });
  return cudaSuccess;
#else
  count_kernel<<<blocks, kThreads, 0, stream>>>(f, s, rays, counts);
  return cudaGetLastError();
#endif
}

cudaError_t fill(const Grid& g, const Stepping& s, const Rays& rays, const int64_t* offsets,
                 int64_t* ray_indices, float* t_starts, float* t_ends, cudaStream_t stream) {
  if (check(g, s)[0] != '\0') return cudaErrorInvalidValue;
  if (rays.n == 0) return cudaSuccess;
  const Frame f = make_frame(g);
  const unsigned blocks = static_cast<unsigned>((rays.n + kThreads - 1) / kThreads);
#ifdef FIELDS_WARP_EMULATOR
  (void)stream;
  emu::launch(blocks, kThreads, 0,
              [&] { fill_kernel(f, s, rays, offsets, ray_indices, t_starts, t_ends); });
  return cudaSuccess;
#else
  fill_kernel<<<blocks, kThreads, 0, stream>>>(f, s, rays, offsets, ray_indices, t_starts,
                                               t_ends);
  return cudaGetLastError();
#endif
}

}  // namespace march_cuda
}  // namespace fields
