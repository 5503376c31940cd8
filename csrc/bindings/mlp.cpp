// torch binding of the fused CPU MLP: checks tensors, packs weights, spreads tiles over
// threads (torch's own thread pool) and calls the framework-free kernels.
#include "mlp.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <string>

#include "../kernels/mlp_cpu.h"

namespace fields {
namespace {

using mlp_cpu::Dims;

Dims make_dims(int64_t n_in, int64_t n_out, int64_t width, int64_t depth, int64_t act,
               int64_t out_act, double omega, bool bias) {
  Dims d;
  d.n_in = static_cast<int>(n_in);
  d.n_out = static_cast<int>(n_out);
  d.width = static_cast<int>(width);
  d.depth = static_cast<int>(depth);
  d.act = static_cast<int>(act);
  d.out_act = static_cast<int>(out_act);
  d.omega = static_cast<float>(omega);
  d.bias = bias;
  const std::string err = mlp_cpu::check_dims(d);
  TORCH_CHECK(err.empty(), "fields._C mlp_cpu: ", err);
  return d;
}

void check_f32_cpu(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.device().is_cpu(), "fields._C mlp_cpu: ", name, " must be on the CPU, got ",
              t.device());
  TORCH_CHECK(t.scalar_type() == at::kFloat, "fields._C mlp_cpu: ", name,
              " must be float32, got ", t.scalar_type());
}

void check_params(const Dims& d, const std::vector<at::Tensor>& weights,
                  const std::vector<at::Tensor>& biases) {
  TORCH_CHECK(static_cast<int>(weights.size()) == d.n_layers(), "fields._C mlp_cpu: expected ",
              d.n_layers(), " weight matrices (depth + 1), got ", weights.size());
  TORCH_CHECK(biases.empty() || static_cast<int>(biases.size()) == d.n_layers(),
              "fields._C mlp_cpu: expected 0 or ", d.n_layers(), " biases, got ", biases.size());
  for (int l = 0; l < d.n_layers(); ++l) {
    check_f32_cpu(weights[l], "weight");
    TORCH_CHECK(weights[l].dim() == 2 && weights[l].size(0) == d.out_dim(l) &&
                    weights[l].size(1) == d.in_dim(l),
                "fields._C mlp_cpu: weight ", l, " must have shape (", d.out_dim(l), ", ",
                d.in_dim(l), "), got ", weights[l].sizes());
    if (!biases.empty()) {
      check_f32_cpu(biases[l], "bias");
      TORCH_CHECK(biases[l].dim() == 1 && biases[l].size(0) == d.out_dim(l),
                  "fields._C mlp_cpu: bias ", l, " must have shape (", d.out_dim(l), "), got ",
                  biases[l].sizes());
    }
  }
}

// Contiguous copies (no-ops when already contiguous), kept alive by the returned vector.
std::vector<at::Tensor> contiguous_all(const std::vector<at::Tensor>& ts) {
  std::vector<at::Tensor> out;
  out.reserve(ts.size());
  for (const auto& t : ts) out.push_back(t.contiguous());
  return out;
}

std::vector<const float*> pointers(const std::vector<at::Tensor>& ts) {
  std::vector<const float*> p;
  for (const auto& t : ts) p.push_back(t.data_ptr<float>());
  return p;
}

// Tiles are split into contiguous chunks, one per thread; small batches run on one thread.
int64_t chunk_count(int64_t tiles) {
  return std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), tiles / 2));
}

struct SavedTensors {
  std::vector<at::Tensor> a, z;
  at::Tensor out;
  std::vector<float*> a_ptr, z_ptr;
  mlp_cpu::Saved view;
};

void bind_saved(SavedTensors& s) {
  for (auto& t : s.a) s.a_ptr.push_back(t.data_ptr<float>());
  for (auto& t : s.z) s.z_ptr.push_back(t.data_ptr<float>());
  s.view.a = s.a_ptr.data();
  s.view.z = s.z_ptr.empty() ? nullptr : s.z_ptr.data();
  s.view.out = s.out.defined() && s.out.numel() > 0 ? s.out.data_ptr<float>() : nullptr;
}

}  // namespace

std::vector<at::Tensor> mlp_cpu_forward(const at::Tensor& x_in, const std::vector<at::Tensor>& weights_in,
                                        const std::vector<at::Tensor>& biases_in, int64_t width,
                                        int64_t activation, int64_t output_activation,
                                        double omega, bool save) {
  TORCH_CHECK(x_in.dim() == 2, "fields._C mlp_cpu: x must have shape (rows, n_in), got ",
              x_in.sizes());
  check_f32_cpu(x_in, "x");
  TORCH_CHECK(!weights_in.empty(), "fields._C mlp_cpu: no weights given");
  const int64_t depth = static_cast<int64_t>(weights_in.size()) - 1;
  const Dims d = make_dims(x_in.size(1), weights_in.back().size(0), width, depth, activation,
                           output_activation, omega, !biases_in.empty());
  check_params(d, weights_in, biases_in);
  const at::Tensor x = x_in.contiguous();
  const auto weights = contiguous_all(weights_in);
  const auto biases = contiguous_all(biases_in);
  const int64_t rows = x.size(0);

  auto opts = x.options();
  at::Tensor packed = at::empty({static_cast<int64_t>(mlp_cpu::packed_forward_size(d))}, opts);
  {
    const auto wp = pointers(weights);
    const auto bp = pointers(biases);
    mlp_cpu::pack_forward(d, wp.data(), bp.empty() ? nullptr : bp.data(),
                          packed.data_ptr<float>());
  }
  at::Tensor y = at::empty({rows, d.n_out}, opts);
  std::vector<at::Tensor> result{y};
  if (rows == 0) return result;

  const int64_t tiles = mlp_cpu::n_tiles(rows);
  const int64_t rows_pad = mlp_cpu::rows_padded(rows);
  SavedTensors saved;
  if (save) {
    for (int l = 0; l < d.depth; ++l) {
      saved.a.push_back(at::empty({rows_pad, d.width}, opts));
      if (mlp_cpu::needs_preactivation(d.act)) saved.z.push_back(at::empty({rows_pad, d.width}, opts));
    }
    if (d.out_act != mlp_cpu::kNone)
      saved.out = at::empty({rows_pad, d.out_pad(d.depth)}, opts);
    bind_saved(saved);
  }

  const int64_t chunks = chunk_count(tiles);
  const int64_t ws_size = static_cast<int64_t>(mlp_cpu::forward_workspace_size(d));
  at::Tensor ws = at::empty({chunks * ws_size}, opts);
  const float* xp = x.data_ptr<float>();
  float* yp = y.data_ptr<float>();
  const float* pp = packed.data_ptr<float>();
  float* wsp = ws.data_ptr<float>();
  const mlp_cpu::Saved* sv = save ? &saved.view : nullptr;
  auto run = [&](int64_t c) {
    const int64_t t0 = tiles * c / chunks, t1 = tiles * (c + 1) / chunks;
    mlp_cpu::forward(d, pp, xp, yp, rows, t0, t1, wsp + c * ws_size, sv);
  };
  if (chunks == 1) {
    run(0);
  } else {
    at::parallel_for(0, chunks, 1, [&](int64_t b, int64_t e) {
      for (int64_t c = b; c < e; ++c) run(c);
    });
  }
  if (save) {
    for (auto& t : saved.a) result.push_back(t);
    for (auto& t : saved.z) result.push_back(t);
    if (saved.out.defined()) result.push_back(saved.out);
  }
  return result;
}

std::vector<at::Tensor> mlp_cpu_backward(const at::Tensor& dy_in, const at::Tensor& x_in,
                                         const std::vector<at::Tensor>& weights_in, bool has_bias,
                                         const std::vector<at::Tensor>& saved_in, int64_t width,
                                         int64_t activation, int64_t output_activation,
                                         double omega, bool need_dx) {
  check_f32_cpu(x_in, "x");
  check_f32_cpu(dy_in, "grad_output");
  const int64_t depth = static_cast<int64_t>(weights_in.size()) - 1;
  const Dims d = make_dims(x_in.size(1), weights_in.back().size(0), width, depth, activation,
                           output_activation, omega, has_bias);
  check_params(d, weights_in, {});
  const int64_t rows = x_in.size(0);
  TORCH_CHECK(dy_in.dim() == 2 && dy_in.size(0) == rows && dy_in.size(1) == d.n_out,
              "fields._C mlp_cpu: grad_output must have shape (", rows, ", ", d.n_out, "), got ",
              dy_in.sizes());
  const at::Tensor x = x_in.contiguous();
  const at::Tensor dy = dy_in.contiguous();
  const auto weights = contiguous_all(weights_in);
  auto opts = x.options();

  // Saved activations in the order mlp_cpu_forward returned them.
  SavedTensors saved;
  size_t i = 0;
  const bool z_saved = mlp_cpu::needs_preactivation(d.act);
  const size_t expected = d.depth * (z_saved ? 2 : 1) + (d.out_act != mlp_cpu::kNone ? 1 : 0);
  TORCH_CHECK(saved_in.size() == expected, "fields._C mlp_cpu: expected ", expected,
              " saved activation tensors, got ", saved_in.size());
  for (int l = 0; l < d.depth; ++l) saved.a.push_back(saved_in[i++]);
  if (z_saved)
    for (int l = 0; l < d.depth; ++l) saved.z.push_back(saved_in[i++]);
  if (d.out_act != mlp_cpu::kNone) saved.out = saved_in[i++];
  bind_saved(saved);

  at::Tensor packed_t = at::empty({static_cast<int64_t>(mlp_cpu::packed_backward_size(d))}, opts);
  {
    const auto wp = pointers(weights);
    mlp_cpu::pack_backward(d, wp.data(), packed_t.data_ptr<float>());
  }
  at::Tensor dx = need_dx ? at::empty({rows, d.n_in}, opts) : at::Tensor();

  const int64_t tiles = mlp_cpu::n_tiles(rows);
  const int64_t chunks = chunk_count(tiles);
  const int64_t ws_size = static_cast<int64_t>(mlp_cpu::backward_workspace_size(d));
  const int64_t wg_size = static_cast<int64_t>(mlp_cpu::weight_grad_size(d));
  at::Tensor ws = at::empty({chunks * ws_size}, opts);
  at::Tensor wgrad = at::zeros({chunks * wg_size}, opts);
  const float* xp = x.data_ptr<float>();
  const float* dyp = dy.data_ptr<float>();
  float* dxp = need_dx ? dx.data_ptr<float>() : nullptr;
  const float* pp = packed_t.data_ptr<float>();
  float* wsp = ws.data_ptr<float>();
  float* wgp = wgrad.data_ptr<float>();
  auto run = [&](int64_t c) {
    const int64_t t0 = tiles * c / chunks, t1 = tiles * (c + 1) / chunks;
    mlp_cpu::backward(d, pp, xp, dyp, dxp, rows, t0, t1, saved.view, wsp + c * ws_size,
                      wgp + c * wg_size);
  };
  if (rows > 0) {
    if (chunks == 1) {
      run(0);
    } else {
      at::parallel_for(0, chunks, 1, [&](int64_t b, int64_t e) {
        for (int64_t c = b; c < e; ++c) run(c);
      });
    }
  }

  std::vector<at::Tensor> dweights, dbiases;
  std::vector<float*> dw_ptr, db_ptr;
  for (int l = 0; l < d.n_layers(); ++l) {
    dweights.push_back(at::empty({d.out_dim(l), d.in_dim(l)}, opts));
    dw_ptr.push_back(dweights.back().data_ptr<float>());
    if (has_bias) {
      dbiases.push_back(at::empty({d.out_dim(l)}, opts));
      db_ptr.push_back(dbiases.back().data_ptr<float>());
    }
  }
  mlp_cpu::reduce_weight_grads(d, wgp, static_cast<int>(chunks), dw_ptr.data(),
                               has_bias ? db_ptr.data() : nullptr);

  std::vector<at::Tensor> result{need_dx ? dx : at::Tensor()};
  for (auto& t : dweights) result.push_back(t);
  for (auto& t : dbiases) result.push_back(t);
  return result;
}

std::string mlp_cpu_isa() { return mlp_cpu::isa(); }

}  // namespace fields
