// fields._C's `fields bench peak`: the FMA loop of kernels/peak_cpu on several threads at once.
#include <torch/extension.h>

#include <chrono>
#include <thread>
#include <vector>

#include "kernels/peak_cpu.h"

namespace fields {

std::vector<std::string> peak_cpu_isas() { return peak_cpu::available_isas(); }

// Runs the loop on `threads` threads started together; returns (seconds of wall time from
// the start of the first to the end of the last, floating-point operations done in all).
std::pair<double, double> peak_cpu_run(const std::string& isa, int64_t iterations,
                                       int64_t threads) {
  TORCH_CHECK(threads >= 1, "peak_cpu_run: threads must be >= 1, got ", threads);
  TORCH_CHECK(iterations >= 1, "peak_cpu_run: iterations must be >= 1, got ", iterations);
  peak_cpu::run(isa, 1);  // checks the instruction set before any thread starts
  std::vector<float> sinks(threads);
  py::gil_scoped_release release;
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<std::thread> pool;
  for (int64_t t = 0; t < threads; ++t)
    pool.emplace_back([&, t] { sinks[t] = peak_cpu::run(isa, iterations); });
  for (auto& th : pool) th.join();
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  volatile float keep = 0.f;  // the results are used
  for (float s : sinks) keep = keep + s;
  return {seconds, peak_cpu::flops(isa, iterations) * static_cast<double>(threads)};
}

}  // namespace fields
