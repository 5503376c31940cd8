// The fused MLP's host-side API (see mlp_cuda.h): shapes, packing offsets, checks and the
// launches, which run the kernels of mlp_cuda_kernels.cuh instantiated per precision in
// mlp_cuda_f16.cu and mlp_cuda_bf16.cu.
#include "mlp_cuda_kernels.cuh"

namespace fields {
namespace mlp_cuda {
namespace {

cudaError_t run(Kind kind, const Dims& d, Precision p, const void* args, cudaStream_t s) {
  return p == kBFloat16 ? run_bf16(kind, d, args, s) : run_f16(kind, d, args, s);
}

}  // namespace

bool needs_preactivation(int act) { return needs_pre(act); }

size_t packed_offset(const Dims& d, int layer) {
  size_t off = 0;
  for (int l = 0; l < layer; ++l)
    off += static_cast<size_t>(d.out_pad(l)) * (d.in_pad(l) + kSkew);
  return off;
}

size_t packed_size(const Dims& d) { return packed_offset(d, d.n_layers()); }

size_t bias_offset(const Dims& d, int layer) {
  size_t off = 0;
  for (int l = 0; l < layer; ++l) off += d.out_pad(l);
  return off;
}

size_t bias_size(const Dims& d) { return bias_offset(d, d.n_layers()); }

size_t shared_bytes(const Dims& d) {
  return packed_size(d) * 2 + (d.bias ? bias_size(d) * 4 : 0);
}

const char* check_dims(const Dims& d, size_t shared_limit) {
  if (d.width != kernel_width(d.width))
    return "the kernel width must be 16, 32, 64 or 128 (pad the network to kernel_width())";
  if (d.n_in < 1 || d.n_out < 1) return "n_in and n_out must be at least 1";
  if (d.depth < 1 || d.depth > kMaxDepth) return "the depth must be in [1, 64]";
  if (d.act < 0 || d.act >= kNumActivations || d.out_act < 0 || d.out_act >= kNumActivations)
    return "unknown activation id";
  if (shared_bytes(d) > shared_limit)
    return "the weights do not fit in one block's shared memory (too deep or too wide)";
  return "";
}

bool has_second_derivative(int act) { return second_nonzero(act); }

cudaError_t forward(const Dims& d, Precision p, const ForwardArgs& args, cudaStream_t stream) {
  return run(Kind::kForward, d, p, &args, stream);
}

cudaError_t backward(const Dims& d, Precision p, const BackwardArgs& args, cudaStream_t stream) {
  return run(Kind::kBackward, d, p, &args, stream);
}

cudaError_t double_backward(const Dims& d, Precision p, const DoubleBackwardArgs& args,
                            cudaStream_t stream) {
  return run(Kind::kDoubleBackward, d, p, &args, stream);
}

}  // namespace mlp_cuda
}  // namespace fields
