// What the CUDA bindings share: error checks that name the entry point, and a scope that makes
// a tensor's device current for a launch. CUDA runtime API and ATen's core only (no c10/cuda
// headers), so that a CPU-only torch can check the bindings compile (.ci/run).
#pragma once

#ifdef FIELDS_WITH_CUDA

#include <ATen/ATen.h>
#include <cuda_runtime_api.h>

namespace fields {

inline void cuda_check(cudaError_t e, const char* where, const char* what) {
  TORCH_CHECK(e == cudaSuccess, "fields._C ", where, ": ", what, ": ", cudaGetErrorString(e));
}

// Makes the tensor's device current, and restores the previous one.
class DeviceScope {
 public:
  explicit DeviceScope(const at::Tensor& t) {
    cuda_check(cudaGetDevice(&previous_), "cuda", "cudaGetDevice");
    if (previous_ != t.get_device())
      cuda_check(cudaSetDevice(t.get_device()), "cuda", "cudaSetDevice");
  }
  ~DeviceScope() { cudaSetDevice(previous_); }
  DeviceScope(const DeviceScope&) = delete;
  DeviceScope& operator=(const DeviceScope&) = delete;

 private:
  int previous_ = 0;
};

}  // namespace fields

#endif  // FIELDS_WITH_CUDA
