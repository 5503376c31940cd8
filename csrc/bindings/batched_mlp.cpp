// torch binding of the batched CPU MLP: many networks of one shape (KiloNeRF's thousands of
// tiny MLPs), rows grouped by network. Each network's rows run through the fused MLP kernels
// (csrc/kernels/mlp_cpu*) with that network's weights, packed per network on the thread that
// runs it; the networks are spread over torch's threads.
#include "batched_mlp.h"

#include <ATen/Parallel.h>

#include <algorithm>
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
  const Dims& dd = k.dd;
  const Dims& cp = k.cp;
  const int n_in = dd.n_in;
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
  const int n_h = dd.n_out;
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
  const float fc = static_cast<float>(cells);
  at::parallel_for(0, n, 8192, [&](int64_t b, int64_t e) {
    march_cpu::contract_points(box, march_cpu::kNone, x.data_ptr<float>(), b, e, gp, ip);
    for (int64_t i = b; i < e; ++i) {
      int32_t c = 0;
      for (int k = 0; k < 3; ++k) {
        const float s = gp[3 * i + k] * fc;
        const float f = std::min(std::max(std::floor(s), 0.0f), fc - 1.0f);
        gp[3 * i + k] = s - f;  // now the local coordinate
        c = c * static_cast<int32_t>(cells) + static_cast<int32_t>(f);
      }
      cell[i] = c;
    }
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
  const int threads = at::get_num_threads();
  const int64_t pkd = static_cast<int64_t>(mlp_cpu::packed_forward_size(dd));
  const int64_t pk = k.packed_size();
  const int64_t wsd = static_cast<int64_t>(mlp_cpu::forward_workspace_size(dd));
  const int64_t wsc = static_cast<int64_t>(mlp_cpu::forward_workspace_size(cp));
  const int64_t n_cin = cp.n_in;  // [density output | view]
  // per thread: packed weights (and the packing's scratch), workspaces and the chunk's
  // encoded inputs and outputs
  const int64_t own = cached ? 0 : pk + k.scratch_size();
  const int64_t per_thread = mlp_cpu::round_up(
      static_cast<int>(own + std::max(wsd, wsc) +
                       kKiloChunk * (2 * n_in + n_h + n_cin + 3 + 4)), 16);
  std::vector<float> buffers(static_cast<size_t>(threads * per_thread));
  const KiloEncode encode = kilo_encode();
  const float bias = static_cast<float>(density_bias);
  if (n > 0) {
    for_each_net(off, [&](int64_t c, int thread) {
      float* base = buffers.data() + thread * per_thread;
      const float* packed_d = cached ? cached + c * pk : base;
      const float* packed_c = packed_d + pkd;
      if (!cached) k.pack(c, base, base + pk);
      float* ws = base + own;
      float* enc = ws + std::max(wsd, wsc);
      float* h = enc + kKiloChunk * n_in;
      float* cin = h + kKiloChunk * n_h;
      float* out = cin + kKiloChunk * n_cin;
      float* soa = out + kKiloChunk * 3;
      double* sn = reinterpret_cast<double*>(soa + kKiloChunk * n_in);
      double* cs = sn + kKiloChunk;
      for (int64_t start = off[c]; start < off[c + 1]; start += kKiloChunk) {
        const int64_t m = std::min(kKiloChunk, off[c + 1] - start);
        encode(gp, order.data(), start, m, static_cast<int>(frequencies), sn, cs, soa, enc);
        mlp_cpu::forward(dd, packed_d, enc, h, m, 0, mlp_cpu::n_tiles(m), ws, nullptr);
        for (int64_t r = 0; r < m; ++r) {
          const int64_t i = order[start + r];
          sp[i] = ip[i] ? std::exp(h[r * n_h] + bias) : 0.0f;
        }
        if (!colour) continue;
        if (n_h == 16 && n_view == 16) {  // KiloNeRF's sizes: fixed-size copies, inlined
          for (int64_t r = 0; r < m; ++r) {
            std::memcpy(cin + r * 32, h + r * 16, 16 * sizeof(float));
            std::memcpy(cin + r * 32 + 16, vp + view_row(order[start + r]) * 16,
                        16 * sizeof(float));
          }
        } else {
          for (int64_t r = 0; r < m; ++r) {
            std::copy(h + r * n_h, h + (r + 1) * n_h, cin + r * n_cin);
            const float* v = vp + view_row(order[start + r]) * n_view;
            std::copy(v, v + n_view, cin + r * n_cin + n_h);
          }
        }
        mlp_cpu::forward(cp, packed_c, cin, out, m, 0, mlp_cpu::n_tiles(m), ws, nullptr);
        for (int64_t r = 0; r < m; ++r) {
          float* dst = rp + 3 * order[start + r];
          dst[0] = out[3 * r];
          dst[1] = out[3 * r + 1];
          dst[2] = out[3 * r + 2];
        }
      }
    });
  }
  std::vector<at::Tensor> result{sigma};
  if (colour) result.push_back(rgb);
  return result;
}

}  // namespace fields
