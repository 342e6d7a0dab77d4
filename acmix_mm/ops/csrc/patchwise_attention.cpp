// SAN's patchwise attention on CPU, forward and backward, in three operators.
//
// patch_hidden: the first linear layer (fc1) of each pixel's patch, after its norm (an
// affine map per patch channel, scale and shift) and ReLU:
//
//   hidden[b][h][y][x] = sum_p fc1[h][p] * relu(scale[p] * patch[b][p][y][x] + shift[p]),
//
// over the r * (k*k + 1) patch channels p: the r query channels at the pixel, then each
// key channel c at each patch position j (p = r + c * k*k + j) of a padded key map. The
// patches are read in place, never unfolded.
//
// patch_moments: the batch statistics of those patch channels (sums of x - centre and
// of its square, in double), read in place too.
//
// patch_aggregate: the aggregation with the last linear layer (fc2) folded in:
//
//   out[b][c][y][x] = sum_j w[b][c mod G][j][y][x] * value[b][c][y + j / k][x + j % k],
//   w[b][g][j] = bias[g * k*k + j] + sum_h weight[g * k*k + j][h] * hidden[b][h],
//
// on a value map the caller has already padded (by reflection, for SAN). The weights
// (G * k*k per pixel, several times the value map) are never kept: the forward pass
// makes them one row of pixels at a time and keeps nothing but its inputs; the backward
// pass makes them again, a band of rows at a time.
//
// Layout: channels outermost, (B, C, H, W) contiguous, so that every inner loop runs
// along a row of pixels and the compiler vectorises it. In the backward passes the
// products with fc1 and fc2 over a band's pixels are matrix products (BLAS): per row
// they were dot products over rows of a few pixels in the late stages.
#include <torch/library.h>
#include <ATen/Parallel.h>
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>

#include "large_tensors.h"
#include "matmul.h"
#include "vectorize.h"

#include <algorithm>
#include <cstdint>
#include <tuple>
#include <vector>

namespace acmix_mm {
namespace {

struct AggregateGeometry {
  int64_t batch, channels, height, width, padded_h, padded_w, kernel, groups, hidden;
  int64_t window() const { return kernel * kernel; }
  int64_t weight_rows() const { return groups * window(); }
  int64_t plane() const { return height * width; }
  int64_t padded_plane() const { return padded_h * padded_w; }
};

// acc[x] += a0[x] * b0[x] + ... + a3[x] * b3[x]: one load and store of acc per four
// products. Restrict-qualified parameters, so that the compiler vectorises without
// runtime alias checks.
template <typename T>
ACMIX_INLINE void add_products4(T* __restrict acc, const T* __restrict a0,
                                const T* __restrict a1, const T* __restrict a2,
                                const T* __restrict a3, const T* __restrict b0,
                                const T* __restrict b1, const T* __restrict b2,
                                const T* __restrict b3, int64_t n) {
  for (int64_t x = 0; x < n; ++x) {
    acc[x] += a0[x] * b0[x] + a1[x] * b1[x] + a2[x] * b2[x] + a3[x] * b3[x];
  }
}

template <typename T>
ACMIX_INLINE void add_products(T* __restrict acc, const T* __restrict a,
                               const T* __restrict b, int64_t n) {
  for (int64_t x = 0; x < n; ++x) acc[x] += a[x] * b[x];
}

// acc[x] += sum_p a[p][x] * b[p][x] over `pairs` pairs of rows.
template <typename T>
ACMIX_INLINE void sum_products(T* acc, const T* const* a, const T* const* b, int64_t pairs,
                               int64_t n) {
  int64_t p = 0;
  for (; p + 4 <= pairs; p += 4) {
    add_products4(acc, a[p], a[p + 1], a[p + 2], a[p + 3], b[p], b[p + 1], b[p + 2],
                  b[p + 3], n);
  }
  for (; p < pairs; ++p) add_products(acc, a[p], b[p], n);
}

template <typename T>
ACMIX_INLINE void add_scaled4(T* __restrict acc, T c0, T c1, T c2, T c3,
                              const T* __restrict a0, const T* __restrict a1,
                              const T* __restrict a2, const T* __restrict a3, int64_t n) {
  for (int64_t x = 0; x < n; ++x) acc[x] += c0 * a0[x] + c1 * a1[x] + c2 * a2[x] + c3 * a3[x];
}

template <typename T>
ACMIX_INLINE void add_scaled(T* __restrict acc, T c, const T* __restrict a, int64_t n) {
  for (int64_t x = 0; x < n; ++x) acc[x] += c * a[x];
}

// acc[x] += sum_p coef[p * coef_stride] * rows[p * row_stride + x]: a row of a small
// matrix product, rows of the right-hand side combined four at a time.
template <typename T>
ACMIX_INLINE void combine_rows(T* acc, const T* coef, int64_t coef_stride, const T* rows,
                               int64_t row_stride, int64_t count, int64_t n) {
  int64_t p = 0;
  for (; p + 4 <= count; p += 4) {
    add_scaled4(acc, coef[p * coef_stride], coef[(p + 1) * coef_stride],
                coef[(p + 2) * coef_stride], coef[(p + 3) * coef_stride],
                rows + p * row_stride, rows + (p + 1) * row_stride,
                rows + (p + 2) * row_stride, rows + (p + 3) * row_stride, n);
  }
  for (; p < count; ++p) add_scaled(acc, coef[p * coef_stride], rows + p * row_stride, n);
}

// sum_x a[x] * b[x] in 16 lanes (summed at the end): a fixed-width inner loop that the
// compiler turns into vector operations, where a reduction it vectorises itself (OpenMP
// simd) fell back to scalar code once inlined here. The same sums in every clone.
constexpr int64_t kLanes = 16;

template <typename T>
ACMIX_INLINE T dot(const T* __restrict a, const T* __restrict b, int64_t n) {
  T lanes[kLanes] = {};
  int64_t x = 0;
  for (; x + kLanes <= n; x += kLanes) {
    for (int64_t l = 0; l < kLanes; ++l) lanes[l] += a[x + l] * b[x + l];
  }
  T sum = 0;
  for (; x < n; ++x) sum += a[x] * b[x];
  for (int64_t l = 0; l < kLanes; ++l) sum += lanes[l];
  return sum;
}

template <typename T>
ACMIX_INLINE T row_sum(const T* __restrict a, int64_t n) {
  T lanes[kLanes] = {};
  int64_t x = 0;
  for (; x + kLanes <= n; x += kLanes) {
    for (int64_t l = 0; l < kLanes; ++l) lanes[l] += a[x + l];
  }
  T sum = 0;
  for (; x < n; ++x) sum += a[x];
  for (int64_t l = 0; l < kLanes; ++l) sum += lanes[l];
  return sum;
}

// Pointer lists of one thread's row sums.
template <typename T>
struct Pairs {
  std::vector<const T*> a, b;
  explicit Pairs(int64_t size) : a(size), b(size) {}
};

// w[r][x] = bias[r] + sum_h weight[r][h] * hidden[h][x] for the G * k*k weight rows of
// one row of pixels; `hidden` points at that row of the first hidden channel.
template <typename T>
ACMIX_INLINE void weight_row_impl(const T* weight, const T* bias, const T* hidden,
                                  const AggregateGeometry& g, T* w) {
  for (int64_t r = 0; r < g.weight_rows(); ++r) {
    T* out = w + r * g.width;
    std::fill(out, out + g.width, bias[r]);
    combine_rows(out, weight + r * g.hidden, 1, hidden, g.plane(), g.hidden, g.width);
  }
}

// One output row: its weights, then each channel's sum over the k*k shifted rows of
// its padded values.
template <typename T>
ACMIX_INLINE void forward_row_impl(const T* value, const T* hidden, const T* weight,
                                   const T* bias, T* out, const AggregateGeometry& g,
                                   int64_t b, int64_t y, T* w, Pairs<T>& s) {
  weight_row_impl(weight, bias, hidden + b * g.hidden * g.plane() + y * g.width, g, w);
  const int64_t kk = g.window();
  for (int64_t c = 0; c < g.channels; ++c) {
    const T* weights = w + (c % g.groups) * kk * g.width;
    const T* values = value + (b * g.channels + c) * g.padded_plane() + y * g.padded_w;
    for (int64_t j = 0; j < kk; ++j) {
      s.a[j] = weights + j * g.width;
      s.b[j] = values + (j / g.kernel) * g.padded_w + j % g.kernel;
    }
    T* row = out + (b * g.channels + c) * g.plane() + y * g.width;
    std::fill(row, row + g.width, T(0));
    sum_products(row, s.a.data(), s.b.data(), kk, g.width);
  }
}

// One output row in the backward pass: the gradients of its weights (rows `stride` apart
// in `grad_w`, for the matrix products over the band that give the fc2 and hidden
// gradients) and this row's share of the bias gradient (`partial`).
template <typename T>
ACMIX_INLINE void backward_query_row_impl(const T* grad_out, const T* value, T* grad_w,
                                          int64_t stride, T* partial,
                                          const AggregateGeometry& g, int64_t b, int64_t y,
                                          Pairs<T>& s) {
  const int64_t kk = g.window(), shared = g.channels / g.groups;
  // grad_w[g][j][x] = sum over the channels c of group g of dout[c][x] * v[c][j][x].
  for (int64_t group = 0; group < g.groups; ++group) {
    for (int64_t j = 0; j < kk; ++j) {
      const int64_t shift = (j / g.kernel) * g.padded_w + j % g.kernel;
      for (int64_t m = 0; m < shared; ++m) {
        const int64_t c = group + m * g.groups;
        s.a[m] = grad_out + (b * g.channels + c) * g.plane() + y * g.width;
        s.b[m] = value + (b * g.channels + c) * g.padded_plane() + y * g.padded_w + shift;
      }
      T* row = grad_w + (group * kk + j) * stride;
      std::fill(row, row + g.width, T(0));
      sum_products(row, s.a.data(), s.b.data(), shared, g.width);
    }
  }
  for (int64_t r = 0; r < g.weight_rows(); ++r) partial[r] = row_sum(grad_w + r * stride, g.width);
}

// One padded value row: added to from the output rows [y_begin, y_end) whose patches
// hold it (rows at a band's edge are reached from two bands). `weights` holds the
// band's weights, (B, G*k*k, rows of the band * W).
template <typename T>
ACMIX_INLINE void backward_value_row_impl(const T* grad_out, const T* weights, T* grad_value,
                                          const AggregateGeometry& g, int64_t b, int64_t py,
                                          int64_t y_begin, int64_t y_end, Pairs<T>& s) {
  const int64_t kk = g.window(), pixels = (y_end - y_begin) * g.width;
  const int64_t i_first = std::max<int64_t>(0, py - (y_end - 1));
  const int64_t i_last = std::min<int64_t>(g.kernel, py - y_begin + 1);
  for (int64_t c = 0; c < g.channels; ++c) {
    T* row = grad_value + (b * g.channels + c) * g.padded_plane() + py * g.padded_w;
    const int64_t group = c % g.groups;
    for (int64_t jx = 0; jx < g.kernel; ++jx) {
      int64_t pairs = 0;
      for (int64_t i = i_first; i < i_last; ++i) {
        const int64_t y = py - i;
        s.a[pairs] = weights + (b * g.weight_rows() + group * kk + i * g.kernel + jx) * pixels +
                     (y - y_begin) * g.width;
        s.b[pairs++] = grad_out + (b * g.channels + c) * g.plane() + y * g.width;
      }
      // Column jx + x of the padded row is seen by output x at patch column jx.
      sum_products(row + jx, s.a.data(), s.b.data(), pairs, g.width);
    }
  }
}

// The row kernels: float32, the dtype that trains, in AVX-512, AVX2 and baseline clones;
// float64 (tests, gradient checks) in the baseline only, which keeps the build short.
#define ACMIX_ROW_KERNELS(T, ATTRIBUTES)                                                    \
  ATTRIBUTES void forward_row(const T* value, const T* hidden, const T* weight,            \
                              const T* bias, T* out, const AggregateGeometry& g, int64_t b, \
                              int64_t y, T* w, Pairs<T>& s) {                               \
    forward_row_impl<T>(value, hidden, weight, bias, out, g, b, y, w, s);                   \
  }                                                                                         \
  ATTRIBUTES void backward_query_row(const T* grad_out, const T* value, T* grad_w,          \
                                     int64_t stride, T* partial,                            \
                                     const AggregateGeometry& g, int64_t b, int64_t y,      \
                                     Pairs<T>& s) {                                         \
    backward_query_row_impl<T>(grad_out, value, grad_w, stride, partial, g, b, y, s);       \
  }                                                                                         \
  ATTRIBUTES void backward_value_row(const T* grad_out, const T* weights, T* grad_value,   \
                                     const AggregateGeometry& g, int64_t b, int64_t py,     \
                                     int64_t y_begin, int64_t y_end, Pairs<T>& s) {         \
    backward_value_row_impl<T>(grad_out, weights, grad_value, g, b, py, y_begin, y_end, s); \
  }
ACMIX_ROW_KERNELS(float, ACMIX_CLONES)
ACMIX_ROW_KERNELS(double, )
#undef ACMIX_ROW_KERNELS

AggregateGeometry aggregate_geometry(const at::Tensor& value, const at::Tensor& hidden,
                                     const at::Tensor& weight, const at::Tensor& bias,
                                     int64_t kernel_size) {
  TORCH_CHECK(value.device().is_cpu(), "patch_aggregate: CPU tensors only");
  TORCH_CHECK(value.dim() == 4 && hidden.dim() == 4 && weight.dim() == 2 && bias.dim() == 1,
              "patch_aggregate: value (B, C, Hp, Wp), hidden (B, G', H, W), weight "
              "(G*k*k, G') and bias (G*k*k)");
  TORCH_CHECK(value.scalar_type() == hidden.scalar_type() &&
                  weight.scalar_type() == value.scalar_type() &&
                  bias.scalar_type() == value.scalar_type(),
              "patch_aggregate: value, hidden, weight and bias differ in dtype");
  TORCH_CHECK(kernel_size >= 1, "patch_aggregate: kernel_size must be positive");
  const int64_t window = kernel_size * kernel_size;
  TORCH_CHECK(weight.size(0) % window == 0 && weight.size(0) > 0 &&
                  bias.size(0) == weight.size(0) && weight.size(1) == hidden.size(1),
              "patch_aggregate: weight must be (G*", window, ", ", hidden.size(1),
              ") and bias (G*", window, "), got ", weight.sizes(), " and ", bias.sizes());
  const int64_t groups = weight.size(0) / window;
  TORCH_CHECK(value.size(1) % groups == 0, "patch_aggregate: ", value.size(1),
              " value channels do not share ", groups, " weight channels");
  TORCH_CHECK(value.size(0) == hidden.size(0) &&
                  value.size(2) == hidden.size(2) + kernel_size - 1 &&
                  value.size(3) == hidden.size(3) + kernel_size - 1,
              "patch_aggregate: values padded for patches of ", kernel_size, " around a ",
              hidden.size(2), "x", hidden.size(3), " map are ",
              hidden.size(2) + kernel_size - 1, "x", hidden.size(3) + kernel_size - 1,
              ", got ", value.size(2), "x", value.size(3));
  return AggregateGeometry{value.size(0),  value.size(1),  hidden.size(2),
                           hidden.size(3), value.size(2),  value.size(3),
                           kernel_size,    groups,         hidden.size(1)};
}

struct HiddenGeometry {
  int64_t batch, channels, height, width, padded_h, padded_w, kernel, hidden;
  int64_t window() const { return kernel * kernel; }
  int64_t patch_channels() const { return channels * (window() + 1); }
  int64_t plane() const { return height * width; }
  int64_t padded_plane() const { return padded_h * padded_w; }
};

// Row y of patch channel p of image b: a query row, or a key row shifted to position j.
template <typename T>
ACMIX_INLINE const T* patch_row(const T* query, const T* key, const HiddenGeometry& g,
                                int64_t b, int64_t y, int64_t p) {
  if (p < g.channels) return query + ((b * g.channels + p) * g.height + y) * g.width;
  const int64_t c = (p - g.channels) / g.window(), j = (p - g.channels) % g.window();
  return key + (b * g.channels + c) * g.padded_plane() + (y + j / g.kernel) * g.padded_w +
         j % g.kernel;
}

template <typename T>
ACMIX_INLINE void affine_relu(T* __restrict out, const T* __restrict in, T scale, T shift,
                              int64_t n) {
  for (int64_t x = 0; x < n; ++x) {
    const T pre = scale * in[x] + shift;
    out[x] = pre > T(0) ? pre : T(0);
  }
}

// Patch channels normalised (and passed through ReLU) four at a time into `rows`, then
// added to every hidden row with their fc1 weights: one pass over a hidden row per four
// patch channels.
template <typename T>
ACMIX_INLINE void hidden_row_impl(const T* query, const T* key, const T* scale,
                                  const T* shift, const T* weight, T* hidden,
                                  const HiddenGeometry& g, int64_t b, int64_t y, T* rows) {
  const int64_t patch = g.patch_channels(), n = g.width;
  T* out = hidden + b * g.hidden * g.plane() + y * g.width;
  for (int64_t h = 0; h < g.hidden; ++h) std::fill(out + h * g.plane(), out + h * g.plane() + n, T(0));
  for (int64_t p0 = 0; p0 < patch; p0 += 4) {
    const int64_t count = std::min<int64_t>(4, patch - p0);
    for (int64_t m = 0; m < count; ++m) {
      const int64_t p = p0 + m;
      affine_relu(rows + m * n, patch_row(query, key, g, b, y, p), scale[p], shift[p], n);
    }
    for (int64_t h = 0; h < g.hidden; ++h) {
      combine_rows(out + h * g.plane(), weight + h * patch + p0, 1, rows, n, count, n);
    }
  }
}

// One output row in the backward pass: for each patch channel, its normalised input
// (written to `relu_rows` for the fc1 gradient's matrix product over the band) and
// that input's gradient (in `grad_rows`, fc1's transpose times the hidden gradients,
// passed through ReLU in place), which gives this row's share of the scale and shift
// gradients (added to `partial`: scale, then shift), the query gradient, and (times the
// scale) the gradients of the key rows it was read from, written to `key_grads` (the
// band's (r * k*k) x W rows of this row). Rows of `relu_rows` and `grad_rows` are
// `stride` apart. `grad_hidden` null: `grad_rows` holds the products with fc1 already;
// else they are made here, row by row (cheaper for few hidden channels, whose matrix
// product only moves memory).
template <typename T>
ACMIX_INLINE void hidden_backward_row_impl(const T* query, const T* key, const T* scale,
                                           const T* shift, const T* weight,
                                           const T* grad_hidden, T* grad_query, T* key_grads,
                                           T* relu_rows, T* grad_rows, int64_t stride,
                                           T* partial, const HiddenGeometry& g, int64_t b,
                                           int64_t y) {
  const int64_t patch = g.patch_channels(), n = g.width;
  const T* grads = grad_hidden + b * g.hidden * g.plane() + y * g.width;
  for (int64_t p = 0; p < patch; ++p) {
    const T* in = patch_row(query, key, g, b, y, p);
    T* relu_row = relu_rows + p * stride;
    T* grad_row = grad_rows + p * stride;
    affine_relu(relu_row, in, scale[p], shift[p], n);
    if (grad_hidden != nullptr) {
      std::fill(grad_row, grad_row + n, T(0));
      combine_rows(grad_row, weight + p, patch, grads, g.plane(), g.hidden, n);
    }
    // Where ReLU let the input through, the gradient passes (relu_row > 0 there, but
    // for inputs that normalise to exactly 0, as ReLU's derivative at 0 is 0).
    for (int64_t x = 0; x < n; ++x) grad_row[x] = relu_row[x] > T(0) ? grad_row[x] : T(0);
    partial[p] += dot(grad_row, in, n);
    partial[patch + p] += row_sum(grad_row, n);
    T* out = p < g.channels ? grad_query + ((b * g.channels + p) * g.height + y) * g.width
                            : key_grads + (p - g.channels) * n;
    const T factor = scale[p];
    for (int64_t x = 0; x < n; ++x) out[x] = factor * grad_row[x];
  }
}

// acc[x] += sum_p rows[p][x], four rows per pass over acc.
template <typename T>
ACMIX_INLINE void add_rows4(T* __restrict acc, const T* __restrict a0, const T* __restrict a1,
                            const T* __restrict a2, const T* __restrict a3, int64_t n) {
  for (int64_t x = 0; x < n; ++x) acc[x] += (a0[x] + a1[x]) + (a2[x] + a3[x]);
}

template <typename T>
ACMIX_INLINE void add_row(T* __restrict acc, const T* __restrict a, int64_t n) {
  for (int64_t x = 0; x < n; ++x) acc[x] += a[x];
}

// One padded key row: the gradients its patch positions received from the output rows
// [y_begin, y_end) (`key_grads`: (B, rows of the band, r * k*k, W)), added (rows at a
// band's edge are reached from two bands).
template <typename T>
ACMIX_INLINE void hidden_backward_key_row_impl(const T* key_grads, T* grad_key,
                                               const HiddenGeometry& g, int64_t b,
                                               int64_t py, int64_t y_begin, int64_t y_end,
                                               std::vector<const T*>& list) {
  const int64_t kk = g.window(), band_rows = y_end - y_begin;
  const int64_t i_first = std::max<int64_t>(0, py - (y_end - 1));
  const int64_t i_last = std::min<int64_t>(g.kernel, py - y_begin + 1);
  for (int64_t c = 0; c < g.channels; ++c) {
    T* row = grad_key + (b * g.channels + c) * g.padded_plane() + py * g.padded_w;
    for (int64_t jx = 0; jx < g.kernel; ++jx) {
      int64_t count = 0;
      for (int64_t i = i_first; i < i_last; ++i) {
        list[count++] = key_grads + ((b * band_rows + py - i - y_begin) * g.channels * kk +
                                     c * kk + i * g.kernel + jx) * g.width;
      }
      int64_t m = 0;
      for (; m + 4 <= count; m += 4) {
        add_rows4(row + jx, list[m], list[m + 1], list[m + 2], list[m + 3], g.width);
      }
      for (; m < count; ++m) add_row(row + jx, list[m], g.width);
    }
  }
}

#define ACMIX_HIDDEN_KERNELS(T, ATTRIBUTES)                                                 \
  ATTRIBUTES void hidden_row(const T* query, const T* key, const T* scale, const T* shift,  \
                             const T* weight, T* hidden, const HiddenGeometry& g, int64_t b, \
                             int64_t y, T* rows) {                                          \
    hidden_row_impl<T>(query, key, scale, shift, weight, hidden, g, b, y, rows);            \
  }                                                                                         \
  ATTRIBUTES void hidden_backward_row(const T* query, const T* key, const T* scale,         \
                                      const T* shift, const T* weight,                      \
                                      const T* grad_hidden, T* grad_query, T* key_grads,    \
                                      T* relu_rows, T* grad_rows, int64_t stride,           \
                                      T* partial, const HiddenGeometry& g, int64_t b,       \
                                      int64_t y) {                                          \
    hidden_backward_row_impl<T>(query, key, scale, shift, weight, grad_hidden, grad_query,  \
                                key_grads, relu_rows, grad_rows, stride, partial, g, b, y); \
  }                                                                                         \
  ATTRIBUTES void hidden_backward_key_row(const T* key_grads, T* grad_key,                  \
                                          const HiddenGeometry& g, int64_t b, int64_t py,   \
                                          int64_t y_begin, int64_t y_end,                   \
                                          std::vector<const T*>& list) {                    \
    hidden_backward_key_row_impl<T>(key_grads, grad_key, g, b, py, y_begin, y_end, list);   \
  }
ACMIX_HIDDEN_KERNELS(float, ACMIX_CLONES)
ACMIX_HIDDEN_KERNELS(double, )
#undef ACMIX_HIDDEN_KERNELS

// The query and padded key maps that patch_hidden and patch_moments read (`op` names
// the operator in messages), with `extras` (parameters) of the same dtype; their
// geometry, with `hidden` channels out.
HiddenGeometry patch_maps_geometry(const char* op, const at::Tensor& query,
                                   const at::Tensor& key, at::TensorList extras,
                                   int64_t kernel_size, int64_t hidden) {
  TORCH_CHECK(query.device().is_cpu(), op, ": CPU tensors only");
  TORCH_CHECK(query.dim() == 4 && key.dim() == 4, op,
              ": query (B, r, H, W) and key (B, r, Hp, Wp)");
  bool same_dtype = key.scalar_type() == query.scalar_type();
  for (const at::Tensor& extra : extras) {
    same_dtype = same_dtype && extra.scalar_type() == query.scalar_type();
  }
  TORCH_CHECK(same_dtype, op, ": query, key and parameters differ in dtype");
  TORCH_CHECK(kernel_size >= 1, op, ": kernel_size must be positive");
  TORCH_CHECK(key.size(0) == query.size(0) && key.size(1) == query.size(1) &&
                  key.size(2) == query.size(2) + kernel_size - 1 &&
                  key.size(3) == query.size(3) + kernel_size - 1,
              op, ": keys padded for patches of ", kernel_size, " around a ", query.size(2),
              "x", query.size(3), " map are (", query.size(0), ", ", query.size(1), ", ",
              query.size(2) + kernel_size - 1, ", ", query.size(3) + kernel_size - 1,
              "), got ", key.sizes());
  return HiddenGeometry{query.size(0), query.size(1), query.size(2), query.size(3),
                        key.size(2),   key.size(3),   kernel_size,   hidden};
}

HiddenGeometry hidden_geometry(const at::Tensor& query, const at::Tensor& key,
                               const at::Tensor& scale, const at::Tensor& shift,
                               const at::Tensor& weight, int64_t kernel_size) {
  TORCH_CHECK(scale.dim() == 1 && shift.dim() == 1 && weight.dim() == 2,
              "patch_hidden: scale and shift (r*(k*k+1)), weight (G', r*(k*k+1))");
  const HiddenGeometry g = patch_maps_geometry("patch_hidden", query, key,
                                               {scale, shift, weight}, kernel_size,
                                               weight.size(0));
  const int64_t patch = g.patch_channels();
  TORCH_CHECK(scale.size(0) == patch && shift.size(0) == patch && weight.size(1) == patch,
              "patch_hidden: ", g.channels, " channels in patches of ", kernel_size,
              " make ", patch, " patch channels; got scale ", scale.sizes(), ", shift ",
              shift.sizes(), " and weight ", weight.sizes());
  return g;
}

// Sums of one row of x - centre and of its squares, in double (in lanes, as dot).
template <typename T>
ACMIX_INLINE void centred_sums(const T* __restrict x, T centre, int64_t n, double* sums) {
  double lanes[2][kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int64_t l = 0; l < kLanes; ++l) {
      const double d = static_cast<double>(x[i + l] - centre);
      lanes[0][l] += d;
      lanes[1][l] += d * d;
    }
  }
  for (; i < n; ++i) {
    const double d = static_cast<double>(x[i] - centre);
    sums[0] += d;
    sums[1] += d * d;
  }
  for (int64_t l = 0; l < kLanes; ++l) {
    sums[0] += lanes[0][l];
    sums[1] += lanes[1][l];
  }
}

// The moments of query channel c and of key channel c at every patch position:
// sums[m][p] over the batch and the map, m = 0 for x - centre, 1 for its square.
template <typename T>
ACMIX_INLINE void moments_channel_impl(const T* query, const T* key, const T* centres_q,
                                       const T* centres_k, double* sums,
                                       const HiddenGeometry& g, int64_t c, double* rows) {
  const int64_t patch = g.patch_channels(), kk = g.window();
  double q_sums[2] = {0.0, 0.0};
  for (int64_t b = 0; b < g.batch; ++b) {
    centred_sums(query + (b * g.channels + c) * g.plane(), centres_q[c], g.plane(), q_sums);
  }
  sums[c] = q_sums[0];
  sums[patch + c] = q_sums[1];
  // rows[m][py][jx]: the sums of padded row py over the columns patch column jx sees.
  std::fill(rows, rows + 2 * g.padded_h * g.kernel, 0.0);
  for (int64_t b = 0; b < g.batch; ++b) {
    for (int64_t py = 0; py < g.padded_h; ++py) {
      const T* row = key + (b * g.channels + c) * g.padded_plane() + py * g.padded_w;
      for (int64_t jx = 0; jx < g.kernel; ++jx) {
        double pair[2] = {0.0, 0.0};
        centred_sums(row + jx, centres_k[c], g.width, pair);
        rows[py * g.kernel + jx] += pair[0];
        rows[(g.padded_h + py) * g.kernel + jx] += pair[1];
      }
    }
  }
  for (int64_t m = 0; m < 2; ++m) {
    for (int64_t j = 0; j < kk; ++j) {
      const int64_t i = j / g.kernel, jx = j % g.kernel;
      double total = 0.0;
      for (int64_t py = i; py < i + g.height; ++py) total += rows[(m * g.padded_h + py) * g.kernel + jx];
      sums[m * patch + g.channels + c * kk + j] = total;
    }
  }
}

// The gradients of one query plane and one padded key plane (image b, channel c) from
// those of the sums: d/dx of sum (x - centre) and sum (x - centre)^2 over the patch
// positions whose window holds x. `coefs` is scratch of 2 * (Hp * k + Wp).
template <typename T>
ACMIX_INLINE void moments_backward_plane_impl(const double* grad_sums, const T* query,
                                              const T* key, const T* centres_q,
                                              const T* centres_k, T* grad_query,
                                              T* grad_key, const HiddenGeometry& g,
                                              int64_t b, int64_t c, T* coefs) {
  const int64_t patch = g.patch_channels(), kk = g.window();
  {
    const T g0 = static_cast<T>(grad_sums[c]), g1 = static_cast<T>(2.0 * grad_sums[patch + c]);
    const T* x = query + (b * g.channels + c) * g.plane();
    T* out = grad_query + (b * g.channels + c) * g.plane();
    const T centre = centres_q[c];
    for (int64_t i = 0; i < g.plane(); ++i) out[i] = g0 + g1 * (x[i] - centre);
  }
  T* row_coefs = coefs;                          // [m][py][jx]
  T* line = coefs + 2 * g.padded_h * g.kernel;  // [m][px]
  for (int64_t m = 0; m < 2; ++m) {
    for (int64_t py = 0; py < g.padded_h; ++py) {
      const int64_t i_first = std::max<int64_t>(0, py - g.height + 1);
      const int64_t i_last = std::min<int64_t>(g.kernel - 1, py);
      for (int64_t jx = 0; jx < g.kernel; ++jx) {
        double total = 0.0;
        for (int64_t i = i_first; i <= i_last; ++i) {
          total += grad_sums[m * patch + g.channels + c * kk + i * g.kernel + jx];
        }
        row_coefs[(m * g.padded_h + py) * g.kernel + jx] = static_cast<T>(m ? 2.0 * total : total);
      }
    }
  }
  const T centre = centres_k[c];
  for (int64_t py = 0; py < g.padded_h; ++py) {
    for (int64_t m = 0; m < 2; ++m) {
      T* acc = line + m * g.padded_w;
      std::fill(acc, acc + g.padded_w, T(0));
      for (int64_t jx = 0; jx < g.kernel; ++jx) {
        const T coef = row_coefs[(m * g.padded_h + py) * g.kernel + jx];
        T* __restrict span = acc + jx;
        for (int64_t x = 0; x < g.width; ++x) span[x] += coef;
      }
    }
    const T* x = key + (b * g.channels + c) * g.padded_plane() + py * g.padded_w;
    T* out = grad_key + (b * g.channels + c) * g.padded_plane() + py * g.padded_w;
    for (int64_t px = 0; px < g.padded_w; ++px) {
      out[px] = line[px] + line[g.padded_w + px] * (x[px] - centre);
    }
  }
}

#define ACMIX_MOMENTS_KERNELS(T, ATTRIBUTES)                                                \
  ATTRIBUTES void moments_channel(const T* query, const T* key, const T* centres_q,          \
                                  const T* centres_k, double* sums, const HiddenGeometry& g, \
                                  int64_t c, double* rows) {                                 \
    moments_channel_impl<T>(query, key, centres_q, centres_k, sums, g, c, rows);             \
  }                                                                                          \
  ATTRIBUTES void moments_backward_plane(const double* grad_sums, const T* query,            \
                                         const T* key, const T* centres_q,                   \
                                         const T* centres_k, T* grad_query, T* grad_key,     \
                                         const HiddenGeometry& g, int64_t b, int64_t c,      \
                                         T* coefs) {                                         \
    moments_backward_plane_impl<T>(grad_sums, query, key, centres_q, centres_k, grad_query,  \
                                   grad_key, g, b, c, coefs);                                \
  }
ACMIX_MOMENTS_KERNELS(float, ACMIX_CLONES)
ACMIX_MOMENTS_KERNELS(double, )
#undef ACMIX_MOMENTS_KERNELS

HiddenGeometry moments_geometry(const at::Tensor& query, const at::Tensor& key,
                                const at::Tensor& centres_q, const at::Tensor& centres_k,
                                int64_t kernel_size) {
  TORCH_CHECK(centres_q.dim() == 1 && centres_k.dim() == 1 &&
                  centres_q.size(0) == query.size(1) && centres_k.size(0) == query.size(1),
              "patch_moments: centres (r) for the query and for the key");
  return patch_maps_geometry("patch_moments", query, key, {centres_q, centres_k},
                             kernel_size, 0);
}

}  // namespace

at::Tensor patch_aggregate_forward(const at::Tensor& value, const at::Tensor& hidden,
                                   const at::Tensor& weight, const at::Tensor& bias,
                                   int64_t kernel_size) {
  const AggregateGeometry g = aggregate_geometry(value, hidden, weight, bias, kernel_size);
  const at::Tensor v = value.contiguous(), h = hidden.contiguous();
  const at::Tensor fc = weight.contiguous(), fb = bias.contiguous();
  at::Tensor out = empty_large({g.batch, g.channels, g.height, g.width}, v.options());
  AT_DISPATCH_FLOATING_TYPES(v.scalar_type(), "patch_aggregate", [&] {
    using T = scalar_t;
    const T* v_data = v.const_data_ptr<T>();
    const T* h_data = h.const_data_ptr<T>();
    const T* w_data = fc.const_data_ptr<T>();
    const T* b_data = fb.const_data_ptr<T>();
    T* out_data = out.mutable_data_ptr<T>();
    at::parallel_for(0, g.batch * g.height, 1, [&](int64_t begin, int64_t end) {
      std::vector<T> w(g.weight_rows() * g.width);
      Pairs<T> pairs(g.window());
      for (int64_t index = begin; index < end; ++index) {
        forward_row(v_data, h_data, w_data, b_data, out_data, g, index / g.height,
                    index % g.height, w.data(), pairs);
      }
    });
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> patch_aggregate_backward(
    const at::Tensor& grad_out, const at::Tensor& value, const at::Tensor& hidden,
    const at::Tensor& weight, const at::Tensor& bias, int64_t kernel_size) {
  const AggregateGeometry g = aggregate_geometry(value, hidden, weight, bias, kernel_size);
  TORCH_CHECK(grad_out.sizes() == at::IntArrayRef({g.batch, g.channels, g.height, g.width}) &&
                  grad_out.scalar_type() == value.scalar_type(),
              "patch_aggregate_backward: grad_out must be (B, C, H, W) as the output");
  const at::Tensor go = grad_out.contiguous(), v = value.contiguous(), h = hidden.contiguous();
  const at::Tensor fc = weight.contiguous(), fb = bias.contiguous();
  // Zeroed: padded rows at a band's edge are added to from two bands.
  at::Tensor grad_value = empty_large_like(v).zero_();
  at::Tensor grad_hidden = empty_large_like(h);
  at::Tensor grad_weight = at::zeros_like(fc, at::MemoryFormat::Contiguous);
  at::Tensor grad_bias = at::zeros_like(fb, at::MemoryFormat::Contiguous);
  if (g.batch == 0 || g.plane() == 0) return {grad_value, grad_hidden, grad_weight, grad_bias};
  // Bands of output rows: their weights (fc2 of the hidden rows, needed complete by the
  // value rows they cover) and the weights' gradients, both (G*k*k) x pixels of the
  // band for the matrix products with fc2 and the hidden rows (the fc2 and hidden
  // gradients), are the only scratch, about 16 MB in float32.
  const int64_t rows = g.weight_rows();
  const int64_t band = std::clamp<int64_t>(
      (int64_t{4} << 20) / (g.batch * rows * (2 * g.width + 1)), 1, g.height);
  at::Tensor weights = empty_large({g.batch, rows, band * g.width}, v.options());
  at::Tensor grad_w = empty_large({g.batch, rows, band * g.width}, v.options());
  AT_DISPATCH_FLOATING_TYPES(v.scalar_type(), "patch_aggregate_backward", [&] {
    using T = scalar_t;
    const T* go_data = go.const_data_ptr<T>();
    const T* v_data = v.const_data_ptr<T>();
    T* gv_data = grad_value.mutable_data_ptr<T>();
    T* gb_data = grad_bias.mutable_data_ptr<T>();
    T* w_band = weights.mutable_data_ptr<T>();
    T* gw_band = grad_w.mutable_data_ptr<T>();
    std::vector<T> partials(g.batch * band * rows);
    for (int64_t y_begin = 0; y_begin < g.height; y_begin += band) {
      const int64_t y_end = std::min(g.height, y_begin + band), band_rows = y_end - y_begin;
      const int64_t pixels = band_rows * g.width;
      auto band_of = [&](const at::Tensor& map, int64_t b) {  // (channels, pixels)
        return map.select(0, b).narrow(1, y_begin, band_rows).reshape({map.size(1), pixels});
      };
      auto matrix = [&](T* data, int64_t b) {  // (G*k*k, pixels) of image b
        return at::from_blob(data + b * rows * pixels, {rows, pixels}, v.options());
      };
      for (int64_t b = 0; b < g.batch; ++b) {
        at::Tensor out = matrix(w_band, b);
        out.copy_(fb.unsqueeze(1).expand({rows, pixels}));
        matmul_into(out, fc, band_of(h, b), true);
      }
      at::parallel_for(0, g.batch * band_rows, 1, [&](int64_t begin, int64_t end) {
        Pairs<T> pairs(g.channels / g.groups);
        for (int64_t index = begin; index < end; ++index) {
          const int64_t b = index / band_rows, row = index % band_rows;
          backward_query_row(go_data, v_data, gw_band + b * rows * pixels + row * g.width,
                             pixels, partials.data() + index * rows, g, b, y_begin + row,
                             pairs);
        }
      });
      // Each row's share of the bias gradient, added in order: the same result on every
      // run.
      for (int64_t index = 0; index < g.batch * band_rows; ++index) {
        const T* partial = partials.data() + index * rows;
        for (int64_t r = 0; r < rows; ++r) gb_data[r] += partial[r];
      }
      for (int64_t b = 0; b < g.batch; ++b) {
        const at::Tensor band_grads = matrix(gw_band, b);
        matmul_into(grad_weight, band_grads, band_of(h, b).t(), true);
        at::Tensor hidden_grads = band_of(grad_hidden, b);
        matmul_into(hidden_grads, fc.t(), band_grads, false);
      }
      const int64_t value_rows = band_rows + g.kernel - 1;
      at::parallel_for(0, g.batch * value_rows, 1, [&](int64_t begin, int64_t end) {
        Pairs<T> pairs(g.kernel);
        for (int64_t index = begin; index < end; ++index) {
          backward_value_row(go_data, w_band, gv_data, g, index / value_rows,
                             y_begin + index % value_rows, y_begin, y_end, pairs);
        }
      });
    }
  });
  return {grad_value, grad_hidden, grad_weight, grad_bias};
}

at::Tensor patch_hidden_forward(const at::Tensor& query, const at::Tensor& key,
                                const at::Tensor& scale, const at::Tensor& shift,
                                const at::Tensor& weight, int64_t kernel_size) {
  const HiddenGeometry g = hidden_geometry(query, key, scale, shift, weight, kernel_size);
  const at::Tensor q = query.contiguous(), k = key.contiguous(), s = scale.contiguous();
  const at::Tensor t = shift.contiguous(), fc = weight.contiguous();
  at::Tensor hidden = empty_large({g.batch, g.hidden, g.height, g.width}, q.options());
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "patch_hidden", [&] {
    using T = scalar_t;
    at::parallel_for(0, g.batch * g.height, 1, [&](int64_t begin, int64_t end) {
      std::vector<T> rows(4 * g.width);
      for (int64_t index = begin; index < end; ++index) {
        hidden_row(q.const_data_ptr<T>(), k.const_data_ptr<T>(), s.const_data_ptr<T>(),
                   t.const_data_ptr<T>(), fc.const_data_ptr<T>(), hidden.mutable_data_ptr<T>(),
                   g, index / g.height, index % g.height, rows.data());
      }
    });
  });
  return hidden;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> patch_hidden_backward(
    const at::Tensor& grad_hidden, const at::Tensor& query, const at::Tensor& key,
    const at::Tensor& scale, const at::Tensor& shift, const at::Tensor& weight,
    int64_t kernel_size) {
  const HiddenGeometry g = hidden_geometry(query, key, scale, shift, weight, kernel_size);
  TORCH_CHECK(grad_hidden.sizes() == at::IntArrayRef({g.batch, g.hidden, g.height, g.width}) &&
                  grad_hidden.scalar_type() == query.scalar_type(),
              "patch_hidden_backward: grad_hidden must be (B, G', H, W) as the output");
  const at::Tensor gh = grad_hidden.contiguous(), q = query.contiguous(), k = key.contiguous();
  const at::Tensor s = scale.contiguous(), t = shift.contiguous(), fc = weight.contiguous();
  at::Tensor grad_query = empty_large_like(q);
  // Zeroed: padded rows at a band's edge are added to from two bands.
  at::Tensor grad_key = empty_large_like(k).zero_();
  const int64_t patch = g.patch_channels();
  at::Tensor grad_weight = at::zeros_like(fc, at::MemoryFormat::Contiguous);
  // The scale and shift gradients: one share per thread (each thread of
  // at::parallel_for takes one fixed chunk of rows), added in thread order: the same
  // result on every run with the same number of threads.
  const int64_t threads = at::get_num_threads();
  at::Tensor partials = at::zeros({threads, 2 * patch}, q.options());
  if (g.batch > 0 && g.plane() > 0) {
    // Bands of output rows: the key gradients of their patches (needed complete by the
    // key rows they cover), and the normalised patches and their gradients (patch
    // channels x pixels of the band, for the matrix products with fc1 and the hidden
    // gradients) are the only scratch, about 16 MB in float32.
    const int64_t row_keys = g.channels * g.window() * g.width;
    const int64_t band = std::clamp<int64_t>(
        (int64_t{4} << 20) / (g.batch * (row_keys + 2 * patch * g.width)), 1, g.height);
    // The products of fc1's transpose with the hidden gradients: one matrix product per
    // band for many hidden channels (SAN-19's last stage, 64), else row by row, which
    // measured as fast or faster up to 32 (the matrix product writes and reads again
    // patch channels x pixels).
    const bool by_matrix = g.hidden >= 64;
    at::Tensor relu = empty_large({g.batch, patch, band * g.width}, q.options());
    at::Tensor patch_grads = empty_large({g.batch, patch, band * g.width}, q.options());
    AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "patch_hidden_backward", [&] {
      using T = scalar_t;
      std::vector<T> key_grads(g.batch * band * row_keys);
      T* partial_data = partials.mutable_data_ptr<T>();
      T* relu_data = relu.mutable_data_ptr<T>();
      T* patch_grad_data = patch_grads.mutable_data_ptr<T>();
      for (int64_t y_begin = 0; y_begin < g.height; y_begin += band) {
        const int64_t y_end = std::min(g.height, y_begin + band), band_rows = y_end - y_begin;
        const int64_t pixels = band_rows * g.width;
        auto hidden_grads = [&](int64_t b) {  // (G', pixels) of the band of image b
          return gh.select(0, b).narrow(1, y_begin, band_rows).reshape({g.hidden, pixels});
        };
        auto matrix = [&](T* data, int64_t b) {  // (patch channels, pixels) of image b
          return at::from_blob(data + b * patch * pixels, {patch, pixels}, q.options());
        };
        if (by_matrix) {
          for (int64_t b = 0; b < g.batch; ++b) {
            at::Tensor out = matrix(patch_grad_data, b);
            matmul_into(out, fc.t(), hidden_grads(b), false);
          }
        }
        at::parallel_for(0, g.batch * band_rows, 1, [&](int64_t begin, int64_t end) {
          T* partial = partial_data + at::get_thread_num() * 2 * patch;
          for (int64_t index = begin; index < end; ++index) {
            const int64_t b = index / band_rows, row = index % band_rows;
            const int64_t at = b * patch * pixels + row * g.width;
            hidden_backward_row(q.const_data_ptr<T>(), k.const_data_ptr<T>(),
                                s.const_data_ptr<T>(), t.const_data_ptr<T>(),
                                fc.const_data_ptr<T>(),
                                by_matrix ? nullptr : gh.const_data_ptr<T>(),
                                grad_query.mutable_data_ptr<T>(),
                                key_grads.data() + index * row_keys, relu_data + at,
                                patch_grad_data + at, pixels, partial, g, b, y_begin + row);
          }
        });
        // The fc1 gradient: the hidden gradients times the normalised patches, over the
        // band's pixels.
        for (int64_t b = 0; b < g.batch; ++b) {
          matmul_into(grad_weight, hidden_grads(b), matrix(relu_data, b).t(), true);
        }
        const int64_t key_rows = band_rows + g.kernel - 1;
        at::parallel_for(0, g.batch * key_rows, 1, [&](int64_t begin, int64_t end) {
          std::vector<const T*> list(g.kernel);
          for (int64_t index = begin; index < end; ++index) {
            hidden_backward_key_row(key_grads.data(), grad_key.mutable_data_ptr<T>(), g,
                                    index / key_rows, y_begin + index % key_rows, y_begin,
                                    y_end, list);
          }
        });
      }
    });
  }
  // Two tensors of their own (views of one would alias, which an operator's schema
  // does not declare).
  const at::Tensor totals = partials.sum(0);
  return {grad_query, grad_key, totals.narrow(0, 0, patch).clone(),
          totals.narrow(0, patch, patch).clone(), grad_weight};
}

at::Tensor patch_moments_forward(const at::Tensor& query, const at::Tensor& key,
                                 const at::Tensor& centres_q, const at::Tensor& centres_k,
                                 int64_t kernel_size) {
  const HiddenGeometry g = moments_geometry(query, key, centres_q, centres_k, kernel_size);
  const at::Tensor q = query.contiguous(), k = key.contiguous();
  const at::Tensor cq = centres_q.contiguous(), ck = centres_k.contiguous();
  at::Tensor sums = at::empty({2, g.patch_channels()}, q.options().dtype(at::kDouble));
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "patch_moments", [&] {
    using T = scalar_t;
    at::parallel_for(0, g.channels, 1, [&](int64_t begin, int64_t end) {
      std::vector<double> rows(2 * g.padded_h * g.kernel);
      for (int64_t c = begin; c < end; ++c) {
        moments_channel(q.const_data_ptr<T>(), k.const_data_ptr<T>(), cq.const_data_ptr<T>(),
                        ck.const_data_ptr<T>(), sums.mutable_data_ptr<double>(), g, c,
                        rows.data());
      }
    });
  });
  return sums;
}

std::tuple<at::Tensor, at::Tensor> patch_moments_backward(
    const at::Tensor& grad_sums, const at::Tensor& query, const at::Tensor& key,
    const at::Tensor& centres_q, const at::Tensor& centres_k, int64_t kernel_size) {
  const HiddenGeometry g = moments_geometry(query, key, centres_q, centres_k, kernel_size);
  TORCH_CHECK(grad_sums.dim() == 2 && grad_sums.size(0) == 2 &&
                  grad_sums.size(1) == g.patch_channels(),
              "patch_moments_backward: grad_sums must be (2, patch channels)");
  const at::Tensor gs = grad_sums.to(at::kDouble).contiguous();
  const at::Tensor q = query.contiguous(), k = key.contiguous();
  const at::Tensor cq = centres_q.contiguous(), ck = centres_k.contiguous();
  at::Tensor grad_query = empty_large_like(q);
  at::Tensor grad_key = empty_large_like(k);
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "patch_moments_backward", [&] {
    using T = scalar_t;
    at::parallel_for(0, g.batch * g.channels, 1, [&](int64_t begin, int64_t end) {
      std::vector<T> coefs(2 * (g.padded_h * g.kernel + g.padded_w));
      for (int64_t plane = begin; plane < end; ++plane) {
        moments_backward_plane(gs.const_data_ptr<double>(), q.const_data_ptr<T>(),
                               k.const_data_ptr<T>(), cq.const_data_ptr<T>(),
                               ck.const_data_ptr<T>(), grad_query.mutable_data_ptr<T>(),
                               grad_key.mutable_data_ptr<T>(), g, plane / g.channels,
                               plane % g.channels, coefs.data());
      }
    });
  });
  return {grad_query, grad_key};
}

}  // namespace acmix_mm

TORCH_LIBRARY_FRAGMENT(acmix_mm, m) {
  m.def(
      "patch_moments(Tensor query, Tensor key, Tensor centres_q, Tensor centres_k, "
      "int kernel_size) -> Tensor");
  m.def(
      "patch_moments_backward(Tensor grad_sums, Tensor query, Tensor key, Tensor centres_q, "
      "Tensor centres_k, int kernel_size) -> (Tensor, Tensor)");
  m.def(
      "patch_hidden(Tensor query, Tensor key, Tensor scale, Tensor shift, Tensor weight, "
      "int kernel_size) -> Tensor");
  m.def(
      "patch_hidden_backward(Tensor grad_hidden, Tensor query, Tensor key, Tensor scale, "
      "Tensor shift, Tensor weight, int kernel_size) "
      "-> (Tensor, Tensor, Tensor, Tensor, Tensor)");
  m.def(
      "patch_aggregate(Tensor value, Tensor hidden, Tensor weight, Tensor bias, "
      "int kernel_size) -> Tensor");
  m.def(
      "patch_aggregate_backward(Tensor grad_out, Tensor value, Tensor hidden, "
      "Tensor weight, Tensor bias, int kernel_size) -> (Tensor, Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(acmix_mm, CPU, m) {
  m.impl("patch_moments", &acmix_mm::patch_moments_forward);
  m.impl("patch_moments_backward", &acmix_mm::patch_moments_backward);
  m.impl("patch_hidden", &acmix_mm::patch_hidden_forward);
  m.impl("patch_hidden_backward", &acmix_mm::patch_hidden_backward);
  m.impl("patch_aggregate", &acmix_mm::patch_aggregate_forward);
  m.impl("patch_aggregate_backward", &acmix_mm::patch_aggregate_backward);
}
