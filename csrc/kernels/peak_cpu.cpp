// The fp32 FMA peak: kChains independent accumulator chains, each `acc = acc * m + b`, on
// the widest vectors of an instruction set. With more chains than (FMA latency x FMA ports)
// the loop is bound by the FMA ports' throughput alone, which is the peak of the core (no
// loads, no stores). The functions are compiled per instruction set with target attributes
// so that one binary carries all of them; the caller picks what the CPU has.
#include "peak_cpu.h"

#include <stdexcept>

namespace fields {
namespace peak_cpu {
namespace {

constexpr int kChains = 12;  // > 4-cycle latency x 2 ports (Zen 4, Intel since Skylake)

typedef float v4 __attribute__((vector_size(16)));
typedef float v8 __attribute__((vector_size(32)));
typedef float v16 __attribute__((vector_size(64)));

#define FIELDS_PEAK_BODY(V)                                                    \
  V acc[kChains];                                                              \
  for (int i = 0; i < kChains; ++i) acc[i] = (V){} + 1e-3f * (i + 1);          \
  const V m = (V){} + 0.999999f, b = (V){} + 1e-6f;                            \
  for (int64_t it = 0; it < iterations; ++it) {                                \
    _Pragma("GCC unroll 12") for (int i = 0; i < kChains; ++i) acc[i] =        \
        acc[i] * m + b;                                                        \
  }                                                                            \
  V t = acc[0];                                                                \
  for (int i = 1; i < kChains; ++i) t += acc[i];                               \
  float r = 0.f;                                                               \
  for (int i = 0; i < static_cast<int>(sizeof(V) / sizeof(float)); ++i) r += t[i]; \
  return r;

__attribute__((noinline)) float run_generic(int64_t iterations) { FIELDS_PEAK_BODY(v4) }
#if defined(__x86_64__) || defined(_M_X64)
__attribute__((target("avx2,fma"), noinline)) float run_avx2(int64_t iterations) {
  FIELDS_PEAK_BODY(v8)
}
__attribute__((target("avx512f,fma"), noinline)) float run_avx512(int64_t iterations) {
  FIELDS_PEAK_BODY(v16)
}
#endif
#undef FIELDS_PEAK_BODY

int lanes(const std::string& isa) {
  if (isa == "avx512") return 16;
  if (isa == "avx2") return 8;
  if (isa == "generic") return 4;
  throw std::invalid_argument("peak_cpu: unknown instruction set '" + isa +
                              "' (expected avx512, avx2 or generic)");
}

}  // namespace

std::vector<std::string> available_isas() {
  std::vector<std::string> out;
#if defined(__x86_64__) || defined(_M_X64)
  // AVX-512 as the fused MLP's AVX-512 path needs it (F, VL, DQ, and FMA), so that every
  // instruction set listed here is one the kernels can be forced to (FIELDS_CPU_ISA)
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
      __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("fma"))
    out.push_back("avx512");
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) out.push_back("avx2");
#endif
  out.push_back("generic");
  return out;
}

float run(const std::string& isa, int64_t iterations) {
  lanes(isa);  // validates the name
#if defined(__x86_64__) || defined(_M_X64)
  bool ok = false;
  for (const auto& a : available_isas()) ok = ok || a == isa;
  if (!ok) throw std::invalid_argument("peak_cpu: this CPU does not run " + isa);
  if (isa == "avx512") return run_avx512(iterations);
  if (isa == "avx2") return run_avx2(iterations);
#endif
  return run_generic(iterations);
}

double flops(const std::string& isa, int64_t iterations) {
  // generic (SSE2) has no FMA instruction: a multiply and an add, still 2 flops a lane
  return 2.0 * lanes(isa) * kChains * static_cast<double>(iterations);
}

}  // namespace peak_cpu
}  // namespace fields
