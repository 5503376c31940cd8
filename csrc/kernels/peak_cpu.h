// The machine's fp32 FMA peak, measured: independent FMA chains per instruction set.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace fields {
namespace peak_cpu {

// The instruction sets this CPU runs, of "avx512", "avx2", "generic" (SSE2, no FMA).
std::vector<std::string> available_isas();

// Runs `iterations` rounds of kChains independent fused multiply-adds on the widest
// vectors of `isa` on the calling thread and returns a value that depends on every result
// (so that nothing is optimised away). Floating-point operations done: flops(isa, iterations).
float run(const std::string& isa, int64_t iterations);
double flops(const std::string& isa, int64_t iterations);

}  // namespace peak_cpu
}  // namespace fields
