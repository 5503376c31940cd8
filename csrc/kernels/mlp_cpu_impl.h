// The tile loops and register-blocked inner kernels of the fused CPU MLP.
//
// Included once per instruction set (mlp_cpu_avx2.cpp, mlp_cpu_generic.cpp) inside a
// namespace of that name; written with GCC vector extensions so that the same source becomes
// AVX2/FMA code in one and portable SIMD in the other. Compile with -ffp-contract=fast so
// that `acc += s * b` becomes one FMA.
//
// Shapes: a tile is kTileRows rows. Activations of a tile are row-major (rows, features)
// with a leading dimension (ld) given per buffer. Panels are (K, 16) blocks of packed weights.

// (No include guard: meant to be included once per ISA namespace.)

typedef float v8 __attribute__((vector_size(32)));
typedef float v8u __attribute__((vector_size(32), aligned(4), may_alias));
typedef int v8i __attribute__((vector_size(32)));

static inline v8 vload(const float* p) { return *reinterpret_cast<const v8u*>(p); }
static inline void vstore(float* p, v8 v) { *reinterpret_cast<v8u*>(p) = v; }
static inline v8 vzero() { return v8{0, 0, 0, 0, 0, 0, 0, 0}; }

// The register blocks' vectors: FIELDS_MLP_VEC floats (8: AVX2 / portable, 16: AVX-512), so a
// block's 16 columns are kVecs of them; FIELDS_MLP_MR rows per block where a tile has them
// (AVX-512's 32 registers hold 12 rows), else kRowBlock.
#ifndef FIELDS_MLP_VEC
#define FIELDS_MLP_VEC 8
#endif
#ifndef FIELDS_MLP_MR
#define FIELDS_MLP_MR 6
#endif
// Weight-gradient blocks: FIELDS_MLP_WGRAD_MR inputs at a time where the registers allow
// (a block's accumulators are that many vectors), kBigRows otherwise.
#ifndef FIELDS_MLP_WGRAD_MR
#define FIELDS_MLP_WGRAD_MR FIELDS_MLP_MR
#endif
constexpr int kVec = FIELDS_MLP_VEC;
constexpr int kWgradRows = FIELDS_MLP_WGRAD_MR;
constexpr int kVecs = kColBlock / kVec;
constexpr int kBigRows = FIELDS_MLP_MR;
static_assert(kColBlock % kVec == 0, "a column block is whole vectors");
static_assert(kBigRows % kRowBlock == 0 && kTileRows % kBigRows == 0, "row blocks tile a tile");
typedef float vec __attribute__((vector_size(FIELDS_MLP_VEC * 4)));
typedef float vecu __attribute__((vector_size(FIELDS_MLP_VEC * 4), aligned(4), may_alias));

static inline vec vecload(const float* p) { return *reinterpret_cast<const vecu*>(p); }
static inline void vecstore(float* p, vec v) { *reinterpret_cast<vecu*>(p) = v; }

enum Epilogue : int {
  kStore = 0,      // c = acc (+ bias)
  kStoreReLU,      // c = max(acc + bias, 0)
  kStoreLeaky,     // c = leaky(acc + bias)
  kMaskReLU,       // c = aux > 0 ? acc : 0                      (ReLU backward)
  kMaskLeaky,      // c = aux > 0 ? acc : slope * acc            (LeakyReLU backward)
};

// Column blocks per register block in the GEMMs: FIELDS_MLP_NB where the output has that
// many 16-column blocks (AVX-512: 6 rows x 4 blocks = 24 accumulators, 10 loads per 24 FMAs,
// against 13 per 12 with one block of 12 rows), else one block at a time.
#ifndef FIELDS_MLP_NB
#define FIELDS_MLP_NB 1
#endif
#ifndef FIELDS_MLP_NB_MR
#define FIELDS_MLP_NB_MR kRowBlock
#endif
constexpr int kWideBlocks = FIELDS_MLP_NB;
constexpr int kWideRows = FIELDS_MLP_NB_MR;
static_assert(kTileRows % kWideRows == 0 && kWideRows % kRowBlock == 0,
              "wide row blocks tile a tile");

// c[MR rows, NB * 16 cols] = epilogue(a[MR rows, K] @ panels[NB][K, 16]), the NB panels
// `pstride` floats apart.
template <int MR, int NB, int EPI>
static inline void gemm_block(const float* __restrict a, int64_t lda, int K,
                              const float* __restrict panel, int64_t pstride,
                              const float* __restrict bias, float* __restrict c, int64_t ldc,
                              const float* __restrict aux, int64_t ldaux) {
  constexpr int NV = NB * kVecs;  // vectors per row
  vec acc[MR][NV];
  vec b[NV];
#pragma GCC unroll 8
  for (int j = 0; j < NV; ++j) b[j] = bias != nullptr ? vecload(bias + j * kVec) : vec{} + 0.f;
#pragma GCC unroll 12
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 8
    for (int j = 0; j < NV; ++j) acc[i][j] = b[j];
#pragma GCC unroll 4
  for (int k = 0; k < K; ++k) {
    vec p[NV];
#pragma GCC unroll 4
    for (int nb = 0; nb < NB; ++nb)
#pragma GCC unroll 2
      for (int j = 0; j < kVecs; ++j) p[nb * kVecs + j] = vecload(panel + nb * pstride + k * 16 + j * kVec);
#pragma GCC unroll 12
    for (int i = 0; i < MR; ++i) {
      const float s = a[i * lda + k];
#pragma GCC unroll 8
      for (int j = 0; j < NV; ++j) acc[i][j] += s * p[j];
    }
  }
  const vec zero = vec{} + 0.f;
  const vec slope = zero + kLeakySlope;
#pragma GCC unroll 12
  for (int i = 0; i < MR; ++i) {
#pragma GCC unroll 8
    for (int j = 0; j < NV; ++j) {
      vec v = acc[i][j];
      if constexpr (EPI == kStoreReLU) {
        v = v > zero ? v : zero;
      } else if constexpr (EPI == kStoreLeaky) {
        v = v > zero ? v : v * slope;
      } else if constexpr (EPI == kMaskReLU) {
        const vec m = vecload(aux + i * ldaux + j * kVec);
        v = m > zero ? v : zero;
      } else if constexpr (EPI == kMaskLeaky) {
        const vec m = vecload(aux + i * ldaux + j * kVec);
        v = m > zero ? v : v * slope;
      }
      vecstore(c + i * ldc + j * kVec, v);
    }
  }
}

// c[rows, n_pad] = epilogue(a[rows, K] @ W^T) for a tile (rows a multiple of kRowBlock),
// with `panels` the packed (K, 16) blocks of W.
template <int EPI>
static void gemm_tile(int rows, const float* a, int64_t lda, int K, const float* panels,
                      int n_pad, const float* bias, float* c, int64_t ldc, const float* aux,
                      int64_t ldaux) {
  const int n_blocks = n_pad / kColBlock;
  const int64_t pstride = static_cast<int64_t>(K) * 16;
  int nb0 = 0;
  if constexpr (kWideBlocks > 1) {
    // Whole groups of kWideBlocks column blocks, for every row of the tile (rows is a
    // multiple of kWideRows except in a short last tile, whose rest goes one block at a time).
    const int wide_rows = rows - rows % kWideRows;
    for (; nb0 + kWideBlocks <= n_blocks; nb0 += kWideBlocks) {
      for (int r = 0; r < wide_rows; r += kWideRows)
        gemm_block<kWideRows, kWideBlocks, EPI>(
            a + r * lda, lda, K, panels + nb0 * pstride, pstride,
            bias ? bias + nb0 * 16 : nullptr, c + r * ldc + nb0 * 16, ldc,
            aux ? aux + r * ldaux + nb0 * 16 : nullptr, ldaux);
      for (int r = wide_rows; r < rows; r += kRowBlock)
        for (int nb = nb0; nb < nb0 + kWideBlocks; ++nb)
          gemm_block<kRowBlock, 1, EPI>(a + r * lda, lda, K, panels + nb * pstride, pstride,
                                        bias ? bias + nb * 16 : nullptr, c + r * ldc + nb * 16,
                                        ldc, aux ? aux + r * ldaux + nb * 16 : nullptr, ldaux);
    }
  }
  if (nb0 == n_blocks) return;
  int r = 0;
  for (; r + kBigRows <= rows; r += kBigRows) {
    for (int nb = nb0; nb < n_blocks; ++nb) {
      gemm_block<kBigRows, 1, EPI>(a + r * lda, lda, K, panels + nb * pstride, pstride,
                                   bias ? bias + nb * 16 : nullptr, c + r * ldc + nb * 16, ldc,
                                   aux ? aux + r * ldaux + nb * 16 : nullptr, ldaux);
    }
  }
  for (; r < rows; r += kRowBlock) {
    for (int nb = nb0; nb < n_blocks; ++nb) {
      gemm_block<kRowBlock, 1, EPI>(a + r * lda, lda, K, panels + nb * pstride, pstride,
                                    bias ? bias + nb * 16 : nullptr, c + r * ldc + nb * 16, ldc,
                                    aux ? aux + r * ldaux + nb * 16 : nullptr, ldaux);
    }
  }
}

static void gemm_tile_epilogue(int epi, int rows, const float* a, int64_t lda, int K,
                               const float* panels, int n_pad, const float* bias, float* c,
                               int64_t ldc, const float* aux, int64_t ldaux) {
  switch (epi) {
    case kStoreReLU:
      gemm_tile<kStoreReLU>(rows, a, lda, K, panels, n_pad, bias, c, ldc, aux, ldaux);
      break;
    case kStoreLeaky:
      gemm_tile<kStoreLeaky>(rows, a, lda, K, panels, n_pad, bias, c, ldc, aux, ldaux);
      break;
    case kMaskReLU:
      gemm_tile<kMaskReLU>(rows, a, lda, K, panels, n_pad, bias, c, ldc, aux, ldaux);
      break;
    case kMaskLeaky:
      gemm_tile<kMaskLeaky>(rows, a, lda, K, panels, n_pad, bias, c, ldc, aux, ldaux);
      break;
    default:
      gemm_tile<kStore>(rows, a, lda, K, panels, n_pad, bias, c, ldc, aux, ldaux);
  }
}

// dbias[n_pad] += column sums of dz[rows, n_pad].
static void add_column_sums(int rows, const float* dz, int64_t ldz, int n_pad, float* dbias) {
  for (int n0 = 0; n0 < n_pad; n0 += 8) {
    v8 s = vload(dbias + n0);
    for (int r = 0; r < rows; ++r) s += vload(dz + r * ldz + n0);
    vstore(dbias + n0, s);
  }
}

// Weight-gradient blocks over several 16-column blocks of dz at once: FIELDS_MLP_WGRAD_NB
// blocks of FIELDS_MLP_WGRAD_NB_MR inputs where n_pad and K allow.
#ifndef FIELDS_MLP_WGRAD_NB
#define FIELDS_MLP_WGRAD_NB 1
#endif
#ifndef FIELDS_MLP_WGRAD_NB_MR
#define FIELDS_MLP_WGRAD_NB_MR kWgradRows
#endif
constexpr int kWgradBlocks = FIELDS_MLP_WGRAD_NB;
constexpr int kWgradWideRows = FIELDS_MLP_WGRAD_NB_MR;

// wgrad_t[k0 + i, n0 + j] += sum_r a[r, k0 + i] * dz[r, n0 + j], i < MR, j < NB * 16.
template <int MR, int NB = 1>
static inline void wgrad_block(int rows, const float* __restrict a, int64_t lda, int k0,
                               const float* __restrict dz, int64_t ldz, int n0,
                               float* __restrict wgrad_t, int64_t ldw) {
  constexpr int NV = NB * kVecs;
  vec acc[MR][NV];
#pragma GCC unroll 16
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 8
    for (int j = 0; j < NV; ++j) acc[i][j] = vec{} + 0.f;
#pragma GCC unroll 2
  for (int r = 0; r < rows; ++r) {
    vec g[NV];
#pragma GCC unroll 8
    for (int j = 0; j < NV; ++j) g[j] = vecload(dz + r * ldz + n0 + j * kVec);
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i) {
      const float s = a[r * lda + k0 + i];
#pragma GCC unroll 8
      for (int j = 0; j < NV; ++j) acc[i][j] += s * g[j];
    }
  }
#pragma GCC unroll 16
  for (int i = 0; i < MR; ++i) {
    float* w = wgrad_t + (k0 + i) * ldw + n0;
#pragma GCC unroll 8
    for (int j = 0; j < NV; ++j) vecstore(w + j * kVec, vecload(w + j * kVec) + acc[i][j]);
  }
}

// wgrad_t[K, n_pad] += a[rows, K]^T @ dz[rows, n_pad]; dbias[n_pad] += column sums of dz.
static void wgrad_tile(int rows, const float* a, int64_t lda, int K, const float* dz,
                       int64_t ldz, int n_pad, float* wgrad_t, float* dbias) {
  int k0 = 0;
  if constexpr (kWgradBlocks > 1) {
    if (n_pad % (kWgradBlocks * kColBlock) == 0) {
      for (; k0 + kWgradWideRows <= K; k0 += kWgradWideRows) {
        for (int n0 = 0; n0 < n_pad; n0 += kWgradBlocks * kColBlock)
          wgrad_block<kWgradWideRows, kWgradBlocks>(rows, a, lda, k0, dz, ldz, n0, wgrad_t,
                                                    n_pad);
      }
    }
  }
  if constexpr (kWgradRows != kBigRows) {
    for (; k0 + kWgradRows <= K; k0 += kWgradRows) {
      for (int n0 = 0; n0 < n_pad; n0 += kColBlock)
        wgrad_block<kWgradRows>(rows, a, lda, k0, dz, ldz, n0, wgrad_t, n_pad);
    }
  }
  for (; k0 + kBigRows <= K; k0 += kBigRows) {
    for (int n0 = 0; n0 < n_pad; n0 += kColBlock)
      wgrad_block<kBigRows>(rows, a, lda, k0, dz, ldz, n0, wgrad_t, n_pad);
  }
  for (; k0 + kRowBlock <= K; k0 += kRowBlock) {
    for (int n0 = 0; n0 < n_pad; n0 += kColBlock)
      wgrad_block<kRowBlock>(rows, a, lda, k0, dz, ldz, n0, wgrad_t, n_pad);
  }
  const int rest = K - k0;
  for (int n0 = 0; rest > 0 && n0 < n_pad; n0 += kColBlock) {
    switch (rest) {
      case 1: wgrad_block<1>(rows, a, lda, k0, dz, ldz, n0, wgrad_t, n_pad); break;
      case 2: wgrad_block<2>(rows, a, lda, k0, dz, ldz, n0, wgrad_t, n_pad); break;
      case 3: wgrad_block<3>(rows, a, lda, k0, dz, ldz, n0, wgrad_t, n_pad); break;
      case 4: wgrad_block<4>(rows, a, lda, k0, dz, ldz, n0, wgrad_t, n_pad); break;
      default: wgrad_block<5>(rows, a, lda, k0, dz, ldz, n0, wgrad_t, n_pad); break;
    }
  }
  if (dbias != nullptr) add_column_sums(rows, dz, ldz, n_pad, dbias);
}

// ---- elementwise activations (the costly ones; ReLU-like ones live in the epilogues) ----

static inline float act_value(int act, float z, float omega) {
  switch (act) {
    case kReLU: return z > 0.f ? z : 0.f;
    case kLeakyReLU: return z > 0.f ? z : kLeakySlope * z;
    case kSoftplus: return z > 20.f ? z : std::log1p(std::exp(z));
    case kSigmoid: return 1.f / (1.f + std::exp(-z));
    case kTanh: return std::tanh(z);
    case kExponential: return std::exp(z);
    case kSiLU: return z / (1.f + std::exp(-z));
    case kSine: return std::sin(omega * z);
    case kSquareplus: return 0.5f * (z + std::sqrt(z * z + 4.f));
    case kGaussian: {
      const float u = omega * z;
      return std::exp(-u * u);
    }
    case kFiner: return std::sin(omega * (std::fabs(z) + 1.f) * z);
    default: return z;
  }
}

// d act / dz, from the pre-activation z when needs_preactivation(act), else from a = act(z).
static inline float act_derivative(int act, float v, float omega) {
  switch (act) {
    case kReLU: return v > 0.f ? 1.f : 0.f;
    case kLeakyReLU: return v > 0.f ? 1.f : kLeakySlope;
    case kSoftplus: return -std::expm1(-v);  // 1 - exp(-a) = sigmoid(z)
    case kSigmoid: return v * (1.f - v);
    case kTanh: return 1.f - v * v;
    case kExponential: return v;
    case kSiLU: {
      const float s = 1.f / (1.f + std::exp(-v));
      return s * (1.f + v * (1.f - s));
    }
    case kSine: return omega * std::cos(omega * v);
    case kSquareplus: return 0.5f * (1.f + v / std::sqrt(v * v + 4.f));
    case kGaussian: {
      const float u = omega * v;
      return -2.f * omega * u * std::exp(-u * u);
    }
    case kFiner:  // d/dz sin(omega (|z| + 1) z) = omega (2 |z| + 1) cos(omega (|z| + 1) z)
      return omega * (2.f * std::fabs(v) + 1.f) * std::cos(omega * (std::fabs(v) + 1.f) * v);
    default: return 1.f;
  }
}

// ---- branch-free sin, cos and exp that the compiler vectorises (std::sin is a scalar call) --
// Cephes' single-precision polynomials (sinf, cosf on [-pi/4, pi/4]; expf) after a Cody-Waite
// range reduction; about 1e-7 relative error for |x| up to a few thousand, which covers
// omega * z of SIREN-like layers by far.

static inline float round_nearest(float x) {
  // exact for |x| < 2^22: adding 1.5 * 2^23 leaves no fraction bits (no fast-math reassociation)
  const float magic = 12582912.f;
  return (x + magic) - magic;
}

// sin(x + q * pi / 2) for q in {0, 1}: q = 1 gives cos(x).
static inline float sin_quadrant(float x, int q) {
  const float k = round_nearest(x * 0.63661977236758134f);  // x / (pi / 2)
  float r = x - k * 1.5703125f;
  r -= k * 4.837512969970703125e-4f;
  r -= k * 7.54978995489188216e-8f;
  const int n = static_cast<int>(k) + q;
  const float r2 = r * r;
  const float sin_r = r + r * r2 * (-1.6666654611e-1f + r2 * (8.3321608736e-3f +
                                                                r2 * -1.9515295891e-4f));
  const float cos_r = 1.f - 0.5f * r2 + r2 * r2 * (4.166664568298827e-2f + r2 *
                      (-1.388731625493765e-3f + r2 * 2.443315711809948e-5f));
  // select and sign by arithmetic, not branches, so that loops over it vectorise
  const float odd = static_cast<float>(n & 1), neg = static_cast<float>((n >> 1) & 1);
  const float v = sin_r + odd * (cos_r - sin_r);
  return v * (1.f - 2.f * neg);
}

static inline float fast_sin(float x) { return sin_quadrant(x, 0); }
static inline float fast_cos(float x) { return sin_quadrant(x, 1); }

// exp(x) for x <= 88; exactly 0 below -60 (exp(-60) ~ 1e-26: smaller values would make
// denormal products in the next layers, which are slow).
static inline float fast_exp(float x) {
  // clamps by arithmetic on a comparison, not branches, so that loops over it vectorise
  const float under = static_cast<float>(x < -60.f), over = static_cast<float>(x > 88.f);
  x = x + under * (-60.f - x) + over * (88.f - x);
  const float k = round_nearest(x * 1.44269504088896341f);
  const float r = (x - k * 0.693359375f) + k * 2.12194440e-4f;
  const float p = 1.f + r + r * r * (5.0000001201e-1f + r * (1.6666665459e-1f + r *
                  (4.1665795894e-2f + r * (8.3334519073e-3f + r * (1.3981999507e-3f +
                  r * 1.9875691500e-4f)))));
  const int bits = (static_cast<int>(k) + 127) << 23;
  return p * __builtin_bit_cast(float, bits) * (1.f - under);  // p 2^k
}

// dst[r, :cols] = act(src[r, :cols]) (dst may equal src). The periodic and Gaussian
// activations get loops of their own, free of calls, so that they vectorise.
static void apply_activation(int act, float omega, int rows, int cols, const float* src,
                             int64_t lds, float* dst, int64_t ldd) {
  for (int r = 0; r < rows; ++r) {
    const float* s = src + r * lds;
    float* d = dst + r * ldd;
    switch (act) {
      case kSine:
        for (int j = 0; j < cols; ++j) d[j] = fast_sin(omega * s[j]);
        break;
      case kFiner:
        for (int j = 0; j < cols; ++j) d[j] = fast_sin(omega * (std::fabs(s[j]) + 1.f) * s[j]);
        break;
      case kGaussian:
        for (int j = 0; j < cols; ++j) {
          const float u = omega * s[j];
          d[j] = fast_exp(-u * u);
        }
        break;
      case kSigmoid:  // NeRF's colour output: std::exp here cost more than the layer's GEMM
        for (int j = 0; j < cols; ++j) d[j] = 1.f / (1.f + fast_exp(-s[j]));
        break;
      case kSiLU:
        for (int j = 0; j < cols; ++j) d[j] = s[j] / (1.f + fast_exp(-s[j]));
        break;
      default:
        for (int j = 0; j < cols; ++j) d[j] = act_value(act, s[j], omega);
    }
  }
}

// g[r, :cols] *= act'(v[r, :cols]).
static void apply_derivative(int act, float omega, int rows, int cols, float* g, int64_t ldg,
                             const float* v, int64_t ldv) {
  for (int r = 0; r < rows; ++r) {
    float* gr = g + r * ldg;
    const float* vr = v + r * ldv;
    switch (act) {
      case kSine:
        for (int j = 0; j < cols; ++j) gr[j] *= omega * fast_cos(omega * vr[j]);
        break;
      case kFiner:
        for (int j = 0; j < cols; ++j) {
          const float a = std::fabs(vr[j]);
          gr[j] *= omega * (2.f * a + 1.f) * fast_cos(omega * (a + 1.f) * vr[j]);
        }
        break;
      case kGaussian:
        for (int j = 0; j < cols; ++j) {
          const float u = omega * vr[j];
          gr[j] *= -2.f * omega * u * fast_exp(-u * u);
        }
        break;
      case kSigmoid:
        for (int j = 0; j < cols; ++j) gr[j] *= vr[j] * (1.f - vr[j]);
        break;
      case kSiLU:
        for (int j = 0; j < cols; ++j) {
          const float sg = 1.f / (1.f + fast_exp(-vr[j]));
          gr[j] *= sg * (1.f + vr[j] * (1.f - sg));
        }
        break;
      default:
        for (int j = 0; j < cols; ++j) gr[j] *= act_derivative(act, vr[j], omega);
    }
  }
}

// ---- narrow output layers (NeRF's colour: 3 outputs of a 16-column block) ----
// Per-row dot products over K (a multiple of kVec) instead of GEMMs over the padded columns:
// 3 x K multiply-adds a row instead of 16 x K, for the forward, the input gradient and the
// weight gradient alike.
constexpr int kNarrowMax = 4;

// The sum of a vector's lanes as a tree of halves (a serial lane-by-lane sum is a chain of
// kVec dependent adds, which cost the narrow forward more than its multiply-adds).
typedef float v4 __attribute__((vector_size(16)));
static inline float hsum(vec v) {
#if FIELDS_MLP_VEC == 16
  const v8 h = __builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7) +
               __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15);
#elif FIELDS_MLP_VEC == 8
  const v8 h = v;
#else
#error "hsum: FIELDS_MLP_VEC must be 8 or 16"
#endif
  v4 q = __builtin_shufflevector(h, h, 0, 1, 2, 3) + __builtin_shufflevector(h, h, 4, 5, 6, 7);
  q += __builtin_shufflevector(q, q, 2, 3, 0, 1);
  q += __builtin_shufflevector(q, q, 1, 0, 3, 2);
  return q[0];
}

// c[r, j] = epilogue(bias[j] + a[r, :K] . wt[j, :K]) for j < n_out, c[r, j] = epilogue(bias[j])
// (bias 0 there) for n_out <= j < n_pad. wt: (n_out, K) row-major.
template <int NO>
static void narrow_forward(int epi, int rows, const float* a, int64_t lda, int K,
                           const float* wt, int n_pad, const float* bias, float* c, int64_t ldc) {
  for (int r = 0; r < rows; ++r) {
    const float* ar = a + r * lda;
    vec acc[NO];
#pragma GCC unroll 4
    for (int j = 0; j < NO; ++j) acc[j] = vec{} + 0.f;
    for (int k = 0; k < K; k += kVec) {
      const vec x = vecload(ar + k);
#pragma GCC unroll 4
      for (int j = 0; j < NO; ++j) acc[j] += x * vecload(wt + j * K + k);
    }
    float sum[NO];
#pragma GCC unroll 4
    for (int j = 0; j < NO; ++j) sum[j] = hsum(acc[j]);
    float* cr = c + r * ldc;
    for (int j = 0; j < n_pad; ++j) {
      float v = (bias != nullptr ? bias[j] : 0.f) + (j < NO ? sum[j] : 0.f);
      if (epi == kStoreReLU) v = v > 0.f ? v : 0.f;
      else if (epi == kStoreLeaky) v = v > 0.f ? v : kLeakySlope * v;
      cr[j] = v;
    }
  }
}

// dprev[r, :K] = epilogue(sum_j dz[r, j] * W[j, :K]), W's rows read from the packed transposed
// panels (pt: for each 16-input block kb, (n_pad, 16) with W[j, kb * 16 + i] at j * 16 + i).
template <int NO>
static void narrow_input_grad(int epi, int rows, const float* dz, int64_t ldz, const float* pt,
                              int n_pad, int K, float* c, int64_t ldc, const float* aux,
                              int64_t ldaux) {
  const vec zero = vec{} + 0.f;
  const vec slope = zero + kLeakySlope;
  for (int r = 0; r < rows; ++r) {
    float g[NO];
#pragma GCC unroll 4
    for (int j = 0; j < NO; ++j) g[j] = dz[r * ldz + j];
    for (int k = 0; k < K; k += kVec) {
      const float* w = pt + static_cast<int64_t>(k / 16) * n_pad * 16 + (k % 16);
      vec v = zero;
#pragma GCC unroll 4
      for (int j = 0; j < NO; ++j) v += g[j] * vecload(w + j * 16);
      if (epi == kMaskReLU) {
        const vec m = vecload(aux + r * ldaux + k);
        v = m > zero ? v : zero;
      } else if (epi == kMaskLeaky) {
        const vec m = vecload(aux + r * ldaux + k);
        v = m > zero ? v : v * slope;
      }
      vecstore(c + r * ldc + k, v);
    }
  }
}

// wgrad_t[k, j] += sum_r a[r, k] * dz[r, j] for j < NO (wgrad_t: (K, n_pad)), in chunks of 4
// vectors of k; dbias[j] += column sums of dz over the n_pad columns.
template <int NO>
static void narrow_weight_grad(int rows, const float* a, int64_t lda, int K, const float* dz,
                               int64_t ldz, int n_pad, float* wgrad_t, float* dbias) {
  constexpr int kChunkVecs = 4;
  for (int k0 = 0; k0 < K; k0 += kChunkVecs * kVec) {
    const int nv = std::min(kChunkVecs, (K - k0) / kVec);
    vec acc[NO][kChunkVecs];
#pragma GCC unroll 4
    for (int j = 0; j < NO; ++j)
#pragma GCC unroll 4
      for (int v = 0; v < kChunkVecs; ++v) acc[j][v] = vec{} + 0.f;
    if (nv == kChunkVecs) {
      for (int r = 0; r < rows; ++r) {
        vec x[kChunkVecs];
#pragma GCC unroll 4
        for (int v = 0; v < kChunkVecs; ++v) x[v] = vecload(a + r * lda + k0 + v * kVec);
#pragma GCC unroll 4
        for (int j = 0; j < NO; ++j) {
          const float s = dz[r * ldz + j];
#pragma GCC unroll 4
          for (int v = 0; v < kChunkVecs; ++v) acc[j][v] += s * x[v];
        }
      }
    } else {
      for (int r = 0; r < rows; ++r)
        for (int j = 0; j < NO; ++j) {
          const float s = dz[r * ldz + j];
          for (int v = 0; v < nv; ++v) acc[j][v] += s * vecload(a + r * lda + k0 + v * kVec);
        }
    }
    for (int j = 0; j < NO; ++j)
      for (int v = 0; v < nv; ++v)
        for (int i = 0; i < kVec; ++i) wgrad_t[(k0 + v * kVec + i) * n_pad + j] += acc[j][v][i];
  }
  if (dbias != nullptr) add_column_sums(rows, dz, ldz, n_pad, dbias);
}

// The narrow path's dispatch on the number of real outputs (1..kNarrowMax).
#define FIELDS_NARROW_CASES(call) \
  switch (n_out) {                \
    case 1: call(1); break;       \
    case 2: call(2); break;       \
    case 3: call(3); break;       \
    default: call(4); break;      \
  }

// A layer takes the narrow path when it is the output layer with at most kNarrowMax outputs
// (its input, the hidden width, is whole vectors).
static inline bool narrow_layer(const Dims& d, int l) {
  return l == d.depth && d.n_out <= kNarrowMax && d.in_dim(l) % kVec == 0 &&
         d.in_dim(l) % 16 == 0;
}

// The forward of a narrow output layer: wt gets W (n_out, K) from the packed (K, 16) panel.
static void narrow_forward_layer(int epi, int rows, const float* a, int64_t lda, int K,
                                 const float* panel, int n_out, int n_pad, const float* bias,
                                 float* c, int64_t ldc, float* wt) {
  for (int j = 0; j < n_out; ++j)
    for (int k = 0; k < K; ++k) wt[j * K + k] = panel[k * 16 + j];
#define FIELDS_NARROW_FWD(NO) narrow_forward<NO>(epi, rows, a, lda, K, wt, n_pad, bias, c, ldc)
  FIELDS_NARROW_CASES(FIELDS_NARROW_FWD)
#undef FIELDS_NARROW_FWD
}

static int forward_epilogue(int act) {
  if (act == kReLU) return kStoreReLU;
  if (act == kLeakyReLU) return kStoreLeaky;
  return kStore;
}

// Copies rows [row0, row0 + valid) of src (cols wide) into the first `rows` rows of a tile
// with leading dimension ld, zero elsewhere (padded rows and columns).
static void load_tile(const float* src, int64_t row0, int valid, int rows, int cols, float* tile,
                      int ld) {
  for (int r = 0; r < rows; ++r) {
    float* t = tile + r * ld;
    if (r < valid) {
      std::memcpy(t, src + (row0 + r) * cols, sizeof(float) * cols);
      std::memset(t + cols, 0, sizeof(float) * (ld - cols));
    } else {
      std::memset(t, 0, sizeof(float) * ld);
    }
  }
}

static void store_tile(const float* tile, int ld, int valid, int cols, float* dst, int64_t row0) {
  for (int r = 0; r < valid; ++r)
    std::memcpy(dst + (row0 + r) * cols, tile + r * ld, sizeof(float) * cols);
}

static void forward_impl(const Dims& d, const float* packed, const float* x, float* y,
                         int64_t rows, int64_t tile_begin, int64_t tile_end, float* ws,
                         const Saved* saved) {
  const int R = kTileRows;
  const int wmax = d.max_pad();
  float* x_tile = ws;                                 // (R, n_in)
  float* buf[2] = {x_tile + R * d.n_in, x_tile + R * d.n_in + R * wmax};  // (R, wmax) x 2
  const bool z_saved = needs_preactivation(d.act);
  const bool out_z = needs_preactivation(d.out_act);
  // the output layer's weights as rows, for the narrow path (n_out <= kNarrowMax)
  float wt[kNarrowMax * 1024];

  for (int64_t t = tile_begin; t < tile_end; ++t) {
    const int64_t row0 = t * R;
    const int valid = static_cast<int>(rows - row0 < R ? rows - row0 : R);
    const int rt = round_up(valid, kRowBlock);  // rows computed: a short last tile stays short
    // A whole tile reads its rows of x in place and writes its rows of y in place (when y's
    // width is whole column blocks); a short last tile goes through zero-padded buffers.
    const bool whole = valid == R;
    const float* in = x + row0 * d.n_in;
    if (!whole) {
      load_tile(x, row0, valid, rt, d.n_in, x_tile, d.n_in);
      in = x_tile;
    }
    int64_t ld_in = d.n_in;
    const float* panels = packed;
    for (int l = 0; l < d.n_layers(); ++l) {
      const int K = d.in_dim(l);
      const int n_pad = d.out_pad(l);
      const bool last = l == d.depth;
      const int act = last ? d.out_act : d.act;
      const float* bias = d.bias ? panels + static_cast<int64_t>(K) * n_pad : nullptr;
      // Where this layer's output (post-activation) goes, and where its pre-activation
      // goes when the epilogue cannot apply the activation.
      float* out;
      int64_t ld_out;
      if (saved && !last) {
        out = saved->a[l] + row0 * d.width;
        ld_out = d.width;
      } else if (last && whole && n_pad == d.n_out) {
        out = y + row0 * d.n_out;
        ld_out = d.n_out;
      } else {
        out = buf[l & 1];
        ld_out = wmax;
      }
      const int epi = forward_epilogue(act);
      if (epi != kStore || act == kNone) {
        if (narrow_layer(d, l))
          narrow_forward_layer(epi, rt, in, ld_in, K, panels, d.n_out, n_pad, bias, out, ld_out,
                               wt);
        else
          gemm_tile_epilogue(epi, rt, in, ld_in, K, panels, n_pad, bias, out, ld_out, nullptr,
                             0);
        if (saved && last && act != kNone)  // ReLU-like output: keep the output
          for (int r = 0; r < rt; ++r)
            std::memcpy(saved->out + (row0 + r) * n_pad, out + r * ld_out, sizeof(float) * n_pad);
      } else {
        float* z = out;
        int64_t ld_z = ld_out;
        if (saved && !last && z_saved) {
          z = saved->z[l] + row0 * d.width;
          ld_z = d.width;
        } else if (saved && last && out_z) {
          z = saved->out + row0 * n_pad;
          ld_z = n_pad;
        }
        if (narrow_layer(d, l))
          narrow_forward_layer(kStore, rt, in, ld_in, K, panels, d.n_out, n_pad, bias, z, ld_z,
                               wt);
        else
          gemm_tile_epilogue(kStore, rt, in, ld_in, K, panels, n_pad, bias, z, ld_z, nullptr, 0);
        apply_activation(act, d.omega, rt, n_pad, z, ld_z, out, ld_out);
        if (saved && last && !out_z)
          for (int r = 0; r < rt; ++r)
            std::memcpy(saved->out + (row0 + r) * n_pad, out + r * ld_out, sizeof(float) * n_pad);
      }
      panels += static_cast<int64_t>(K) * n_pad + (d.bias ? n_pad : 0);
      in = out;
      ld_in = ld_out;
    }
    if (in != y + row0 * d.n_out) store_tile(in, static_cast<int>(ld_in), valid, d.n_out, y, row0);
  }
}

static void backward_impl(const Dims& d, const float* packed_t, const float* x, const float* dy,
                          float* dx, int64_t rows, int64_t tile_begin, int64_t tile_end,
                          const Saved& saved, float* ws, float* wgrad) {
  const int R = kTileRows;
  const int wmax = d.max_pad();
  float* x_tile = ws;                                           // (R, n_in)
  float* g[2] = {x_tile + R * d.n_in, x_tile + R * d.n_in + R * wmax};  // (R, wmax) x 2
  const bool z_saved = needs_preactivation(d.act);

  // Offsets of each layer's packed transposed weights and weight-gradient block.
  int64_t panel_off[64], wgrad_off[64];
  {
    int64_t p = 0, w = 0;
    for (int l = 0; l < d.n_layers(); ++l) {
      panel_off[l] = p;
      wgrad_off[l] = w;
      p += static_cast<int64_t>(d.out_pad(l)) * d.in_pad(l);
      w += static_cast<int64_t>(d.in_dim(l)) * d.out_pad(l) + d.out_pad(l);
    }
  }

  for (int64_t t = tile_begin; t < tile_end; ++t) {
    const int64_t row0 = t * R;
    const int valid = static_cast<int>(rows - row0 < R ? rows - row0 : R);
    const int rt = round_up(valid, kRowBlock);  // rows the forward computed
    const int n_out_pad = d.out_pad(d.depth);

    // dz of the output layer: dy in place for a whole tile whose output needs neither
    // padding nor an activation's derivative.
    const bool whole = valid == R;
    float* dz = g[0];
    int64_t ld_dz = wmax;
    if (whole && d.out_act == kNone && n_out_pad == d.n_out) {
      dz = const_cast<float*>(dy + row0 * d.n_out);  // read only: layers write to g[]
      ld_dz = d.n_out;
    } else {
      load_tile(dy, row0, valid, rt, d.n_out, dz, wmax);
      if (d.out_act != kNone)
        apply_derivative(d.out_act, d.omega, rt, n_out_pad, dz, wmax,
                         saved.out + row0 * n_out_pad, n_out_pad);
    }
    const float* x_in = x + row0 * d.n_in;
    if (!whole) {
      load_tile(x, row0, valid, rt, d.n_in, x_tile, d.n_in);
      x_in = x_tile;
    }

    for (int l = d.depth; l >= 0; --l) {
      const int K = d.in_dim(l);
      const int n_pad = d.out_pad(l);
      const float* a_in = l == 0 ? x_in : saved.a[l - 1] + row0 * d.width;
      const int64_t ld_in = l == 0 ? d.n_in : d.width;
      float* wg = wgrad + wgrad_off[l];
      const bool narrow = narrow_layer(d, l);
      if (narrow) {
        const int n_out = d.n_out;
        float* db = d.bias ? wg + static_cast<int64_t>(K) * n_pad : nullptr;
#define FIELDS_NARROW_WG(NO) narrow_weight_grad<NO>(valid, a_in, ld_in, K, dz, ld_dz, n_pad, wg, db)
        FIELDS_NARROW_CASES(FIELDS_NARROW_WG)
#undef FIELDS_NARROW_WG
      } else {
        wgrad_tile(valid, a_in, ld_in, K, dz, ld_dz, n_pad, wg,
                   d.bias ? wg + static_cast<int64_t>(K) * n_pad : nullptr);
      }

      if (l == 0 && dx == nullptr) break;
      float* dprev = g[(d.depth - l + 1) & 1];
      const float* pt = packed_t + panel_off[l];
      const int k_pad = d.in_pad(l);
      if (l == 0) {
        if (whole && k_pad == d.n_in) {  // straight into dx
          gemm_tile_epilogue(kStore, rt, dz, ld_dz, n_pad, pt, k_pad, nullptr,
                             dx + row0 * d.n_in, d.n_in, nullptr, 0);
        } else {
          gemm_tile_epilogue(kStore, rt, dz, ld_dz, n_pad, pt, k_pad, nullptr, dprev, wmax,
                             nullptr, 0);
          store_tile(dprev, wmax, valid, d.n_in, dx, row0);
        }
        break;
      }
      const int epi = d.act == kReLU ? kMaskReLU : d.act == kLeakyReLU ? kMaskLeaky : kStore;
      if (narrow) {
        const int n_out = d.n_out;
#define FIELDS_NARROW_DX(NO) \
  narrow_input_grad<NO>(epi, rt, dz, ld_dz, pt, n_pad, K, dprev, wmax, a_in, ld_in)
        FIELDS_NARROW_CASES(FIELDS_NARROW_DX)
#undef FIELDS_NARROW_DX
      } else {
        gemm_tile_epilogue(epi, rt, dz, ld_dz, n_pad, pt, k_pad, nullptr, dprev, wmax, a_in,
                           ld_in);
      }
      if (epi == kStore && d.act != kNone) {
        const float* v = z_saved ? saved.z[l - 1] + row0 * d.width : a_in;
        apply_derivative(d.act, d.omega, rt, d.width, dprev, wmax, v, d.width);
      }
      dz = dprev;
      ld_dz = wmax;
    }
  }
}
