// CPU helpers of `fields.render.volrend` (declared in volrend.h): the bookkeeping of
// `prune_in_rounds` (each round of early ray termination touches only the picked samples and
// the live rays) and the compositing with its backward. The loops are per ray (sequential
// along a ray, as the transmittance is), in parallel over rays.
#include "volrend.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <cstdint>

namespace fields {
namespace {

constexpr int64_t kGrain = 1024;

void check(const at::Tensor& t, at::ScalarType type, const char* fn, const char* name) {
  TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == type && t.is_contiguous(),
              "fields._C ", fn, ": ", name, " must be a contiguous ", type,
              " tensor on the CPU, got ", t.scalar_type(), " on ", t.device());
}

}  // namespace

std::vector<at::Tensor> prune_picks_cpu(const at::Tensor& offsets, const at::Tensor& rays,
                                        int64_t lo, int64_t size, const std::optional<at::Tensor>& row,
                                        int64_t base) {
  const char* fn = "prune_picks_cpu";
  check(offsets, at::kLong, fn, "offsets");
  check(rays, at::kLong, fn, "rays");
  TORCH_CHECK(lo >= 0 && size >= 1, "fields._C prune_picks_cpu: lo >= 0 and size >= 1");
  const int64_t n_rays = offsets.numel() - 1;
  const int64_t L = rays.numel();
  const int64_t* off = offsets.data_ptr<int64_t>();
  const int64_t* ry = rays.data_ptr<int64_t>();
  at::Tensor lengths = at::empty({L}, offsets.options());
  at::Tensor starts = at::empty({L}, offsets.options());  // exclusive prefix of lengths
  int64_t* len = lengths.data_ptr<int64_t>();
  int64_t* st = starts.data_ptr<int64_t>();
  int64_t total = 0;
  for (int64_t l = 0; l < L; ++l) {
    const int64_t r = ry[l];
    TORCH_CHECK(r >= 0 && r < n_rays, "fields._C prune_picks_cpu: ray ", r, " out of range");
    const int64_t n = std::max<int64_t>(0, std::min(off[r + 1] - off[r] - lo, size));
    len[l] = n;
    st[l] = total;
    total += n;
  }
  at::Tensor pick = at::empty({total}, offsets.options());
  int64_t* pk = pick.data_ptr<int64_t>();
  int64_t* rw = nullptr;
  if (row.has_value()) {
    check(*row, at::kLong, fn, "row");
    TORCH_CHECK(row->numel() >= off[n_rays], "fields._C prune_picks_cpu: row has ",
                row->numel(), " entries for ", off[n_rays], " samples");
    rw = row->data_ptr<int64_t>();
  }
  at::parallel_for(0, L, kGrain, [&](int64_t b, int64_t e) {
    for (int64_t l = b; l < e; ++l) {
      const int64_t first = off[ry[l]] + lo;
      for (int64_t j = 0; j < len[l]; ++j) {
        pk[st[l] + j] = first + j;
        if (rw != nullptr) rw[first + j] = base + st[l] + j;
      }
    }
  });
  return {pick, lengths};
}

at::Tensor prune_accumulate_cpu(const at::Tensor& sigma, const at::Tensor& t_starts,
                                const at::Tensor& t_ends, const at::Tensor& offsets,
                                const at::Tensor& rays, const at::Tensor& lengths, int64_t lo,
                                int64_t size, at::Tensor depth, at::Tensor n_keep,
                                double threshold) {
  const char* fn = "prune_accumulate_cpu";
  check(sigma, at::kFloat, fn, "sigma");
  check(t_starts, at::kFloat, fn, "t_starts");
  check(t_ends, at::kFloat, fn, "t_ends");
  check(offsets, at::kLong, fn, "offsets");
  check(rays, at::kLong, fn, "rays");
  check(lengths, at::kLong, fn, "lengths");
  check(depth, at::kDouble, fn, "depth");
  check(n_keep, at::kLong, fn, "n_keep");
  const int64_t n_rays = offsets.numel() - 1;
  const int64_t L = rays.numel();
  TORCH_CHECK(lengths.numel() == L && depth.numel() == n_rays && n_keep.numel() == n_rays,
              "fields._C prune_accumulate_cpu: rays, lengths (", L, ", ", lengths.numel(),
              ") and depth, n_keep (", depth.numel(), ", ", n_keep.numel(), ") for ", n_rays,
              " rays");
  const int64_t* off = offsets.data_ptr<int64_t>();
  const int64_t* ry = rays.data_ptr<int64_t>();
  const int64_t* len = lengths.data_ptr<int64_t>();
  std::vector<int64_t> start(L);
  int64_t total = 0;
  for (int64_t l = 0; l < L; ++l) {
    start[l] = total;
    total += len[l];
  }
  TORCH_CHECK(sigma.numel() == total, "fields._C prune_accumulate_cpu: sigma has ",
              sigma.numel(), " values for ", total, " picked samples");
  TORCH_CHECK(t_starts.numel() == off[n_rays] && t_ends.numel() == off[n_rays],
              "fields._C prune_accumulate_cpu: t_starts, t_ends must have one value per sample");
  const float* sg = sigma.data_ptr<float>();
  const float* ts = t_starts.data_ptr<float>();
  const float* te = t_ends.data_ptr<float>();
  double* dp = depth.data_ptr<double>();
  int64_t* nk = n_keep.data_ptr<int64_t>();
  const float thr = static_cast<float>(threshold);
  const int64_t next = lo + size;
  std::vector<uint8_t> alive(L);
  at::parallel_for(0, L, kGrain, [&](int64_t b, int64_t e) {
    for (int64_t l = b; l < e; ++l) {
      const int64_t r = ry[l];
      const int64_t first = off[r] + lo;
      double d = dp[r];
      int64_t kept = 0;
      for (int64_t j = 0; j < len[l]; ++j) {
        const float delta = te[first + j] - ts[first + j];
        float sd = sg[start[l] + j] * delta;
        // NaN reads as empty; an optical depth of 50 ends any ray (see volrend.py)
        sd = std::isnan(sd) ? 0.f : std::min(sd, 50.f);
        if (std::exp(-static_cast<float>(d)) > thr) ++kept;
        d += static_cast<double>(sd);
      }
      nk[r] += kept;
      dp[r] = d;
      alive[l] = std::exp(-static_cast<float>(d)) > thr && off[r + 1] - off[r] > next;
    }
  });
  int64_t n_alive = 0;
  for (int64_t l = 0; l < L; ++l) n_alive += alive[l];
  at::Tensor out = at::empty({n_alive}, rays.options());
  int64_t* o = out.data_ptr<int64_t>();
  for (int64_t l = 0, k = 0; l < L; ++l)
    if (alive[l]) o[k++] = ry[l];
  return out;
}

at::Tensor gather_rows_cpu(const std::vector<at::Tensor>& parts_in, const at::Tensor& idx) {
  const char* fn = "gather_rows_cpu";
  TORCH_CHECK(!parts_in.empty(), "fields._C gather_rows_cpu: no parts given");
  check(idx, at::kLong, fn, "idx");
  const int64_t C = parts_in[0].dim() == 2 ? parts_in[0].size(1) : -1;
  std::vector<at::Tensor> parts;
  std::vector<const float*> ptr;
  std::vector<int64_t> start{0};
  for (const auto& t : parts_in) {
    check(t, at::kFloat, fn, "parts");
    TORCH_CHECK(t.dim() == 2 && t.size(1) == C, "fields._C gather_rows_cpu: parts must all be (n, ",
                C, "), got ", t.sizes());
    parts.push_back(t.contiguous());
    ptr.push_back(parts.back().data_ptr<float>());
    start.push_back(start.back() + t.size(0));
  }
  const int64_t total = start.back();
  const int64_t P = idx.numel();
  at::Tensor out = at::empty({P, C}, parts[0].options());
  const int64_t* ip = idx.data_ptr<int64_t>();
  float* op = out.data_ptr<float>();
  bool bad = false;
  at::parallel_for(0, P, 4 * kGrain, [&](int64_t b, int64_t e) {
    int part = 0;
    for (int64_t k = b; k < e; ++k) {
      const int64_t i = ip[k];
      if (i < 0 || i >= total) { bad = true; continue; }
      if (i < start[part] || i >= start[part + 1]) {  // rows come in runs from one part
        part = static_cast<int>(std::upper_bound(start.begin(), start.end(), i) - start.begin()) - 1;
      }
      std::memcpy(op + k * C, ptr[part] + (i - start[part]) * C, sizeof(float) * C);
    }
  });
  TORCH_CHECK(!bad, "fields._C gather_rows_cpu: an index is out of range [0, ", total, ")");
  return out;
}

at::Tensor sample_points_cpu(const at::Tensor& origins, const at::Tensor& directions,
                             const at::Tensor& ray_indices, const at::Tensor& t_starts,
                             const at::Tensor& t_ends,
                             const std::optional<at::Tensor>& pick) {
  const char* fn = "sample_points_cpu";
  check(origins, at::kFloat, fn, "origins");
  check(directions, at::kFloat, fn, "directions");
  check(ray_indices, at::kLong, fn, "ray_indices");
  check(t_starts, at::kFloat, fn, "t_starts");
  check(t_ends, at::kFloat, fn, "t_ends");
  const int64_t n_rays = origins.size(0);
  TORCH_CHECK(origins.dim() == 2 && origins.size(1) == 3 && directions.sizes() == origins.sizes(),
              "fields._C sample_points_cpu: origins, directions must be (R, 3), got ",
              origins.sizes(), ", ", directions.sizes());
  const int64_t S = ray_indices.numel();
  TORCH_CHECK(t_starts.numel() == S && t_ends.numel() == S,
              "fields._C sample_points_cpu: one t_start and t_end per sample");
  const int64_t* pk = nullptr;
  int64_t P = S;
  if (pick.has_value()) {
    check(*pick, at::kLong, fn, "pick");
    pk = pick->data_ptr<int64_t>();
    P = pick->numel();
  }
  at::Tensor out = at::empty({P, 3}, origins.options());
  const float* o = origins.data_ptr<float>();
  const float* d = directions.data_ptr<float>();
  const int64_t* ri = ray_indices.data_ptr<int64_t>();
  const float* ts = t_starts.data_ptr<float>();
  const float* te = t_ends.data_ptr<float>();
  float* p = out.data_ptr<float>();
  bool bad = false;
  at::parallel_for(0, P, 4 * kGrain, [&](int64_t b, int64_t e) {
    for (int64_t k = b; k < e; ++k) {
      const int64_t s = pk != nullptr ? pk[k] : k;
      if (s < 0 || s >= S) { bad = true; continue; }
      const int64_t r = ri[s];
      if (r < 0 || r >= n_rays) { bad = true; continue; }
      // as torch computes it: 0.5 * (ts + te), then o + d * t (this file is built for
      // x86-64 without FMA, so nothing is fused)
      const float t = 0.5f * (ts[s] + te[s]);
      for (int c = 0; c < 3; ++c) p[k * 3 + c] = o[r * 3 + c] + d[r * 3 + c] * t;
    }
  });
  TORCH_CHECK(!bad, "fields._C sample_points_cpu: a sample or ray index is out of range");
  return out;
}

namespace {

void check_packed(const at::Tensor& sigmas, const at::Tensor& rgbs, const at::Tensor& t_starts,
                  const at::Tensor& t_ends, const at::Tensor& offsets, const char* fn) {
  check(sigmas, at::kFloat, fn, "sigmas");
  check(rgbs, at::kFloat, fn, "rgbs");
  check(t_starts, at::kFloat, fn, "t_starts");
  check(t_ends, at::kFloat, fn, "t_ends");
  check(offsets, at::kLong, fn, "offsets");
  const int64_t S = sigmas.numel();
  TORCH_CHECK(rgbs.dim() == 2 && rgbs.size(0) == S && rgbs.size(1) == 3 &&
                  t_starts.numel() == S && t_ends.numel() == S,
              "fields._C ", fn, ": rgbs must be (S, 3) and t_starts, t_ends (S,) for ", S,
              " sigmas, got ", rgbs.sizes(), ", ", t_starts.sizes(), ", ", t_ends.sizes());
  TORCH_CHECK(offsets.dim() == 1 && offsets.numel() >= 1, "fields._C ", fn,
              ": offsets must be (R + 1,)");
  const int64_t* off = offsets.data_ptr<int64_t>();
  const int64_t R = offsets.numel() - 1;
  TORCH_CHECK(off[0] == 0 && off[R] == S, "fields._C ", fn, ": offsets must run from 0 to ",
              S, ", got ", off[0], " to ", off[R]);
  for (int64_t r = 0; r < R; ++r)
    TORCH_CHECK(off[r + 1] >= off[r], "fields._C ", fn, ": offsets must not decrease");
}

}  // namespace

std::vector<at::Tensor> composite_forward_cpu(const at::Tensor& sigmas, const at::Tensor& rgbs,
                                              const at::Tensor& t_starts,
                                              const at::Tensor& t_ends,
                                              const at::Tensor& offsets) {
  check_packed(sigmas, rgbs, t_starts, t_ends, offsets, "composite_forward_cpu");
  const int64_t R = offsets.numel() - 1;
  const int64_t S = sigmas.numel();
  at::Tensor rgb = at::empty({R, 3}, sigmas.options());
  at::Tensor opacity = at::empty({R, 1}, sigmas.options());
  at::Tensor depth = at::empty({R, 1}, sigmas.options());
  at::Tensor weights = at::empty({S}, sigmas.options());
  const int64_t* off = offsets.data_ptr<int64_t>();
  const float* sg = sigmas.data_ptr<float>();
  const float* c = rgbs.data_ptr<float>();
  const float* ts = t_starts.data_ptr<float>();
  const float* te = t_ends.data_ptr<float>();
  float* o_rgb = rgb.data_ptr<float>();
  float* o_op = opacity.data_ptr<float>();
  float* o_d = depth.data_ptr<float>();
  float* w = weights.data_ptr<float>();
  at::parallel_for(0, R, 256, [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) {
      double before = 0.0;  // optical depth before the sample
      float acc[3] = {0.f, 0.f, 0.f}, op = 0.f, dt = 0.f;
      for (int64_t i = off[r]; i < off[r + 1]; ++i) {
        const float sd = sg[i] * (te[i] - ts[i]);
        const float wi = std::exp(-static_cast<float>(before)) * (1.f - std::exp(-sd));
        w[i] = wi;
        for (int k = 0; k < 3; ++k) acc[k] += wi * c[i * 3 + k];
        op += wi;
        dt += wi * (0.5f * (ts[i] + te[i]));
        before += static_cast<double>(sd);
      }
      for (int k = 0; k < 3; ++k) o_rgb[r * 3 + k] = acc[k];
      o_op[r] = op;
      o_d[r] = dt / std::max(op, 1e-10f);
    }
  });
  return {rgb, opacity, depth, weights};
}

std::vector<at::Tensor> composite_backward_cpu(
    const at::Tensor& grad_rgb, const at::Tensor& grad_opacity, const at::Tensor& grad_depth,
    const std::optional<at::Tensor>& grad_weights, const at::Tensor& sigmas,
    const at::Tensor& rgbs, const at::Tensor& t_starts, const at::Tensor& t_ends,
    const at::Tensor& offsets, const at::Tensor& weights, const at::Tensor& opacity,
    const at::Tensor& depth) {
  const char* fn = "composite_backward_cpu";
  check_packed(sigmas, rgbs, t_starts, t_ends, offsets, fn);
  const int64_t R = offsets.numel() - 1;
  const int64_t S = sigmas.numel();
  check(grad_rgb, at::kFloat, fn, "grad_rgb");
  check(grad_opacity, at::kFloat, fn, "grad_opacity");
  check(grad_depth, at::kFloat, fn, "grad_depth");
  check(weights, at::kFloat, fn, "weights");
  check(opacity, at::kFloat, fn, "opacity");
  check(depth, at::kFloat, fn, "depth");
  TORCH_CHECK(grad_rgb.numel() == R * 3 && grad_opacity.numel() == R && grad_depth.numel() == R &&
                  opacity.numel() == R && depth.numel() == R && weights.numel() == S,
              "fields._C composite_backward_cpu: shapes do not match ", R, " rays and ", S,
              " samples");
  const float* gw_in = nullptr;
  if (grad_weights.has_value()) {
    check(*grad_weights, at::kFloat, fn, "grad_weights");
    TORCH_CHECK(grad_weights->numel() == S, "fields._C composite_backward_cpu: grad_weights "
                "must have ", S, " values");
    gw_in = grad_weights->data_ptr<float>();
  }
  at::Tensor d_sigmas = at::empty({S}, sigmas.options());
  at::Tensor d_rgbs = at::empty({S, 3}, sigmas.options());
  const int64_t* off = offsets.data_ptr<int64_t>();
  const float* sg = sigmas.data_ptr<float>();
  const float* c = rgbs.data_ptr<float>();
  const float* ts = t_starts.data_ptr<float>();
  const float* te = t_ends.data_ptr<float>();
  const float* w = weights.data_ptr<float>();
  const float* g_rgb = grad_rgb.data_ptr<float>();
  const float* g_op = grad_opacity.data_ptr<float>();
  const float* g_d = grad_depth.data_ptr<float>();
  const float* op = opacity.data_ptr<float>();
  const float* dp = depth.data_ptr<float>();
  float* ds = d_sigmas.data_ptr<float>();
  float* dc = d_rgbs.data_ptr<float>();
  at::parallel_for(0, R, 256, [&](int64_t b, int64_t e) {
    std::vector<float> gw, tn;  // per sample of a ray: d L / d w, T after it
    for (int64_t r = b; r < e; ++r) {
      const int64_t i0 = off[r], i1 = off[r + 1];
      if (i1 == i0) continue;
      // d depth / d w_i = (t_mid_i - depth [opacity > 1e-10]) / max(opacity, 1e-10)
      const float oc = std::max(op[r], 1e-10f);
      const float d_sub = op[r] > 1e-10f ? dp[r] : 0.f;
      const float gd = g_d[r] / oc;
      gw.resize(static_cast<size_t>(i1 - i0));
      tn.resize(static_cast<size_t>(i1 - i0));
      for (int64_t i = i0; i < i1; ++i) {
        float g = g_op[r] + gd * (0.5f * (ts[i] + te[i]) - d_sub);
        for (int k = 0; k < 3; ++k) {
          g += g_rgb[r * 3 + k] * c[i * 3 + k];
          dc[i * 3 + k] = w[i] * g_rgb[r * 3 + k];
        }
        if (gw_in != nullptr) g += gw_in[i];
        gw[i - i0] = g;
      }
      // d L / d sd_i = T_{i+1} g_i - sum_{k > i} w_k g_k (the suffix summed backwards)
      double before = 0.0;
      for (int64_t i = i0; i < i1; ++i) {
        before += static_cast<double>(sg[i] * (te[i] - ts[i]));
        tn[i - i0] = std::exp(-static_cast<float>(before));
      }
      float suffix = 0.f;
      for (int64_t i = i1 - 1; i >= i0; --i) {
        ds[i] = (te[i] - ts[i]) * (tn[i - i0] * gw[i - i0] - suffix);
        suffix += w[i] * gw[i - i0];
      }
    }
  });
  return {d_sigmas, d_rgbs};
}

}  // namespace fields
