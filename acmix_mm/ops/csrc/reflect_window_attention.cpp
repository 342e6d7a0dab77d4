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

#include "sliding_window_attention.h"

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <utility>
#include <vector>

namespace acmix_mm {
namespace {

struct Layout {
  int64_t batch, heads, dims, height, width, pad, padded_h, padded_w, out_h, out_w, stride;
  bool channel_major;
  // Keys and values are packed in the row phases of the stride (phased_window_attention):
  // rows key_w wide, padded column px at key_column(px).
  int64_t key_w() const { return phased_width(padded_w, stride); }
  int64_t key_column(int64_t px) const { return (px % stride) * (key_w() / stride) + px / stride; }

  int64_t pixels() const { return height * width; }
  int64_t columns() const { return 3 * heads * dims; }
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
                channel_major};
}

// Pixels packed together: each plane's row gets kBlock consecutive values (whole cache
// lines) from tokens that stay in L1. Pixel by pixel, each store would land on another
// plane's page, and the 2 * C planes outnumber the first-level TLB.
constexpr int64_t kBlock = 16;

// Queries at the strided positions; keys less their offset and values times alpha,
// reflection-padded and phased. All as planes (B * heads, d, rows, columns), a block of
// columns of a row at a time.
template <typename T>
void pack(const T* qkv, const T* offset, T alpha, const Layout& l, T* query, T* key,
          T* value) {
  // The source pixel of each packed column; -1 for the zeros that phases end with.
  std::vector<int64_t> source_x(l.key_w(), -1);
  for (int64_t px = 0; px < l.padded_w; ++px) {
    source_x[l.key_column(px)] = reflect(px - l.pad, l.width);
  }
  const int64_t key_plane = l.padded_h * l.key_w(), query_plane = l.out_h * l.out_w;
  // A zero token and offset for the columns without a source.
  const std::vector<T> zeros(l.columns(), T(0));
  at::parallel_for(0, l.batch * l.padded_h, 1, [&](int64_t begin, int64_t end) {
    const T* token[kBlock];
    const T* token_offset[kBlock];
    for (int64_t index = begin; index < end; ++index) {
      const int64_t b = index / l.padded_h, py = index % l.padded_h;
      const int64_t sy = reflect(py - l.pad, l.height);
      const T* tokens = qkv + (b * l.pixels() + sy * l.width) * l.columns();
      const T* offsets = offset + sy * l.width * l.dims;
      T* key_rows = key + b * l.heads * l.dims * key_plane + py * l.key_w();
      T* value_rows = value + b * l.heads * l.dims * key_plane + py * l.key_w();
      for (int64_t px0 = 0; px0 < l.key_w(); px0 += kBlock) {
        const int64_t n = std::min(kBlock, l.key_w() - px0);
        for (int64_t t = 0; t < n; ++t) {
          const int64_t sx = source_x[px0 + t];
          token[t] = sx < 0 ? zeros.data() : tokens + sx * l.columns();
          token_offset[t] = sx < 0 ? zeros.data() : offsets + sx * l.dims;
        }
        for (int64_t h = 0; h < l.heads; ++h) {
          for (int64_t c = 0; c < l.dims; ++c) {
            const int64_t at = (h * l.dims + c) * key_plane + px0;
            const int64_t key_col = l.column(1, h, c), value_col = l.column(2, h, c);
            for (int64_t t = 0; t < n; ++t) {
              key_rows[at + t] = token[t][key_col] - token_offset[t][c];
            }
            for (int64_t t = 0; t < n; ++t) value_rows[at + t] = alpha * token[t][value_col];
          }
        }
      }
    }
  });
  at::parallel_for(0, l.batch * l.out_h, 1, [&](int64_t begin, int64_t end) {
    for (int64_t index = begin; index < end; ++index) {
      const int64_t b = index / l.out_h, y = index % l.out_h;
      const T* tokens = qkv + (b * l.pixels() + y * l.stride * l.width) * l.columns();
      T* rows = query + b * l.heads * l.dims * query_plane + y * l.out_w;
      for (int64_t x0 = 0; x0 < l.out_w; x0 += kBlock) {
        const int64_t n = std::min(kBlock, l.out_w - x0);
        const T* first = tokens + x0 * l.stride * l.columns();
        const int64_t step = l.stride * l.columns();
        for (int64_t h = 0; h < l.heads; ++h) {
          for (int64_t c = 0; c < l.dims; ++c) {
            const T* column = first + l.column(0, h, c);
            T* out = rows + (h * l.dims + c) * query_plane + x0;
            for (int64_t t = 0; t < n; ++t) out[t] = column[t * step];
          }
        }
      }
    }
  });
}

// Pixels of a row taken back at a time: the 2C planes are read along their rows in runs
// of this many pixels (a run per phase), and the chunk's tokens, written along their
// channels, stay in the first caches. (Fetching the next run ahead by hand gained
// nothing.)
constexpr int64_t kChunk = 32;

// The gradients of the padded planes taken back to the projection's layout (each source
// pixel gathers its reflections), to the offset (minus the key gradients, summed over
// images and heads) and to alpha (the value gradients times the values). Parallel over
// source rows, so that each offset row has one writer; alpha's sum is taken per row,
// then added in order (the same result on every run).
template <typename T>
void unpack(const T* grad_query, const T* grad_key, const T* grad_value, const T* qkv,
            T alpha, const Layout& l, T* grad_qkv, T* grad_offset, T* grad_alpha) {
  const auto rows = mirrors(l.height, l.pad, l.padded_h);
  // Padded columns beside the ones at source + pad: (source column, padded column).
  std::vector<std::pair<int64_t, int64_t>> mirror_cols;
  for (int64_t px = 0; px < l.padded_w; ++px) {
    const int64_t sx = reflect(px - l.pad, l.width);
    if (px != sx + l.pad) mirror_cols.emplace_back(sx, px);
  }
  const int64_t key_plane = l.padded_h * l.key_w(), query_plane = l.out_h * l.out_w;
  std::vector<double> alpha_rows(l.height, 0.0);
  at::parallel_for(0, l.height, 1, [&](int64_t begin, int64_t end) {
    T keys[kChunk], values[kChunk], queries[kChunk];
    for (int64_t sy = begin; sy < end; ++sy) {
      T* offsets = grad_offset + sy * l.width * l.dims;
      std::fill(offsets, offsets + l.width * l.dims, T(0));
      const bool query_row = sy % l.stride == 0;
      double alpha_sum = 0.0;
      for (int64_t b = 0; b < l.batch; ++b) {
        for (int64_t x0 = 0; x0 < l.width; x0 += kChunk) {
          const int64_t n = std::min(kChunk, l.width - x0);
          const int64_t first_token = b * l.pixels() + sy * l.width + x0;
          // The chunk's first query column (at stride S, queries sit at multiples of S).
          const int64_t first_query = (x0 + l.stride - 1) / l.stride;
          for (int64_t h = 0; h < l.heads; ++h) {
            for (int64_t c = 0; c < l.dims; ++c) {
              const int64_t plane = (b * l.heads + h) * l.dims + c;
              std::fill(keys, keys + n, T(0));
              std::fill(values, values + n, T(0));
              for (const int64_t py : rows[sy]) {
                const T* key_row = grad_key + plane * key_plane + py * l.key_w();
                const T* value_row = grad_value + plane * key_plane + py * l.key_w();
                // Phase by phase: source column sx sits at key_column(sx + pad), and the
                // chunk's sources in one phase are a run there.
                for (int64_t u = 0; u < l.stride && u < n; ++u) {
                  const int64_t first = l.key_column(x0 + u + l.pad);
                  if (l.stride == 1) {
                    for (int64_t t = 0; t < n; ++t) {
                      keys[t] += key_row[first + t];
                      values[t] += value_row[first + t];
                    }
                  } else {
                    for (int64_t t = u, m = first; t < n; t += l.stride, ++m) {
                      keys[t] += key_row[m];
                      values[t] += value_row[m];
                    }
                  }
                }
                if (x0 >= l.pad && x0 + n <= l.width - l.pad) continue;  // no mirrors
                for (const auto& [sx, px] : mirror_cols) {
                  if (sx < x0 || sx >= x0 + n) continue;
                  keys[sx - x0] += key_row[l.key_column(px)];
                  values[sx - x0] += value_row[l.key_column(px)];
                }
              }
              std::fill(queries, queries + n, T(0));
              if (query_row) {
                const T* grads = grad_query + plane * query_plane + (sy / l.stride) * l.out_w;
                for (int64_t m = first_query; m * l.stride < x0 + n; ++m) {
                  queries[m * l.stride - x0] = grads[m];
                }
              }
              const T* token_values = qkv + first_token * l.columns() + l.column(2, h, c);
              T value_sum = 0;
              for (int64_t t = 0; t < n; ++t) {
                offsets[(x0 + t) * l.dims + c] -= keys[t];
                value_sum += values[t] * token_values[t * l.columns()];
              }
              alpha_sum += value_sum;
              // Written along the chunk's tokens: the chunk (n tokens of 3C) stays in
              // the caches until every channel is in.
              T* grads = grad_qkv + first_token * l.columns();
              const int64_t q_col = l.column(0, h, c), k_col = l.column(1, h, c),
                            v_col = l.column(2, h, c);
              for (int64_t t = 0; t < n; ++t) {
                grads[t * l.columns() + q_col] = queries[t];
                grads[t * l.columns() + k_col] = keys[t];
                grads[t * l.columns() + v_col] = alpha * values[t];
              }
            }
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

struct Packed {
  at::Tensor query, key, value;
};

Packed pack_tensors(const at::Tensor& qkv, const at::Tensor& key_offset,
                    const at::Tensor& out_scale, const Layout& l) {
  const auto options = qkv.options();
  Packed packed{at::empty({l.planes(), l.dims, l.out_h, l.out_w}, options),
                at::empty({l.planes(), l.dims, l.padded_h, l.key_w()}, options),
                at::empty({l.planes(), l.dims, l.padded_h, l.key_w()}, options)};
  AT_DISPATCH_FLOATING_TYPES(qkv.scalar_type(), "reflect_window_attention_pack", [&] {
    pack<scalar_t>(qkv.const_data_ptr<scalar_t>(), key_offset.const_data_ptr<scalar_t>(),
                   out_scale.item<scalar_t>(), l, packed.query.mutable_data_ptr<scalar_t>(),
                   packed.key.mutable_data_ptr<scalar_t>(),
                   packed.value.mutable_data_ptr<scalar_t>());
  });
  return packed;
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> reflect_window_attention_forward(
    const at::Tensor& qkv, const at::Tensor& key_offset, const at::Tensor& out_scale,
    int64_t num_heads, int64_t height, int64_t width, int64_t kernel_size, int64_t stride,
    bool channel_major, double scale) {
  const Layout l = layout(qkv, num_heads, height, width, kernel_size, stride, channel_major);
  check_extras(qkv, key_offset, out_scale, l);
  const Packed p = pack_tensors(qkv.contiguous(), key_offset.contiguous(), out_scale, l);
  return phased_window_attention_forward(p.query, p.key, p.value, l.padded_w, kernel_size,
                                         stride, scale);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> reflect_window_attention_backward(
    const at::Tensor& grad_out, const at::Tensor& qkv, const at::Tensor& key_offset,
    const at::Tensor& out_scale, const at::Tensor& out, const at::Tensor& lse,
    int64_t num_heads, int64_t height, int64_t width, int64_t kernel_size, int64_t stride,
    bool channel_major, double scale) {
  const Layout l = layout(qkv, num_heads, height, width, kernel_size, stride, channel_major);
  check_extras(qkv, key_offset, out_scale, l);
  const at::Tensor tokens = qkv.contiguous();
  Packed p = pack_tensors(tokens, key_offset.contiguous(), out_scale, l);
  const auto grads = phased_window_attention_backward(
      grad_out, p.query, p.key, p.value, out, lse, l.padded_w, kernel_size, stride, scale);
  p = Packed{};  // freed before the projection's gradient is allocated: a lower peak
  at::Tensor grad_qkv = at::empty_like(tokens);
  at::Tensor grad_offset = at::empty({l.pixels(), l.dims}, qkv.options());
  at::Tensor grad_scale = at::empty_like(out_scale);
  AT_DISPATCH_FLOATING_TYPES(qkv.scalar_type(), "reflect_window_attention_backward", [&] {
    unpack<scalar_t>(std::get<0>(grads).const_data_ptr<scalar_t>(),
                     std::get<1>(grads).const_data_ptr<scalar_t>(),
                     std::get<2>(grads).const_data_ptr<scalar_t>(),
                     tokens.const_data_ptr<scalar_t>(), out_scale.item<scalar_t>(), l,
                     grad_qkv.mutable_data_ptr<scalar_t>(),
                     grad_offset.mutable_data_ptr<scalar_t>(),
                     grad_scale.mutable_data_ptr<scalar_t>());
  });
  return {grad_qkv, grad_offset, grad_scale};
}

}  // namespace acmix_mm

TORCH_LIBRARY_FRAGMENT(acmix_mm, m) {
  m.def(
      "reflect_window_attention(Tensor qkv, Tensor key_offset, Tensor out_scale, "
      "int num_heads, int height, int width, int kernel_size, int stride, "
      "bool channel_major, float scale) -> (Tensor, Tensor)");
  m.def(
      "reflect_window_attention_backward(Tensor grad_out, Tensor qkv, Tensor key_offset, "
      "Tensor out_scale, Tensor out, Tensor lse, int num_heads, int height, int width, "
      "int kernel_size, int stride, bool channel_major, float scale) "
      "-> (Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(acmix_mm, CPU, m) {
  m.impl("reflect_window_attention", &acmix_mm::reflect_window_attention_forward);
  m.impl("reflect_window_attention_backward", &acmix_mm::reflect_window_attention_backward);
}
