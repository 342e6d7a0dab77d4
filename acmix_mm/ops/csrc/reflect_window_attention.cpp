// ResNet-ACmix's attention path as one operator: from the shared projection (tokens)
// to the attention output (planes), reflection padding and position encodings folded
// in.
//
// The official logits q . (k_j + pe_i - pe_j) differ from q . (k_j - pe_j) by q . pe_i,
// the same for every key of a query, which cancels in the softmax: so the keys are
// packed as reflect_pad(k - pe) and the attention runs on plain windows
// (sliding_window_attention.cpp). alpha, ACmix's rate of the attention path, scales the
// packed values. Packing is one pass over the projection, and the backward pass packs
// again rather than keeping the padded planes: only the projection (which the
// convolution path keeps anyway), the output and the log-sum-exp are saved.
#include <torch/library.h>
#include <ATen/Parallel.h>
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>

#include "large_tensors.h"
#include "narrow_pieces_conv.h"
#include "sliding_window_attention.h"
#include "vectorize.h"

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <type_traits>
#include <utility>
#include <vector>

namespace acmix_mm {
namespace {

struct Layout {
  int64_t batch, heads, dims, height, width, pad, padded_h, padded_w, out_h, out_w, stride;
  bool channel_major;
  // Whether the projection is a view of NCHW planes (B, 3C, H, W) rather than tokens:
  // packing is then copying rows (pack_planes, unpack_planes).
  bool from_planes;
  // Keys and values are packed in the row phases of the stride (phased_window_attention):
  // rows key_w wide, padded column px at key_column(px).
  int64_t key_w() const { return phased_width(padded_w, stride); }
  int64_t key_column(int64_t px) const { return (px % stride) * (key_w() / stride) + px / stride; }

  int64_t pixels() const { return height * width; }
  int64_t columns() const { return 3 * heads * dims; }
  // Whether the attention reads the queries where they lie, the projection's first C
  // planes (query_view), and writes their gradient there: planes in the projection's
  // own order, at stride 1.
  bool queries_in_place() const { return from_planes && !channel_major && stride == 1; }
  int64_t planes() const { return batch * heads; }
  // Column of channel c of head h of piece p (0 q, 1 k, 2 v) in the projection: the
  // projection's own order (q heads, k heads, v heads) or channel-major (the pieces of
  // each channel side by side, as ACmix's convolution path reads them).
  int64_t column(int64_t piece, int64_t head, int64_t c) const {
    return channel_major ? (c * 3 + piece) * heads + head : (piece * heads + head) * dims + c;
  }
};

// The attention of the packed planes runs on keys in the stride's phases: a query row's
// windows are then read at unit stride (sliding_window_attention.cpp).

// Reflection without repeating the edge (nn.ReflectionPad2d), for |i| < 2 * size - 1.
int64_t reflect(int64_t i, int64_t size) {
  i = std::abs(i);
  return i >= size ? 2 * (size - 1) - i : i;
}

// The padded positions that reflect onto each source position: the position itself,
// shifted by the padding, and at most one mirror image (maps are wider than the pad).
std::vector<std::vector<int64_t>> mirrors(int64_t size, int64_t pad, int64_t padded) {
  std::vector<std::vector<int64_t>> sources(size);
  for (int64_t p = 0; p < padded; ++p) sources[reflect(p - pad, size)].push_back(p);
  return sources;
}

// Whether tokens (B, N, C) are a view of contiguous NCHW planes (and not contiguous
// tokens too): the projection as linear_of_maps writes it for readers of planes.
bool are_planes(const at::Tensor& tokens) {
  return !tokens.is_contiguous() && tokens.transpose(1, 2).is_contiguous();
}

Layout layout(const at::Tensor& qkv, int64_t heads, int64_t height, int64_t width,
              int64_t kernel_size, int64_t stride, bool channel_major) {
  TORCH_CHECK(qkv.device().is_cpu(), "reflect_window_attention: CPU tensors only");
  TORCH_CHECK(qkv.dim() == 3 && qkv.size(1) == height * width,
              "reflect_window_attention: qkv must be (B, H*W, 3*C) for the map of ", height,
              "x", width);
  TORCH_CHECK(heads >= 1 && qkv.size(2) % (3 * heads) == 0,
              "reflect_window_attention: the projection's ", qkv.size(2),
              " channels are no q, k and v of ", heads, " heads");
  const int64_t pad = kernel_size / 2;
  TORCH_CHECK(kernel_size >= 1 && stride >= 1,
              "reflect_window_attention: kernel_size and stride must be positive");
  TORCH_CHECK(height > pad && width > pad, "reflect_window_attention: kernel ", kernel_size,
              " pads by reflection, which needs maps larger than ", pad, " pixels; got ",
              height, "x", width);
  return Layout{qkv.size(0),
                heads,
                qkv.size(2) / (3 * heads),
                height,
                width,
                pad,
                height + 2 * pad,
                width + 2 * pad,
                (height + stride - 1) / stride,
                (width + stride - 1) / stride,
                stride,
                channel_major,
                are_planes(qkv)};
}

// Pixels packed together: each plane's row gets kBlock consecutive values (whole cache
// lines) from tokens that stay in L1. Pixel by pixel, each store would land on another
// plane's page, and the 2 * C planes outnumber the first-level TLB.
constexpr int64_t kBlock = 16;

// Pixels of a row taken back at a time: the 3C planes are read along their rows in runs
// of this many pixels (a run per phase), and the chunk's tokens, written along their
// channels, stay in the first caches. At stride 1, runs of 128 pixels (512 bytes of a
// plane's row) let the hardware prefetchers follow the planes where 32 did not (64
// channels at 128x160: backward ~8% faster); at stride 2 chunks of 32 (two runs of 16)
// stayed faster. (Fetching the next run ahead by hand gained nothing.)
constexpr int64_t kChunk = 128;       // the most: the chunk buffers' width
constexpr int64_t kPhasedChunk = 32;  // at stride 2
int64_t chunk_width(int64_t stride) { return stride == 1 ? kChunk : kPhasedChunk; }

// Channels moved between tokens and planes together: a 16 x 16 block (16 channels of 16
// pixels) is transposed in registers (transpose16) where the projection is piece-major
// (each head's channels adjacent in a token) and the block is whole; the rest goes value
// by value.
constexpr int64_t kGroup = 16;

template <typename T>
constexpr bool transposes() {
#ifdef ACMIX_TRANSPOSE
  return std::is_same_v<T, float>;
#else
  return false;
#endif
}

// n <= kBlock packed columns of one key row: the keys less their offsets and the values
// times alpha of the columns' tokens and offset rows (token[t], token_offset[t]), to
// the planes' rows from key_rows and value_rows on.
template <typename T>
ACMIX_INLINE void pack_keys_impl(const T* const* token, const T* const* token_offset,
                                 T alpha, const Layout& l, int64_t key_plane, int64_t n,
                                 T* key_rows, T* value_rows) {
  for (int64_t h = 0; h < l.heads; ++h) {
    int64_t c = 0;
#ifdef ACMIX_TRANSPOSE
    if constexpr (transposes<T>()) {
      for (; n == kBlock && !l.channel_major && c + kGroup <= l.dims; c += kGroup) {
        vec_t<T> keys[kGroup], values[kGroup];
        const int64_t key_col = l.column(1, h, c), value_col = l.column(2, h, c);
        for (int t = 0; t < kBlock; ++t) {
          keys[t] = load(token[t] + key_col) - load(token_offset[t] + c);
          values[t] = alpha * load(token[t] + value_col);
        }
        transpose16(keys);
        transpose16(values);
        for (int u = 0; u < kGroup; ++u) {
          store(key_rows + (h * l.dims + c + u) * key_plane, keys[u]);
          store(value_rows + (h * l.dims + c + u) * key_plane, values[u]);
        }
      }
    }
#endif
    for (; c < l.dims; ++c) {
      const int64_t at = (h * l.dims + c) * key_plane;
      const int64_t key_col = l.column(1, h, c), value_col = l.column(2, h, c);
      for (int64_t t = 0; t < n; ++t) key_rows[at + t] = token[t][key_col] - token_offset[t][c];
      for (int64_t t = 0; t < n; ++t) value_rows[at + t] = alpha * token[t][value_col];
    }
  }
}

// n <= kBlock queries of one row, tokens `step` apart from `first` on, to the planes'
// rows from `rows` on.
template <typename T>
ACMIX_INLINE void pack_queries_impl(const T* first, int64_t step, const Layout& l,
                                    int64_t query_plane, int64_t n, T* rows) {
  for (int64_t h = 0; h < l.heads; ++h) {
    int64_t c = 0;
#ifdef ACMIX_TRANSPOSE
    if constexpr (transposes<T>()) {
      for (; n == kBlock && !l.channel_major && c + kGroup <= l.dims; c += kGroup) {
        vec_t<T> queries[kGroup];
        for (int t = 0; t < kBlock; ++t) queries[t] = load(first + t * step + l.column(0, h, c));
        transpose16(queries);
        for (int u = 0; u < kGroup; ++u) store(rows + (h * l.dims + c + u) * query_plane, queries[u]);
      }
    }
#endif
    for (; c < l.dims; ++c) {
      const T* column = first + l.column(0, h, c);
      T* out = rows + (h * l.dims + c) * query_plane;
      for (int64_t t = 0; t < n; ++t) out[t] = column[t * step];
    }
  }
}

// dst[t] = src[t] for t < n, in the caller's vectors: a short run, read back at once
// in whole vectors (a library copy's narrower stores would stall those loads).
template <typename T>
ACMIX_INLINE void copy_run(T* __restrict dst, const T* __restrict src, int64_t n) {
  int64_t t = 0;
#ifdef ACMIX_VECTORS
  for (; t + kLanes<T> <= n; t += kLanes<T>) store(dst + t, load(src + t));
#endif
  for (; t < n; ++t) dst[t] = src[t];
}

template <typename T>
constexpr bool interleaves() {
  return transposes<T>() && kPhasedChunk == 32;
}

// dst[2i] (+)= even[i], dst[2i + 1] (+)= odd[i] (zeros where odd is null) for i < 16:
// stored where `store_first`, else added. float only (interleaves()).
template <typename T>
ACMIX_INLINE void interleave_runs(T* dst, const T* even, const T* odd, bool store_first) {
#ifdef ACMIX_TRANSPOSE
  if constexpr (interleaves<T>()) {
    vec_t<T> low, high;
    interleave(load(even), odd ? load(odd) : vec_t<T>{}, low, high);
    if (!store_first) {
      low += load(dst);
      high += load(dst + 16);
    }
    store(dst, low);
    store(dst + 16, high);
  }
#endif
}

// Where unpack's chunk starts: image b, source row sy, column x0, n pixels; the padded
// rows that reflect onto sy, and the padded columns beside the ones at source + pad
// (source column, padded column).
struct Chunk {
  int64_t b, sy, x0, n;
  const std::vector<int64_t>& rows;
  const std::vector<std::pair<int64_t, int64_t>>& mirror_cols;
};

// One chunk of unpack (below): the projection's gradient at the chunk's tokens, the
// offsets' (row `offsets` of the offset gradient, added to) and the chunk's share of
// alpha's gradient (returned).
template <typename T>
ACMIX_INLINE T unpack_chunk_impl(const T* grad_query, const T* grad_key, const T* grad_value,
                                 const T* qkv, T alpha, const Layout& l, const Chunk& k,
                                 T* offsets, T* grad_qkv) {
  const int64_t key_plane = l.padded_h * l.key_w(), query_plane = l.out_h * l.out_w;
  const int64_t first_token = k.b * l.pixels() + k.sy * l.width + k.x0, n = k.n, x0 = k.x0;
  // The chunk's first query column (at stride S, queries sit at multiples of S).
  const int64_t first_query = (x0 + l.stride - 1) / l.stride;
  const bool query_row = k.sy % l.stride == 0;
  const T* tokens = qkv + first_token * l.columns();
  T* grads = grad_qkv + first_token * l.columns();
  alignas(64) T keys[kGroup][kChunk], values[kGroup][kChunk], queries[kGroup][kChunk];
  T value_sum = 0;
  for (int64_t h = 0; h < l.heads; ++h) {
    for (int64_t c0 = 0; c0 < l.dims; c0 += kGroup) {
      const int64_t group = std::min(kGroup, l.dims - c0);
      // The group's planes along the chunk's row, each pixel's reflections gathered.
      for (int64_t u = 0; u < group; ++u) {
        const int64_t plane = (k.b * l.heads + h) * l.dims + c0 + u;
        T* key = keys[u];
        T* value = values[u];
        for (const int64_t py : k.rows) {
          const T* key_row = grad_key + plane * key_plane + py * l.key_w();
          const T* value_row = grad_value + plane * key_plane + py * l.key_w();
          // Phase by phase: source column sx sits at key_column(sx + pad), and the
          // chunk's sources in one phase are a run there. The first row is stored, the
          // mirror row added (no zero fill, whose narrow stores a wide load would wait
          // for).
          const bool first_row = py == k.rows.front();
          if (l.stride == 1) {  // one run, vectorised
            const T* keys_in = key_row + x0 + l.pad;
            const T* values_in = value_row + x0 + l.pad;
            if (first_row) {
              copy_run(key, keys_in, n);
              copy_run(value, values_in, n);
            } else {
              for (int64_t t = 0; t < n; ++t) {
                key[t] += keys_in[t];
                value[t] += values_in[t];
              }
            }
          } else if (interleaves<T>() && l.stride == 2 && n == kPhasedChunk) {
            // The chunk's sources are the two phases' runs of 16: interleaved in
            // registers rather than value by value.
            interleave_runs(key, key_row + l.key_column(x0 + l.pad),
                            key_row + l.key_column(x0 + 1 + l.pad), first_row);
            interleave_runs(value, value_row + l.key_column(x0 + l.pad),
                            value_row + l.key_column(x0 + 1 + l.pad), first_row);
          } else {
            for (int64_t phase = 0; phase < l.stride && phase < n; ++phase) {
              const int64_t first = l.key_column(x0 + phase + l.pad);
              for (int64_t t = phase, m = first; t < n; t += l.stride, ++m) {
                key[t] = first_row ? key_row[m] : key[t] + key_row[m];
                value[t] = first_row ? value_row[m] : value[t] + value_row[m];
              }
            }
          }
          if (x0 >= l.pad && x0 + n <= l.width - l.pad) continue;  // no mirrors
          for (const auto& [sx, px] : k.mirror_cols) {
            if (sx < x0 || sx >= x0 + n) continue;
            key[sx - x0] += key_row[l.key_column(px)];
            value[sx - x0] += value_row[l.key_column(px)];
          }
        }
        T* query = queries[u];
        const T* row = grad_query + plane * query_plane + (k.sy / l.stride) * l.out_w;
        if (query_row && l.stride == 1) {
          copy_run(query, row + x0, n);
        } else if (interleaves<T>() && query_row && l.stride == 2 && n == kPhasedChunk) {
          // queries at the even pixels (x0 is even), zeros between
          interleave_runs<T>(query, row + x0 / 2, nullptr, true);
        } else {
          std::fill(query, query + n, T(0));
          for (int64_t m = first_query; query_row && m * l.stride < x0 + n; ++m) {
            query[m * l.stride - x0] = row[m];
          }
        }
      }
      // ... then to the tokens, 16 pixels at a time transposed where they can be.
      const int64_t q_col = l.column(0, h, c0), k_col = l.column(1, h, c0),
                    v_col = l.column(2, h, c0);
      int64_t t0 = 0;
#ifdef ACMIX_TRANSPOSE
      if constexpr (transposes<T>()) {
        for (; group == kGroup && !l.channel_major && t0 + kGroup <= n; t0 += kGroup) {
          using V = vec_t<T>;
          V key[kGroup], value[kGroup], query[kGroup], sums = {};
          for (int u = 0; u < kGroup; ++u) {
            key[u] = load(keys[u] + t0);
            value[u] = load(values[u] + t0);
            query[u] = load(queries[u] + t0);
          }
          transpose16(key);
          transpose16(value);
          transpose16(query);
          for (int t = 0; t < kGroup; ++t) {
            T* token_grads = grads + (t0 + t) * l.columns();
            store(token_grads + q_col, query[t]);
            store(token_grads + k_col, key[t]);
            store(token_grads + v_col, alpha * value[t]);
            T* offset = offsets + (x0 + t0 + t) * l.dims + c0;
            store(offset, load(offset) - key[t]);
            sums += value[t] * load(tokens + (t0 + t) * l.columns() + v_col);
          }
          T lanes[kGroup];
          store(lanes, sums);
          for (int u = 0; u < kGroup; ++u) value_sum += lanes[u];
        }
      }
#endif
      for (int64_t u = 0; u < group; ++u) {
        const int64_t c = c0 + u;
        const int64_t qc = l.column(0, h, c), kc = l.column(1, h, c), vc = l.column(2, h, c);
        for (int64_t t = t0; t < n; ++t) {
          T* token_grads = grads + t * l.columns();
          token_grads[qc] = queries[u][t];
          token_grads[kc] = keys[u][t];
          token_grads[vc] = alpha * values[u][t];
          offsets[(x0 + t) * l.dims + c] -= keys[u][t];
          value_sum += values[u][t] * tokens[t * l.columns() + vc];
        }
      }
    }
  }
  return value_sum;
}

// Packed columns [begin, end) of a key row: keys less their offset and values times
// alpha at the source columns source_x (-1 for zeros).
template <typename T>
ACMIX_INLINE void gather_key_columns(const T* __restrict key_src,
                                     const T* __restrict value_src,
                                     const T* __restrict offset, T alpha,
                                     const int64_t* source_x, int64_t begin, int64_t end,
                                     T* __restrict key_dst, T* __restrict value_dst) {
  for (int64_t m = begin; m < end; ++m) {
    const int64_t sx = source_x[m];
    key_dst[m] = sx < 0 ? T(0) : key_src[sx] - offset[sx];
    value_dst[m] = sx < 0 ? T(0) : alpha * value_src[sx];
  }
}

// One padded key row of a head's channel from planes (gather_key_columns); at stride 1
// the row's interior is one vectorised run. (No lambdas here: one is compiled apart from
// the caller's clone, for the baseline CPU, and called per row: the forward pass at 64
// channels, 200x336, ran 10-15% slower with one.)
template <typename T>
ACMIX_INLINE void pack_key_row_impl(const T* __restrict key_src, const T* __restrict value_src,
                                    const T* __restrict offset, T alpha,
                                    const int64_t* source_x, const Layout& l,
                                    T* __restrict key_dst, T* __restrict value_dst) {
  if (l.stride != 1) {
    gather_key_columns(key_src, value_src, offset, alpha, source_x, 0, l.key_w(), key_dst,
                       value_dst);
    return;
  }
  for (int64_t x = 0; x < l.width; ++x) {  // the interior, columns pad to pad + width
    key_dst[l.pad + x] = key_src[x] - offset[x];
    value_dst[l.pad + x] = alpha * value_src[x];
  }
  gather_key_columns(key_src, value_src, offset, alpha, source_x, 0, l.pad, key_dst,
                     value_dst);
  gather_key_columns(key_src, value_src, offset, alpha, source_x, l.pad + l.width, l.key_w(),
                     key_dst, value_dst);
}

// A padded plane's gradient rows (those in `rows`, phased as packed) folded back onto
// the source row: out[sx] = sum of the padded columns that reflect onto sx.
template <typename T>
ACMIX_INLINE void fold_row_impl(const T* grad, const std::vector<int64_t>& rows,
                                const std::vector<std::pair<int64_t, int64_t>>& mirror_cols,
                                const Layout& l, T* __restrict out) {
  bool first_row = true;
  for (const int64_t py : rows) {
    const T* __restrict row = grad + py * l.key_w();
    if (l.stride == 1) {
      const T* __restrict src = row + l.pad;
      if (first_row) {
        for (int64_t x = 0; x < l.width; ++x) out[x] = src[x];
      } else {
        for (int64_t x = 0; x < l.width; ++x) out[x] += src[x];
      }
    } else {
      for (int64_t x = 0; x < l.width; ++x) {
        const T value = row[l.key_column(x + l.pad)];
        out[x] = first_row ? value : out[x] + value;
      }
    }
    for (const auto& [sx, px] : mirror_cols) out[sx] += row[l.key_column(px)];
    first_row = false;
  }
}

// One source row of one channel of the projection's gradient as planes: keys (and minus
// them the offset's row), values times alpha, and the queries at the strided pixels
// (zeros between; none where query_dst is null). Returns the row's share of alpha's
// gradient (values' gradients times the values).
template <typename T>
ACMIX_INLINE T unpack_row_impl(const T* __restrict key_grad, const T* __restrict value_grad,
                               const T* query_row, const T* __restrict value_src, T alpha,
                               const Layout& l, T* __restrict key_dst, T* __restrict value_dst,
                               T* __restrict query_dst, T* __restrict offset) {
  int64_t x = 0;
  T value_sum = 0;
#ifdef ACMIX_VECTORS
  // In vectors, the sum in lanes: a scalar sum would keep the loop from vectorising
  // (the compiler may not reorder a floating-point sum).
  using V = vec_t<T>;
  V sums = {};
  for (; x + kLanes<T> <= l.width; x += kLanes<T>) {
    const V keys = load(key_grad + x), values = load(value_grad + x);
    store(key_dst + x, keys);
    store(offset + x, load(offset + x) - keys);
    store(value_dst + x, alpha * values);
    sums += values * load(value_src + x);
  }
  for (int64_t t = 0; t < kLanes<T>; ++t) value_sum += sums[t];
#endif
  for (; x < l.width; ++x) {
    key_dst[x] = key_grad[x];
    offset[x] -= key_grad[x];
    value_dst[x] = alpha * value_grad[x];
    value_sum += value_grad[x] * value_src[x];
  }
  if (query_dst == nullptr) {  // written in place (Layout::queries_in_place)
  } else if (query_row == nullptr) {
    std::fill(query_dst, query_dst + l.width, T(0));
  } else if (l.stride == 1) {
    std::copy(query_row, query_row + l.width, query_dst);
  } else {
    for (int64_t x = 0; x < l.width; ++x) {
      query_dst[x] = x % l.stride ? T(0) : query_row[x / l.stride];
    }
  }
  return value_sum;
}

// The block kernels: float32 in AVX-512, AVX2 and baseline clones (the transposes and
// row loops in each one's vectors), float64 in the baseline only.
#define ACMIX_PACK_KERNELS(T, ATTRIBUTES)                                                   \
  ATTRIBUTES void pack_keys(const T* const* token, const T* const* token_offset, T alpha,  \
                            const Layout& l, int64_t key_plane, int64_t n, T* key_rows,    \
                            T* value_rows) {                                               \
    pack_keys_impl<T>(token, token_offset, alpha, l, key_plane, n, key_rows, value_rows);  \
  }                                                                                        \
  ATTRIBUTES void pack_queries(const T* first, int64_t step, const Layout& l,              \
                               int64_t query_plane, int64_t n, T* rows) {                  \
    pack_queries_impl<T>(first, step, l, query_plane, n, rows);                            \
  }                                                                                        \
  ATTRIBUTES T unpack_chunk(const T* grad_query, const T* grad_key, const T* grad_value,   \
                            const T* qkv, T alpha, const Layout& l, const Chunk& k,        \
                            T* offsets, T* grad_qkv) {                                     \
    return unpack_chunk_impl<T>(grad_query, grad_key, grad_value, qkv, alpha, l, k,        \
                                offsets, grad_qkv);                                        \
  }                                                                                        \
  ATTRIBUTES void pack_key_row(const T* key_src, const T* value_src, const T* offset,      \
                               T alpha, const int64_t* source_x, const Layout& l,          \
                               T* key_dst, T* value_dst) {                                 \
    pack_key_row_impl<T>(key_src, value_src, offset, alpha, source_x, l, key_dst,          \
                         value_dst);                                                       \
  }                                                                                        \
  ATTRIBUTES void fold_row(const T* grad, const std::vector<int64_t>& rows,                \
                           const std::vector<std::pair<int64_t, int64_t>>& mirror_cols,    \
                           const Layout& l, T* out) {                                      \
    fold_row_impl<T>(grad, rows, mirror_cols, l, out);                                     \
  }                                                                                        \
  ATTRIBUTES T unpack_row(const T* key_grad, const T* value_grad, const T* query_row,      \
                          const T* value_src, T alpha, const Layout& l, T* key_dst,        \
                          T* value_dst, T* query_dst, T* offset) {                         \
    return unpack_row_impl<T>(key_grad, value_grad, query_row, value_src, alpha, l,        \
                              key_dst, value_dst, query_dst, offset);                      \
  }
ACMIX_PACK_KERNELS(float, ACMIX_CLONES)
ACMIX_PACK_KERNELS(double, )
#undef ACMIX_PACK_KERNELS

// The rows of the planes that pack (below) fills: query rows [first_query, first_query +
// queries) and padded key rows [first_key, first_key + keys), the planes that many rows
// high. Rows::all is every row; Rows::band the rows that query rows [y0, y0 + n) read.
struct Rows {
  int64_t first_query, queries, first_key, keys;
  static Rows all(const Layout& l) { return {0, l.out_h, 0, l.padded_h}; }
  static Rows band(const Layout& l, int64_t kernel, int64_t y0, int64_t n) {
    return {y0, n, y0 * l.stride, (n - 1) * l.stride + kernel};
  }
};

// Queries at the strided positions; keys less their offset and values times alpha,
// reflection-padded and phased. All as planes (B * heads, d, rows, columns) of the rows
// r, a block of columns of a row at a time.
template <typename T>
void pack(const T* qkv, const T* offset, T alpha, const Layout& l, const Rows& r, T* query,
          T* key, T* value) {
  // The source pixel of each packed column; -1 for the zeros that phases end with.
  std::vector<int64_t> source_x(l.key_w(), -1);
  for (int64_t px = 0; px < l.padded_w; ++px) {
    source_x[l.key_column(px)] = reflect(px - l.pad, l.width);
  }
  const int64_t key_plane = r.keys * l.key_w(), query_plane = r.queries * l.out_w;
  // A zero token and offset for the columns without a source.
  const std::vector<T> zeros(l.columns(), T(0));
  at::parallel_for(0, l.batch * r.keys, 1, [&](int64_t begin, int64_t end) {
    const T* token[kBlock];
    const T* token_offset[kBlock];
    for (int64_t index = begin; index < end; ++index) {
      const int64_t b = index / r.keys, row = index % r.keys;
      const int64_t sy = reflect(r.first_key + row - l.pad, l.height);
      const T* tokens = qkv + (b * l.pixels() + sy * l.width) * l.columns();
      const T* offsets = offset + sy * l.width * l.dims;
      T* key_rows = key + b * l.heads * l.dims * key_plane + row * l.key_w();
      T* value_rows = value + b * l.heads * l.dims * key_plane + row * l.key_w();
      for (int64_t px0 = 0; px0 < l.key_w(); px0 += kBlock) {
        const int64_t n = std::min(kBlock, l.key_w() - px0);
        for (int64_t t = 0; t < n; ++t) {
          const int64_t sx = source_x[px0 + t];
          token[t] = sx < 0 ? zeros.data() : tokens + sx * l.columns();
          token_offset[t] = sx < 0 ? zeros.data() : offsets + sx * l.dims;
        }
        pack_keys(token, token_offset, alpha, l, key_plane, n, key_rows + px0,
                  value_rows + px0);
      }
    }
  });
  at::parallel_for(0, l.batch * r.queries, 1, [&](int64_t begin, int64_t end) {
    for (int64_t index = begin; index < end; ++index) {
      const int64_t b = index / r.queries, row = index % r.queries;
      const int64_t y = r.first_query + row;
      const T* tokens = qkv + (b * l.pixels() + y * l.stride * l.width) * l.columns();
      T* rows = query + b * l.heads * l.dims * query_plane + row * l.out_w;
      for (int64_t x0 = 0; x0 < l.out_w; x0 += kBlock) {
        pack_queries(tokens + x0 * l.stride * l.columns(), l.stride * l.columns(), l,
                     query_plane, std::min(kBlock, l.out_w - x0), rows + x0);
      }
    }
  });
}

// pack (above) from planes: the projection (B, 3C, H, W) and the offset (d, H*W) as
// planes, so that each packed row is a copy of a source row.
template <typename T>
void pack_planes(const T* qkv, const T* offset, T alpha, const Layout& l, const Rows& r,
                 T* query, T* key, T* value) {
  std::vector<int64_t> source_x(l.key_w(), -1);
  for (int64_t px = 0; px < l.padded_w; ++px) {
    source_x[l.key_column(px)] = reflect(px - l.pad, l.width);
  }
  const int64_t key_plane = r.keys * l.key_w(), query_plane = r.queries * l.out_w;
  const int64_t plane = l.pixels(), image = l.columns() * plane;
  at::parallel_for(0, l.batch * r.keys, 1, [&](int64_t begin, int64_t end) {
    for (int64_t index = begin; index < end; ++index) {
      const int64_t b = index / r.keys, row = index % r.keys;
      const int64_t sy = reflect(r.first_key + row - l.pad, l.height);
      for (int64_t h = 0; h < l.heads; ++h) {
        for (int64_t c = 0; c < l.dims; ++c) {
          const int64_t at = ((b * l.heads + h) * l.dims + c) * key_plane + row * l.key_w();
          const T* source = qkv + b * image + sy * l.width;
          pack_key_row(source + l.column(1, h, c) * plane, source + l.column(2, h, c) * plane,
                       offset + c * plane + sy * l.width, alpha, source_x.data(), l,
                       key + at, value + at);
        }
      }
    }
  });
  if (query == nullptr) return;  // read in place
  at::parallel_for(0, l.batch * r.queries, 1, [&](int64_t begin, int64_t end) {
    for (int64_t index = begin; index < end; ++index) {
      const int64_t b = index / r.queries, row = index % r.queries;
      const T* source = qkv + b * image + (r.first_query + row) * l.stride * l.width;
      for (int64_t h = 0; h < l.heads; ++h) {
        for (int64_t c = 0; c < l.dims; ++c) {
          const T* src = source + l.column(0, h, c) * plane;
          T* dst = query + ((b * l.heads + h) * l.dims + c) * query_plane + row * l.out_w;
          if (l.stride == 1) {
            std::copy(src, src + l.out_w, dst);
          } else {
            for (int64_t x = 0; x < l.out_w; ++x) dst[x] = src[x * l.stride];
          }
        }
      }
    }
  });
}

// The padded columns that are mirror images, (source column, padded column): the ones
// unpack adds to a source column beside its own.
std::vector<std::pair<int64_t, int64_t>> mirror_columns(const Layout& l) {
  std::vector<std::pair<int64_t, int64_t>> columns;
  for (int64_t px = 0; px < l.padded_w; ++px) {
    const int64_t sx = reflect(px - l.pad, l.width);
    if (px != sx + l.pad) columns.emplace_back(sx, px);
  }
  return columns;
}

// The gradients of the padded planes taken back to the projection's layout (each source
// pixel gathers its reflections), to the offset (minus the key gradients, summed over
// images and heads) and to alpha (the value gradients times the values). Parallel over
// source rows, so that each offset row has one writer; alpha's sum is taken per row,
// then added in order (the same result on every run).
template <typename T>
void unpack(const T* grad_query, const T* grad_key, const T* grad_value, const T* qkv,
            T alpha, const Layout& l, T* grad_qkv, T* grad_offset, T* grad_alpha) {
  const auto rows = mirrors(l.height, l.pad, l.padded_h);
  const auto mirror_cols = mirror_columns(l);
  std::vector<double> alpha_rows(l.height, 0.0);
  const int64_t width = chunk_width(l.stride);
  at::parallel_for(0, l.height, 1, [&](int64_t begin, int64_t end) {
    for (int64_t sy = begin; sy < end; ++sy) {
      T* offsets = grad_offset + sy * l.width * l.dims;
      std::fill(offsets, offsets + l.width * l.dims, T(0));
      double alpha_sum = 0.0;
      for (int64_t b = 0; b < l.batch; ++b) {
        for (int64_t x0 = 0; x0 < l.width; x0 += width) {
          const Chunk chunk{b, sy, x0, std::min(width, l.width - x0), rows[sy], mirror_cols};
          alpha_sum += unpack_chunk(grad_query, grad_key, grad_value, qkv, alpha, l, chunk,
                                    offsets, grad_qkv);
        }
      }
      alpha_rows[sy] = alpha_sum;
    }
  });
  double total = 0.0;
  for (const double row : alpha_rows) total += row;
  *grad_alpha = static_cast<T>(total);
}

// unpack (above) to planes: the projection's gradient (B, 3C, H, W) and the offset's
// (d, H*W), row by row.
template <typename T>
void unpack_planes(const T* grad_query, const T* grad_key, const T* grad_value, const T* qkv,
                   T alpha, const Layout& l, T* grad_qkv, T* grad_offset, T* grad_alpha) {
  const auto rows = mirrors(l.height, l.pad, l.padded_h);
  const auto mirror_cols = mirror_columns(l);
  const int64_t key_plane = l.padded_h * l.key_w(), query_plane = l.out_h * l.out_w;
  const int64_t plane = l.pixels(), image = l.columns() * plane;
  std::vector<double> alpha_rows(l.height, 0.0);
  at::parallel_for(0, l.height, 1, [&](int64_t begin, int64_t end) {
    std::vector<T> keys(l.width), values(l.width);
    for (int64_t sy = begin; sy < end; ++sy) {
      for (int64_t c = 0; c < l.dims; ++c) {
        T* offsets = grad_offset + c * plane + sy * l.width;
        std::fill(offsets, offsets + l.width, T(0));
      }
      const bool query_row = sy % l.stride == 0;
      double alpha_sum = 0.0;
      for (int64_t b = 0; b < l.batch; ++b) {
        for (int64_t h = 0; h < l.heads; ++h) {
          for (int64_t c = 0; c < l.dims; ++c) {
            const int64_t n = (b * l.heads + h) * l.dims + c;
            fold_row(grad_key + n * key_plane, rows[sy], mirror_cols, l, keys.data());
            fold_row(grad_value + n * key_plane, rows[sy], mirror_cols, l, values.data());
            const int64_t at = b * image + sy * l.width;
            alpha_sum += unpack_row(
                keys.data(), values.data(),
                query_row ? grad_query + n * query_plane + sy / l.stride * l.out_w : nullptr,
                qkv + at + l.column(2, h, c) * plane, alpha, l,
                grad_qkv + at + l.column(1, h, c) * plane,
                grad_qkv + at + l.column(2, h, c) * plane,
                l.queries_in_place() ? nullptr : grad_qkv + at + l.column(0, h, c) * plane,
                grad_offset + c * plane + sy * l.width);
          }
        }
      }
      alpha_rows[sy] = alpha_sum;
    }
  });
  double total = 0.0;
  for (const double row : alpha_rows) total += row;
  *grad_alpha = static_cast<T>(total);
}

void check_extras(const at::Tensor& qkv, const at::Tensor& key_offset,
                  const at::Tensor& out_scale, const Layout& l) {
  TORCH_CHECK(key_offset.dim() == 2 && key_offset.size(0) == l.pixels() &&
                  key_offset.size(1) == l.dims,
              "reflect_window_attention: key_offset must be (H*W, head_dims)");
  TORCH_CHECK(out_scale.numel() == 1, "reflect_window_attention: out_scale has one element");
  TORCH_CHECK(key_offset.scalar_type() == qkv.scalar_type() &&
                  out_scale.scalar_type() == qkv.scalar_type(),
              "reflect_window_attention: qkv, key_offset and out_scale differ in dtype");
}

// The projection's (or its gradient's) query planes as (B, heads, d, H, W), a view.
at::Tensor query_view(const at::Tensor& qkv, const Layout& l) {
  return qkv.transpose(1, 2)
      .narrow(1, 0, l.heads * l.dims)
      .unflatten(2, {l.height, l.width})
      .unflatten(1, {l.heads, l.dims});
}

// The offset as pack reads it: (H*W, d) contiguous for tokens, (d, H*W) for planes.
at::Tensor offset_in_layout(const at::Tensor& key_offset, const Layout& l) {
  return l.from_planes ? key_offset.t().contiguous() : key_offset.contiguous();
}

struct Packed {
  at::Tensor query, key, value;
};

// The packed planes of rows r; the queries the rows of query_view where read in place.
Packed pack_tensors(const at::Tensor& qkv, const at::Tensor& key_offset,
                    const at::Tensor& out_scale, const Layout& l, const Rows& r) {
  const auto options = qkv.options();
  Packed packed{l.queries_in_place()
                    ? query_view(qkv, l).narrow(3, r.first_query, r.queries)
                    : empty_large({l.planes(), l.dims, r.queries, l.out_w}, options),
                empty_large({l.planes(), l.dims, r.keys, l.key_w()}, options),
                empty_large({l.planes(), l.dims, r.keys, l.key_w()}, options)};
  AT_DISPATCH_FLOATING_TYPES(qkv.scalar_type(), "reflect_window_attention_pack", [&] {
    (l.from_planes ? pack_planes<scalar_t> : pack<scalar_t>)(
        qkv.const_data_ptr<scalar_t>(), key_offset.const_data_ptr<scalar_t>(),
        out_scale.item<scalar_t>(), l, r,
        l.queries_in_place() ? nullptr : packed.query.mutable_data_ptr<scalar_t>(),
        packed.key.mutable_data_ptr<scalar_t>(), packed.value.mutable_data_ptr<scalar_t>());
  });
  return packed;
}

// The forward pass packs and attends a band of query rows at a time, the band's planes
// about kBandBytes (the window rows around a band are packed again for the next), so
// that the attention reads them from the caches rather than memory: 64 channels at
// 200x336 forward 11.7 -> 9.2 ms against whole planes (AMD EPYC, 2 cores; bands of
// 3 MB 9.7 ms, of 1 MB 12-13: each band is two parallel loops).
constexpr int64_t kBandBytes = int64_t{6} << 20;

int64_t band_rows(const Layout& l, int64_t element_size) {
  const int64_t row_bytes =
      l.planes() * l.dims * (l.out_w + 2 * l.stride * l.key_w()) * element_size;
  return std::clamp<int64_t>(kBandBytes / row_bytes, 1, l.out_h);
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> reflect_window_attention_forward(
    const at::Tensor& qkv, const at::Tensor& key_offset, const at::Tensor& out_scale,
    int64_t num_heads, int64_t height, int64_t width, int64_t kernel_size, int64_t stride,
    bool channel_major, double scale) {
  const Layout l = layout(qkv, num_heads, height, width, kernel_size, stride, channel_major);
  check_extras(qkv, key_offset, out_scale, l);
  const at::Tensor tokens = l.from_planes ? qkv : qkv.contiguous();
  const at::Tensor offset = offset_in_layout(key_offset, l);
  at::Tensor out = empty_large({l.planes(), l.dims, l.out_h, l.out_w}, qkv.options());
  at::Tensor lse = at::empty({l.planes(), l.out_h, l.out_w}, qkv.options());
  const int64_t band = band_rows(l, qkv.element_size());
  for (int64_t y0 = 0; y0 < l.out_h; y0 += band) {
    const int64_t rows = std::min(band, l.out_h - y0);
    const Packed p = pack_tensors(tokens, offset, out_scale, l,
                                  Rows::band(l, kernel_size, y0, rows));
    at::Tensor band_out = out.narrow(2, y0, rows), band_lse = lse.narrow(1, y0, rows);
    phased_window_attention_forward_into(p.query, p.key, p.value, l.padded_w, kernel_size,
                                         stride, scale, band_out, band_lse);
  }
  return {out, lse};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> reflect_window_attention_backward(
    const at::Tensor& grad_out, const at::Tensor& qkv, const at::Tensor& key_offset,
    const at::Tensor& out_scale, const at::Tensor& out, const at::Tensor& lse,
    int64_t num_heads, int64_t height, int64_t width, int64_t kernel_size, int64_t stride,
    bool channel_major, double scale) {
  const Layout l = layout(qkv, num_heads, height, width, kernel_size, stride, channel_major);
  check_extras(qkv, key_offset, out_scale, l);
  const at::Tensor tokens = l.from_planes ? qkv : qkv.contiguous();
  Packed p = pack_tensors(tokens, offset_in_layout(key_offset, l), out_scale, l, Rows::all(l));
  // The gradients in the projection's layout: planes, or tokens; the offset's as planes
  // (d, H*W) or (H*W, d), returned as (H*W, d) either way. The queries' is written in
  // place where they are read so; else the projection's gradient is allocated after the
  // packed planes are freed, for a lower peak.
  at::Tensor grad_qkv;
  std::optional<at::Tensor> grad_query;
  if (l.queries_in_place()) {
    grad_qkv = empty_large_tokens(l.batch, l.pixels(), l.columns(), true, qkv.options());
    grad_query = query_view(grad_qkv, l);
  }
  const auto grads =
      phased_window_attention_backward(grad_out, p.query, p.key, p.value, out, lse, l.padded_w,
                                       kernel_size, stride, scale, grad_query, true);
  p = Packed{};
  if (!grad_qkv.defined()) {
    grad_qkv = empty_large_tokens(l.batch, l.pixels(), l.columns(), l.from_planes, qkv.options());
  }
  at::Tensor grad_offset = l.from_planes ? at::empty({l.dims, l.pixels()}, qkv.options())
                                         : at::empty({l.pixels(), l.dims}, qkv.options());
  at::Tensor grad_scale = at::empty_like(out_scale);
  AT_DISPATCH_FLOATING_TYPES(qkv.scalar_type(), "reflect_window_attention_backward", [&] {
    (l.from_planes ? unpack_planes<scalar_t> : unpack<scalar_t>)(std::get<0>(grads).const_data_ptr<scalar_t>(),
                     std::get<1>(grads).const_data_ptr<scalar_t>(),
                     std::get<2>(grads).const_data_ptr<scalar_t>(),
                     tokens.const_data_ptr<scalar_t>(), out_scale.item<scalar_t>(), l,
                     grad_qkv.mutable_data_ptr<scalar_t>(),
                     grad_offset.mutable_data_ptr<scalar_t>(),
                     grad_scale.mutable_data_ptr<scalar_t>());
  });
  if (l.from_planes) return {grad_qkv, grad_offset.t(), grad_scale};
  return {grad_qkv, grad_offset, grad_scale};
}

// ResNet-ACmix's layer at stride 1 as one operator, from a projection that is a view of
// planes in its own order (q, k, v heads): the attention path (above) plus the
// convolution path (narrow_pieces_conv, which reads the same planes), the two summed as
// the convolution stores its output; in the backward pass the convolution's gradient of
// the projection is added as it is stored, in place, to the attention's. So neither sum
// takes a pass over the maps of its own. Returns the sum (B, C, H, W) and, for the
// backward pass, the attention's log-sum-exp; its output is not kept (the backward
// pass takes dO . O from the weights: 17 MB less kept at 64 channels, 200x336).
std::tuple<at::Tensor, at::Tensor> reflect_window_attention_plus_conv_forward(
    const at::Tensor& qkv, const at::Tensor& key_offset, const at::Tensor& out_scale,
    const at::Tensor& conv_weight, int64_t num_heads, int64_t height, int64_t width,
    int64_t kernel_size, double scale) {
  const Layout l = layout(qkv, num_heads, height, width, kernel_size, 1, false);
  TORCH_CHECK(l.from_planes,
              "reflect_window_attention_plus_conv: qkv must be a view of planes (B, 3C, H*W)");
  auto [attention, lse] = reflect_window_attention_forward(
      qkv, key_offset, out_scale, num_heads, height, width, kernel_size, 1, false, scale);
  const at::Tensor maps = qkv.transpose(1, 2).unflatten(2, {height, width});
  at::Tensor out = narrow_pieces_conv_forward(
      maps, conv_weight, attention.view({l.batch, l.heads * l.dims, height, width}));
  return {out, lse};
}

// The gradients of the projection (planes, as the projection), the key offset, the
// attention's output scale and the convolution's weight.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>
reflect_window_attention_plus_conv_backward(
    const at::Tensor& grad_out, const at::Tensor& qkv, const at::Tensor& key_offset,
    const at::Tensor& out_scale, const at::Tensor& conv_weight, const at::Tensor& lse,
    int64_t num_heads, int64_t height, int64_t width, int64_t kernel_size, double scale) {
  const at::Tensor go = grad_out.contiguous();  // once for both paths
  auto [grad_qkv, grad_offset, grad_scale] = reflect_window_attention_backward(
      go.view({lse.size(0), go.size(1) / num_heads, height, width}), qkv, key_offset,
      out_scale, at::Tensor(), lse, num_heads, height, width, kernel_size, 1, false, scale);
  const at::Tensor maps = qkv.transpose(1, 2).unflatten(2, {height, width});
  // grad_qkv, a tensor of its own (not a view: see large_tensors.h), takes the sum.
  const at::Tensor grad_weight =
      std::get<1>(narrow_pieces_conv_backward(
          go, maps, conv_weight, grad_qkv.transpose(1, 2).unflatten(2, {height, width})));
  return {grad_qkv, grad_offset, grad_scale, grad_weight};
}

}  // namespace acmix_mm

TORCH_LIBRARY_FRAGMENT(acmix_mm, m) {
  m.def(
      "reflect_window_attention(Tensor qkv, Tensor key_offset, Tensor out_scale, "
      "int num_heads, int height, int width, int kernel_size, int stride, "
      "bool channel_major, float scale) -> (Tensor, Tensor)");
  m.def(
      "reflect_window_attention_plus_conv(Tensor qkv, Tensor key_offset, Tensor out_scale, "
      "Tensor conv_weight, int num_heads, int height, int width, int kernel_size, "
      "float scale) -> (Tensor, Tensor)");
  m.def(
      "reflect_window_attention_plus_conv_backward(Tensor grad_out, Tensor qkv, "
      "Tensor key_offset, Tensor out_scale, Tensor conv_weight, Tensor lse, "
      "int num_heads, int height, int width, int kernel_size, float scale) "
      "-> (Tensor, Tensor, Tensor, Tensor)");
  m.def(
      "reflect_window_attention_backward(Tensor grad_out, Tensor qkv, Tensor key_offset, "
      "Tensor out_scale, Tensor out, Tensor lse, int num_heads, int height, int width, "
      "int kernel_size, int stride, bool channel_major, float scale) "
      "-> (Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(acmix_mm, CPU, m) {
  m.impl("reflect_window_attention", &acmix_mm::reflect_window_attention_forward);
  m.impl("reflect_window_attention_backward", &acmix_mm::reflect_window_attention_backward);
  m.impl("reflect_window_attention_plus_conv",
         &acmix_mm::reflect_window_attention_plus_conv_forward);
  m.impl("reflect_window_attention_plus_conv_backward",
         &acmix_mm::reflect_window_attention_plus_conv_backward);
}
