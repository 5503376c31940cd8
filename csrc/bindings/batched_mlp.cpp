// torch binding of the batched CPU MLP: many networks of one shape (KiloNeRF's thousands of
// tiny MLPs), rows grouped by network. Each network's rows run through the fused MLP kernels
// (csrc/kernels/mlp_cpu*) with that network's weights, packed per network on the thread that
// runs it; the networks are spread over torch's threads.
#include "batched_mlp.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <string>

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

// Runs fn(c, thread) for the networks with rows, spread over torch's threads.
template <typename Fn>
void for_each_net(const std::vector<int64_t>& off, Fn fn) {
  const int64_t nets = static_cast<int64_t>(off.size()) - 1;
  at::parallel_for(0, nets, 1, [&](int64_t b, int64_t e) {
    const int thread = at::get_thread_num();
    for (int64_t c = b; c < e; ++c)
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

}  // namespace fields
