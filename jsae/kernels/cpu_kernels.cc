// CPU kernels for the sparse TopK path, registered with XLA through the typed FFI.
//
// Every kernel treats the leading dimensions of its operands as a batch of
// independent problems (one per model of a vmapped latent-size group, or one per
// row for top-k), and splits that batch across threads.
//
//   jsae_topk          x [..., L] f32, kk [...] s32 → vals [..., K] f32, idx [..., K] s32
//                      The kk largest entries of each row (kk ≤ K; K = the output width).
//                      Order: XLA's total order on floats (-NaN < -inf < … < -0 < +0 < …
//                      < +inf < +NaN); among equal values the lower index ranks first —
//                      exactly lax.top_k's rule. sorted=1: positions 0..K-1 hold ranks
//                      0..K-1 (then kk must equal K: lax.top_k). sorted=0: positions
//                      0..kk-1 hold the top kk in no particular order and positions
//                      kk..K-1 hold other entries of the row (callers mask them).
//   jsae_topk_masked   x [..., R, L] f32, mask [..., L] pred → vals, idx [..., R, K]:
//                      jsae_topk of where(mask, x, -inf) with kk = K, where one mask
//                      serves the R rows of a problem (AuxK: a model's dead latents).
//   jsae_sparse_decode w [..., L, M], v [..., B, K], idx [..., B, K] → out [..., B, M]
//                      out_b = Σ_j v_bj · w[idx_bj]   (entries with v = 0 are skipped)
//   jsae_gather_dot    w [..., L, M], g [..., B, M], idx [..., B, K], v [..., B, K]
//                      → out [..., B, K]: out_bj = g_b · w[idx_bj] where v_bj ≠ 0, else 0
//   jsae_decoder_backward w [..., L, M], g [..., B, M], v [..., B, K], idx [..., B, K]
//                      → dv [..., B, K], dw [..., L, M]: jsae_gather_dot(w, g, idx, v) and
//                      the out of jsae_scatter_outer(g, v, idx) in one sweep
//   jsae_scatter_outer g [..., B, M], c [..., B, K], idx [..., B, K]
//                      → out [..., L, M], csum [..., L]
//                      out[l] = Σ_{(b,j): idx_bj = l} c_bj · g_b ;  csum[l] = Σ c_bj
//                      (entries with c = 0 are skipped)
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <limits>
#include <numeric>
#include <thread>
#include <vector>

#if defined(__AVX2__)
#include <immintrin.h>
#endif

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

// ----------------------------------------------------------------- threads
int NumThreads() {
  static const int n = [] {
    if (const char* env = std::getenv("JSAE_KERNEL_THREADS")) {
      int v = std::atoi(env);
      if (v > 0) return v;
    }
    unsigned hw = std::thread::hardware_concurrency();
    return hw == 0 ? 1 : static_cast<int>(hw);
  }();
  return n;
}

// Runs fn(task) for task in [0, ntasks) on up to NumThreads() threads (the caller
// is one of them); tasks are claimed dynamically, so uneven tasks balance.
void ParallelFor(int64_t ntasks, const std::function<void(int64_t)>& fn) {
  if (ntasks <= 0) return;
  int nthreads = static_cast<int>(std::min<int64_t>(NumThreads(), ntasks));
  if (nthreads <= 1) {
    for (int64_t t = 0; t < ntasks; ++t) fn(t);
    return;
  }
  std::atomic<int64_t> next{0};
  auto worker = [&] {
    for (int64_t t = next.fetch_add(1); t < ntasks; t = next.fetch_add(1)) fn(t);
  };
  std::vector<std::thread> threads;
  threads.reserve(nthreads - 1);
  for (int i = 1; i < nthreads; ++i) threads.emplace_back(worker);
  worker();
  for (auto& th : threads) th.join();
}

// ------------------------------------------------------------- selection
// XLA's total order on float32 as a signed 32-bit key.
inline int32_t OrderKey(float f) {
  int32_t b;
  std::memcpy(&b, &f, 4);
  return b ^ ((b >> 31) & 0x7FFFFFFF);
}

// (key, index) packed so that a larger uint64 ranks first: larger key, then lower index.
inline uint64_t Pack(int32_t key, uint32_t index) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(key) ^ 0x80000000u) << 32) |
         static_cast<uint64_t>(0xFFFFFFFFu - index);
}
inline uint32_t Unpack(uint64_t packed) { return 0xFFFFFFFFu - static_cast<uint32_t>(packed); }
inline int32_t UnpackKey(uint64_t packed) {
  return static_cast<int32_t>(static_cast<uint32_t>(packed >> 32) ^ 0x80000000u);
}

#if defined(__AVX2__)
// For each 8-bit lane mask, the lane numbers of its set bits packed to the front.
struct CompressTable {
  alignas(32) int32_t lanes[256][8];
  CompressTable() {
    for (int m = 0; m < 256; ++m) {
      int n = 0;
      for (int j = 0; j < 8; ++j)
        if (m & (1 << j)) lanes[m][n++] = j;
      for (; n < 8; ++n) lanes[m][n] = 0;
    }
  }
};
const CompressTable kCompress;
#endif

// Writes the index i of every entry with key(x[i]) ≥ thr to out (branch-free), in
// increasing order. Returns how many there were, or cap + 1 as soon as more than
// cap are found (out needs room for cap + 8 entries).
int64_t Collect(const float* x, int64_t n, int32_t thr, uint32_t* out, int64_t cap) {
  int64_t c = 0;
  int64_t i = 0;
#if defined(__AVX2__)
  const __m256i lowmask = _mm256_set1_epi32(0x7FFFFFFF);
  const __m256i thr_v = _mm256_set1_epi32(thr);
  const __m256i ones = _mm256_set1_epi32(-1);
  __m256i base = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  const __m256i eight = _mm256_set1_epi32(8);
  for (; i + 8 <= n; i += 8) {
    __m256i b = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + i));
    __m256i key = _mm256_xor_si256(b, _mm256_and_si256(_mm256_srai_epi32(b, 31), lowmask));
    // key ≥ thr  ⇔  not (thr > key)
    __m256i ge = _mm256_xor_si256(_mm256_cmpgt_epi32(thr_v, key), ones);
    unsigned m = static_cast<unsigned>(_mm256_movemask_ps(_mm256_castsi256_ps(ge)));
    __m256i perm = _mm256_load_si256(reinterpret_cast<const __m256i*>(kCompress.lanes[m]));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + c), _mm256_permutevar8x32_epi32(base, perm));
    c += __builtin_popcount(m);
    base = _mm256_add_epi32(base, eight);
    if (c > cap) return cap + 1;
  }
#endif
  for (; i < n; ++i) {
    if (OrderKey(x[i]) >= thr) {
      if (c == cap) return cap + 1;
      out[c++] = static_cast<uint32_t>(i);
    }
  }
  return c;
}

// Permutes the distinct values a[0..c) so that the n largest are in a[0..n) (in no
// order), by
// quickselect with a branch-free partition (each value is written to both sides'
// buffers, one cursor advances); scratch needs room for c values.
void SelectTop(uint64_t* a, int64_t c, int64_t n, uint64_t* scratch) {
  while (n > 0 && c > n) {
    uint64_t p0 = a[0], p1 = a[c / 2], p2 = a[c - 1];  // median of three as the pivot
    uint64_t pivot = std::max(std::min(p0, p1), std::min(std::max(p0, p1), p2));
    int64_t hi = 0, lo = 0;
    for (int64_t i = 0; i < c; ++i) {
      const uint64_t v = a[i];
      const bool above = v > pivot;
      a[hi] = v;  // hi ≤ i: never overwrites an unread value
      scratch[lo] = v;
      hi += above;
      lo += !above;
    }
    // a[0..hi): values above the pivot; scratch[0..lo): the pivot and values below.
    std::copy(scratch, scratch + lo, a + hi);  // a[0..c) stays a permutation of its values
    if (hi >= n) {
      c = hi;
    } else {
      // the pivot is the largest of the rest: take it, then go on among the others
      int64_t at = hi;
      for (int64_t i = hi; i < hi + lo; ++i)
        if (a[i] == pivot) at = i;
      std::swap(a[hi], a[at]);
      if (hi + 1 >= n) return;
      a += hi + 1;
      n -= hi + 1;
      c = lo - 1;
    }
  }
}

// Selects the top kk of one row into vals/idx (width K). `thr` carries a
// collection threshold from row to row of the same problem (a model's rows look
// alike); it only affects speed, never the result: a row whose collection falls
// short of K or overflows is redone over the whole row, which also re-estimates
// the threshold as the key at rank ~2K.
struct RowSelector {
  int64_t L, K;
  bool sorted;
  std::vector<uint64_t> cand, scratch;
  std::vector<uint32_t> hits;
  int32_t thr = 0;
  bool have_thr = false;

  RowSelector(int64_t L_, int64_t K_, bool sorted_) : L(L_), K(K_), sorted(sorted_), cand(L_), scratch(L_), hits(L_ + 8) {}

  void Select(const float* x, int64_t kk, float* vals, int32_t* idx) {
    kk = std::max<int64_t>(0, std::min(kk, K));
    const int64_t want = std::min<int64_t>(L, 2 * K + 8);  // aimed-at candidates per row
    const int64_t cap = std::min<int64_t>(L, 6 * K + 64);
    uint64_t* b = cand.data();
    auto desc = std::greater<uint64_t>();
    int64_t c = -1;
    if (have_thr) {
      c = Collect(x, L, thr, hits.data(), cap);
      if (c > cap || c < K) {
        c = -1;
      } else {
        for (int64_t j = 0; j < c; ++j) b[j] = Pack(OrderKey(x[hits[j]]), hits[j]);
      }
    }
    const bool whole_row = c < 0;
    if (whole_row) {
      c = L;
      for (int64_t i = 0; i < L; ++i) b[i] = Pack(OrderKey(x[i]), static_cast<uint32_t>(i));
    }
    uint64_t* tmp = scratch.data();
    if ((whole_row || c > 3 * want) && 4 * K < L) {
      // (Re-)estimate the threshold: the smallest key among the top `want`.
      // (Short rows, 4K ≥ L, are always taken whole: as cheap as a collection.)
      SelectTop(b, c, want, tmp);
      have_thr = true;
      thr = UnpackKey(*std::min_element(b, b + want));
      c = want;  // the top `want` ⊇ the top K are in front
    }
    SelectTop(b, c, K, tmp);
    if (sorted) {
      std::sort(b, b + K, desc);
    } else if (kk > 0 && kk < K) {
      SelectTop(b, K, kk, tmp);
    }
    for (int64_t j = 0; j < K; ++j) {
      uint32_t i = Unpack(b[j]);
      idx[j] = static_cast<int32_t>(i);
      vals[j] = x[i];
    }
  }
};

ffi::Error TopkImpl(ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::S32> kk, ffi::ResultBuffer<ffi::F32> vals,
                    ffi::ResultBuffer<ffi::S32> idx, int32_t sorted) {
  auto xd = x.dimensions();
  auto od = vals->dimensions();
  if (xd.size() < 1 || od.size() != xd.size())
    return ffi::Error::InvalidArgument("jsae_topk: x and the outputs must have the same rank >= 1");
  const int64_t L = xd.back(), K = od.back();
  if (K > L) return ffi::Error::InvalidArgument("jsae_topk: k is larger than the row");
  const int64_t rows = x.element_count() / std::max<int64_t>(L, 1);
  // kk has the leading (batch) dims of x without the last two, or is a scalar per row group.
  const int64_t nk = kk.element_count();
  if (nk < 1 || rows % nk != 0) return ffi::Error::InvalidArgument("jsae_topk: k does not match the batch");
  const int64_t rows_per_k = rows / nk;
  const float* xp = x.typed_data();
  const int32_t* kp = kk.typed_data();
  float* vp = vals->typed_data();
  int32_t* ip = idx->typed_data();
  if (sorted && nk > 0) {
    for (int64_t g = 0; g < nk; ++g)
      if (kp[g] != K) return ffi::Error::InvalidArgument("jsae_topk: sorted output needs k equal to the width");
  }
  if (L == 0 || K == 0) return ffi::Error::Success();
  // Tasks: chunks of rows that share one k (one model), so the threshold carries over.
  const int64_t chunk = std::max<int64_t>(16, std::min<int64_t>(rows_per_k, 256));
  const int64_t chunks_per_k = (rows_per_k + chunk - 1) / chunk;
  ParallelFor(nk * chunks_per_k, [&](int64_t t) {
    const int64_t g = t / chunks_per_k;
    const int64_t r0 = g * rows_per_k + (t % chunks_per_k) * chunk;
    const int64_t r1 = std::min(r0 + chunk, (g + 1) * rows_per_k);
    RowSelector sel(L, K, sorted != 0);
    for (int64_t r = r0; r < r1; ++r) sel.Select(xp + r * L, kp[g], vp + r * K, ip + r * K);
  });
  return ffi::Error::Success();
}

// Top K of where(mask, x, -inf) per row; mask [..., L] is one per problem (e.g. a
// model's dead latents), shared by its rows. The masked entries are compacted once
// per task; rows then select among them (RowSelector on the compacted values, whose
// order keeps the tie rule). With fewer than K unmasked entries the rest of the
// output is filled with value -inf at the lowest other indices, as lax.top_k would.
ffi::Error TopkMaskedImpl(ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::PRED> mask, ffi::ResultBuffer<ffi::F32> vals,
                          ffi::ResultBuffer<ffi::S32> idx, int32_t sorted) {
  auto xd = x.dimensions();
  const int64_t L = xd.back(), K = vals->dimensions().back();
  if (K > L) return ffi::Error::InvalidArgument("jsae_topk_masked: k is larger than the row");
  const int64_t rows = x.element_count() / std::max<int64_t>(L, 1);
  const int64_t nm = mask.element_count() / std::max<int64_t>(L, 1);
  if (nm < 1 || rows % nm != 0 || mask.element_count() != nm * L)
    return ffi::Error::InvalidArgument("jsae_topk_masked: mask does not match the rows");
  const int64_t rows_per_m = rows / nm;
  const float* xp = x.typed_data();
  const bool* mp = mask.typed_data();
  float* vp = vals->typed_data();
  int32_t* ip = idx->typed_data();
  if (L == 0 || K == 0) return ffi::Error::Success();
  const float neg_inf = -std::numeric_limits<float>::infinity();
  const int64_t chunk = std::max<int64_t>(16, std::min<int64_t>(rows_per_m, 256));
  const int64_t chunks_per_m = (rows_per_m + chunk - 1) / chunk;
  ParallelFor(nm * chunks_per_m, [&](int64_t t) {
    const int64_t g = t / chunks_per_m;
    const int64_t r0 = g * rows_per_m + (t % chunks_per_m) * chunk;
    const int64_t r1 = std::min(r0 + chunk, (g + 1) * rows_per_m);
    std::vector<int32_t> live;
    for (int64_t l = 0; l < L; ++l)
      if (mp[g * L + l]) live.push_back(static_cast<int32_t>(l));
    const int64_t d = static_cast<int64_t>(live.size());
    std::vector<float> xs(d);
    if (d >= K) {
      RowSelector sel(d, K, sorted != 0);
      for (int64_t r = r0; r < r1; ++r) {
        const float* row = xp + r * L;
        for (int64_t j = 0; j < d; ++j) xs[j] = row[live[j]];
        int32_t* ir = ip + r * K;
        sel.Select(xs.data(), K, vp + r * K, ir);
        for (int64_t j = 0; j < K; ++j) ir[j] = live[ir[j]];
      }
      return;
    }
    // Fewer unmasked entries than K: every row takes all of them (sorted: by value)
    // and the same -inf fill at the lowest other indices.
    std::vector<int32_t> fill;
    for (int32_t l = 0, c = 0; static_cast<int64_t>(fill.size()) < K - d; ++l) {
      if (c < d && live[c] == l) { ++c; continue; }
      fill.push_back(l);
    }
    std::vector<uint64_t> top(d);
    for (int64_t r = r0; r < r1; ++r) {
      const float* row = xp + r * L;
      float* vr = vp + r * K;
      int32_t* ir = ip + r * K;
      if (sorted) {
        for (int64_t j = 0; j < d; ++j) top[j] = Pack(OrderKey(row[live[j]]), static_cast<uint32_t>(live[j]));
        std::sort(top.begin(), top.end(), std::greater<uint64_t>());
        for (int64_t j = 0; j < d; ++j) ir[j] = static_cast<int32_t>(Unpack(top[j]));
      } else {
        std::copy(live.begin(), live.end(), ir);
      }
      for (int64_t j = 0; j < d; ++j) vr[j] = row[ir[j]];
      for (int64_t j = d; j < K; ++j) {
        ir[j] = fill[j - d];
        vr[j] = neg_inf;
      }
    }
  });
  return ffi::Error::Success();
}

// --------------------------------------------------------- sparse algebra
// Σ_m a_m b_m with 8 (AVX2: 4 × 8) independent partial sums, so that the loop
// vectorises without reassociation flags.
inline float Dot(const float* a, const float* b, int64_t n) {
  int64_t m = 0;
  float s = 0.0f;
#if defined(__AVX2__) && defined(__FMA__)
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  __m256 acc2 = _mm256_setzero_ps(), acc3 = _mm256_setzero_ps();
  for (; m + 32 <= n; m += 32) {
    acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + m), _mm256_loadu_ps(b + m), acc0);
    acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + m + 8), _mm256_loadu_ps(b + m + 8), acc1);
    acc2 = _mm256_fmadd_ps(_mm256_loadu_ps(a + m + 16), _mm256_loadu_ps(b + m + 16), acc2);
    acc3 = _mm256_fmadd_ps(_mm256_loadu_ps(a + m + 24), _mm256_loadu_ps(b + m + 24), acc3);
  }
  for (; m + 8 <= n; m += 8) acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + m), _mm256_loadu_ps(b + m), acc0);
  __m256 acc = _mm256_add_ps(_mm256_add_ps(acc0, acc1), _mm256_add_ps(acc2, acc3));
  __m128 h = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
  h = _mm_add_ps(h, _mm_movehl_ps(h, h));
  h = _mm_add_ss(h, _mm_shuffle_ps(h, h, 1));
  s = _mm_cvtss_f32(h);
#else
  float part[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  for (; m + 8 <= n; m += 8)
    for (int u = 0; u < 8; ++u) part[u] += a[m + u] * b[m + u];
  for (int u = 0; u < 8; ++u) s += part[u];
#endif
  for (; m < n; ++m) s += a[m] * b[m];
  return s;
}

// out[0..M) = Σ_j c[j] · rows[j][0..M)  (entries with c = 0 skipped), accumulated
// in registers over blocks of 64 floats and stored once.
inline void AxpyRows(float* out, const float* const* rows, const float* c, int64_t n, int64_t M) {
  int64_t mb = 0;
#if defined(__AVX2__) && defined(__FMA__)
  for (; mb + 64 <= M; mb += 64) {
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
    __m256 a4 = _mm256_setzero_ps(), a5 = _mm256_setzero_ps(), a6 = _mm256_setzero_ps(), a7 = _mm256_setzero_ps();
    for (int64_t j = 0; j < n; ++j) {
      if (j + 4 < n) {  // rows are scattered in memory: fetch ahead
        const char* ahead = reinterpret_cast<const char*>(rows[j + 4] + mb);
        for (int line = 0; line < 256; line += 64) _mm_prefetch(ahead + line, _MM_HINT_T0);
      }
      if (c[j] == 0.0f) continue;
      const __m256 cv = _mm256_set1_ps(c[j]);
      const float* r = rows[j] + mb;
      a0 = _mm256_fmadd_ps(cv, _mm256_loadu_ps(r), a0);
      a1 = _mm256_fmadd_ps(cv, _mm256_loadu_ps(r + 8), a1);
      a2 = _mm256_fmadd_ps(cv, _mm256_loadu_ps(r + 16), a2);
      a3 = _mm256_fmadd_ps(cv, _mm256_loadu_ps(r + 24), a3);
      a4 = _mm256_fmadd_ps(cv, _mm256_loadu_ps(r + 32), a4);
      a5 = _mm256_fmadd_ps(cv, _mm256_loadu_ps(r + 40), a5);
      a6 = _mm256_fmadd_ps(cv, _mm256_loadu_ps(r + 48), a6);
      a7 = _mm256_fmadd_ps(cv, _mm256_loadu_ps(r + 56), a7);
    }
    float* o = out + mb;
    _mm256_storeu_ps(o, a0); _mm256_storeu_ps(o + 8, a1); _mm256_storeu_ps(o + 16, a2); _mm256_storeu_ps(o + 24, a3);
    _mm256_storeu_ps(o + 32, a4); _mm256_storeu_ps(o + 40, a5); _mm256_storeu_ps(o + 48, a6); _mm256_storeu_ps(o + 56, a7);
  }
#endif
  if (mb < M) {
    std::fill(out + mb, out + M, 0.0f);
    for (int64_t j = 0; j < n; ++j) {
      if (c[j] == 0.0f) continue;
      const float* r = rows[j];
      for (int64_t m = mb; m < M; ++m) out[m] += c[j] * r[m];
    }
  }
}

// One problem: out_b = Σ_j v_bj · w[idx_bj] for rows b in [b0, b1).
void DecodeRows(const float* w, const float* v, const int32_t* idx, int64_t K, int64_t M, int64_t b0, int64_t b1,
                float* out) {
  thread_local std::vector<const float*> rows;
  rows.resize(K);
  for (int64_t b = b0; b < b1; ++b) {
    for (int64_t j = 0; j < K; ++j) rows[j] = w + static_cast<int64_t>(idx[b * K + j]) * M;
    AxpyRows(out + b * M, rows.data(), v + b * K, K, M);
  }
}

// One problem: out_bj = g_b · w[idx_bj] where v_bj ≠ 0 (else 0), rows b in [b0, b1).
void GatherDotRows(const float* w, const float* g, const int32_t* idx, const float* v, int64_t K, int64_t M,
                   int64_t b0, int64_t b1, float* out) {
  for (int64_t b = b0; b < b1; ++b) {
    const float* gb = g + b * M;
    for (int64_t j = 0; j < K; ++j) {
#if defined(__AVX2__)
      if (j + 2 < K) {  // rows are scattered in memory: fetch ahead
        const char* ahead = reinterpret_cast<const char*>(w + static_cast<int64_t>(idx[b * K + j + 2]) * M);
        for (int64_t line = 0; line < M * 4; line += 64) _mm_prefetch(ahead + line, _MM_HINT_T0);
      }
#endif
      out[b * K + j] = v[b * K + j] == 0.0f ? 0.0f : Dot(gb, w + static_cast<int64_t>(idx[b * K + j]) * M, M);
    }
  }
}

// One problem, latents [l0, l1): out[l] = Σ_{idx_bj = l} c_bj g_b, csum[l] = Σ c_bj.
// The (b, j) entries are bucketed by latent first (counting sort), so each output
// row is accumulated in registers and written once, unless the output is narrow
// or fits the L2 cache. Buffers are per thread and reused across calls.
void ScatterOuterRows(const float* g, const float* c, const int32_t* idx, int64_t B, int64_t K, int64_t M,
                      int64_t L, int64_t l0, int64_t l1, float* out, float* csum) {
  const int64_t n = l1 - l0;
  const bool whole = l0 == 0 && l1 == L;
  if (M < 16 || n * M * 4 <= (256 << 10)) {
    // Narrow rows, or an output that stays in the L2 cache: add in place, reading
    // each g_b once, in order.
    std::fill(out + l0 * M, out + l1 * M, 0.0f);
    std::fill(csum + l0, csum + l1, 0.0f);
    for (int64_t e = 0; e < B * K; ++e) {
      const int64_t l = idx[e];
      if (c[e] == 0.0f || !(whole || (l >= l0 && l < l1))) continue;
      const float* gb = g + (e / K) * M;
      float* o = out + l * M;
      const float ce = c[e];
      for (int64_t m = 0; m < M; ++m) o[m] += ce * gb[m];
      csum[l] += ce;
    }
    return;
  }
  thread_local std::vector<int32_t> start, fill;
  thread_local std::vector<const float*> rows;
  thread_local std::vector<float> coef;
  start.assign(n + 1, 0);
  if (whole) {
    for (int64_t e = 0; e < B * K; ++e) start[idx[e] + 1] += c[e] != 0.0f;
  } else {
    for (int64_t e = 0; e < B * K; ++e) {
      const int64_t l = idx[e];
      if (l >= l0 && l < l1 && c[e] != 0.0f) ++start[l - l0 + 1];
    }
  }
  for (int64_t l = 0; l < n; ++l) start[l + 1] += start[l];
  if (static_cast<int64_t>(rows.size()) < start[n]) {
    rows.resize(start[n]);
    coef.resize(start[n]);
  }
  fill.assign(start.begin(), start.end() - 1);
  for (int64_t e = 0; e < B * K; ++e) {
    const int64_t l = idx[e];
    if (c[e] == 0.0f || !(whole || (l >= l0 && l < l1))) continue;
    const int32_t at = fill[l - l0]++;
    rows[at] = g + (e / K) * M;
    coef[at] = c[e];
  }
  for (int64_t l = 0; l < n; ++l) {
    const int64_t a = start[l], cnt = start[l + 1] - a;
    AxpyRows(out + (l0 + l) * M, rows.data() + a, coef.data() + a, cnt, M);
    float sum = 0.0f;
    for (int64_t j = a; j < a + cnt; ++j) sum += coef[j];
    csum[l0 + l] = sum;
  }
}

// How many disjoint latent ranges each of `batch` problems is split into, so that
// the tasks (problems × ranges) divide evenly among the threads: 7 models on 2
// threads become 14 tasks, not 4 + 3.
int64_t LatentParts(int64_t batch, int64_t L) {
  const int64_t t = NumThreads();
  int64_t parts = batch >= t ? t / std::gcd(batch, t) : (t + batch - 1) / batch;
  return std::max<int64_t>(1, std::min<int64_t>(parts, (L + 63) / 64));
}

// One problem, latents [l0, l1) — the decoder's backward pass in one sweep over the
// entries (b, j) whose latent lies in the range: dv_bj = g_b · w[idx_bj] where
// v_bj ≠ 0 (else 0) and dw[idx_bj] += v_bj g_b, each g_b read once, in order, and the
// dw rows of the range updated in place (a range is sized to stay in the L2 cache).
void DecoderBackwardRows(const float* w, const float* g, const float* v, const int32_t* idx, int64_t B, int64_t K,
                         int64_t M, int64_t l0, int64_t l1, float* dv, float* dw) {
  std::fill(dw + l0 * M, dw + l1 * M, 0.0f);
  for (int64_t b = 0; b < B; ++b) {
    const float* gb = g + b * M;
    for (int64_t j = 0; j < K; ++j) {
      const int64_t e = b * K + j, l = idx[e];
      if (l < l0 || l >= l1) continue;
      const float ve = v[e];
      if (ve == 0.0f) {
        dv[e] = 0.0f;
        continue;
      }
      dv[e] = Dot(gb, w + l * M, M);
      float* o = dw + l * M;
      for (int64_t m = 0; m < M; ++m) o[m] += ve * gb[m];
    }
  }
}

// Shapes [..., A, B] → (A, B, batch = product of the leading dims).
struct Trailing2 {
  int64_t a, b, batch;
};
Trailing2 Split2(const ffi::AnyBuffer::Dimensions& d, int64_t count) {
  const int64_t a = d[d.size() - 2], b = d.back();
  return {a, b, a * b == 0 ? 0 : count / (a * b)};
}

constexpr int64_t kRowChunk = 64;

ffi::Error SparseDecodeImpl(ffi::Buffer<ffi::F32> w, ffi::Buffer<ffi::F32> v, ffi::Buffer<ffi::S32> idx,
                            ffi::ResultBuffer<ffi::F32> out) {
  if (w.dimensions().size() < 2 || v.dimensions().size() != w.dimensions().size())
    return ffi::Error::InvalidArgument("jsae_sparse_decode: w [..., L, M] and v [..., B, K] need equal ranks");
  const auto [L, M, batch] = Split2(w.dimensions(), w.element_count());
  const auto [B, K, vb] = Split2(v.dimensions(), v.element_count());
  if (vb != batch) return ffi::Error::InvalidArgument("jsae_sparse_decode: batch dims differ");
  const int64_t chunks = (B + kRowChunk - 1) / kRowChunk;
  ParallelFor(batch * chunks, [&](int64_t t) {
    const int64_t n = t / chunks, b0 = (t % chunks) * kRowChunk, b1 = std::min(B, b0 + kRowChunk);
    DecodeRows(w.typed_data() + n * L * M, v.typed_data() + n * B * K, idx.typed_data() + n * B * K, K, M, b0, b1,
               out->typed_data() + n * B * M);
  });
  return ffi::Error::Success();
}

ffi::Error GatherDotImpl(ffi::Buffer<ffi::F32> w, ffi::Buffer<ffi::F32> g, ffi::Buffer<ffi::S32> idx,
                         ffi::Buffer<ffi::F32> v, ffi::ResultBuffer<ffi::F32> out) {
  if (w.dimensions().size() < 2 || idx.dimensions().size() != w.dimensions().size())
    return ffi::Error::InvalidArgument("jsae_gather_dot: w [..., L, M] and idx [..., B, K] need equal ranks");
  const auto [L, M, batch] = Split2(w.dimensions(), w.element_count());
  const auto [B, K, ib] = Split2(idx.dimensions(), idx.element_count());
  if (ib != batch) return ffi::Error::InvalidArgument("jsae_gather_dot: batch dims differ");
  const int64_t chunks = (B + kRowChunk - 1) / kRowChunk;
  ParallelFor(batch * chunks, [&](int64_t t) {
    const int64_t n = t / chunks, b0 = (t % chunks) * kRowChunk, b1 = std::min(B, b0 + kRowChunk);
    GatherDotRows(w.typed_data() + n * L * M, g.typed_data() + n * B * M, idx.typed_data() + n * B * K,
                  v.typed_data() + n * B * K, K, M, b0, b1, out->typed_data() + n * B * K);
  });
  return ffi::Error::Success();
}

ffi::Error ScatterOuterImpl(ffi::Buffer<ffi::F32> g, ffi::Buffer<ffi::F32> c, ffi::Buffer<ffi::S32> idx,
                            ffi::ResultBuffer<ffi::F32> out, ffi::ResultBuffer<ffi::F32> csum) {
  if (g.dimensions().size() < 2 || c.dimensions().size() != g.dimensions().size() ||
      out->dimensions().size() != g.dimensions().size())
    return ffi::Error::InvalidArgument("jsae_scatter_outer: g, c and out need equal ranks >= 2");
  const auto [B, M, batch] = Split2(g.dimensions(), g.element_count());
  const int64_t K = c.dimensions().back();
  const int64_t L = out->dimensions()[out->dimensions().size() - 2];
  // Tasks are whole problems when there are enough of them for the threads; otherwise
  // each problem is split into disjoint latent ranges (no two threads write one row).
  const int64_t parts = LatentParts(batch, L);
  ParallelFor(batch * parts, [&](int64_t t) {
    const int64_t n = t / parts, part = t % parts;
    ScatterOuterRows(g.typed_data() + n * B * M, c.typed_data() + n * B * K, idx.typed_data() + n * B * K, B, K, M,
                     L, L * part / parts, L * (part + 1) / parts, out->typed_data() + n * L * M,
                     csum->typed_data() + n * L);
  });
  return ffi::Error::Success();
}

ffi::Error DecoderBackwardImpl(ffi::Buffer<ffi::F32> w, ffi::Buffer<ffi::F32> g, ffi::Buffer<ffi::F32> v,
                               ffi::Buffer<ffi::S32> idx, ffi::ResultBuffer<ffi::F32> dv,
                               ffi::ResultBuffer<ffi::F32> dw) {
  if (w.dimensions().size() < 2 || v.dimensions().size() != w.dimensions().size() ||
      g.dimensions().size() != w.dimensions().size())
    return ffi::Error::InvalidArgument("jsae_decoder_backward: w, g, v and idx need equal ranks >= 2");
  const auto [L, M, batch] = Split2(w.dimensions(), w.element_count());
  const auto [B, K, vb] = Split2(v.dimensions(), v.element_count());
  if (vb != batch) return ffi::Error::InvalidArgument("jsae_decoder_backward: batch dims differ");
  // Ranges small enough for the L2 cache (≤ 256 KiB of dw rows), and enough tasks for the threads.
  const int64_t cache_parts = (L * M * 4 + (256 << 10) - 1) / (256 << 10);
  const int64_t parts = std::min<int64_t>(L, std::max(LatentParts(batch, L), cache_parts));
  ParallelFor(batch * parts, [&](int64_t t) {
    const int64_t n = t / parts, part = t % parts;
    DecoderBackwardRows(w.typed_data() + n * L * M, g.typed_data() + n * B * M, v.typed_data() + n * B * K,
                        idx.typed_data() + n * B * K, B, K, M, L * part / parts, L * (part + 1) / parts,
                        dv->typed_data() + n * B * K, dw->typed_data() + n * L * M);
  });
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(JsaeTopk, TopkImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::S32>>()
                                  .Attr<int32_t>("sorted"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(JsaeSparseDecode, SparseDecodeImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(JsaeGatherDot, GatherDotImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(JsaeScatterOuter, ScatterOuterImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(JsaeTopkMasked, TopkMaskedImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::PRED>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::S32>>()
                                  .Attr<int32_t>("sorted"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(JsaeDecoderBackward, DecoderBackwardImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());
