// torch binding of the batched CPU MLP: many networks of one shape (KiloNeRF's thousands of
// tiny MLPs), rows grouped by network. Each network's rows run through the fused MLP kernels
// (csrc/kernels/mlp_cpu*) with that network's weights, packed per network on the thread that
// runs it; the networks are spread over torch's threads.
#include "batched_mlp.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#if defined(__x86_64__) || defined(_M_X64)
#include <xmmintrin.h>
#endif

#include "../kernels/march_cpu.h"
#include "../kernels/mlp_cpu.h"
#include "march.h"

namespace fields {
namespace {

using mlp_cpu::Dims;
constexpr const char* kWho = "fields._C batched_mlp_cpu: ";

void check_f32(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.device().is_cpu(), kWho, name, " must be on the CPU, got ", t.device());
  TORCH_CHECK(t.scalar_type() == at::kFloat, kWho, name, " must be float32, got ",
              t.scalar_type());
}

// The networks' shape from x and the weights (checked), and the number of networks.
Dims batched_dims(const at::Tensor& x, const std::vector<at::Tensor>& weights,
                  const std::vector<at::Tensor>& biases, bool has_bias, int64_t width,
                  int64_t act, int64_t out_act, double omega, int64_t* nets) {
  TORCH_CHECK(x.dim() == 2, kWho, "x must have shape (rows, n_in), got ", x.sizes());
  check_f32(x, "x");
  TORCH_CHECK(!weights.empty(), kWho, "no weights given");
  TORCH_CHECK(weights.back().dim() == 3, kWho, "weights must have shape (nets, out, in), got ",
              weights.back().sizes());
  Dims d;
  d.n_in = static_cast<int>(x.size(1));
  d.n_out = static_cast<int>(weights.back().size(1));
  d.width = static_cast<int>(width);
  d.depth = static_cast<int>(weights.size()) - 1;
  d.act = static_cast<int>(act);
  d.out_act = static_cast<int>(out_act);
  d.omega = static_cast<float>(omega);
  d.bias = has_bias;
  const std::string err = mlp_cpu::check_dims(d);
  TORCH_CHECK(err.empty(), kWho, err);
  *nets = weights[0].size(0);
  for (int l = 0; l < d.n_layers(); ++l) {
    check_f32(weights[l], "weight");
    TORCH_CHECK(weights[l].dim() == 3 && weights[l].size(0) == *nets &&
                    weights[l].size(1) == d.out_dim(l) && weights[l].size(2) == d.in_dim(l),
                kWho, "weight ", l, " must have shape (", *nets, ", ", d.out_dim(l), ", ",
                d.in_dim(l), "), got ", weights[l].sizes());
    if (!biases.empty()) {
      check_f32(biases[l], "bias");
      TORCH_CHECK(biases[l].dim() == 2 && biases[l].size(0) == *nets &&
                      biases[l].size(1) == d.out_dim(l),
                  kWho, "bias ", l, " must have shape (", *nets, ", ", d.out_dim(l), "), got ",
                  biases[l].sizes());
    }
  }
  TORCH_CHECK(biases.empty() || static_cast<int>(biases.size()) == d.n_layers(), kWho,
              "expected 0 or ", d.n_layers(), " biases, got ", biases.size());
  return d;
}

// Row offsets (checked: nets + 1 of them, from 0 to rows, non-decreasing) and the offsets of
// each network's rows in the saved buffers, where each network's rows are rounded up to whole
// register blocks (what the kernels compute for a short tile).
void read_offsets(const at::Tensor& offsets, int64_t nets, int64_t rows,
                  std::vector<int64_t>* off, std::vector<int64_t>* padded) {
  TORCH_CHECK(offsets.device().is_cpu() && offsets.scalar_type() == at::kLong &&
                  offsets.dim() == 1 && offsets.size(0) == nets + 1,
              kWho, "offsets must be a CPU int64 tensor of nets + 1 = ", nets + 1,
              " entries, got ", offsets.scalar_type(), " ", offsets.sizes());
  const at::Tensor o = offsets.contiguous();
  const int64_t* p = o.data_ptr<int64_t>();
  off->assign(p, p + nets + 1);
  TORCH_CHECK((*off)[0] == 0 && (*off)[nets] == rows, kWho, "offsets must run from 0 to the ",
              rows, " rows, got ", (*off)[0], " to ", (*off)[nets]);
  padded->assign(nets + 1, 0);
  for (int64_t c = 0; c < nets; ++c) {
    const int64_t n = (*off)[c + 1] - (*off)[c];
    TORCH_CHECK(n >= 0, kWho, "offsets must not decrease (network ", c, ")");
    const int64_t full = n / mlp_cpu::kTileRows * mlp_cpu::kTileRows;
    (*padded)[c + 1] = (*padded)[c] + full +
                       mlp_cpu::round_up(static_cast<int>(n - full), mlp_cpu::kRowBlock);
  }
}

// Pointers to network c's slice of each (nets, ...) tensor.
std::vector<const float*> slice_pointers(const std::vector<at::Tensor>& ts, int64_t c) {
  std::vector<const float*> p;
  for (const auto& t : ts) p.push_back(t.data_ptr<float>() + c * t.stride(0));
  return p;
}

// The saved activations of one network: the buffers' rows from `row`.
struct SavedSlice {
  std::vector<float*> a, z;
  mlp_cpu::Saved view;
};

void slice_saved(const Dims& d, const std::vector<at::Tensor>& a, const std::vector<at::Tensor>& z,
                 const at::Tensor& out, int64_t row, SavedSlice* s) {
  s->a.clear();
  s->z.clear();
  for (const auto& t : a) s->a.push_back(t.data_ptr<float>() + row * d.width);
  for (const auto& t : z) s->z.push_back(t.data_ptr<float>() + row * d.width);
  s->view.a = s->a.data();
  s->view.z = s->z.empty() ? nullptr : s->z.data();
  s->view.out = out.defined() ? out.data_ptr<float>() + row * d.out_pad(d.depth) : nullptr;
}

// Flush-to-zero and denormals-are-zero while in scope (x86; nothing elsewhere). The networks
// of cells that training rarely reaches hold weights decayed to 1e-30 and less, whose
// products are denormal floats, and each denormal operand or result of a multiply-add costs a
// microcode assist of about a hundred cycles: on a distilled KiloNeRF field this was a
// quarter of the whole forward. What changes is values below 1.2e-38, read or written as 0.
struct FlushDenormals {
#if defined(__x86_64__) || defined(_M_X64)
  unsigned saved;
  FlushDenormals() : saved(_mm_getcsr()) { _mm_setcsr(saved | 0x8040u); }
  ~FlushDenormals() { _mm_setcsr(saved); }
#endif
};

// Runs fn(c, thread) for the networks with rows, spread over torch's threads in contiguous
// runs of networks holding about the same number of rows each (not the same number of
// networks: a few cells hold most of a scene's rows).
template <typename Fn>
void for_each_net(const std::vector<int64_t>& off, Fn fn) {
  const int64_t nets = static_cast<int64_t>(off.size()) - 1;
  const int64_t rows = off[nets];
  const int64_t parts = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), nets));
  std::vector<int64_t> first(parts + 1, nets);
  first[0] = 0;
  for (int64_t p = 1; p < parts; ++p) {
    const int64_t target = rows * p / parts;
    const int64_t c = std::lower_bound(off.begin(), off.end(), target) - off.begin();
    first[p] = std::max(first[p - 1], std::min(c, nets));
  }
  at::parallel_for(0, parts, 1, [&](int64_t b, int64_t e) {
    const FlushDenormals ftz;
    const int thread = at::get_thread_num();
    for (int64_t p = b; p < e; ++p)
      for (int64_t c = first[p]; c < first[p + 1]; ++c)
        if (off[c + 1] > off[c]) fn(c, thread);
  });
}

}  // namespace

std::vector<at::Tensor> batched_mlp_cpu_forward(const at::Tensor& x_in, const at::Tensor& offsets,
                                                const std::vector<at::Tensor>& weights_in,
                                                const std::vector<at::Tensor>& biases_in,
                                                int64_t width, int64_t activation,
                                                int64_t output_activation, double omega,
                                                bool save) {
  int64_t nets = 0;
  const Dims d = batched_dims(x_in, weights_in, biases_in, !biases_in.empty(), width, activation,
                              output_activation, omega, &nets);
  const at::Tensor x = x_in.contiguous();
  std::vector<at::Tensor> weights, biases;
  for (const auto& t : weights_in) weights.push_back(t.contiguous());
  for (const auto& t : biases_in) biases.push_back(t.contiguous());
  const int64_t rows = x.size(0);
  std::vector<int64_t> off, poff;
  read_offsets(offsets, nets, rows, &off, &poff);

  auto opts = x.options();
  at::Tensor y = at::empty({rows, d.n_out}, opts);
  const int64_t rows_saved = poff[nets];
  std::vector<at::Tensor> a, z;
  at::Tensor out;
  if (save) {
    for (int l = 0; l < d.depth; ++l) {
      a.push_back(at::empty({rows_saved, d.width}, opts));
      if (mlp_cpu::needs_preactivation(d.act)) z.push_back(at::empty({rows_saved, d.width}, opts));
    }
    if (d.out_act != mlp_cpu::kNone) out = at::empty({rows_saved, d.out_pad(d.depth)}, opts);
  }
  const int threads = at::get_num_threads();
  const int64_t pk_size = static_cast<int64_t>(mlp_cpu::packed_forward_size(d));
  const int64_t ws_size = static_cast<int64_t>(mlp_cpu::forward_workspace_size(d));
  at::Tensor pk = at::empty({threads * pk_size}, opts);
  at::Tensor ws = at::empty({threads * ws_size}, opts);
  const float* xp = x.data_ptr<float>();
  float* yp = y.data_ptr<float>();
  if (rows > 0) {
    for_each_net(off, [&](int64_t c, int thread) {
      float* packed = pk.data_ptr<float>() + thread * pk_size;
      const auto wp = slice_pointers(weights, c);
      const auto bp = slice_pointers(biases, c);
      mlp_cpu::pack_forward(d, wp.data(), bp.empty() ? nullptr : bp.data(), packed);
      const int64_t n = off[c + 1] - off[c];
      SavedSlice s;
      if (save) slice_saved(d, a, z, out, poff[c], &s);
      mlp_cpu::forward(d, packed, xp + off[c] * d.n_in, yp + off[c] * d.n_out, n, 0,
                       mlp_cpu::n_tiles(n), ws.data_ptr<float>() + thread * ws_size,
                       save ? &s.view : nullptr);
    });
  }
  std::vector<at::Tensor> result{y};
  if (save) {
    for (auto& t : a) result.push_back(t);
    for (auto& t : z) result.push_back(t);
    if (out.defined()) result.push_back(out);
  }
  return result;
}

std::vector<at::Tensor> batched_mlp_cpu_backward(const at::Tensor& dy_in, const at::Tensor& x_in,
                                                 const at::Tensor& offsets,
                                                 const std::vector<at::Tensor>& weights_in,
                                                 bool has_bias,
                                                 const std::vector<at::Tensor>& saved_in,
                                                 int64_t width, int64_t activation,
                                                 int64_t output_activation, double omega,
                                                 bool need_dx) {
  int64_t nets = 0;
  const Dims d = batched_dims(x_in, weights_in, {}, has_bias, width, activation,
                              output_activation, omega, &nets);
  check_f32(dy_in, "grad_output");
  const int64_t rows = x_in.size(0);
  TORCH_CHECK(dy_in.dim() == 2 && dy_in.size(0) == rows && dy_in.size(1) == d.n_out, kWho,
              "grad_output must have shape (", rows, ", ", d.n_out, "), got ", dy_in.sizes());
  const at::Tensor x = x_in.contiguous();
  const at::Tensor dy = dy_in.contiguous();
  std::vector<at::Tensor> weights;
  for (const auto& t : weights_in) weights.push_back(t.contiguous());
  std::vector<int64_t> off, poff;
  read_offsets(offsets, nets, rows, &off, &poff);

  const bool z_saved = mlp_cpu::needs_preactivation(d.act);
  const size_t expected = d.depth * (z_saved ? 2 : 1) + (d.out_act != mlp_cpu::kNone ? 1 : 0);
  TORCH_CHECK(saved_in.size() == expected, kWho, "expected ", expected,
              " saved activation tensors, got ", saved_in.size());
  std::vector<at::Tensor> a, z;
  at::Tensor out;
  size_t i = 0;
  for (int l = 0; l < d.depth; ++l) a.push_back(saved_in[i++]);
  if (z_saved)
    for (int l = 0; l < d.depth; ++l) z.push_back(saved_in[i++]);
  if (d.out_act != mlp_cpu::kNone) out = saved_in[i++];
  for (const auto& t : saved_in) {
    check_f32(t, "saved activation");
    TORCH_CHECK(t.is_contiguous() && t.dim() == 2 && t.size(0) == poff[nets], kWho,
                "saved activations must be the forward's (", poff[nets], " rows), got ",
                t.sizes());
  }

  auto opts = x.options();
  at::Tensor dx = need_dx ? at::empty({rows, d.n_in}, opts) : at::Tensor();
  std::vector<at::Tensor> dweights, dbiases;
  for (int l = 0; l < d.n_layers(); ++l) {
    dweights.push_back(at::zeros({nets, d.out_dim(l), d.in_dim(l)}, opts));
    if (has_bias) dbiases.push_back(at::zeros({nets, d.out_dim(l)}, opts));
  }
  const int threads = at::get_num_threads();
  const int64_t pk_size = static_cast<int64_t>(mlp_cpu::packed_backward_size(d));
  const int64_t ws_size = static_cast<int64_t>(mlp_cpu::backward_workspace_size(d));
  const int64_t wg_size = static_cast<int64_t>(mlp_cpu::weight_grad_size(d));
  at::Tensor pk = at::empty({threads * pk_size}, opts);
  at::Tensor ws = at::empty({threads * ws_size}, opts);
  at::Tensor wg = at::empty({threads * wg_size}, opts);
  const float* xp = x.data_ptr<float>();
  const float* dyp = dy.data_ptr<float>();
  float* dxp = need_dx ? dx.data_ptr<float>() : nullptr;
  if (rows > 0) {
    for_each_net(off, [&](int64_t c, int thread) {
      float* packed = pk.data_ptr<float>() + thread * pk_size;
      float* wgrad = wg.data_ptr<float>() + thread * wg_size;
      const auto wp = slice_pointers(weights, c);
      mlp_cpu::pack_backward(d, wp.data(), packed);
      std::fill(wgrad, wgrad + wg_size, 0.0f);
      const int64_t n = off[c + 1] - off[c];
      SavedSlice s;
      slice_saved(d, a, z, out, poff[c], &s);
      mlp_cpu::backward(d, packed, xp + off[c] * d.n_in, dyp + off[c] * d.n_out,
                        need_dx ? dxp + off[c] * d.n_in : nullptr, n, 0, mlp_cpu::n_tiles(n),
                        s.view, ws.data_ptr<float>() + thread * ws_size, wgrad);
      std::vector<float*> dw, db;
      for (auto& t : dweights) dw.push_back(t.data_ptr<float>() + c * t.stride(0));
      for (auto& t : dbiases) db.push_back(t.data_ptr<float>() + c * t.stride(0));
      mlp_cpu::reduce_weight_grads(d, wgrad, 1, dw.data(), has_bias ? db.data() : nullptr);
    });
  }
  std::vector<at::Tensor> result{need_dx ? dx : at::Tensor()};
  for (auto& t : dweights) result.push_back(t);
  for (auto& t : dbiases) result.push_back(t);
  return result;
}

// -- KiloNeRF's field in one pass (inference) --

namespace {

constexpr int64_t kKiloChunk = 8 * mlp_cpu::kTileRows;  // rows of one network per pass

// sin t and cos t for t in [0, pi] (as the local coordinates' first band has), in double
// without libm: with u = t - pi/2, sin t = cos u and cos t = -sin u, by their Taylor series to
// u^22 (the first omitted term is below 2.5e-16 for |u| <= pi/2), so that the double-angle
// steps of the higher bands, which double the error each, stay far below float's rounding.
static inline __attribute__((always_inline)) void sincos_0_pi(double t, double* s, double* c) {
  const double u = t - 1.5707963267948966;
  const double u2 = u * u;
  // (-1)^k / (2k+1)! and (-1)^k / (2k)!
  static constexpr double kS[11] = {1.0, -1.0 / 6, 1.0 / 120, -1.0 / 5040, 1.0 / 362880,
                                    -1.0 / 39916800, 1.0 / 6227020800.0,
                                    -1.0 / 1307674368000.0, 1.0 / 355687428096000.0,
                                    -1.0 / 121645100408832000.0,
                                    1.0 / 51090942171709440000.0};
  static constexpr double kC[12] = {1.0, -1.0 / 2, 1.0 / 24, -1.0 / 720, 1.0 / 40320,
                                    -1.0 / 3628800, 1.0 / 479001600.0,
                                    -1.0 / 87178291200.0, 1.0 / 20922789888000.0,
                                    -1.0 / 6402373705728000.0, 1.0 / 2432902008176640000.0,
                                    -1.0 / 1124000727777607680000.0};
  double ps = kS[10], pc = kC[11];
  for (int i = 9; i >= 0; --i) ps = ps * u2 + kS[i];
  for (int i = 10; i >= 0; --i) pc = pc * u2 + kC[i];
  *s = pc;        // sin t = cos u
  *c = -u * ps;   // cos t = -sin u
}

// The frequency encoding of m rows (rows of `order` from `first`; local coordinates gp,
// (points, 3)) into enc (m, 6 * frequencies), each row (dim, band, sin/cos): band by band
// over the rows (independent lanes the compiler vectorises, in double: the double-angle
// steps of the higher bands double the error each), then transposed into the rows. sn, cs:
// m doubles each; soa: 6 * frequencies * kKiloChunk floats. Compiled for the baseline and,
// where the CPU has them, AVX2 + FMA (4 doubles a vector instead of 2).
#define FIELDS_KILO_ENCODE_BODY                                                             \
  const float pi = static_cast<float>(M_PI);                                                \
  const int n_in = 6 * frequencies;                                                         \
  for (int k = 0; k < 3; ++k) {                                                             \
    for (int64_t r = 0; r < m; ++r) sn[r] = gp[3 * order[first + r] + k] * pi;              \
    _Pragma("omp simd") for (int64_t r = 0; r < m; ++r) sincos_0_pi(sn[r], &sn[r], &cs[r]); \
    for (int f = 0; f < frequencies; ++f) {                                                 \
      float* ps = soa + (2 * (k * frequencies + f)) * kKiloChunk;                           \
      float* pc = ps + kKiloChunk;                                                          \
      _Pragma("omp simd") for (int64_t r = 0; r < m; ++r) {                                 \
        ps[r] = static_cast<float>(sn[r]);                                                  \
        pc[r] = static_cast<float>(cs[r]);                                                  \
        const double s2 = 2.0 * sn[r] * cs[r];                                              \
        cs[r] = (cs[r] - sn[r]) * (cs[r] + sn[r]);                                          \
        sn[r] = s2;                                                                         \
      }                                                                                     \
    }                                                                                       \
  }                                                                                         \
  for (int64_t r = 0; r < m; ++r)                                                           \
    for (int j = 0; j < n_in; ++j) enc[r * n_in + j] = soa[j * kKiloChunk + r];

void kilo_encode_base(const float* gp, const int64_t* order, int64_t first, int64_t m,
                      int frequencies, double* sn, double* cs, float* soa, float* enc) {
  FIELDS_KILO_ENCODE_BODY
}

#if defined(__x86_64__) && defined(__GNUC__)
__attribute__((target("avx2,fma"))) void kilo_encode_avx2(const float* gp, const int64_t* order,
                                                          int64_t first, int64_t m,
                                                          int frequencies, double* sn,
                                                          double* cs, float* soa, float* enc) {
  FIELDS_KILO_ENCODE_BODY
}
#endif
#undef FIELDS_KILO_ENCODE_BODY

using KiloEncode = void (*)(const float*, const int64_t*, int64_t, int64_t, int, double*,
                            double*, float*, float*);

KiloEncode kilo_encode() {
#if defined(__x86_64__) && defined(__GNUC__)
  static const KiloEncode fn =
      __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") ? kilo_encode_avx2
                                                                        : kilo_encode_base;
  return fn;
#else
  return kilo_encode_base;
#endif
}

Dims kilo_dims(const std::vector<at::Tensor>& weights, bool has_bias, int n_in, int width,
               int out_act, const char* which) {
  TORCH_CHECK(!weights.empty() && weights[0].dim() == 3, kWho, which,
              " weights must have shape (nets, out, in)");
  Dims d;
  d.n_in = n_in;
  d.n_out = static_cast<int>(weights.back().size(1));
  d.width = width;
  d.depth = static_cast<int>(weights.size()) - 1;
  d.act = mlp_cpu::kReLU;
  d.out_act = out_act;
  d.bias = has_bias;
  const std::string err = mlp_cpu::check_dims(d);
  TORCH_CHECK(err.empty(), kWho, which, ": ", err);
  return d;
}

// Both networks of every cell, checked: the density network (n_in = 6 frequencies -> ...
// -> 1 + features) and the colour network (view dims + features -> ... -> 3, sigmoid).
//
// The colour network is packed for the input [density output | view] (cp: dd.n_out + n_view
// inputs; the log-density column's weights are zero), so that a row's input is the density
// network's output row as it is, then its view encoding: two whole-row copies, and with
// KiloNeRF's sizes (16 + 16) an input of whole vectors.
struct KiloNets {
  Dims dd, cd, cp;
  int64_t nets = 0;
  int features = 0, n_view = 0;
  std::vector<at::Tensor> dw, db, cw, cb;
  int64_t packed_size() const {
    return static_cast<int64_t>(mlp_cpu::packed_forward_size(dd) +
                                mlp_cpu::packed_forward_size(cp));
  }
  // Floats of scratch `pack` needs.
  int64_t scratch_size() const { return static_cast<int64_t>(cp.width) * cp.n_in; }
  // Packs cell c's two networks into out (packed_size() floats), using scratch.
  void pack(int64_t c, float* out, float* scratch) const {
    const auto wp = slice_pointers(dw, c);
    const auto bp = slice_pointers(db, c);
    mlp_cpu::pack_forward(dd, wp.data(), bp.empty() ? nullptr : bp.data(), out);
    auto cwp = slice_pointers(cw, c);
    const auto cbp = slice_pointers(cb, c);
    // the first layer's columns moved to the packed input order: [0 | features | view]
    const float* w0 = cwp[0];
    const int n = cd.n_in;
    for (int o = 0; o < cp.width; ++o) {
      float* r = scratch + static_cast<int64_t>(o) * cp.n_in;
      r[0] = 0.0f;
      std::copy(w0 + o * n + n_view, w0 + (o + 1) * n, r + 1);
      std::copy(w0 + o * n, w0 + o * n + n_view, r + 1 + features);
    }
    cwp[0] = scratch;
    mlp_cpu::pack_forward(cp, cwp.data(), cbp.empty() ? nullptr : cbp.data(),
                          out + mlp_cpu::packed_forward_size(dd));
  }
};

void check_layers(const Dims& d, const std::vector<at::Tensor>& w,
                  const std::vector<at::Tensor>& b, int64_t nets, const char* which) {
  TORCH_CHECK(static_cast<int>(w.size()) == d.n_layers() &&
                  (b.empty() || static_cast<int>(b.size()) == d.n_layers()),
              kWho, which, ": expected ", d.n_layers(), " weights and 0 or as many biases");
  for (int l = 0; l < d.n_layers(); ++l) {
    check_f32(w[l], which);
    TORCH_CHECK(w[l].dim() == 3 && w[l].size(0) == nets && w[l].size(1) == d.out_dim(l) &&
                    w[l].size(2) == d.in_dim(l),
                kWho, which, " weight ", l, " must be (", nets, ", ", d.out_dim(l), ", ",
                d.in_dim(l), "), got ", w[l].sizes());
    if (!b.empty()) {
      check_f32(b[l], which);
      TORCH_CHECK(b[l].dim() == 2 && b[l].size(0) == nets && b[l].size(1) == d.out_dim(l), kWho,
                  which, " bias ", l, " must be (", nets, ", ", d.out_dim(l), "), got ",
                  b[l].sizes());
    }
  }
}

KiloNets kilo_nets(int64_t cells, int64_t frequencies, const std::vector<at::Tensor>& dweights,
                   const std::vector<at::Tensor>& dbiases,
                   const std::vector<at::Tensor>& cweights,
                   const std::vector<at::Tensor>& cbiases, int64_t width) {
  TORCH_CHECK(cells >= 1 && cells <= 64, kWho, "cells must be in [1, 64], got ", cells);
  TORCH_CHECK(frequencies >= 1 && frequencies <= 32, kWho, "frequencies must be in [1, 32]");
  KiloNets k;
  k.nets = cells * cells * cells;
  k.dd = kilo_dims(dweights, !dbiases.empty(), static_cast<int>(6 * frequencies),
                   static_cast<int>(width), mlp_cpu::kNone, "density network");
  k.features = k.dd.n_out - 1;
  TORCH_CHECK(!cweights.empty() && cweights[0].dim() == 3, kWho,
              "colour weights must have shape (nets, out, in)");
  k.n_view = static_cast<int>(cweights[0].size(2)) - k.features;
  TORCH_CHECK(k.n_view >= 0, kWho, "the colour network's input is narrower than the features");
  k.cd = kilo_dims(cweights, !cbiases.empty(), k.n_view + k.features, static_cast<int>(width),
                   mlp_cpu::kSigmoid, "colour network");
  k.cp = k.cd;
  k.cp.n_in = k.dd.n_out + k.n_view;
  const std::string err = mlp_cpu::check_dims(k.cp);
  TORCH_CHECK(err.empty(), kWho, "colour network: ", err);
  for (const auto& t : dweights) k.dw.push_back(t.contiguous());
  for (const auto& t : dbiases) k.db.push_back(t.contiguous());
  for (const auto& t : cweights) k.cw.push_back(t.contiguous());
  for (const auto& t : cbiases) k.cb.push_back(t.contiguous());
  check_layers(k.dd, k.dw, k.db, k.nets, "density network");
  check_layers(k.cd, k.cw, k.cb, k.nets, "colour network");
  return k;
}

// One cell's two networks on its rows, kKiloChunk at a time, in one thread's scratch
// (`scratch_size` floats): the encoding, the density network, sigma, and with views the
// colour network on [density output | view].
class KiloRows {
 public:
  // cached: kilo_pack_cpu's packing of every cell, or null (each cell packed when it runs)
  KiloRows(const KiloNets& k, int frequencies, double density_bias, const float* cached)
      : k_(k), frequencies_(frequencies), bias_(static_cast<float>(density_bias)),
        cached_(cached), encode_(kilo_encode()) {
    const Dims& dd = k.dd;
    pkd_ = static_cast<int64_t>(mlp_cpu::packed_forward_size(dd));
    pk_ = k.packed_size();
    ws_ = std::max(static_cast<int64_t>(mlp_cpu::forward_workspace_size(dd)),
                   static_cast<int64_t>(mlp_cpu::forward_workspace_size(k.cp)));
    own_ = cached ? 0 : pk_ + k.scratch_size();
    n_in_ = dd.n_in;
    n_h_ = dd.n_out;
    n_cin_ = k.cp.n_in;  // [density output | view]
    scratch_ = mlp_cpu::round_up(
        static_cast<int>(own_ + ws_ + kKiloChunk * (2 * n_in_ + n_h_ + n_cin_ + 3 + 4)), 16);
  }
  int64_t scratch_size() const { return scratch_; }

  // Cell c's packed networks: the cache's, or packed into the scratch.
  const float* weights(int64_t c, float* scratch) const {
    if (cached_) return cached_ + c * pk_;
    k_.pack(c, scratch, scratch + pk_);
    return scratch;
  }

  // Rows i = order[start + r], r < m <= kKiloChunk, of the cell whose `weights` are w: local
  // coordinates gp[3 i..], inside[i]; sigma[i]; with vp, the view vp[view_row(i) * n_view..]
  // and rgb[3 i..].
  template <typename ViewRow>
  void run(const float* w, float* scratch, const float* gp, const bool* inside,
           const int64_t* order, int64_t start, int64_t m, const float* vp, ViewRow view_row,
           float* sigma, float* rgb) const {
    const int n_view = k_.n_view;
    float* ws = scratch + own_;
    float* enc = ws + ws_;
    float* h = enc + kKiloChunk * n_in_;
    float* cin = h + kKiloChunk * n_h_;
    float* out = cin + kKiloChunk * n_cin_;
    float* soa = out + kKiloChunk * 3;
    double* sn = reinterpret_cast<double*>(soa + kKiloChunk * n_in_);
    double* cs = sn + kKiloChunk;
    encode_(gp, order, start, m, frequencies_, sn, cs, soa, enc);
    mlp_cpu::forward(k_.dd, w, enc, h, m, 0, mlp_cpu::n_tiles(m), ws, nullptr);
    for (int64_t r = 0; r < m; ++r) {
      const int64_t i = order[start + r];
      sigma[i] = inside[i] ? std::exp(h[r * n_h_] + bias_) : 0.0f;
    }
    if (vp == nullptr) return;
    if (n_h_ == 16 && n_view == 16) {  // KiloNeRF's sizes: fixed-size copies, inlined
      for (int64_t r = 0; r < m; ++r) {
        std::memcpy(cin + r * 32, h + r * 16, 16 * sizeof(float));
        std::memcpy(cin + r * 32 + 16, vp + view_row(order[start + r]) * 16,
                    16 * sizeof(float));
      }
    } else {
      for (int64_t r = 0; r < m; ++r) {
        std::copy(h + r * n_h_, h + (r + 1) * n_h_, cin + r * n_cin_);
        const float* v = vp + view_row(order[start + r]) * n_view;
        std::copy(v, v + n_view, cin + r * n_cin_ + n_h_);
      }
    }
    mlp_cpu::forward(k_.cp, w + pkd_, cin, out, m, 0, mlp_cpu::n_tiles(m), ws, nullptr);
    for (int64_t r = 0; r < m; ++r) {
      float* dst = rgb + 3 * order[start + r];
      dst[0] = out[3 * r];
      dst[1] = out[3 * r + 1];
      dst[2] = out[3 * r + 2];
    }
  }

 private:
  const KiloNets& k_;
  int frequencies_;
  float bias_;
  const float* cached_;
  KiloEncode encode_;
  int64_t pkd_ = 0, pk_ = 0, ws_ = 0, own_ = 0, scratch_ = 0;
  int n_in_ = 0, n_h_ = 0, n_cin_ = 0;
};

// Local coordinates and cells of points: gp[3 i..] holds the box coordinates (as
// contract_points writes them) and becomes the local coordinates in the point's cell;
// returns the cell.
inline int32_t kilo_cell(float* g, int64_t cells) {
  const float fc = static_cast<float>(cells);
  int32_t c = 0;
  for (int k = 0; k < 3; ++k) {
    const float s = g[k] * fc;
    const float f = std::min(std::max(std::floor(s), 0.0f), fc - 1.0f);
    g[k] = s - f;
    c = c * static_cast<int32_t>(cells) + static_cast<int32_t>(f);
  }
  return c;
}

}  // namespace

at::Tensor kilo_pack_cpu(int64_t cells, int64_t frequencies,
                         const std::vector<at::Tensor>& dweights,
                         const std::vector<at::Tensor>& dbiases,
                         const std::vector<at::Tensor>& cweights,
                         const std::vector<at::Tensor>& cbiases, int64_t width) {
  const KiloNets k = kilo_nets(cells, frequencies, dweights, dbiases, cweights, cbiases, width);
  at::Tensor packed = at::empty({k.nets, k.packed_size()}, k.dw[0].options());
  float* p = packed.data_ptr<float>();
  at::parallel_for(0, k.nets, 16, [&](int64_t b, int64_t e) {
    std::vector<float> scratch(k.scratch_size());
    for (int64_t c = b; c < e; ++c) k.pack(c, p + c * k.packed_size(), scratch.data());
  });
  return packed;
}

std::vector<at::Tensor> kilo_forward_cpu(const at::Tensor& x_in,
                                         const std::optional<at::Tensor>& view_opt,
                                         const at::Tensor& aabb_in, int64_t cells,
                                         int64_t frequencies,
                                         const std::vector<at::Tensor>& dweights_in,
                                         const std::vector<at::Tensor>& dbiases_in,
                                         const std::vector<at::Tensor>& cweights_in,
                                         const std::vector<at::Tensor>& cbiases_in,
                                         int64_t width, double density_bias,
                                         const std::optional<at::Tensor>& packed_opt,
                                         const std::optional<at::Tensor>& view_index_opt) {
  TORCH_CHECK(x_in.dim() == 2 && x_in.size(1) == 3, kWho, "x must be (n, 3), got ",
              x_in.sizes());
  check_f32(x_in, "x");
  check_f32(aabb_in, "aabb");
  TORCH_CHECK(aabb_in.numel() == 6, kWho, "aabb must hold 6 values");
  const KiloNets k = kilo_nets(cells, frequencies, dweights_in, dbiases_in, cweights_in,
                               cbiases_in, width);
  const int64_t nets = k.nets;
  const int n_view = k.n_view;
  const at::Tensor view_in = view_opt.has_value() ? *view_opt : at::Tensor();
  const bool colour = view_in.defined();
  // view_index: point i's view is row view_index[i] of view (rendering: one row per ray,
  // small enough to stay in cache, rather than one per sample)
  at::Tensor view_index;
  if (view_index_opt.has_value()) {
    TORCH_CHECK(colour, kWho, "view_index is given without view");
    view_index = view_index_opt->contiguous();
    TORCH_CHECK(view_index.device().is_cpu() && view_index.scalar_type() == at::kLong &&
                    view_index.dim() == 1 && view_index.size(0) == x_in.size(0),
                kWho, "view_index must be a CPU int64 tensor of one entry per point (",
                x_in.size(0), "), got ", view_index.scalar_type(), " ", view_index.sizes());
  }
  if (colour) {
    check_f32(view_in, "view");
    TORCH_CHECK(view_in.dim() == 2 && view_in.size(1) == n_view &&
                    (view_index.defined() || view_in.size(0) == x_in.size(0)),
                kWho, "view must be (n, ", n_view, ") for the n points (or as many rows as ",
                "view_index needs), got ", view_in.sizes());
  }
  const int64_t* vidx = view_index.defined() ? view_index.data_ptr<int64_t>() : nullptr;
  if (vidx != nullptr) {
    const int64_t rows = view_in.size(0);
    for (int64_t i = 0; i < view_index.size(0); ++i)
      TORCH_CHECK(vidx[i] >= 0 && vidx[i] < rows, kWho, "view_index[", i, "] = ", vidx[i],
                  " is outside the ", rows, " rows of view");
  }
  auto view_row = [vidx](int64_t i) { return vidx != nullptr ? vidx[i] : i; };
  const float* cached = nullptr;
  at::Tensor packed_all;
  if (packed_opt.has_value()) {
    packed_all = packed_opt->contiguous();
    check_f32(packed_all, "packed");
    TORCH_CHECK(packed_all.dim() == 2 && packed_all.size(0) == nets &&
                    packed_all.size(1) == k.packed_size(),
                kWho, "packed must be kilo_pack_cpu's (", nets, ", ", k.packed_size(),
                "), got ", packed_all.sizes());
    cached = packed_all.data_ptr<float>();
  }
  const at::Tensor x = x_in.contiguous();
  const at::Tensor view = colour ? view_in.contiguous() : at::Tensor();
  const at::Tensor aabb = aabb_in.contiguous();
  float box[6];
  std::copy(aabb.data_ptr<float>(), aabb.data_ptr<float>() + 6, box);
  const int64_t n = x.size(0);

  // the box coordinates (as contract_points_cpu), each point's cell and local coordinates
  at::Tensor gc = at::empty({n, 3}, x.options());
  at::Tensor inside = at::empty({n}, x.options().dtype(at::kBool));
  std::vector<int32_t> cell(n);
  float* gp = gc.data_ptr<float>();
  bool* ip = inside.data_ptr<bool>();
  at::parallel_for(0, n, 8192, [&](int64_t b, int64_t e) {
    march_cpu::contract_points(box, march_cpu::kNone, x.data_ptr<float>(), b, e, gp, ip);
    for (int64_t i = b; i < e; ++i) cell[i] = kilo_cell(gp + 3 * i, cells);
  });
  // counting sort by cell
  std::vector<int64_t> off(nets + 1, 0);
  for (int64_t i = 0; i < n; ++i) ++off[cell[i] + 1];
  for (int64_t c = 0; c < nets; ++c) off[c + 1] += off[c];
  std::vector<int64_t> order(n), fill(off.begin(), off.end() - 1);
  for (int64_t i = 0; i < n; ++i) order[fill[cell[i]]++] = i;

  at::Tensor sigma = at::empty({n}, x.options());
  at::Tensor rgb = colour ? at::empty({n, 3}, x.options()) : at::Tensor();
  float* sp = sigma.data_ptr<float>();
  float* rp = colour ? rgb.data_ptr<float>() : nullptr;
  const float* vp = colour ? view.data_ptr<float>() : nullptr;
  const KiloRows runner(k, static_cast<int>(frequencies), density_bias, cached);
  const int64_t per_thread = runner.scratch_size();
  std::vector<float> buffers(static_cast<size_t>(at::get_num_threads() * per_thread));
  if (n > 0) {
    for_each_net(off, [&](int64_t c, int thread) {
      float* scratch = buffers.data() + thread * per_thread;
      const float* w = runner.weights(c, scratch);
      for (int64_t start = off[c]; start < off[c + 1]; start += kKiloChunk) {
        const int64_t m = std::min(kKiloChunk, off[c + 1] - start);
        runner.run(w, scratch, gp, ip, order.data(), start, m, vp, view_row, sp, rp);
      }
    });
  }
  std::vector<at::Tensor> result{sigma};
  if (colour) result.push_back(rgb);
  return result;
}

// -- KiloNeRF's renderer: marching, the tiny networks and compositing in one pass --

namespace {

constexpr int64_t kRenderTile = 1024;  // rays a thread renders together

// Where a ray enters and leaves the box (6,) within [near, far], as OccupancyGrid.sample
// computes it for contraction "none" (ray_aabb's slab test, float32 operation by operation):
// a ray that misses the box gets [1e10, min(1e10, far)] (no samples).
inline void box_span(const float o[3], const float d[3], const float box[6], float near,
                     float far, float* t_min, float* t_max) {
  const float tiny = 1e-12f;
  float t_near = -INFINITY, t_far = INFINITY;
  bool nan = false;
  for (int k = 0; k < 3; ++k) {
    const float safe = std::fabs(d[k]) < tiny ? std::copysign(tiny, d[k]) : d[k];
    const float t1 = (box[k] - o[k]) / safe, t2 = (box[3 + k] - o[k]) / safe;
    nan = nan || std::isnan(t1) || std::isnan(t2);
    t_near = std::max(t_near, std::min(t1, t2));
    t_far = std::min(t_far, std::max(t1, t2));
  }
  const bool hit = !nan && t_far > t_near && t_far > 0.f;
  const float miss = 1e10f;
  const float hn = hit ? t_near : miss, hf = hit ? t_far : miss;
  *t_min = std::isnan(near) ? near : std::max(hn, near);
  *t_max = std::isnan(far) ? far : std::min(hf, far);
}

// The real spherical harmonics of bands 0 .. degree - 1 (degree <= 8) of unit directions, as
// fields.nn.spherical_harmonics computes them from the encoding's input (d + 1) / 2 (the
// associated Legendre recurrence in Cartesian form, float32 in the same order of operations);
// the constants of each band and order computed once.
class ShBasis {
 public:
  explicit ShBasis(int degree) : degree_(degree) {
    for (int m = 0; m < degree; ++m) {
      double p_mm = (m % 2 == 0) ? 1.0 : -1.0;
      for (int j = 1; j < 2 * m; j += 2) p_mm *= j;
      p_mm_[m] = static_cast<float>(p_mm);
      for (int l = m; l < degree; ++l) {
        double fa = 1.0, fb = 1.0;  // (l - m)! and (l + m)!, exact in double up to 15!
        for (int j = 2; j <= l - m; ++j) fa *= j;
        for (int j = 2; j <= l + m; ++j) fb *= j;
        const double k = std::sqrt((2 * l + 1) / (4 * M_PI) * fa / fb);
        coef_[l][m] = static_cast<float>(m == 0 ? k : std::sqrt(2.0) * k);
      }
    }
  }

  // out: degree^2 values, ordered l^2 + l + m.
  void operator()(const float d[3], float* out) const {
    const int degree = degree_;
    float v[3];
    for (int k = 0; k < 3; ++k) v[k] = 2.0f * ((d[k] + 1.0f) * 0.5f) - 1.0f;
    const float x = v[0], y = v[1], z = v[2];
    float re[8], im[8];
    re[0] = 1.0f;
    im[0] = 0.0f;
    for (int i = 1; i < degree; ++i) {
      re[i] = re[i - 1] * x - im[i - 1] * y;
      im[i] = re[i - 1] * y + im[i - 1] * x;
    }
    for (int m = 0; m < degree; ++m) {
      float p_prev = 0.0f, p = p_mm_[m];
      for (int l = m; l < degree; ++l) {
        if (l == m + 1) {
          p_prev = p;
          p = z * static_cast<float>(2 * m + 1) * p;
        } else if (l > m + 1) {
          const float np = (z * static_cast<float>(2 * l - 1) * p -
                            p_prev * static_cast<float>(l + m - 1)) /
                           static_cast<float>(l - m);
          p_prev = p;
          p = np;
        }
        if (m == 0) {
          out[l * l + l] = p * coef_[l][0];
        } else {
          out[l * l + l + m] = p * coef_[l][m] * re[m];
          out[l * l + l - m] = p * coef_[l][m] * im[m];
        }
      }
    }
  }

 private:
  int degree_;
  float p_mm_[8] = {};
  float coef_[8][8] = {};
};

// One thread's buffers for kilo_render_cpu, kept from tile to tile.
struct RenderScratch {
  std::vector<int32_t> live, next_live, ray_of, n_of;
  std::vector<int64_t> first_of, order, view_of;
  std::vector<float> ts, te, pts, gp, sigma, rgb;
  std::vector<uint8_t> inside;
  std::vector<int32_t> cell, used, count;  // count: one entry per network, zero between uses
  std::vector<int64_t> group;               // where each used cell's rows start in `order`
  // per ray of the tile
  std::vector<float> t, t_end, span_end, view;
  std::vector<uint8_t> done;
  std::vector<double> pruned, before;  // optical depths: the pruning's and the compositing's
  std::vector<float> acc;             // r, g, b, opacity, sum of w * t_mid
};

}  // namespace

std::vector<at::Tensor> kilo_render_cpu(
    const at::Tensor& origins_in, const at::Tensor& directions_in, const at::Tensor& near_in,
    const at::Tensor& far_in, const at::Tensor& occupancy, const at::Tensor& grid_aabb_in,
    double step_size, const std::optional<at::Tensor>& view_opt, int64_t sh_degree,
    const at::Tensor& background_in,
    double threshold, int64_t round_samples, const at::Tensor& aabb_in, int64_t cells,
    int64_t frequencies, const std::vector<at::Tensor>& dweights_in,
    const std::vector<at::Tensor>& dbiases_in, const std::vector<at::Tensor>& cweights_in,
    const std::vector<at::Tensor>& cbiases_in, int64_t width, double density_bias,
    const at::Tensor& packed_in,
    const std::optional<std::vector<at::Tensor>>& packed_grid) {
  const char* who = "fields._C kilo_render_cpu: ";
  TORCH_CHECK(origins_in.dim() == 2 && origins_in.size(1) == 3, who,
              "origins must be (n, 3), got ", origins_in.sizes());
  const int64_t n = origins_in.size(0);
  for (const auto* t : {&origins_in, &directions_in, &near_in, &far_in, &background_in,
                        &aabb_in, &grid_aabb_in, &packed_in})
    check_f32(*t, "an input");
  TORCH_CHECK(directions_in.sizes() == origins_in.sizes() && near_in.numel() == n &&
                  far_in.numel() == n, who, "directions must be (n, 3) and near, far (n,)");
  TORCH_CHECK(grid_aabb_in.numel() == 6, who, "grid_aabb must hold 6 values");
  TORCH_CHECK(background_in.dim() == 2 && background_in.size(0) == n &&
                  background_in.size(1) == 3, who, "background must be (n, 3), got ",
              background_in.sizes());
  TORCH_CHECK(aabb_in.numel() == 6, who, "aabb must hold 6 values");
  TORCH_CHECK(round_samples >= 1 && round_samples <= 4096, who,
              "round_samples must be in [1, 4096], got ", round_samples);
  const KiloNets k = kilo_nets(cells, frequencies, dweights_in, dbiases_in, cweights_in,
                               cbiases_in, width);
  const int n_view = k.n_view;
  const bool own_view = !view_opt.has_value();
  if (own_view) {
    TORCH_CHECK(sh_degree >= 1 && sh_degree <= 8 && sh_degree * sh_degree == n_view, who,
                "without view, sh_degree must be in [1, 8] with sh_degree^2 = the colour "
                "network's ", n_view, " view inputs, got ", sh_degree);
  } else {
    check_f32(*view_opt, "view");
    TORCH_CHECK(view_opt->dim() == 2 && view_opt->size(0) == n && view_opt->size(1) == n_view,
                who, "view must be (n, ", n_view, "), got ", view_opt->sizes());
  }
  TORCH_CHECK(packed_in.dim() == 2 && packed_in.size(0) == k.nets &&
                  packed_in.size(1) == k.packed_size(),
              who, "packed must be kilo_pack_cpu's (", k.nets, ", ", k.packed_size(), "), got ",
              packed_in.sizes());
  PackedGrid pg;
  pack_grid(occupancy, grid_aabb_in, march_cpu::kNone, "kilo_render_cpu", &pg, packed_grid);
  march_cpu::Stepping stepping;
  stepping.step_size = static_cast<float>(step_size);
  stepping.max_step = 1e10f;
  const std::string err = march_cpu::check(pg.grid, stepping);
  TORCH_CHECK(err.empty(), who, err);
  TORCH_CHECK(pg.grid.res <= 1024, who, "the occupancy grid must be at most 1024^3");
  const float dt = std::min(std::max(0.f, stepping.step_size), stepping.max_step);

  const at::Tensor origins = origins_in.contiguous(), directions = directions_in.contiguous();
  const at::Tensor near = near_in.contiguous(), far = far_in.contiguous();
  const at::Tensor view = own_view ? at::Tensor() : view_opt->contiguous();
  const at::Tensor background = background_in.contiguous();
  const at::Tensor packed = packed_in.contiguous();
  const at::Tensor aabb = aabb_in.contiguous();
  float box[6];
  std::copy(aabb.data_ptr<float>(), aabb.data_ptr<float>() + 6, box);
  const float* op = origins.data_ptr<float>();
  const float* dp = directions.data_ptr<float>();
  const float* nearp = near.data_ptr<float>();
  const float* farp = far.data_ptr<float>();
  const float* gbox = pg.grid.aabb;
  const float* vp = own_view ? nullptr : view.data_ptr<float>();
  const float* bgp = background.data_ptr<float>();

  at::Tensor rgb = at::empty({n, 3}, origins.options());
  at::Tensor opacity = at::empty({n, 1}, origins.options());
  at::Tensor depth = at::empty({n, 1}, origins.options());
  float* o_rgb = rgb.data_ptr<float>();
  float* o_op = opacity.data_ptr<float>();
  float* o_d = depth.data_ptr<float>();
  const KiloRows runner(k, static_cast<int>(frequencies), density_bias,
                        packed.data_ptr<float>());
  const float thr = static_cast<float>(threshold);
  const ShBasis sh(own_view ? static_cast<int>(sh_degree) : 1);
  const int64_t n_tiles = (n + kRenderTile - 1) / kRenderTile;
  std::vector<int64_t> kept_of(n_tiles, 0), evaluated_of(n_tiles, 0);

  // the tiles handed out one at a time (their work differs widely: sky, or a surface)
  std::atomic<int64_t> next_tile{0};
  const int64_t workers = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), n_tiles));
  at::parallel_for(0, workers, 1, [&](int64_t, int64_t) {
    const FlushDenormals ftz;
    march_cpu::RayMarcher marcher(pg.grid, dt);
    RenderScratch s;
    s.count.assign(static_cast<size_t>(k.nets), 0);
    std::vector<float> scratch(static_cast<size_t>(runner.scratch_size()));
    for (int64_t tile = next_tile++; tile < n_tiles; tile = next_tile++) {
      const int64_t r0 = tile * kRenderTile;
      const int32_t nr = static_cast<int32_t>(std::min(n, r0 + kRenderTile) - r0);
      s.t.resize(nr);
      s.t_end.resize(nr);
      for (int32_t r = 0; r < nr; ++r)
        box_span(op + 3 * (r0 + r), dp + 3 * (r0 + r), gbox, nearp[r0 + r], farp[r0 + r],
                 &s.t[r], &s.t_end[r]);
      if (own_view) {  // the tile's rays' view encodings
        s.view.resize(static_cast<size_t>(nr) * n_view);
        for (int32_t r = 0; r < nr; ++r) sh(dp + 3 * (r0 + r), s.view.data() + r * n_view);
      }
      const float* tile_view = own_view ? s.view.data() : vp;
      const int64_t view_base = own_view ? 0 : r0;  // the tile's first ray's row in it
      s.span_end.assign(nr, -INFINITY);
      s.done.assign(nr, 0);
      s.pruned.assign(nr, 0.0);
      s.before.assign(nr, 0.0);
      s.acc.assign(static_cast<size_t>(nr) * 5, 0.f);
      s.live.resize(nr);
      for (int32_t r = 0; r < nr; ++r) s.live[r] = r;
      const int64_t size = round_samples;
      int64_t kept = 0, evaluated = 0;
      while (!s.live.empty()) {
        // march the live rays' next `size` samples
        const size_t L = s.live.size();
        const size_t cap = L * static_cast<size_t>(size);
        s.ts.resize(cap);
        s.te.resize(cap);
        s.first_of.resize(L);
        s.n_of.resize(L);
        int64_t m = 0;
        for (size_t l = 0; l < L; ++l) {
          const int32_t r = s.live[l];
          const int64_t g = r0 + r;
          bool done = false;
          const int got = marcher.next(op + 3 * g, dp + 3 * g, &s.t[r], &s.span_end[r], s.t_end[r],
                                       static_cast<int>(size), s.ts.data() + m,
                                       s.te.data() + m, &done);
          s.done[r] = done ? 1 : 0;
          s.first_of[l] = m;
          s.n_of[l] = got;
          m += got;
        }
        // the samples' points (as sample_points_cpu), cells and local coordinates, sorted
        // by cell
        s.pts.resize(3 * m);
        s.gp.resize(3 * m);
        s.inside.resize(m);
        s.cell.resize(m);
        s.ray_of.resize(m);
        for (size_t l = 0; l < L; ++l)
          for (int32_t j = 0; j < s.n_of[l]; ++j) s.ray_of[s.first_of[l] + j] = s.live[l];
        for (int64_t i = 0; i < m; ++i) {
          const int64_t g = r0 + s.ray_of[i];
          const float tm = 0.5f * (s.ts[i] + s.te[i]);
          for (int c = 0; c < 3; ++c) s.pts[3 * i + c] = op[3 * g + c] + dp[3 * g + c] * tm;
        }
        march_cpu::contract_points(box, march_cpu::kNone, s.pts.data(), 0, m, s.gp.data(),
                                   reinterpret_cast<bool*>(s.inside.data()));
        // counting sort by cell over the cells used (in increasing cell, rows in order)
        s.used.clear();
        for (int64_t i = 0; i < m; ++i) {
          const int32_t c = kilo_cell(s.gp.data() + 3 * i, cells);
          s.cell[i] = c;
          if (s.count[c]++ == 0) s.used.push_back(c);
        }
        std::sort(s.used.begin(), s.used.end());
        s.group.resize(s.used.size() + 1);
        int64_t at = 0;
        for (size_t u = 0; u < s.used.size(); ++u) {
          const int32_t c = s.used[u];
          s.group[u] = at;
          const int64_t rows = s.count[c];
          s.count[c] = static_cast<int32_t>(at);
          at += rows;
        }
        s.group[s.used.size()] = at;
        s.order.resize(m);
        s.view_of.resize(m);
        for (int64_t i = 0; i < m; ++i) {
          s.order[s.count[s.cell[i]]++] = i;
          s.view_of[i] = view_base + s.ray_of[i];
        }
        for (const int32_t c : s.used) s.count[c] = 0;
        s.sigma.resize(m);
        s.rgb.resize(3 * m);
        const int64_t* vrow = s.view_of.data();
        for (size_t u = 0; u < s.used.size(); ++u) {
          const int64_t a = s.group[u], b = s.group[u + 1];
          const float* w = runner.weights(s.used[u], scratch.data());
          for (int64_t start = a; start < b; start += kKiloChunk)
            runner.run(w, scratch.data(), s.gp.data(),
                       reinterpret_cast<const bool*>(s.inside.data()), s.order.data(), start,
                       std::min(kKiloChunk, b - start), tile_view,
                       [vrow](int64_t i) { return vrow[i]; }, s.sigma.data(), s.rgb.data());
        }
        evaluated += m;
        // composite the kept samples (prune_accumulate_cpu's rule, composite_forward_cpu's
        // sums), ray by ray in order; a ray goes on while it is seen through and has samples
        s.next_live.clear();
        for (size_t l = 0; l < L; ++l) {
          const int32_t r = s.live[l];
          double pruned = s.pruned[r], before = s.before[r];
          float* acc = s.acc.data() + 5 * r;
          for (int64_t i = s.first_of[l]; i < s.first_of[l] + s.n_of[l]; ++i) {
            const float sd = s.sigma[i] * (s.te[i] - s.ts[i]);
            if (std::exp(-static_cast<float>(pruned)) > thr) {
              const float wi = std::exp(-static_cast<float>(before)) * (1.f - std::exp(-sd));
              for (int c = 0; c < 3; ++c) acc[c] += wi * s.rgb[3 * i + c];
              acc[3] += wi;
              acc[4] += wi * (0.5f * (s.ts[i] + s.te[i]));
              before += static_cast<double>(sd);
              ++kept;
            }
            // NaN reads as empty; an optical depth of 50 ends any ray (as the pruning)
            pruned += static_cast<double>(std::isnan(sd) ? 0.f : std::min(sd, 50.f));
          }
          s.pruned[r] = pruned;
          s.before[r] = before;
          if (!s.done[r] && std::exp(-static_cast<float>(pruned)) > thr) s.next_live.push_back(r);
        }
        s.live.swap(s.next_live);
      }
      for (int32_t r = 0; r < nr; ++r) {
        const int64_t g = r0 + r;
        const float* acc = s.acc.data() + 5 * r;
        for (int c = 0; c < 3; ++c) o_rgb[3 * g + c] = acc[c] + (1.f - acc[3]) * bgp[3 * g + c];
        o_op[g] = acc[3];
        o_d[g] = acc[4] / std::max(acc[3], 1e-10f);
      }
      kept_of[tile] = kept;
      evaluated_of[tile] = evaluated;
    }
  });
  at::Tensor counts = at::zeros({2}, origins.options().dtype(at::kLong));
  int64_t* cp = counts.data_ptr<int64_t>();
  for (int64_t t = 0; t < n_tiles; ++t) {
    cp[0] += kept_of[t];
    cp[1] += evaluated_of[t];
  }
  return {rgb, opacity, depth, counts};
}

}  // namespace fields
