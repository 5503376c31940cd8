// The CPU emulator of warp_emulator.h: fibers (ucontext) for threads, warp-wide instructions
// carried out by the scheduler once all 32 lanes have reached them.
#include "warp_emulator.h"

#include <ucontext.h>

#include <cmath>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace fields {
namespace emu {

uint3 g_thread_idx{0, 0, 0}, g_block_idx{0, 0, 0};
dim3 g_block_dim(1, 1, 1), g_grid_dim(1, 1, 1);

namespace {

constexpr size_t kStackBytes = 256 * 1024;
constexpr size_t kGuardBytes = 256;
constexpr unsigned char kGuard = 0xA5;

enum class State { kReady, kWarpOp, kBarrier, kDone };
enum class Op { kNone, kMma, kLdmatrix };

struct Fiber {
  ucontext_t ctx{};
  std::unique_ptr<char[]> stack;
  State state = State::kReady;
  Op op = Op::kNone;
  int precision = 0;
  bool trans = false;
  float* c = nullptr;
  const uint32_t* a = nullptr;
  uint32_t b0 = 0, b1 = 0;
  uint32_t* r = nullptr;
  const uint16_t* p = nullptr;
};

ucontext_t g_scheduler;
Fiber* g_current = nullptr;
const std::function<void()>* g_kernel = nullptr;
std::vector<unsigned char> g_shared;  // the block's dynamic shared memory, then a guard
size_t g_shared_bytes = 0;
uint64_t g_warp_instructions = 0;
bool g_running = false;

void trampoline() {
  (*g_kernel)();
  g_current->state = State::kDone;  // uc_link returns to the scheduler
}

void yield_to_scheduler() {
  if (g_current == nullptr) throw std::logic_error("emu: a warp operation outside a launch");
  swapcontext(&g_current->ctx, &g_scheduler);
}

float half_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000) << 16;
  const uint32_t exp = (h >> 10) & 0x1f;
  uint32_t mant = h & 0x3ff;
  uint32_t bits;
  if (exp == 0x1f) {
    bits = sign | 0x7f800000u | (mant << 13);
  } else if (exp == 0) {
    if (mant == 0) {
      bits = sign;
    } else {  // subnormal: normalise
      int e = -1;
      do {
        mant <<= 1;
        ++e;
      } while ((mant & 0x400) == 0);
      bits = sign | static_cast<uint32_t>(127 - 15 - e) << 23 | (mant & 0x3ff) << 13;
    }
  } else {
    bits = sign | (exp + 127 - 15) << 23 | mant << 13;
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

uint16_t float_to_half(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  const uint32_t sign = (x >> 16) & 0x8000;
  const uint32_t exp = (x >> 23) & 0xff;
  uint32_t mant = x & 0x7fffff;
  if (exp == 0xff) return static_cast<uint16_t>(sign | 0x7c00 | (mant ? 0x200 : 0));
  const int e = static_cast<int>(exp) - 127 + 15;
  if (e >= 31) return static_cast<uint16_t>(sign | 0x7c00);
  if (e <= 0) {  // subnormal half (or zero)
    if (e < -10) return static_cast<uint16_t>(sign);
    mant |= 0x800000;
    const int shift = 14 - e;
    uint32_t m = mant >> shift;
    const uint32_t rem = mant & ((1u << shift) - 1), half = 1u << (shift - 1);
    if (rem > half || (rem == half && (m & 1))) ++m;
    return static_cast<uint16_t>(sign | m);
  }
  uint32_t m = mant >> 13;
  const uint32_t rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem == 0x1000 && (m & 1))) ++m;
  uint32_t h = (static_cast<uint32_t>(e) << 10) + m;  // a carry into the exponent is right
  if (h >= 0x7c00) h = 0x7c00;
  return static_cast<uint16_t>(sign | h);
}

uint16_t float_to_bf16(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  if ((x & 0x7fffffff) > 0x7f800000) return static_cast<uint16_t>((x >> 16) | 0x40);
  x += 0x7fff + ((x >> 16) & 1);
  return static_cast<uint16_t>(x >> 16);
}

float bf16_to_float(uint16_t b) {
  const uint32_t x = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &x, 4);
  return f;
}

std::string where(unsigned warp) {
  return "block " + std::to_string(g_block_idx.x) + ", warp " + std::to_string(warp);
}

void run_mma(Fiber* lanes) {
  const int p = lanes[0].precision;
  float A[16][16], B[16][8], C[16][8];
  for (int t = 0; t < 32; ++t) {
    const Fiber& f = lanes[t];
    const int g = t >> 2, q = t & 3;
    for (int i = 0; i < 4; ++i) {
      float lo, hi;
      unpack16(p, f.a[i], &lo, &hi);
      const int row = g + (i & 1) * 8, col = 2 * q + (i >> 1) * 8;
      A[row][col] = lo;
      A[row][col + 1] = hi;
    }
    float lo, hi;
    unpack16(p, f.b0, &lo, &hi);
    B[2 * q][g] = lo;
    B[2 * q + 1][g] = hi;
    unpack16(p, f.b1, &lo, &hi);
    B[2 * q + 8][g] = lo;
    B[2 * q + 9][g] = hi;
    for (int i = 0; i < 4; ++i) C[g + (i >> 1) * 8][2 * q + (i & 1)] = f.c[i];
  }
  for (int t = 0; t < 32; ++t) {
    const int g = t >> 2, q = t & 3;
    for (int i = 0; i < 4; ++i) {
      const int row = g + (i >> 1) * 8, col = 2 * q + (i & 1);
      float acc = C[row][col];
      for (int k = 0; k < 16; ++k) acc += A[row][k] * B[k][col];
      lanes[t].c[i] = acc;
    }
  }
}

void run_ldmatrix(Fiber* lanes, unsigned warp) {
  uint16_t M[4][8][8];
  const unsigned char* lo = g_shared.data();
  for (int t = 0; t < 32; ++t) {
    const auto* addr = reinterpret_cast<const unsigned char*>(lanes[t].p);
    const uintptr_t off = reinterpret_cast<uintptr_t>(addr) - reinterpret_cast<uintptr_t>(lo);
    if (addr < lo || off + 16 > g_shared_bytes)
      throw std::runtime_error("emu: ldmatrix row address outside shared memory (" +
                               where(warp) + ", lane " + std::to_string(t) + ", byte offset " +
                               std::to_string(static_cast<long long>(off)) + " of " +
                               std::to_string(g_shared_bytes) + ")");
    if (off % 16 != 0)
      throw std::runtime_error("emu: ldmatrix row address not 16-byte aligned (" + where(warp) +
                               ", lane " + std::to_string(t) + ", byte offset " +
                               std::to_string(off) + ")");
    std::memcpy(M[t >> 3][t & 7], addr, 16);
  }
  const bool trans = lanes[0].trans;
  for (int t = 0; t < 32; ++t) {
    const int row = t >> 2, col = 2 * (t & 3);
    for (int j = 0; j < 4; ++j) {
      const uint16_t e0 = trans ? M[j][col][row] : M[j][row][col];
      const uint16_t e1 = trans ? M[j][col + 1][row] : M[j][row][col + 1];
      lanes[t].r[j] = static_cast<uint32_t>(e0) | static_cast<uint32_t>(e1) << 16;
    }
  }
}

const char* op_name(Op op) { return op == Op::kMma ? "mma" : "ldmatrix"; }

}  // namespace

uint16_t bits16(int precision, float f) {
  return precision == 0 ? float_to_half(f) : float_to_bf16(f);
}

float value16(int precision, uint16_t bits) {
  return precision == 0 ? half_to_float(bits) : bf16_to_float(bits);
}

uint32_t pack16(int precision, float lo, float hi) {
  return static_cast<uint32_t>(bits16(precision, lo)) |
         static_cast<uint32_t>(bits16(precision, hi)) << 16;
}

void unpack16(int precision, uint32_t u, float* lo, float* hi) {
  *lo = value16(precision, static_cast<uint16_t>(u & 0xffff));
  *hi = value16(precision, static_cast<uint16_t>(u >> 16));
}

uint64_t warp_instructions() { return g_warp_instructions; }

void mma_m16n8k16(int precision, float (&c)[4], const uint32_t (&a)[4], uint32_t b0,
                  uint32_t b1) {
  Fiber* f = g_current;
  f->op = Op::kMma;
  f->precision = precision;
  f->c = c;
  f->a = a;
  f->b0 = b0;
  f->b1 = b1;
  f->state = State::kWarpOp;
  yield_to_scheduler();
}

void ldmatrix_x4(uint32_t (&r)[4], const uint16_t* row_address, bool trans) {
  Fiber* f = g_current;
  f->op = Op::kLdmatrix;
  f->trans = trans;
  f->r = r;
  f->p = row_address;
  f->state = State::kWarpOp;
  yield_to_scheduler();
}

unsigned char* dynamic_shared() { return g_shared.data(); }

void sync_block() {
  g_current->state = State::kBarrier;
  yield_to_scheduler();
}

void launch(dim3 grid, unsigned block, size_t shared_bytes, const std::function<void()>& kernel) {
  if (g_running) throw std::logic_error("emu: launches do not nest");
  if (block == 0 || block % 32 != 0)
    throw std::invalid_argument("emu: the block size must be a positive multiple of 32");
  g_running = true;
  struct Reset {
    ~Reset() {
      g_running = false;
      g_current = nullptr;
    }
  } reset;
  std::vector<Fiber> fibers(block);
  for (auto& f : fibers) f.stack.reset(new char[kStackBytes]);
  g_kernel = &kernel;
  g_block_dim = dim3(block, 1, 1);
  g_grid_dim = grid;
  g_shared_bytes = shared_bytes;
  const unsigned warps = block / 32;

  const unsigned n_blocks = grid.x * grid.y * grid.z;
  for (unsigned b = 0; b < n_blocks; ++b) {
    g_block_idx = uint3{b % grid.x, (b / grid.x) % grid.y, b / (grid.x * grid.y)};
    // NaN bit patterns (0xFFFF) where nothing was staged; a guard after the end.
    g_shared.assign(shared_bytes, 0xFF);
    g_shared.resize(shared_bytes + kGuardBytes, kGuard);
    for (auto& f : fibers) {
      getcontext(&f.ctx);
      f.ctx.uc_stack.ss_sp = f.stack.get();
      f.ctx.uc_stack.ss_size = kStackBytes;
      f.ctx.uc_link = &g_scheduler;
      makecontext(&f.ctx, trampoline, 0);
      f.state = State::kReady;
    }
    for (;;) {
      bool ran = false;
      for (unsigned i = 0; i < block; ++i) {
        Fiber& f = fibers[i];
        if (f.state != State::kReady) continue;
        g_current = &f;
        g_thread_idx = uint3{i, 0, 0};
        swapcontext(&g_scheduler, &f.ctx);
        ran = true;
      }
      g_current = nullptr;
      bool acted = false;
      for (unsigned w = 0; w < warps; ++w) {
        Fiber* lanes = &fibers[w * 32];
        int at_op = 0;
        for (int t = 0; t < 32; ++t) at_op += lanes[t].state == State::kWarpOp;
        if (at_op == 0) continue;
        if (at_op != 32)
          throw std::runtime_error("emu: divergent warp (" + where(w) + "): " +
                                   std::to_string(at_op) +
                                   " lanes at a warp-wide instruction, the others at a "
                                   "barrier or ended");
        for (int t = 1; t < 32; ++t)
          if (lanes[t].op != lanes[0].op || lanes[t].precision != lanes[0].precision ||
              lanes[t].trans != lanes[0].trans)
            throw std::runtime_error(std::string("emu: divergent warp (") + where(w) +
                                     "): lane 0 at " + op_name(lanes[0].op) + ", lane " +
                                     std::to_string(t) + " at " + op_name(lanes[t].op));
        if (lanes[0].op == Op::kMma)
          run_mma(lanes);
        else
          run_ldmatrix(lanes, w);
        ++g_warp_instructions;
        for (int t = 0; t < 32; ++t) lanes[t].state = State::kReady;
        acted = true;
      }
      unsigned done = 0, waiting = 0;
      for (const auto& f : fibers) {
        done += f.state == State::kDone;
        waiting += f.state == State::kBarrier;
      }
      if (done == block) break;
      if (!acted && waiting > 0 && waiting + done == block) {
        for (auto& f : fibers)
          if (f.state == State::kBarrier) f.state = State::kReady;
        acted = true;
      }
      if (!ran && !acted)
        throw std::runtime_error("emu: deadlock in block " + std::to_string(b));
    }
    for (size_t i = shared_bytes; i < g_shared.size(); ++i)
      if (g_shared[i] != kGuard)
        throw std::runtime_error("emu: block " + std::to_string(b) +
                                 " wrote past its dynamic shared memory (" +
                                 std::to_string(shared_bytes) + " bytes)");
  }
}

}  // namespace emu
}  // namespace fields
