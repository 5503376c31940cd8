// The fused-MLP kernels of mlp_cuda_kernels.cuh for fp16 inputs and weights: a translation unit
// of its own, so that the two precisions compile in parallel.
#include "mlp_cuda_kernels.cuh"

namespace fields {
namespace mlp_cuda {

cudaError_t run_f16(Kind kind, const Dims& d, const void* args, cudaStream_t stream) {
  return dispatch<warp::kF16>(kind, d, args, stream);
}

}  // namespace mlp_cuda
}  // namespace fields
