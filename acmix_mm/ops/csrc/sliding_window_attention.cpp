// Sliding-window attention on CPU: each query attends to the k x k window of an
// already padded key and value map, forward and backward.
//
// Layout: planes of one head, (N, d, H, W) contiguous, N = batch * heads. With
// channels outermost, every inner loop runs along a row of pixels (contiguous for
// stride 1), so the dot products of a query with its window become sums of rows
// that the compiler vectorises without horizontal reductions.
//
// The forward pass keeps only the log-sum-exp of each query; the backward pass
// recomputes the attention weights from it (as flash attention), in bands of query
// rows so that the k*k weights of a band are the only extra memory.
#include <torch/library.h>
#include <ATen/Parallel.h>
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>

#include "large_tensors.h"
#include "sliding_window_attention.h"
#include "vectorize.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <utility>
#include <vector>

namespace acmix_mm {
namespace {

// Query pixels handled together along a row: the k*k logits of a tile (25 KB in
// float32 at k = 7) stay in L1, and each row sum runs long enough to pay its set-up.
constexpr int64_t kTile = 128;

// exp for softmax arguments (<= 0): Cody-Waite reduction and a degree-6 polynomial,
// within a few float32 ulp (the tests hold float32 to float64). Plain arithmetic, so
// that loops around it vectorise (the C library's expf is a call the vectoriser cannot
// see through).
ACMIX_INLINE float exp_of(float x) {
  x = x < -87.0f ? -87.0f : x;
  const float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  const float r = (x - n * 0.693145751953125f) - n * 1.42860682030941723e-6f;
  float p = 1.38888888888888889e-3f;
  p = p * r + 8.33333333333333333e-3f;
  p = p * r + 4.16666666666666667e-2f;
  p = p * r + 1.66666666666666667e-1f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return p * scale;
}

// float64 is for tests and gradient checks: exact exp.
ACMIX_INLINE double exp_of(double x) { return std::exp(x); }

// acc[t] += sum of four products a_p[t] * b_p[t]: one load and store of acc per four
// products. Restrict-qualified parameters, so that the compiler vectorises without
// runtime alias checks.
template <typename T>
ACMIX_INLINE void sum4(T* __restrict acc, const T* __restrict a0, const T* __restrict a1,
                       const T* __restrict a2, const T* __restrict a3,
                       const T* __restrict b0, const T* __restrict b1,
                       const T* __restrict b2, const T* __restrict b3, int64_t n) {
  for (int64_t t = 0; t < n; ++t) {
    acc[t] += a0[t] * b0[t] + a1[t] * b1[t] + a2[t] * b2[t] + a3[t] * b3[t];
  }
}

// acc[t] += sum_p a_p[t] * b_p[t] for t < n, over `pairs` pairs (a multiple of four:
// callers pad with rows of zeros).
template <typename T>
ACMIX_INLINE void sum_products(T* acc, const T* const* a, const T* const* b,
                               int64_t pairs, int64_t n) {
  for (int64_t p = 0; p < pairs; p += 4) {
    sum4<T>(acc, a[p], a[p + 1], a[p + 2], a[p + 3], b[p], b[p + 1], b[p + 2], b[p + 3], n);
  }
}

// acc[t] += a[t] * b[t].
template <typename T>
ACMIX_INLINE void add_products(T* __restrict acc, const T* __restrict a,
                               const T* __restrict b, int64_t n) {
  for (int64_t t = 0; t < n; ++t) acc[t] += a[t] * b[t];
}

// The attention weights of one window offset, recomputed from the scaled logits and the
// log-sum-exp, stored and their products with the weights' gradients dP added to D
// (delta): D = sum_j P_j dP_j = dO . O, where the output is not kept.
template <typename T>
ACMIX_INLINE void weights_and_delta(const T* __restrict logits, const T* __restrict grads,
                                    const T* __restrict lse, T* __restrict delta,
                                    T* __restrict weights_out, T scale, int64_t n) {
  for (int64_t t = 0; t < n; ++t) {
    const T weight = exp_of(logits[t] * scale - lse[t]);
    weights_out[t] = weight;
    delta[t] += weight * grads[t];
  }
}

// The gradients of the raw logits of one window offset from its stored weights:
// weight * (dP - D) * scale.
template <typename T>
ACMIX_INLINE void logit_grads(T* __restrict grads, const T* __restrict weights,
                              const T* __restrict delta, T* __restrict grads_out, T scale,
                              int64_t n) {
  for (int64_t t = 0; t < n; ++t) {
    const T grad = weights[t] * (grads[t] - delta[t]) * scale;
    grads_out[t] = grad;
    grads[t] = grad;
  }
}

// The attention weights of one window offset, recomputed from the scaled logits and the
// log-sum-exp, and the gradients of the raw logits: weight * (dP - D) * scale.
template <typename T>
ACMIX_INLINE void weights_and_grads(const T* __restrict logits, T* __restrict grads,
                                    const T* __restrict lse, const T* __restrict delta,
                                    T* __restrict weights_out, T* __restrict grads_out,
                                    T scale, int64_t n) {
  for (int64_t t = 0; t < n; ++t) {
    const T weight = exp_of(logits[t] * scale - lse[t]);
    const T grad = weight * (grads[t] - delta[t]) * scale;
    weights_out[t] = weight;
    grads_out[t] = grad;
    grads[t] = grad;
  }
}

// Keys and values at stride S > 1 come in S phases of each row (phased below): padded
// column m * S + r at r * phase_w + m, so that the queries of a row read each window
// column j at unit stride, at column(x, j). At stride 1 the phase is the row.
struct Geometry {
  int64_t planes, dims, out_h, out_w, key_h, key_w, kernel, stride, phase_w;
  // The backward pass's band buffers: rows of `pitch`, the row's pixels from `lead` on,
  // zeros around them (so that the key-side sums read whole vectors at the row's ends),
  // `band` rows per window offset or channel.
  int64_t band = 0, pitch = 0, lead = 0;
  // Whether the band buffers are a ring of `band` query rows (query row y at row
  // y % band) rather than the rows of one band from its first query row on.
  bool ring = false;
  // Whether the blocked dots and sums build the window columns of a key row by shuffles
  // (window_columns: at stride 1, where shuffles_pay()).
  bool shuffled = false;
  // The channel stride of window_sums' output (the forward's output, the query
  // gradient): a plane (0), or a taller map's where the output is a band of its rows.
  int64_t sums_stride = 0;
  // The channel stride of the queries: a plane (0), or a taller map's (queries read in
  // place from the projection's planes).
  int64_t query_stride = 0;
  int64_t out_plane() const { return out_h * out_w; }
  int64_t sums_channel() const { return sums_stride ? sums_stride : out_plane(); }
  int64_t query_channel() const { return query_stride ? query_stride : out_plane(); }
  int64_t key_plane() const { return key_h * key_w; }
  int64_t window() const { return kernel * kernel; }
  int64_t column(int64_t x, int64_t j) const { return (j % stride) * phase_w + j / stride + x; }
  // Row `row` of the band buffers' block `block` (a window offset, or a channel).
  int64_t band_at(int64_t block, int64_t row) const { return (block * band + row) * pitch + lead; }
  // The band buffers' row of query row y, in a band from query row y_begin on.
  int64_t band_row(int64_t y, int64_t y_begin) const { return ring ? y % band : y - y_begin; }
  // Register-blocked row kernels exist for kernels 3, 5 and 7 (any stride: the phases
  // make every window column a unit-stride row).
  bool blocked() const {
#ifdef ACMIX_VECTORS
    return kernel == 3 || kernel == 5 || kernel == 7;
#else
    return false;
#endif
  }
  // ... and the key side reads the band copies whole vectors at a time, which needs the
  // phases no wider than the windows of a row reach (as the operators pack them), so
  // that every read beyond a band row's pixels lands in its zero margins.
  // (Key-side kernels exist for strides 1 and 2.)
  bool blocked_keys() const {
    return blocked() && stride <= 2 && phase_w <= out_w + kernel - 1;
  }
};

// The width of the tile of queries from x0 on: kTile, but never leaving a last tile
// narrower than a vector where the row has one (rows are covered by whole vectors, the
// last one shifted back over its neighbour: see window_dots).
template <typename T>
int64_t tile_width(int64_t out_w, int64_t x0) {
  const int64_t n = std::min(kTile, out_w - x0), rest = out_w - x0 - n;
#ifdef ACMIX_VECTORS
  if (rest > 0 && rest < kLanes<T>) return n - kLanes<T>;
#endif
  return n;
}

// The blocked kernels' template argument K for g.kernel (3, 5 or 7): a plain switch,
// as a lambda would be compiled apart from the caller's clone, for the baseline CPU.
#define ACMIX_WITH_KERNEL(kernel, CALL) \
  switch (kernel) {                     \
    case 3: {                           \
      constexpr int K = 3;              \
      CALL;                             \
      break;                            \
    }                                   \
    case 5: {                           \
      constexpr int K = 5;              \
      CALL;                             \
      break;                            \
    }                                   \
    default: {                          \
      constexpr int K = 7;              \
      CALL;                             \
    }                                   \
  }

#ifdef ACMIX_VECTORS
// The register-blocked forms of the row sums below, for a fixed kernel K, over `n` (a
// multiple of the vector's lanes) queries of a tile from x0 on.

#ifdef ACMIX_SHUFFLES
// The K window columns of a key row at stride 1 for a vector of queries from the row's
// column x on (row = the row at x): the first and last loaded, those between shuffled
// from the two. Unaligned loads of each column split across cache lines; with the
// shuffles, 64 channels at 128x160 ran the forward ~10% and the backward ~7% faster
// (AMD EPYC, 2 threads). At stride 2 (two phase rows of 4 and 3 columns) they did not.
template <typename T, int K, int... M>
ACMIX_INLINE void window_columns(const T* row, vec_t<T>* columns,
                                 std::integer_sequence<int, M...>) {
  const vec_t<T> first = load(row), last = load(row + K - 1);
  ((columns[M] = column_between<T, K, M>(first, last)), ...);
}

template <typename T, int K>
ACMIX_INLINE void window_columns(const T* row, vec_t<T>* columns) {
  window_columns<T, K>(row, columns, std::make_integer_sequence<int, K>{});
}

// blocked_window_sums (below) with the columns shuffled: the K weights of a window row
// loaded once for C channels.
template <typename T, int K, int C>
ACMIX_INLINE void shuffled_window_sums(T* out, const T* weights, const T* b,
                                       const Geometry& g, int64_t y, int64_t x0, int64_t n,
                                       int64_t c0) {
  using V = vec_t<T>;
  const T* values = b + c0 * g.key_plane() + y * g.key_w + x0;
  for (int64_t t = 0; t < n; t += kLanes<T>) {
    V acc[C] = {};
    for (int64_t i = 0; i < K; ++i) {
      V w[K];
      for (int j = 0; j < K; ++j) w[j] = load(weights + (i * K + j) * kTile + t);
      for (int c = 0; c < C; ++c) {
        V v[K];
        window_columns<T, K>(values + c * g.key_plane() + i * g.key_w + t, v);
        V sum = acc[c];
        for (int j = 0; j < K; ++j) sum += w[j] * v[j];
        acc[c] = sum;
      }
    }
    T* dst = out + c0 * g.sums_channel() + y * g.out_w + x0 + t;
    for (int c = 0; c < C; ++c) store(dst + c * g.sums_channel(), acc[c]);
  }
}

template <typename T, int K>
ACMIX_INLINE void shuffled_window_sums(T* out, const T* weights, const T* b,
                                       const Geometry& g, int64_t y, int64_t x0, int64_t n) {
  int64_t c = 0;  // eight channels a pass first (fewer weight loads a sum, as below)
  for (; c + 8 <= g.dims; c += 8) shuffled_window_sums<T, K, 8>(out, weights, b, g, y, x0, n, c);
  for (; c + 4 <= g.dims; c += 4) shuffled_window_sums<T, K, 4>(out, weights, b, g, y, x0, n, c);
  for (; c < g.dims; ++c) shuffled_window_sums<T, K, 1>(out, weights, b, g, y, x0, n, c);
}
#endif

// window_dots: for each key row i, the K dot products of a vector of queries with
// their keys are summed in registers over the channels: per channel one load of the
// queries, the K key columns (loaded, or kShuffled: window_columns), K fused
// multiply-adds.
template <typename T, int K, bool kShuffled>
ACMIX_INLINE void blocked_window_dots(T* __restrict logits, const T* a, int64_t a_channel,
                                      const T* b, const Geometry& g, int64_t y, int64_t x0,
                                      int64_t n) {
  using V = vec_t<T>;
  int64_t columns[K];
  for (int j = 0; j < K; ++j) columns[j] = g.column(x0, j);
  for (int64_t i = 0; i < K; ++i) {
    const T* queries = a + y * g.out_w + x0;
    const T* keys = b + (y * g.stride + i) * g.key_w;
    for (int64_t t = 0; t < n; t += kLanes<T>) {
      V acc[K] = {};
      for (int64_t c = 0; c < g.dims; ++c) {
        const V q = load(queries + c * a_channel + t);
        const T* k = keys + c * g.key_plane() + t;
        V key[K];
#ifdef ACMIX_SHUFFLES
        if constexpr (kShuffled) {
          window_columns<T, K>(k + columns[0], key);
        } else
#endif
        {
          for (int j = 0; j < K; ++j) key[j] = load(k + columns[j]);
        }
        for (int j = 0; j < K; ++j) acc[j] += q * key[j];
      }
      for (int j = 0; j < K; ++j) store(logits + (i * K + j) * kTile + t, acc[j]);
    }
  }
}

template <typename T, int K>
ACMIX_INLINE void blocked_window_dots(T* __restrict logits, const T* a, int64_t a_channel,
                                      const T* b, const Geometry& g, int64_t y, int64_t x0,
                                      int64_t n) {
  if (g.shuffled) return blocked_window_dots<T, K, true>(logits, a, a_channel, b, g, y, x0, n);
  blocked_window_dots<T, K, false>(logits, a, a_channel, b, g, y, x0, n);
}

// window_sums for channels [c0, c0 + C): each weight vector loaded once for C channels.
template <typename T, int K, int C>
ACMIX_INLINE void blocked_window_sums(T* out, const T* weights, const T* b,
                                      const Geometry& g, int64_t y, int64_t x0, int64_t n,
                                      int64_t c0) {
  using V = vec_t<T>;
  int64_t columns[K];
  for (int j = 0; j < K; ++j) columns[j] = g.column(x0, j);
  const T* values = b + c0 * g.key_plane() + y * g.stride * g.key_w;
  for (int64_t t = 0; t < n; t += kLanes<T>) {
    V acc[C] = {};
    for (int64_t i = 0; i < K; ++i) {
      for (int j = 0; j < K; ++j) {
        const V w = load(weights + (i * K + j) * kTile + t);
        const T* v = values + i * g.key_w + columns[j] + t;
        for (int c = 0; c < C; ++c) acc[c] += w * load(v + c * g.key_plane());
      }
    }
    T* dst = out + c0 * g.sums_channel() + y * g.out_w + x0 + t;
    for (int c = 0; c < C; ++c) store(dst + c * g.sums_channel(), acc[c]);
  }
}

template <typename T, int K>
ACMIX_INLINE void blocked_window_sums(T* out, const T* weights, const T* b,
                                      const Geometry& g, int64_t y, int64_t x0, int64_t n) {
#ifdef ACMIX_SHUFFLES
  if (g.shuffled) return shuffled_window_sums<T, K>(out, weights, b, g, y, x0, n);
#endif
  // Eight channels a pass where they are there, then four: each loaded weight vector
  // serves that many sums (64 channels at 200x336: forward ~3% faster than four alone).
  int64_t c = 0;
  for (; c + 8 <= g.dims; c += 8) blocked_window_sums<T, K, 8>(out, weights, b, g, y, x0, n, c);
  for (; c + 4 <= g.dims; c += 4) blocked_window_sums<T, K, 4>(out, weights, b, g, y, x0, n, c);
  for (; c < g.dims; ++c) blocked_window_sums<T, K, 1>(out, weights, b, g, y, x0, n, c);
}

// A key row's sums of C channels for the vector of columns at `at` (of channel c0) on,
// the first min(L, n) of them: stored where each key row is taken once (g.ring), else
// added (rows at a band's edge are reached from two bands).
template <typename T, int C>
ACMIX_INLINE void put_key_sums(T* grad, const vec_t<T>* acc, const Geometry& g, int64_t at,
                               int64_t n) {
  constexpr int64_t L = kLanes<T>;
  for (int c = 0; c < C; ++c) {
    T* dst = grad + c * g.key_plane() + at;
    if (n >= L) {
      store(dst, g.ring ? acc[c] : load(dst) + acc[c]);
    } else {
      T sums[L];
      store(sums, acc[c]);
      for (int64_t t = 0; t < n; ++t) dst[t] = g.ring ? sums[t] : dst[t] + sums[t];
    }
  }
}

// The key and value gradients of channels [c0, c0 + C) of one key row, from the band's
// weights and logit gradients and its copies of the queries and output gradients (all
// zero beside their rows), for stride S: column m of the key row's phase r is seen by
// query m - j / S at window columns j = r, r + S, ... (at stride 1: key column m by
// query m - j at every j). rows holds (i, band row) pairs.
template <typename T, int K, int S, int C>
ACMIX_INLINE void blocked_key_grads(const T* go_rows, const T* q_rows, const T* probs,
                                    const T* dlogits, T* grad_k, T* grad_v,
                                    const Geometry& g, int64_t key_row,
                                    const std::vector<int64_t>& rows, int64_t c0) {
  using V = vec_t<T>;
  constexpr int64_t L = kLanes<T>;
  for (int phase = 0; phase < S; ++phase) {
    for (int64_t p0 = 0; p0 < g.phase_w; p0 += L) {
      V acc_k[C] = {}, acc_v[C] = {};
      for (size_t r = 0; r < rows.size(); r += 2) {
        const int64_t i = rows[r], row = rows[r + 1];
        for (int j = phase; j < K; j += S) {
          const int64_t at = g.band_at(i * K + j, row) + p0 - j / S;
          const V dl = load(dlogits + at), p = load(probs + at);
          const int64_t from = g.band_at(c0, row) + p0 - j / S;
          for (int c = 0; c < C; ++c) {
            acc_k[c] += dl * load(q_rows + from + c * g.band * g.pitch);
            acc_v[c] += p * load(go_rows + from + c * g.band * g.pitch);
          }
        }
      }
      const int64_t column = key_row * g.key_w + phase * g.phase_w + p0;
      put_key_sums<T, C>(grad_k, acc_k, g, column + c0 * g.key_plane(), g.phase_w - p0);
      put_key_sums<T, C>(grad_v, acc_v, g, column + c0 * g.key_plane(), g.phase_w - p0);
    }
  }
}

#ifdef ACMIX_SHUFFLES
// One of blocked_key_grads' two sums at stride 1 with the window columns shuffled
// (window_columns): grad[c][m] = sum over the rows' (i, band row) and j of
// weights[i * K + j][row][m - j] * src[c][row][m - j], for channels [c0, c0 + C). Per
// query row and channel two loads build the K columns where K loads did, and the K
// weights of a row are loaded once for C channels (the ACmix layer's training step at
// 64 channels, 200x336: 119.2 -> 115.0 and 123.3 -> 119.0 ms, alternated in one process;
// AMD EPYC family 25).
template <typename T, int K, int C>
ACMIX_INLINE void shuffled_key_grads(const T* src_rows, const T* weights, T* grad,
                                     const Geometry& g, int64_t key_row,
                                     const std::vector<int64_t>& rows, int64_t c0) {
  using V = vec_t<T>;
  constexpr int64_t L = kLanes<T>;
  for (int64_t p0 = 0; p0 < g.phase_w; p0 += L) {
    V acc[C] = {};
    for (size_t r = 0; r < rows.size(); r += 2) {
      const int64_t i = rows[r], row = rows[r + 1];
      V w[K];
      for (int j = 0; j < K; ++j) w[j] = load(weights + g.band_at(i * K + j, row) + p0 - j);
      // column m of the window row at p0 - (K - 1) is offset j = K - 1 - m
      const T* from = src_rows + g.band_at(c0, row) + p0 - (K - 1);
      for (int c = 0; c < C; ++c) {
        V columns[K];
        window_columns<T, K>(from + c * g.band * g.pitch, columns);
        V sum = acc[c];
        for (int j = 0; j < K; ++j) sum += w[j] * columns[K - 1 - j];
        acc[c] = sum;
      }
    }
    put_key_sums<T, C>(grad, acc, g, key_row * g.key_w + p0 + c0 * g.key_plane(),
                       g.phase_w - p0);
  }
}
#endif

template <typename T, int K, int S>
ACMIX_INLINE void blocked_key_grads(const T* go_rows, const T* q_rows, const T* probs,
                                    const T* dlogits, T* grad_k, T* grad_v,
                                    const Geometry& g, int64_t key_row,
                                    const std::vector<int64_t>& rows) {
  int64_t c = 0;
#ifdef ACMIX_SHUFFLES
  if (S == 1 && g.shuffled) {
    for (int pass = 0; pass < 2; ++pass) {  // the keys' gradient, then the values'
      const T* src = pass == 0 ? q_rows : go_rows;
      const T* weights = pass == 0 ? dlogits : probs;
      T* grad = pass == 0 ? grad_k : grad_v;
      for (c = 0; c + 8 <= g.dims; c += 8) {
        shuffled_key_grads<T, K, 8>(src, weights, grad, g, key_row, rows, c);
      }
      for (; c + 4 <= g.dims; c += 4) {
        shuffled_key_grads<T, K, 4>(src, weights, grad, g, key_row, rows, c);
      }
      for (; c < g.dims; ++c) shuffled_key_grads<T, K, 1>(src, weights, grad, g, key_row, rows, c);
    }
    return;
  }
#endif
  // Eight channels a pass where they are there: each loaded weight and logit gradient
  // serves 16 sums (64 channels at 200x336: the backward ~2% faster than four).
  for (; c + 8 <= g.dims; c += 8) {
    blocked_key_grads<T, K, S, 8>(go_rows, q_rows, probs, dlogits, grad_k, grad_v, g,
                                  key_row, rows, c);
  }
  for (; c + 4 <= g.dims; c += 4) {
    blocked_key_grads<T, K, S, 4>(go_rows, q_rows, probs, dlogits, grad_k, grad_v, g,
                                  key_row, rows, c);
  }
  for (; c < g.dims; ++c) {
    blocked_key_grads<T, K, S, 1>(go_rows, q_rows, probs, dlogits, grad_k, grad_v, g,
                                  key_row, rows, c);
  }
}
#endif

// Scratch of one thread: tiles of k*k rows, the pointer lists of the row sums (with
// room to pad them to a multiple of four), a row of zeros to pad them with, and the
// key and value gradients of a row.
template <typename T>
struct Scratch {
  std::vector<T> logits, grads, acc, row, zeros, grad_key, grad_value;
  std::vector<const T*> pa, pb;
  std::vector<int64_t> rows;
  explicit Scratch(const Geometry& g)
      : logits(g.window() * kTile),
        grads(g.window() * kTile),
        acc(kTile),
        row(kTile),
        zeros(std::max(kTile, g.out_w)),
        grad_key(g.key_w),
        grad_value(g.key_w),
        pa(std::max({g.window(), g.dims, g.kernel}) + 3),
        pb(std::max({g.window(), g.dims, g.kernel}) + 3) {
    rows.reserve(2 * g.kernel);
  }

  // Pads the first `pairs` pointer pairs with (zeros, a valid row) to a multiple of four,
  // so that every sum runs four products per load and store of its accumulator.
  int64_t pad(int64_t pairs) {
    int64_t padded = pairs;
    for (; padded % 4; ++padded) {
      pa[padded] = zeros.data();
      pb[padded] = pb[0];
    }
    return padded;
  }
};

// logits[w][t] = sum_c a[c][y][x0 + t] * b[c][y * S + i][(x0 + t) * S + j], w = i * k + j:
// the dot products of a tile of queries (or output gradients) with their windows of
// keys (or values). a and b point at the planes of one head, a's channels a_channel
// apart.
template <typename T>
ACMIX_INLINE void window_dots(T* __restrict logits, const T* a, int64_t a_channel,
                              const T* b, const Geometry& g, int64_t y, int64_t x0,
                              int64_t n, Scratch<T>& s) {
#ifdef ACMIX_VECTORS
  if (g.blocked() && n >= kLanes<T>) {
    // Whole vectors, and a tile's last lanes as one more vector shifted back over its
    // neighbour: the lanes it shares are computed again, the same way, to the same
    // values (where per-lane sums of the few pixels left would cost as much as a
    // vector of pixels each).
    const int64_t whole = n - n % kLanes<T>;
    ACMIX_WITH_KERNEL(g.kernel,
                      (blocked_window_dots<T, K>(logits, a, a_channel, b, g, y, x0, whole)))
    if (whole < n) {
      const int64_t back = n - kLanes<T>;
      ACMIX_WITH_KERNEL(g.kernel, (blocked_window_dots<T, K>(logits + back, a, a_channel, b,
                                                             g, y, x0 + back, kLanes<T>)))
    }
    return;
  }
#endif
  for (int64_t i = 0; i < g.kernel; ++i) {
    for (int64_t j = 0; j < g.kernel; ++j) {
      T* row = logits + (i * g.kernel + j) * kTile;
      std::fill(row, row + n, T(0));
      for (int64_t c = 0; c < g.dims; ++c) {
        s.pa[c] = a + c * a_channel + y * g.out_w + x0;
        s.pb[c] = b + c * g.key_plane() + (y * g.stride + i) * g.key_w + g.column(x0, j);
      }
      sum_products(row, s.pa.data(), s.pb.data(), s.pad(g.dims), n);
    }
  }
}

// out[c][y][x0 + t] = sum_w weights[w][t] * b[c][y * S + i][(x0 + t) * S + j]: the
// weighted sum of the window's values (or keys, for the query gradient).
template <typename T>
ACMIX_INLINE void window_sums(T* out, const T* weights, const T* b, const Geometry& g,
                              int64_t y, int64_t x0, int64_t n, Scratch<T>& s) {
#ifdef ACMIX_VECTORS
  if (g.blocked() && n >= kLanes<T>) {  // as window_dots: a last vector shifted back
    const int64_t whole = n - n % kLanes<T>;
    ACMIX_WITH_KERNEL(g.kernel, (blocked_window_sums<T, K>(out, weights, b, g, y, x0, whole)))
    if (whole < n) {
      const int64_t back = n - kLanes<T>;
      ACMIX_WITH_KERNEL(g.kernel, (blocked_window_sums<T, K>(out, weights + back, b, g, y,
                                                             x0 + back, kLanes<T>)))
    }
    return;
  }
#endif
  T* __restrict acc = s.acc.data();
  for (int64_t w = 0; w < g.window(); ++w) s.pa[w] = weights + w * kTile;
  for (int64_t c = 0; c < g.dims; ++c) {
    std::fill(acc, acc + n, T(0));
    const T* plane = b + c * g.key_plane() + y * g.stride * g.key_w;
    for (int64_t i = 0; i < g.kernel; ++i) {
      for (int64_t j = 0; j < g.kernel; ++j) {
        s.pb[i * g.kernel + j] = plane + i * g.key_w + g.column(x0, j);
      }
    }
    sum_products(acc, s.pa.data(), s.pb.data(), s.pad(g.window()), n);
    std::copy(acc, acc + n, out + c * g.sums_channel() + y * g.out_w + x0);
  }
}

// Scaled logits -> softmax in place; returns the log-sum-exp of each query in lse.
template <typename T>
ACMIX_INLINE void softmax_tile(T* __restrict logits, T* __restrict lse, T scale,
                               int64_t window, int64_t n, T* __restrict total) {
  for (int64_t t = 0; t < n; ++t) lse[t] = -std::numeric_limits<T>::infinity();
  for (int64_t w = 0; w < window; ++w) {
    T* __restrict row = logits + w * kTile;
    for (int64_t t = 0; t < n; ++t) {
      row[t] *= scale;
      lse[t] = row[t] > lse[t] ? row[t] : lse[t];
    }
  }
  std::fill(total, total + n, T(0));
  for (int64_t w = 0; w < window; ++w) {
    T* __restrict row = logits + w * kTile;
    for (int64_t t = 0; t < n; ++t) {
      row[t] = exp_of(row[t] - lse[t]);
      total[t] += row[t];
    }
  }
  for (int64_t t = 0; t < n; ++t) total[t] = T(1) / total[t];
  for (int64_t w = 0; w < window; ++w) {
    T* __restrict row = logits + w * kTile;
    for (int64_t t = 0; t < n; ++t) row[t] *= total[t];
  }
  for (int64_t t = 0; t < n; ++t) lse[t] -= std::log(total[t]);
}

// One query row of one plane: attention weights, output and log-sum-exp.
template <typename T>
ACMIX_INLINE void forward_row_impl(const T* q, const T* k, const T* v, T* out, T* lse,
                                   const Geometry& g, int64_t y, T scale, Scratch<T>& s) {
  for (int64_t x0 = 0, n; x0 < g.out_w; x0 += n) {
    n = tile_width<T>(g.out_w, x0);
    window_dots(s.logits.data(), q, g.query_channel(), k, g, y, x0, n, s);
    softmax_tile(s.logits.data(), lse + y * g.out_w + x0, scale, g.window(), n,
                 s.acc.data());
    window_sums(out, s.logits.data(), v, g, y, x0, n, s);
  }
}

// One query row of one plane in the backward pass: the query gradient, and the
// weights and scaled logit gradients of the row's windows (for the key and value
// gradients, gathered per key row afterwards), written to row band_row of probs and
// dlogits (g.band_at).
template <typename T>
ACMIX_INLINE void backward_query_row_impl(const T* grad_out, const T* q, const T* k,
                                          const T* v, const T* out, const T* lse, T* grad_q,
                                          T* probs, T* dlogits, const Geometry& g, int64_t y,
                                          int64_t band_row, T scale, Scratch<T>& s) {
  for (int64_t x0 = 0, n; x0 < g.out_w; x0 += n) {
    n = tile_width<T>(g.out_w, x0);
    T* p = s.logits.data();
    T* dp = s.grads.data();
    window_dots(p, q, g.query_channel(), k, g, y, x0, n, s);
    window_dots(dp, grad_out, g.out_plane(), v, g, y, x0, n, s);
    // D = sum_c dO * O, the weights' share of each logit gradient; without the output,
    // sum_j P_j dP_j (the same), the weights first.
    T* delta = s.row.data();
    std::fill(delta, delta + n, T(0));
    if (out == nullptr) {
      for (int64_t w = 0; w < g.window(); ++w) {
        weights_and_delta(p + w * kTile, dp + w * kTile, lse + y * g.out_w + x0, delta,
                          probs + g.band_at(w, band_row) + x0, scale, n);
      }
      for (int64_t w = 0; w < g.window(); ++w) {
        const int64_t at = g.band_at(w, band_row) + x0;
        logit_grads(dp + w * kTile, probs + at, delta, dlogits + at, scale, n);
      }
    } else {
      for (int64_t c = 0; c < g.dims; ++c) {
        const int64_t at = c * g.out_plane() + y * g.out_w + x0;
        add_products(delta, grad_out + at, out + at, n);
      }
      for (int64_t w = 0; w < g.window(); ++w) {
        const int64_t at = g.band_at(w, band_row) + x0;
        weights_and_grads(p + w * kTile, dp + w * kTile, lse + y * g.out_w + x0, delta,
                          probs + at, dlogits + at, scale, n);
      }
    }
    window_sums(grad_q, dp, k, g, y, x0, n, s);
  }
}

// Zero key and value gradients for a key row no window reaches (below the last window,
// or between windows of 1 at stride 2), where key rows are stored rather than added to.
template <typename T>
ACMIX_INLINE void zero_key_row(T* grad_k, T* grad_v, const Geometry& g, int64_t key_row) {
  for (int64_t c = 0; c < g.dims; ++c) {
    const int64_t at = c * g.key_plane() + key_row * g.key_w;
    std::fill(grad_k + at, grad_k + at + g.key_w, T(0));
    std::fill(grad_v + at, grad_v + at + g.key_w, T(0));
  }
}

// One key row of one plane: the key and value gradients from the queries of the band
// [y_begin, y_end) whose windows cover it (stored where g.ring, else added: rows near a
// band's edge are seen from two bands). go_rows and q_rows are the band's copies of the
// output gradients and queries (g.band_at), for the blocked kernels.
template <typename T>
ACMIX_INLINE void backward_key_row_impl(const T* grad_out, const T* q, const T* go_rows,
                                        const T* q_rows, const T* probs, const T* dlogits,
                                        T* grad_k, T* grad_v, const Geometry& g,
                                        int64_t key_row, int64_t y_begin, int64_t y_end,
                                        Scratch<T>& s) {
#ifdef ACMIX_VECTORS
  if (g.blocked_keys()) {
    // (i, band row) of the band's query rows whose windows hold this key row.
    std::vector<int64_t>& pairs = s.rows;
    pairs.clear();
    for (int64_t i = 0; i < g.kernel; ++i) {
      const int64_t shifted = key_row - i;
      if (shifted < 0 || shifted % g.stride) continue;
      const int64_t y = shifted / g.stride;
      if (y < y_begin || y >= y_end) continue;
      pairs.push_back(i);
      pairs.push_back(g.band_row(y, y_begin));
    }
    if (pairs.empty()) {
      if (g.ring) zero_key_row(grad_k, grad_v, g, key_row);
      return;
    }
    if (g.stride == 1) {
      ACMIX_WITH_KERNEL(g.kernel, (blocked_key_grads<T, K, 1>(go_rows, q_rows, probs, dlogits,
                                                              grad_k, grad_v, g, key_row,
                                                              pairs)))
    } else {
      ACMIX_WITH_KERNEL(g.kernel, (blocked_key_grads<T, K, 2>(go_rows, q_rows, probs, dlogits,
                                                              grad_k, grad_v, g, key_row,
                                                              pairs)))
    }
    return;
  }
#endif
  // The query rows of the band whose windows hold this key row, and at which i.
  int64_t rows = 0;
  std::vector<int64_t>& ys = s.rows;
  ys.clear();
  for (int64_t i = 0; i < g.kernel; ++i) {
    const int64_t shifted = key_row - i;
    if (shifted < 0 || shifted % g.stride) continue;
    const int64_t y = shifted / g.stride;
    if (y < y_begin || y >= y_end) continue;
    ys.push_back(i);
    ys.push_back(y);
    ++rows;
  }
  if (rows == 0) {
    if (g.ring) zero_key_row(grad_k, grad_v, g, key_row);
    return;
  }
  // Key column column(x, j) is seen by query x at offset j: with the keys in phases,
  // every sum runs along contiguous rows.
  for (int64_t c = 0; c < g.dims; ++c) {
    T* __restrict acc_k = s.grad_key.data();
    T* __restrict acc_v = s.grad_value.data();
    std::fill(acc_k, acc_k + g.key_w, T(0));
    std::fill(acc_v, acc_v + g.key_w, T(0));
    for (int64_t j = 0; j < g.kernel; ++j) {
      const int64_t start = g.column(0, j);
      // acc[x] += sum over the query rows of weights[w][y][x] * factors[c][y][x].
      auto gather = [&](T* acc, const T* weights, const T* factors, int64_t channel) {
        for (int64_t r = 0; r < rows; ++r) {
          const int64_t i = ys[2 * r], y = ys[2 * r + 1];
          s.pa[r] = weights + g.band_at(i * g.kernel + j, g.band_row(y, y_begin));
          s.pb[r] = factors + c * channel + y * g.out_w;
        }
        sum_products(acc + start, s.pa.data(), s.pb.data(), s.pad(rows), g.out_w);
      };
      gather(acc_k, dlogits, q, g.query_channel());
      gather(acc_v, probs, grad_out, g.out_plane());
    }
    // Stored or added, as in blocked_key_grads.
    T* __restrict gk = grad_k + c * g.key_plane() + key_row * g.key_w;
    T* __restrict gv = grad_v + c * g.key_plane() + key_row * g.key_w;
    for (int64_t px = 0; px < g.key_w; ++px) {
      gk[px] = g.ring ? acc_k[px] : gk[px] + acc_k[px];
      gv[px] = g.ring ? acc_v[px] : gv[px] + acc_v[px];
    }
  }
}

// The row kernels: float32, the dtype that trains, in AVX-512, AVX2 and baseline clones;
// float64 (tests, gradient checks) in the baseline only, which keeps the build short.
#define ACMIX_ROW_KERNELS(T, ATTRIBUTES)                                                    \
  ATTRIBUTES void forward_row(const T* q, const T* k, const T* v, T* out, T* lse,          \
                              const Geometry& g, int64_t y, T scale, Scratch<T>& s) {       \
    forward_row_impl<T>(q, k, v, out, lse, g, y, scale, s);                                 \
  }                                                                                         \
  ATTRIBUTES void backward_query_row(const T* grad_out, const T* q, const T* k,            \
                                     const T* v, const T* out, const T* lse, T* grad_q,     \
                                     T* probs, T* dlogits, const Geometry& g, int64_t y,    \
                                     int64_t band_row, T scale, Scratch<T>& s) {            \
    backward_query_row_impl<T>(grad_out, q, k, v, out, lse, grad_q, probs, dlogits, g, y,   \
                               band_row, scale, s);                                         \
  }                                                                                         \
  ATTRIBUTES void backward_key_row(const T* grad_out, const T* q, const T* go_rows,        \
                                   const T* q_rows, const T* probs, const T* dlogits,       \
                                   T* grad_k, T* grad_v, const Geometry& g,                 \
                                   int64_t key_row, int64_t y_begin, int64_t y_end,         \
                                   Scratch<T>& s) {                                         \
    backward_key_row_impl<T>(grad_out, q, go_rows, q_rows, probs, dlogits, grad_k, grad_v,  \
                             g, key_row, y_begin, y_end, s);                                \
  }
ACMIX_ROW_KERNELS(float, ACMIX_CLONES)
ACMIX_ROW_KERNELS(double, )
#undef ACMIX_ROW_KERNELS

// Queries (or their gradient) as planes (N, d, H', W'), or (B, heads, d, H', W') for
// queries read in place from a projection's planes: images, heads and channels at any
// strides, rows whole. shape is the (N, d, H', W') of plane n = b * heads + h.
struct QueryPlanes {
  std::array<int64_t, 4> shape;
  int64_t heads, image, plane, channel;
  int64_t at(int64_t n) const { return n / heads * image + n % heads * plane; }
};

QueryPlanes query_planes(const at::Tensor& q) {
  TORCH_CHECK(q.dim() == 4 || q.dim() == 5,
              "sliding_window_attention: queries are (N, d, H, W) or (B, heads, d, H, W)");
  if (q.dim() == 4) {
    return {{q.size(0), q.size(1), q.size(2), q.size(3)},
            std::max<int64_t>(q.size(0), 1), 0, q.stride(0), q.stride(1)};
  }
  return {{q.size(0) * q.size(1), q.size(2), q.size(3), q.size(4)},
          std::max<int64_t>(q.size(1), 1), q.stride(0), q.stride(1), q.stride(2)};
}

// The checks of every entry point; key_width is the keys' width before phasing.
void check_inputs(const at::Tensor& query, const at::Tensor& key, const at::Tensor& value,
                  int64_t kernel_size, int64_t stride, int64_t key_width) {
  TORCH_CHECK(query.device().is_cpu(), "sliding_window_attention: CPU tensors only");
  TORCH_CHECK((query.dim() == 4 || query.dim() == 5) && key.dim() == 4 && value.dim() == 4,
              "sliding_window_attention: query, key and value are (N, d, H, W)");
  const auto shape = query_planes(query).shape;
  TORCH_CHECK(key.sizes() == value.sizes(),
              "sliding_window_attention: key and value differ in shape");
  TORCH_CHECK(query.scalar_type() == key.scalar_type() &&
                  key.scalar_type() == value.scalar_type(),
              "sliding_window_attention: query, key and value differ in dtype");
  TORCH_CHECK(shape[0] == key.size(0) && shape[1] == key.size(1),
              "sliding_window_attention: query and key differ in planes or channels");
  TORCH_CHECK(kernel_size >= 1 && stride >= 1,
              "sliding_window_attention: kernel_size and stride must be positive");
  TORCH_CHECK(shape[2] >= 1 && shape[3] >= 1 &&
                  (shape[2] - 1) * stride + kernel_size <= key.size(2) &&
                  (shape[3] - 1) * stride + kernel_size <= key_width,
              "sliding_window_attention: windows of ", kernel_size, " at stride ", stride,
              " for ", shape[2], "x", shape[3], " queries need keys of at least ",
              (shape[2] - 1) * stride + kernel_size, "x",
              (shape[3] - 1) * stride + kernel_size, ", got ", key.size(2), "x", key_width);
}

// Whether `map` (N, d, H', W') or (N, H', W') is laid out as the kernels write it: its
// rows contiguous (the strides of dims of size 1 are never read).
bool has_whole_rows(const at::Tensor& map) {
  const int64_t last = map.dim() - 1;
  return (map.size(last) <= 1 || map.stride(last) == 1) &&
         (map.size(last - 1) <= 1 || map.stride(last - 1) == map.size(last));
}

// The geometry of queries (query_planes) and phased keys.
Geometry geometry(const QueryPlanes& query, const at::Tensor& key, int64_t kernel_size,
                  int64_t stride) {
  const int64_t phase_w = key.size(3) / stride;
  Geometry g{query.shape[0], query.shape[1], query.shape[2], query.shape[3], key.size(2),
             key.size(3),    kernel_size,    stride,         phase_w};
  g.query_stride = query.channel;
#ifdef ACMIX_SHUFFLES
  g.shuffled = stride == 1 && shuffles_pay();
#endif
  return g;
}

// Keys or values (N, d, H, W) in the row phases of stride S (Geometry), zero-padded to
// a multiple of S wide; the planes as they are at stride 1.
at::Tensor phased(const at::Tensor& x, int64_t stride) {
  if (stride == 1) return x.contiguous();
  const int64_t width = x.size(3), phase_w = (width + stride - 1) / stride;
  return at::constant_pad_nd(x, {0, phase_w * stride - width})
      .view({x.size(0), x.size(1), x.size(2), phase_w, stride})
      .transpose(3, 4)
      .reshape({x.size(0), x.size(1), x.size(2), phase_w * stride});
}

// The inverse of phased, for planes `width` wide.
at::Tensor unphased(const at::Tensor& x, int64_t stride, int64_t width) {
  if (stride == 1) return x;
  const int64_t phase_w = x.size(3) / stride;
  return x.view({x.size(0), x.size(1), x.size(2), stride, phase_w})
      .transpose(3, 4)
      .reshape({x.size(0), x.size(1), x.size(2), phase_w * stride})
      .narrow(3, 0, width)
      .contiguous();
}

}  // namespace

void phased_window_attention_forward_into(const at::Tensor& query, const at::Tensor& key,
                                          const at::Tensor& value, int64_t key_width,
                                          int64_t kernel_size, int64_t stride, double scale,
                                          at::Tensor& out, at::Tensor& lse) {
  check_inputs(query, key, value, kernel_size, stride, key_width);
  TORCH_CHECK(key.size(3) == phased_width(key_width, stride),
              "sliding_window_attention: phased keys of the wrong width");
  const at::Tensor q = has_whole_rows(query) ? query : query.contiguous();
  const at::Tensor k = key.contiguous(), v = value.contiguous();
  const QueryPlanes planes = query_planes(q);
  const auto& shape = planes.shape;
  TORCH_CHECK(out.sizes() == at::IntArrayRef(shape) && out.scalar_type() == query.scalar_type() &&
                  has_whole_rows(out),
              "sliding_window_attention: out must be (N, d, H', W') with whole rows");
  TORCH_CHECK(lse.dim() == 3 && lse.size(0) == shape[0] && lse.size(1) == shape[2] &&
                  lse.size(2) == shape[3] && lse.scalar_type() == query.scalar_type() &&
                  has_whole_rows(lse),
              "sliding_window_attention: lse must be (N, H', W') with whole rows");
  Geometry g = geometry(planes, k, kernel_size, stride);
  g.sums_stride = out.stride(1);
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "sliding_window_attention", [&] {
    const scalar_t* q_data = q.const_data_ptr<scalar_t>();
    const scalar_t* k_data = k.const_data_ptr<scalar_t>();
    const scalar_t* v_data = v.const_data_ptr<scalar_t>();
    scalar_t* out_data = out.mutable_data_ptr<scalar_t>();
    scalar_t* lse_data = lse.mutable_data_ptr<scalar_t>();
    const int64_t k_plane = g.dims * g.key_plane();
    at::parallel_for(0, g.planes * g.out_h, 1, [&](int64_t begin, int64_t end) {
      Scratch<scalar_t> scratch(g);
      for (int64_t index = begin; index < end; ++index) {
        const int64_t n = index / g.out_h, y = index % g.out_h;
        forward_row(q_data + planes.at(n), k_data + n * k_plane, v_data + n * k_plane,
                    out_data + n * out.stride(0), lse_data + n * lse.stride(0), g, y,
                    static_cast<scalar_t>(scale), scratch);
      }
    });
  });
}

std::tuple<at::Tensor, at::Tensor> phased_window_attention_forward(
    const at::Tensor& query, const at::Tensor& key, const at::Tensor& value,
    int64_t key_width, int64_t kernel_size, int64_t stride, double scale) {
  TORCH_CHECK(query.dim() == 4, "sliding_window_attention: query must be (N, d, H, W)");
  at::Tensor out = empty_large_like(query);
  at::Tensor lse = at::empty({query.size(0), query.size(2), query.size(3)}, query.options());
  phased_window_attention_forward_into(query, key, value, key_width, kernel_size, stride,
                                       scale, out, lse);
  return {out, lse};
}

std::tuple<at::Tensor, at::Tensor> sliding_window_attention_forward(
    const at::Tensor& query, const at::Tensor& key, const at::Tensor& value,
    int64_t kernel_size, int64_t stride, double scale) {
  check_inputs(query, key, value, kernel_size, stride, key.size(3));
  return phased_window_attention_forward(query, phased(key, stride), phased(value, stride),
                                         key.size(3), kernel_size, stride, scale);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> phased_window_attention_backward(
    const at::Tensor& grad_out, const at::Tensor& query, const at::Tensor& key,
    const at::Tensor& value, const at::Tensor& out, const at::Tensor& lse,
    int64_t key_width, int64_t kernel_size, int64_t stride, double scale,
    const std::optional<at::Tensor>& grad_query, bool overwrite_key_value) {
  check_inputs(query, key, value, kernel_size, stride, key_width);
  TORCH_CHECK(key.size(3) == phased_width(key_width, stride),
              "sliding_window_attention_backward: phased keys of the wrong width");
  const at::Tensor q = has_whole_rows(query) ? query : query.contiguous();
  const QueryPlanes planes = query_planes(q);
  const auto& shape = planes.shape;
  TORCH_CHECK(grad_out.sizes() == at::IntArrayRef(shape) &&
                  (!out.defined() || out.sizes() == at::IntArrayRef(shape)),
              "sliding_window_attention_backward: grad_out and out must be (N, d, H', W') "
              "of the queries");
  TORCH_CHECK(lse.dim() == 3 && lse.size(0) == shape[0] && lse.size(1) == shape[2] &&
                  lse.size(2) == shape[3],
              "sliding_window_attention_backward: lse must be (N, H', W')");
  const at::ScalarType dtype = query.scalar_type();
  TORCH_CHECK(grad_out.scalar_type() == dtype &&
                  (!out.defined() || out.scalar_type() == dtype) && lse.scalar_type() == dtype,
              "sliding_window_attention_backward: all tensors must share one dtype");
  TORCH_CHECK(!grad_query.has_value() ||
                  (grad_query->sizes() == query.sizes() && grad_query->scalar_type() == dtype &&
                   has_whole_rows(*grad_query)),
              "sliding_window_attention_backward: grad_query must have the queries' shape "
              "and whole rows");
  const at::Tensor k = key.contiguous(), v = value.contiguous();
  const at::Tensor go = grad_out.contiguous(), m = lse.contiguous();
  const at::Tensor o = out.defined() ? out.contiguous() : out;
  Geometry g = geometry(planes, k, kernel_size, stride);
  // Band rows with k - 1 zeros on the left and k - 1 plus a vector's lanes on the right:
  // the key-side sums read a window's width and a vector beyond the row.
  g.lead = g.kernel - 1;
  g.pitch = g.out_w + 2 * (g.kernel - 1) + 64 / q.element_size();
  // Per band row: the weights and logit gradients, and the blocked kernels' copies of
  // the queries and output gradients.
  const int64_t blocks = 2 * g.window() + (g.blocked_keys() ? 2 * g.dims : 0);
  // The query gradient where asked for (in place in a projection's gradient), else new.
  at::Tensor grad_q = grad_query.has_value() ? *grad_query : empty_large_like(q);
  const QueryPlanes grad_planes = query_planes(grad_q);
  g.sums_stride = grad_planes.channel;
  const int64_t threads = at::get_num_threads();
  const bool by_plane = g.planes >= threads;
  // Taking whole planes, a thread is done with a key row's keys and values once its
  // last query row is (below): its gradients can take its place, where the caller's
  // planes are scratch (64 channels at 200x336: the ACmix layer's step allocates 35 MiB
  // less at its peak).
  const bool in_place = overwrite_key_value && by_plane;
  at::Tensor grad_k = in_place ? k : empty_large_like(k);
  at::Tensor grad_v = in_place ? v : empty_large_like(v);
  // Zeroed where key rows at a band's edge are added to from two bands (not by_plane),
  // else the rows below the last window (a phased map's last row at stride 2); rows
  // between windows are zeroed as they come (zero_key_row).
  const int64_t windowed_rows = g.out_h == 0 ? 0 : (g.out_h - 1) * g.stride + g.kernel;
  if (!by_plane || g.out_plane() == 0) {
    grad_k.zero_();
    grad_v.zero_();
  } else if (windowed_rows < g.key_h) {
    grad_k.narrow(2, windowed_rows, g.key_h - windowed_rows).zero_();
    grad_v.narrow(2, windowed_rows, g.key_h - windowed_rows).zero_();
  }
  if (g.planes == 0 || g.out_plane() == 0) return {grad_q, grad_k, grad_v};
  // The weights and logit gradients of query rows are the only scratch: a key row's
  // gradients need those of every query row whose windows hold it.
  // With a plane for every thread, each thread takes whole planes and no thread waits
  // for another; a key row's gradients are then taken right after its last query row,
  // from a ring of the last ceil(k / S) query rows (1.3 MB at 16 channels, 336 wide,
  // k = 7), which stays in the second-level cache.
  // With fewer planes, all threads work on each band of query rows of all planes, then
  // on its key rows: a barrier per band, so bands are large, about 4 MB a thread (each
  // wait costs more on a busy machine than any cache saves).
  g.ring = by_plane;
  const int64_t band =
      by_plane ? std::min(g.out_h, (g.kernel + g.stride - 1) / g.stride)
               : std::clamp<int64_t>((int64_t{4} << 20) * threads /
                                         (blocks * g.pitch * q.element_size() * g.planes),
                                     1, g.out_h);
  g.band = band;
  const int64_t band_plane = blocks * band * g.pitch;  // one plane's band buffers
  AT_DISPATCH_FLOATING_TYPES(dtype, "sliding_window_attention_backward", [&] {
    using T = scalar_t;
    const T* q_data = q.const_data_ptr<T>();
    const T* k_data = k.const_data_ptr<T>();
    const T* v_data = v.const_data_ptr<T>();
    const T* go_data = go.const_data_ptr<T>();
    const T* o_data = o.defined() ? o.const_data_ptr<T>() : nullptr;
    const T* lse_data = m.const_data_ptr<T>();
    T* gq_data = grad_q.mutable_data_ptr<T>();
    T* gk_data = grad_k.mutable_data_ptr<T>();
    T* gv_data = grad_v.mutable_data_ptr<T>();
    const int64_t q_plane = g.dims * g.out_plane(), k_plane = g.dims * g.key_plane();
    const T typed_scale = static_cast<T>(scale);  // q_plane: of grad_out and out
    // Plane n's band buffers: the weights, the logit gradients, then (blocked kernels)
    // the copies of the queries and of the output gradients.
    struct Band {
      T *probs, *dlogits, *q_rows, *go_rows;
    };
    auto band_of = [&](T* buffers) {
      const int64_t weights = g.window() * band * g.pitch, rows = g.dims * band * g.pitch;
      return Band{buffers, buffers + weights, buffers + 2 * weights,
                  buffers + 2 * weights + rows};
    };
    // The query rows [y_begin + first, y_begin + last) of plane n.
    auto query_rows = [&](int64_t n, int64_t y_begin, int64_t first, int64_t last,
                          const Band& b, Scratch<T>& scratch) {
      for (int64_t y = y_begin + first; y < y_begin + last; ++y) {
        backward_query_row(go_data + n * q_plane, q_data + planes.at(n), k_data + n * k_plane,
                           v_data + n * k_plane, o_data ? o_data + n * q_plane : nullptr,
                           lse_data + n * g.out_plane(), gq_data + grad_planes.at(n), b.probs,
                           b.dlogits, g, y, g.band_row(y, y_begin), typed_scale, scratch);
        if (!g.blocked_keys()) continue;
        for (int64_t c = 0; c < g.dims; ++c) {
          const int64_t from = n * q_plane + c * g.out_plane() + y * g.out_w;
          const int64_t q_from = planes.at(n) + c * g.query_channel() + y * g.out_w;
          const int64_t to = g.band_at(c, g.band_row(y, y_begin));
          std::copy(q_data + q_from, q_data + q_from + g.out_w, b.q_rows + to);
          std::copy(go_data + from, go_data + from + g.out_w, b.go_rows + to);
        }
      }
    };
    // The key rows [first, last) of plane n, from the band [y_begin, y_end).
    auto key_rows = [&](int64_t n, int64_t y_begin, int64_t y_end, int64_t first,
                        int64_t last, const Band& b, Scratch<T>& scratch) {
      for (int64_t key_row = first; key_row < last; ++key_row) {
        backward_key_row(go_data + n * q_plane, q_data + planes.at(n), b.go_rows, b.q_rows,
                         b.probs, b.dlogits, gk_data + n * k_plane, gv_data + n * k_plane,
                         g, key_row, y_begin, y_end, scratch);
      }
    };
    auto key_range = [&](int64_t y_begin, int64_t y_end) {
      return std::make_pair(y_begin * g.stride, (y_end - 1) * g.stride + g.kernel);
    };
    if (by_plane) {
      at::parallel_for(0, g.planes, 1, [&](int64_t begin, int64_t end) {
        Scratch<T> scratch(g);
        std::vector<T> buffer(band_plane);  // zeros, and the margins stay so
        const Band b = band_of(buffer.data());
        for (int64_t n = begin; n < end; ++n) {
          for (int64_t y = 0; y < g.out_h; ++y) {
            query_rows(n, y, 0, 1, b, scratch);
            // The key rows whose last query row is y (the last one: all the rest).
            const int64_t key_end =
                y + 1 < g.out_h ? (y + 1) * g.stride : key_range(y, y + 1).second;
            key_rows(n, std::max<int64_t>(0, y + 1 - band), y + 1, y * g.stride, key_end, b,
                     scratch);
          }
        }
      });
      return;
    }
    at::Tensor buffers = at::zeros({g.planes * band_plane}, q.options());
    T* buffer = buffers.mutable_data_ptr<T>();
    for (int64_t y_begin = 0; y_begin < g.out_h; y_begin += band) {
      const int64_t y_end = std::min(g.out_h, y_begin + band);
      const int64_t rows = y_end - y_begin;
      at::parallel_for(0, g.planes * rows, 1, [&](int64_t begin, int64_t end) {
        Scratch<T> scratch(g);
        for (int64_t index = begin; index < end; ++index) {
          const int64_t n = index / rows, row = index % rows;
          query_rows(n, y_begin, row, row + 1, band_of(buffer + n * band_plane), scratch);
        }
      });
      const auto [key_begin, key_end] = key_range(y_begin, y_end);
      const int64_t keys = key_end - key_begin;
      at::parallel_for(0, g.planes * keys, 1, [&](int64_t begin, int64_t end) {
        Scratch<T> scratch(g);
        for (int64_t index = begin; index < end; ++index) {
          const int64_t n = index / keys, key_row = key_begin + index % keys;
          key_rows(n, y_begin, y_end, key_row, key_row + 1, band_of(buffer + n * band_plane),
                   scratch);
        }
      });
    }
  });
  return {grad_q, grad_k, grad_v};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> sliding_window_attention_backward(
    const at::Tensor& grad_out, const at::Tensor& query, const at::Tensor& key,
    const at::Tensor& value, const at::Tensor& out, const at::Tensor& lse,
    int64_t kernel_size, int64_t stride, double scale) {
  check_inputs(query, key, value, kernel_size, stride, key.size(3));
  TORCH_CHECK(query.dim() == 4, "sliding_window_attention_backward: query must be (N, d, H, W)");
  auto [grad_q, grad_k, grad_v] = phased_window_attention_backward(
      grad_out, query, phased(key, stride), phased(value, stride), out, lse, key.size(3),
      kernel_size, stride, scale, std::nullopt);
  return {grad_q, unphased(grad_k, stride, key.size(3)), unphased(grad_v, stride, key.size(3))};
}

}  // namespace acmix_mm

TORCH_LIBRARY_FRAGMENT(acmix_mm, m) {
  m.def(
      "sliding_window_attention(Tensor query, Tensor key, Tensor value, int kernel_size, "
      "int stride, float scale) -> (Tensor, Tensor)");
  m.def(
      "sliding_window_attention_backward(Tensor grad_out, Tensor query, Tensor key, "
      "Tensor value, Tensor out, Tensor lse, int kernel_size, int stride, float scale) "
      "-> (Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(acmix_mm, CPU, m) {
  m.impl("sliding_window_attention", &acmix_mm::sliding_window_attention_forward);
  m.impl("sliding_window_attention_backward", &acmix_mm::sliding_window_attention_backward);
}
