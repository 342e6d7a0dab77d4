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

#include "sliding_window_attention.h"
#include "vectorize.h"

#include <algorithm>
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

// acc[t] += sum of four products a_p[t] * b_p[t * S]: one load and store of acc per
// four products. Restrict-qualified parameters, so that the compiler vectorises
// without runtime alias checks.
template <typename T, bool kUnitStride>
ACMIX_INLINE void sum4(T* __restrict acc, const T* __restrict a0, const T* __restrict a1,
                       const T* __restrict a2, const T* __restrict a3,
                       const T* __restrict b0, const T* __restrict b1,
                       const T* __restrict b2, const T* __restrict b3, int64_t n,
                       int64_t stride) {
  if constexpr (kUnitStride) {
    for (int64_t t = 0; t < n; ++t) {
      acc[t] += a0[t] * b0[t] + a1[t] * b1[t] + a2[t] * b2[t] + a3[t] * b3[t];
    }
  } else {
    for (int64_t t = 0; t < n; ++t) {
      const int64_t u = t * stride;
      acc[t] += a0[t] * b0[u] + a1[t] * b1[u] + a2[t] * b2[u] + a3[t] * b3[u];
    }
  }
}

// acc[t] += sum_p a_p[t] * b_p[t * S] for t < n, over `pairs` pairs (a multiple of
// four: callers pad with rows of zeros).
template <typename T>
ACMIX_INLINE void sum_products(T* acc, const T* const* a, const T* const* b,
                               int64_t pairs, int64_t n, int64_t stride) {
  for (int64_t p = 0; p < pairs; p += 4) {
    if (stride == 1) {
      sum4<T, true>(acc, a[p], a[p + 1], a[p + 2], a[p + 3], b[p], b[p + 1], b[p + 2],
                    b[p + 3], n, 1);
    } else {
      sum4<T, false>(acc, a[p], a[p + 1], a[p + 2], a[p + 3], b[p], b[p + 1], b[p + 2],
                     b[p + 3], n, stride);
    }
  }
}

// acc[t] += a[t] * b[t].
template <typename T>
ACMIX_INLINE void add_products(T* __restrict acc, const T* __restrict a,
                               const T* __restrict b, int64_t n) {
  for (int64_t t = 0; t < n; ++t) acc[t] += a[t] * b[t];
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

struct Geometry {
  int64_t planes, dims, out_h, out_w, key_h, key_w, kernel, stride;
  int64_t out_plane() const { return out_h * out_w; }
  int64_t key_plane() const { return key_h * key_w; }
  int64_t window() const { return kernel * kernel; }
};

// Scratch of one thread: tiles of k*k rows, the pointer lists of the row sums (with
// room to pad them to a multiple of four), a row of zeros to pad them with, and the
// phases of a key row's gradients.
template <typename T>
struct Scratch {
  std::vector<T> logits, grads, acc, row, zeros, grad_key, grad_value;
  std::vector<const T*> pa, pb;
  std::vector<int64_t> rows;
  int64_t phase_len;
  explicit Scratch(const Geometry& g)
      : logits(g.window() * kTile),
        grads(g.window() * kTile),
        acc(kTile),
        row(kTile),
        zeros(std::max(kTile, g.out_w)),
        pa(std::max({g.window(), g.dims, g.kernel}) + 3),
        pb(std::max({g.window(), g.dims, g.kernel}) + 3),
        phase_len((g.key_w + g.stride - 1) / g.stride) {
    rows.reserve(2 * g.kernel);
    grad_key.resize(g.stride * phase_len);
    grad_value.resize(g.stride * phase_len);
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
// keys (or values). a and b point at the planes of one head.
template <typename T>
ACMIX_INLINE void window_dots(T* __restrict logits, const T* a, const T* b,
                              const Geometry& g, int64_t y, int64_t x0, int64_t n,
                              Scratch<T>& s) {
  for (int64_t i = 0; i < g.kernel; ++i) {
    for (int64_t j = 0; j < g.kernel; ++j) {
      T* row = logits + (i * g.kernel + j) * kTile;
      std::fill(row, row + n, T(0));
      for (int64_t c = 0; c < g.dims; ++c) {
        s.pa[c] = a + c * g.out_plane() + y * g.out_w + x0;
        s.pb[c] = b + c * g.key_plane() + (y * g.stride + i) * g.key_w + x0 * g.stride + j;
      }
      sum_products(row, s.pa.data(), s.pb.data(), s.pad(g.dims), n, g.stride);
    }
  }
}

// out[c][y][x0 + t] = sum_w weights[w][t] * b[c][y * S + i][(x0 + t) * S + j]: the
// weighted sum of the window's values (or keys, for the query gradient).
template <typename T>
ACMIX_INLINE void window_sums(T* out, const T* weights, const T* b, const Geometry& g,
                              int64_t y, int64_t x0, int64_t n, Scratch<T>& s) {
  T* __restrict acc = s.acc.data();
  for (int64_t w = 0; w < g.window(); ++w) s.pa[w] = weights + w * kTile;
  for (int64_t c = 0; c < g.dims; ++c) {
    std::fill(acc, acc + n, T(0));
    const T* plane = b + c * g.key_plane() + y * g.stride * g.key_w + x0 * g.stride;
    for (int64_t i = 0; i < g.kernel; ++i) {
      for (int64_t j = 0; j < g.kernel; ++j) {
        s.pb[i * g.kernel + j] = plane + i * g.key_w + j;
      }
    }
    sum_products(acc, s.pa.data(), s.pb.data(), s.pad(g.window()), n, g.stride);
    std::copy(acc, acc + n, out + c * g.out_plane() + y * g.out_w + x0);
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
  for (int64_t x0 = 0; x0 < g.out_w; x0 += kTile) {
    const int64_t n = std::min(kTile, g.out_w - x0);
    window_dots(s.logits.data(), q, k, g, y, x0, n, s);
    softmax_tile(s.logits.data(), lse + y * g.out_w + x0, scale, g.window(), n,
                 s.acc.data());
    window_sums(out, s.logits.data(), v, g, y, x0, n, s);
  }
}

// One query row of one plane in the backward pass: the query gradient, and the
// weights and scaled logit gradients of the row's windows (for the key and value
// gradients, gathered per key row afterwards), written to probs and dlogits, laid out
// (N, k*k, rows of the band, W').
template <typename T>
ACMIX_INLINE void backward_query_row_impl(const T* grad_out, const T* q, const T* k,
                                          const T* v, const T* out, const T* lse, T* grad_q,
                                          T* probs, T* dlogits, const Geometry& g, int64_t y,
                                          int64_t band_row, int64_t band_rows, T scale,
                                          Scratch<T>& s) {
  for (int64_t x0 = 0; x0 < g.out_w; x0 += kTile) {
    const int64_t n = std::min(kTile, g.out_w - x0);
    T* p = s.logits.data();
    T* dp = s.grads.data();
    window_dots(p, q, k, g, y, x0, n, s);
    window_dots(dp, grad_out, v, g, y, x0, n, s);
    // D = sum_c dO * O, the weights' share of each logit gradient.
    T* delta = s.row.data();
    std::fill(delta, delta + n, T(0));
    for (int64_t c = 0; c < g.dims; ++c) {
      const int64_t at = c * g.out_plane() + y * g.out_w + x0;
      add_products(delta, grad_out + at, out + at, n);
    }
    for (int64_t w = 0; w < g.window(); ++w) {
      const int64_t at = (w * band_rows + band_row) * g.out_w + x0;
      weights_and_grads(p + w * kTile, dp + w * kTile, lse + y * g.out_w + x0, delta,
                        probs + at, dlogits + at, scale, n);
    }
    window_sums(grad_q, dp, k, g, y, x0, n, s);
  }
}

// One key row of one plane: the key and value gradients from the queries of the band
// [y_begin, y_end) whose windows cover it (added, as rows near a band's edge are seen
// from two bands).
template <typename T>
ACMIX_INLINE void backward_key_row_impl(const T* grad_out, const T* q, const T* probs,
                                        const T* dlogits, T* grad_k, T* grad_v,
                                        const Geometry& g, int64_t key_row, int64_t y_begin,
                                        int64_t y_end, Scratch<T>& s) {
  const int64_t band_rows = y_end - y_begin;
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
  if (rows == 0) return;
  // Key column j + S * x is seen by query x at offset j: accumulated in S phases of
  // the row (column p + S * m at [p][m]), so that every sum runs along contiguous rows.
  const int64_t phases = g.stride * s.phase_len;
  for (int64_t c = 0; c < g.dims; ++c) {
    T* __restrict acc_k = s.grad_key.data();
    T* __restrict acc_v = s.grad_value.data();
    std::fill(acc_k, acc_k + phases, T(0));
    std::fill(acc_v, acc_v + phases, T(0));
    for (int64_t j = 0; j < g.kernel; ++j) {
      const int64_t start = (j % g.stride) * s.phase_len + j / g.stride;
      // acc[x] += sum over the query rows of weights[w][y][x] * factors[c][y][x].
      auto gather = [&](T* acc, const T* weights, const T* factors) {
        for (int64_t r = 0; r < rows; ++r) {
          const int64_t i = ys[2 * r], y = ys[2 * r + 1];
          s.pa[r] = weights + ((i * g.kernel + j) * band_rows + (y - y_begin)) * g.out_w;
          s.pb[r] = factors + c * g.out_plane() + y * g.out_w;
        }
        sum_products(acc + start, s.pa.data(), s.pb.data(), s.pad(rows), g.out_w,
                     int64_t{1});
      };
      gather(acc_k, dlogits, q);
      gather(acc_v, probs, grad_out);
    }
    // Added, not stored: rows at a band's edge are reached from two bands.
    T* __restrict gk = grad_k + c * g.key_plane() + key_row * g.key_w;
    T* __restrict gv = grad_v + c * g.key_plane() + key_row * g.key_w;
    if (g.stride == 1) {
      for (int64_t px = 0; px < g.key_w; ++px) {
        gk[px] += acc_k[px];
        gv[px] += acc_v[px];
      }
    } else {
      for (int64_t px = 0; px < g.key_w; ++px) {
        const int64_t at = (px % g.stride) * s.phase_len + px / g.stride;
        gk[px] += acc_k[at];
        gv[px] += acc_v[at];
      }
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
                                     int64_t band_row, int64_t band_rows, T scale,          \
                                     Scratch<T>& s) {                                       \
    backward_query_row_impl<T>(grad_out, q, k, v, out, lse, grad_q, probs, dlogits, g, y,   \
                               band_row, band_rows, scale, s);                              \
  }                                                                                         \
  ATTRIBUTES void backward_key_row(const T* grad_out, const T* q, const T* probs,          \
                                   const T* dlogits, T* grad_k, T* grad_v,                  \
                                   const Geometry& g, int64_t key_row, int64_t y_begin,     \
                                   int64_t y_end, Scratch<T>& s) {                          \
    backward_key_row_impl<T>(grad_out, q, probs, dlogits, grad_k, grad_v, g, key_row,       \
                             y_begin, y_end, s);                                            \
  }
ACMIX_ROW_KERNELS(float, ACMIX_CLONES)
ACMIX_ROW_KERNELS(double, )
#undef ACMIX_ROW_KERNELS

void check_inputs(const at::Tensor& query, const at::Tensor& key, const at::Tensor& value,
                  int64_t kernel_size, int64_t stride) {
  TORCH_CHECK(query.device().is_cpu(), "sliding_window_attention: CPU tensors only");
  TORCH_CHECK(query.dim() == 4 && key.dim() == 4 && value.dim() == 4,
              "sliding_window_attention: query, key and value are (N, d, H, W)");
  TORCH_CHECK(key.sizes() == value.sizes(),
              "sliding_window_attention: key and value differ in shape");
  TORCH_CHECK(query.scalar_type() == key.scalar_type() &&
                  key.scalar_type() == value.scalar_type(),
              "sliding_window_attention: query, key and value differ in dtype");
  TORCH_CHECK(query.size(0) == key.size(0) && query.size(1) == key.size(1),
              "sliding_window_attention: query and key differ in planes or channels");
  TORCH_CHECK(kernel_size >= 1 && stride >= 1,
              "sliding_window_attention: kernel_size and stride must be positive");
  TORCH_CHECK(query.size(2) >= 1 && query.size(3) >= 1 &&
                  (query.size(2) - 1) * stride + kernel_size <= key.size(2) &&
                  (query.size(3) - 1) * stride + kernel_size <= key.size(3),
              "sliding_window_attention: windows of ", kernel_size, " at stride ", stride,
              " for ", query.size(2), "x", query.size(3), " queries need keys of at least ",
              (query.size(2) - 1) * stride + kernel_size, "x",
              (query.size(3) - 1) * stride + kernel_size, ", got ", key.size(2), "x",
              key.size(3));
}

Geometry geometry(const at::Tensor& query, const at::Tensor& key, int64_t kernel_size,
                  int64_t stride) {
  return Geometry{query.size(0), query.size(1), query.size(2), query.size(3),
                  key.size(2),   key.size(3),   kernel_size,   stride};
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> sliding_window_attention_forward(
    const at::Tensor& query, const at::Tensor& key, const at::Tensor& value,
    int64_t kernel_size, int64_t stride, double scale) {
  check_inputs(query, key, value, kernel_size, stride);
  const at::Tensor q = query.contiguous(), k = key.contiguous(), v = value.contiguous();
  const Geometry g = geometry(q, k, kernel_size, stride);
  at::Tensor out = at::empty_like(q, at::MemoryFormat::Contiguous);
  at::Tensor lse = at::empty({g.planes, g.out_h, g.out_w}, q.options());
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "sliding_window_attention", [&] {
    const scalar_t* q_data = q.const_data_ptr<scalar_t>();
    const scalar_t* k_data = k.const_data_ptr<scalar_t>();
    const scalar_t* v_data = v.const_data_ptr<scalar_t>();
    scalar_t* out_data = out.mutable_data_ptr<scalar_t>();
    scalar_t* lse_data = lse.mutable_data_ptr<scalar_t>();
    const int64_t q_plane = g.dims * g.out_plane(), k_plane = g.dims * g.key_plane();
    at::parallel_for(0, g.planes * g.out_h, 1, [&](int64_t begin, int64_t end) {
      Scratch<scalar_t> scratch(g);
      for (int64_t index = begin; index < end; ++index) {
        const int64_t n = index / g.out_h, y = index % g.out_h;
        forward_row(q_data + n * q_plane, k_data + n * k_plane,
                              v_data + n * k_plane, out_data + n * q_plane,
                              lse_data + n * g.out_plane(), g, y,
                              static_cast<scalar_t>(scale), scratch);
      }
    });
  });
  return {out, lse};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> sliding_window_attention_backward(
    const at::Tensor& grad_out, const at::Tensor& query, const at::Tensor& key,
    const at::Tensor& value, const at::Tensor& out, const at::Tensor& lse,
    int64_t kernel_size, int64_t stride, double scale) {
  check_inputs(query, key, value, kernel_size, stride);
  TORCH_CHECK(grad_out.sizes() == query.sizes() && out.sizes() == query.sizes(),
              "sliding_window_attention_backward: grad_out and out must have the "
              "query's shape");
  TORCH_CHECK(lse.dim() == 3 && lse.size(0) == query.size(0) &&
                  lse.size(1) == query.size(2) && lse.size(2) == query.size(3),
              "sliding_window_attention_backward: lse must be (N, H', W')");
  const at::ScalarType dtype = query.scalar_type();
  TORCH_CHECK(grad_out.scalar_type() == dtype && out.scalar_type() == dtype &&
                  lse.scalar_type() == dtype,
              "sliding_window_attention_backward: all tensors must share one dtype");
  const at::Tensor q = query.contiguous(), k = key.contiguous(), v = value.contiguous();
  const at::Tensor go = grad_out.contiguous(), o = out.contiguous(), m = lse.contiguous();
  const Geometry g = geometry(q, k, kernel_size, stride);
  at::Tensor grad_q = at::empty_like(q, at::MemoryFormat::Contiguous);
  // Zeroed: key rows at a band's edge are added to from two bands.
  at::Tensor grad_k = at::zeros_like(k, at::MemoryFormat::Contiguous);
  at::Tensor grad_v = at::zeros_like(v, at::MemoryFormat::Contiguous);
  if (g.planes == 0 || g.out_plane() == 0) return {grad_q, grad_k, grad_v};
  const int64_t threads = at::get_num_threads();
  // Bands of query rows: their weights and logit gradients are the only scratch (each
  // band's key rows need them complete), at most about 4 MB a plane.
  const int64_t plane_row_bytes = 2 * g.window() * g.out_w * q.element_size();
  // With a plane for every thread, each thread takes whole planes, band after band, and
  // no thread waits for another. With fewer planes, all threads work on each band of
  // all planes: a barrier per band, so bands are large (each wait costs more on a
  // busy machine than any cache saves).
  const bool by_plane = g.planes >= threads;
  const int64_t budget = (by_plane ? int64_t{4} : 4 * threads) << 20;
  const int64_t row_bytes = plane_row_bytes * (by_plane ? 1 : g.planes);
  const int64_t band = std::clamp<int64_t>(budget / row_bytes, 1, g.out_h);
  AT_DISPATCH_FLOATING_TYPES(dtype, "sliding_window_attention_backward", [&] {
    using T = scalar_t;
    const T* q_data = q.const_data_ptr<T>();
    const T* k_data = k.const_data_ptr<T>();
    const T* v_data = v.const_data_ptr<T>();
    const T* go_data = go.const_data_ptr<T>();
    const T* o_data = o.const_data_ptr<T>();
    const T* lse_data = m.const_data_ptr<T>();
    T* gq_data = grad_q.mutable_data_ptr<T>();
    T* gk_data = grad_k.mutable_data_ptr<T>();
    T* gv_data = grad_v.mutable_data_ptr<T>();
    const int64_t q_plane = g.dims * g.out_plane(), k_plane = g.dims * g.key_plane();
    const T typed_scale = static_cast<T>(scale);
    // The query rows [y_begin, y_end) of plane n, then the key rows their windows
    // cover; probs and dlogits hold the band's (k*k, rows, W') of that plane.
    auto query_rows = [&](int64_t n, int64_t y_begin, int64_t y_end, int64_t first,
                          int64_t last, T* probs, T* dlogits, Scratch<T>& scratch) {
      for (int64_t y = y_begin + first; y < y_begin + last; ++y) {
        backward_query_row(go_data + n * q_plane, q_data + n * q_plane, k_data + n * k_plane,
                           v_data + n * k_plane, o_data + n * q_plane,
                           lse_data + n * g.out_plane(), gq_data + n * q_plane, probs,
                           dlogits, g, y, y - y_begin, y_end - y_begin, typed_scale, scratch);
      }
    };
    auto key_rows = [&](int64_t n, int64_t y_begin, int64_t y_end, int64_t first,
                        int64_t last, const T* probs, const T* dlogits, Scratch<T>& scratch) {
      for (int64_t key_row = first; key_row < last; ++key_row) {
        backward_key_row(go_data + n * q_plane, q_data + n * q_plane, probs, dlogits,
                         gk_data + n * k_plane, gv_data + n * k_plane, g, key_row, y_begin,
                         y_end, scratch);
      }
    };
    auto key_range = [&](int64_t y_begin, int64_t y_end) {
      return std::make_pair(y_begin * g.stride, (y_end - 1) * g.stride + g.kernel);
    };
    if (by_plane) {
      at::parallel_for(0, g.planes, 1, [&](int64_t begin, int64_t end) {
        Scratch<T> scratch(g);
        std::vector<T> buffer(2 * g.window() * band * g.out_w);
        T* probs = buffer.data();
        T* dlogits = buffer.data() + g.window() * band * g.out_w;
        for (int64_t n = begin; n < end; ++n) {
          for (int64_t y_begin = 0; y_begin < g.out_h; y_begin += band) {
            const int64_t y_end = std::min(g.out_h, y_begin + band);
            query_rows(n, y_begin, y_end, 0, y_end - y_begin, probs, dlogits, scratch);
            const auto [key_begin, key_end] = key_range(y_begin, y_end);
            key_rows(n, y_begin, y_end, key_begin, key_end, probs, dlogits, scratch);
          }
        }
      });
      return;
    }
    at::Tensor buffers = at::empty({2, g.planes * g.window() * band * g.out_w}, q.options());
    T* probs = buffers[0].mutable_data_ptr<T>();
    T* dlogits = buffers[1].mutable_data_ptr<T>();
    for (int64_t y_begin = 0; y_begin < g.out_h; y_begin += band) {
      const int64_t y_end = std::min(g.out_h, y_begin + band);
      const int64_t rows = y_end - y_begin;
      const int64_t band_plane = g.window() * rows * g.out_w;
      at::parallel_for(0, g.planes * rows, 1, [&](int64_t begin, int64_t end) {
        Scratch<T> scratch(g);
        for (int64_t index = begin; index < end; ++index) {
          const int64_t n = index / rows, row = index % rows;
          query_rows(n, y_begin, y_end, row, row + 1, probs + n * band_plane,
                     dlogits + n * band_plane, scratch);
        }
      });
      const auto [key_begin, key_end] = key_range(y_begin, y_end);
      const int64_t keys = key_end - key_begin;
      at::parallel_for(0, g.planes * keys, 1, [&](int64_t begin, int64_t end) {
        Scratch<T> scratch(g);
        for (int64_t index = begin; index < end; ++index) {
          const int64_t n = index / keys, key_row = key_begin + index % keys;
          key_rows(n, y_begin, y_end, key_row, key_row + 1, probs + n * band_plane,
                   dlogits + n * band_plane, scratch);
        }
      });
    }
  });
  return {grad_q, grad_k, grad_v};
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
