// ACmix's convolution path as one operator on CPU: the grouped 3x3 convolution from
// the projection's pieces (fc and the shift convolution fused, acmix.conv_of_pieces),
// forward and backward, from tokens to planes (B, M * d, H'*W'), which is the layout of
// the attention path's output it is added to.
//
// Group g (one channel of every piece) has `pieces` inputs and M outputs. The tokens
// are read piece-major (column t * d + g), so that the inputs of all groups at one
// pixel and piece are one contiguous vector, and the weights are repacked to the same
// order ([t][dy][dx][h][g]): every multiply-add then runs across groups, d at a time,
// with sums kept in registers over a tile of pixels. oneDNN's grouped convolution runs
// this shape (groups of 12 inputs and 4 outputs) far below its arithmetic rate.
//
// Stride 1 or 2, zero padding 1, M = 4 (ResNet-ACmix's heads), d a multiple of the
// vector's lanes; the Python wrapper (ops/pieces_conv.py) takes F.conv2d otherwise.
#include <torch/library.h>
#include <ATen/Parallel.h>
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>

#include "large_tensors.h"
#include "vectorize.h"

#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <vector>

namespace acmix_mm {
namespace {

constexpr int kOutputs = 4;  // outputs per group (M)
constexpr int kSide = 3;     // kernel side

struct ConvGeometry {
  int64_t batch, height, width, dims, pieces, stride, out_h, out_w;
  int64_t columns() const { return pieces * dims; }
  int64_t channels() const { return kOutputs * dims; }
  int64_t pixels() const { return height * width; }
  int64_t out_pixels() const { return out_h * out_w; }
  // Whether output columns [x0, x0 + tile) read only columns inside the map.
  bool interior(int64_t x0, int64_t tile) const {
    return x0 * stride >= 1 && (x0 + tile - 1) * stride + 1 < width;
  }
  // The output index o with o * stride + k - 1 == i, or -1 where there is none.
  int64_t output_at(int64_t i, int64_t k, int64_t size) const {
    const int64_t num = i - k + 1;
    if (num < 0 || num % stride) return -1;
    return num / stride < size ? num / stride : -1;
  }
  // Row of d weights (one per group) of piece t, offset (dy, dx), output h.
  int64_t weight_at(int64_t t, int64_t dy, int64_t dx, int64_t h) const {
    return (((t * kSide + dy) * kSide + dx) * kOutputs + h) * dims;
  }
};

#ifdef ACMIX_VECTORS
constexpr int kTile = 4;  // pixels per tile of the forward and input-gradient sums

// row[x0 + p][h * d + g] of output row y (output g * M + h) for the tile's pixels and
// the groups [g0, g0 + lanes).
template <typename T, bool kInterior>
ACMIX_INLINE void forward_tile(const T* tokens, const T* packed, T* out,
                               const ConvGeometry& g, int64_t y, int64_t x0, int64_t n,
                               int64_t g0) {
  using V = vec_t<T>;
  V acc[kTile][kOutputs] = {};
  for (int64_t t = 0; t < g.pieces; ++t) {
    for (int64_t dy = 0; dy < kSide; ++dy) {
      const int64_t yy = y * g.stride + dy - 1;
      if (yy < 0 || yy >= g.height) continue;
      const T* row = tokens + yy * g.width * g.columns() + t * g.dims + g0;
      for (int64_t dx = 0; dx < kSide; ++dx) {
        V w[kOutputs];
        for (int h = 0; h < kOutputs; ++h) w[h] = load(packed + g.weight_at(t, dy, dx, h) + g0);
        for (int p = 0; p < kTile; ++p) {
          const int64_t xx = (x0 + p) * g.stride + dx - 1;
          if (!kInterior && (p >= n || xx < 0 || xx >= g.width)) continue;
          const V in = load(row + xx * g.columns());
          for (int h = 0; h < kOutputs; ++h) acc[p][h] += w[h] * in;
        }
      }
    }
  }
  for (int p = 0; p < (kInterior ? kTile : n); ++p) {
    for (int h = 0; h < kOutputs; ++h) {
      store(out + (x0 + p) * g.channels() + h * g.dims + g0, acc[p][h]);
    }
  }
}

// Between a row of pixels laid out [x][h][g] (row) and the planes of outputs g * M + h
// (planes: channel o's row at planes + o * plane): to the planes, or back with
// kToRow. Blocks of 16 groups of 16 pixels of one output h are transposed in registers
// (transpose16), the rest value by value; pixel by pixel, every store would go to
// another plane's page.
template <typename T, bool kToRow>
ACMIX_INLINE void row_and_planes(T* row, T* planes, int64_t plane, const ConvGeometry& g) {
  const int64_t width = g.out_w, channels = g.channels();
  for (int h = 0; h < kOutputs; ++h) {
    int64_t g0 = 0;
#ifdef ACMIX_TRANSPOSE
    if constexpr (std::is_same_v<T, float>) {
      for (; g0 + 16 <= g.dims; g0 += 16) {
        int64_t x0 = 0;
        for (; x0 + 16 <= width; x0 += 16) {
          vec_t<T> block[16];
          for (int u = 0; u < 16; ++u) {
            block[u] = kToRow ? load(planes + ((g0 + u) * kOutputs + h) * plane + x0)
                              : load(row + (x0 + u) * channels + h * g.dims + g0);
          }
          transpose16(block);
          for (int u = 0; u < 16; ++u) {
            if (kToRow) {
              store(row + (x0 + u) * channels + h * g.dims + g0, block[u]);
            } else {
              store(planes + ((g0 + u) * kOutputs + h) * plane + x0, block[u]);
            }
          }
        }
        for (int64_t c = g0; c < g0 + 16; ++c) {
          T* in_plane = planes + (c * kOutputs + h) * plane;
          for (int64_t x = x0; x < width; ++x) {
            T& in_row = row[x * channels + h * g.dims + c];
            if (kToRow) in_row = in_plane[x]; else in_plane[x] = in_row;
          }
        }
      }
    }
#endif
    for (int64_t c = g0; c < g.dims; ++c) {
      T* in_plane = planes + (c * kOutputs + h) * plane;
      for (int64_t x = 0; x < width; ++x) {
        T& in_row = row[x * channels + h * g.dims + c];
        if (kToRow) in_row = in_plane[x]; else in_plane[x] = in_row;
      }
    }
  }
}

// The input gradient of pieces [t0, t0 + 3) at the tile's pixels, groups [g0, g0 + lanes),
// from the output gradients laid out [pixel][h][g] (grads). Interior tiles (stride 1
// only) skip the checks of which outputs read a pixel.
template <typename T, bool kInterior, int kPieces>
ACMIX_INLINE void input_grad_tile(const T* grads, const T* packed, T* grad_tokens,
                                  const ConvGeometry& g, int64_t y, int64_t x0, int64_t n,
                                  int64_t t0, int64_t g0) {
  using V = vec_t<T>;
  V acc[kTile][kPieces] = {};
  for (int64_t dy = 0; dy < kSide; ++dy) {
    const int64_t yy = g.output_at(y, dy, g.out_h);
    if (yy < 0) continue;
    const T* row = grads + yy * g.out_w * g.channels() + g0;
    for (int64_t dx = 0; dx < kSide; ++dx) {
      for (int h = 0; h < kOutputs; ++h) {
        V w[kPieces];
        for (int t = 0; t < kPieces; ++t) w[t] = load(packed + g.weight_at(t0 + t, dy, dx, h) + g0);
        for (int p = 0; p < kTile; ++p) {
          const int64_t xx = kInterior ? x0 + p - dx + 1 : g.output_at(x0 + p, dx, g.out_w);
          if (!kInterior && (p >= n || xx < 0)) continue;
          const V grad = load(row + (xx * kOutputs + h) * g.dims);
          for (int t = 0; t < kPieces; ++t) acc[p][t] += w[t] * grad;
        }
      }
    }
  }
  for (int p = 0; p < (kInterior ? kTile : n); ++p) {
    T* dst = grad_tokens + ((y * g.width) + x0 + p) * g.columns() + t0 * g.dims + g0;
    for (int t = 0; t < kPieces; ++t) store(dst + t * g.dims, acc[p][t]);
  }
}

// The inputs of column xx of a row of tokens, zeros outside the map. A helper rather
// than a lambda, which would be compiled apart from the caller's clone.
template <typename T>
ACMIX_INLINE vec_t<T> input_at(const T* row, int64_t xx, const ConvGeometry& g) {
  return xx >= 0 && xx < g.width ? load(row + xx * g.columns()) : vec_t<T>{};
}

// The weight gradient's share of one output row y: for each piece and dy, the three dx
// sums of each output h over the row, the inputs rolling through registers (at stride 1;
// at stride 2 each output reads its own three).
template <typename T>
ACMIX_INLINE void weight_grad_row(const T* tokens, const T* grads, T* partial,
                                  const ConvGeometry& g, int64_t y, int64_t g0) {
  using V = vec_t<T>;
  const T* grad_row = grads + y * g.out_w * g.channels() + g0;
  for (int64_t t = 0; t < g.pieces; ++t) {
    for (int64_t dy = 0; dy < kSide; ++dy) {
      const int64_t yy = y * g.stride + dy - 1;
      if (yy < 0 || yy >= g.height) continue;
      const T* row = tokens + yy * g.width * g.columns() + t * g.dims + g0;
      V acc[kSide][kOutputs] = {};
      V left = {}, centre = load(row);
      for (int64_t x = 0; x < g.out_w; ++x) {
        V right;
        if (g.stride == 1) {
          right = input_at(row, x + 1, g);
        } else {
          left = input_at(row, x * g.stride - 1, g);
          centre = input_at(row, x * g.stride, g);
          right = input_at(row, x * g.stride + 1, g);
        }
        for (int h = 0; h < kOutputs; ++h) {
          const V grad = load(grad_row + (x * kOutputs + h) * g.dims);
          acc[0][h] += grad * left;
          acc[1][h] += grad * centre;
          acc[2][h] += grad * right;
        }
        left = centre;
        centre = right;
      }
      for (int64_t dx = 0; dx < kSide; ++dx) {
        for (int h = 0; h < kOutputs; ++h) {
          T* dst = partial + g.weight_at(t, dy, dx, h) + g0;
          store(dst, load(dst) + acc[dx][h]);
        }
      }
    }
  }
}
#endif

// The row kernels, cloned for AVX-512, AVX2 and baseline x86-64 in float32.
#define ACMIX_CONV_KERNELS(T, ATTRIBUTES)                                                   \
  ATTRIBUTES void forward_row(const T* tokens, const T* packed, T* out,                    \
                              const ConvGeometry& g, int64_t y) {                          \
    for (int64_t g0 = 0; g0 < g.dims; g0 += kLanes<T>) {                                   \
      for (int64_t x0 = 0; x0 < g.out_w; x0 += kTile) {                                    \
        const int64_t n = std::min<int64_t>(kTile, g.out_w - x0);                           \
        if (n == kTile && g.interior(x0, kTile)) {                                                 \
          forward_tile<T, true>(tokens, packed, out, g, y, x0, kTile, g0);                 \
        } else {                                                                            \
          forward_tile<T, false>(tokens, packed, out, g, y, x0, n, g0);                    \
        }                                                                                   \
      }                                                                                     \
    }                                                                                       \
  }                                                                                         \
  ATTRIBUTES void input_grad_row(const T* grads, const T* packed, T* grad_tokens,          \
                                 const ConvGeometry& g, int64_t y) {                       \
    for (int64_t g0 = 0; g0 < g.dims; g0 += kLanes<T>) {                                   \
      for (int64_t t0 = 0; t0 < g.pieces;) {                                               \
        const bool three = t0 + 3 <= g.pieces;                                              \
        for (int64_t x0 = 0; x0 < g.width; x0 += kTile) {                                   \
          const int64_t n = std::min<int64_t>(kTile, g.width - x0);                         \
          const bool interior = g.stride == 1 && x0 > 0 && x0 + kTile < g.width;            \
          if (three && interior) {                                                          \
            input_grad_tile<T, true, 3>(grads, packed, grad_tokens, g, y, x0, n, t0, g0);  \
          } else if (three) {                                                               \
            input_grad_tile<T, false, 3>(grads, packed, grad_tokens, g, y, x0, n, t0, g0); \
          } else {                                                                          \
            input_grad_tile<T, false, 1>(grads, packed, grad_tokens, g, y, x0, n, t0, g0); \
          }                                                                                 \
        }                                                                                   \
        t0 += three ? 3 : 1;                                                                \
      }                                                                                     \
    }                                                                                       \
  }                                                                                         \
  ATTRIBUTES void row_to_planes(const T* row, T* planes, int64_t plane,                    \
                                const ConvGeometry& g) {                                   \
    row_and_planes<T, false>(const_cast<T*>(row), planes, plane, g);                        \
  }                                                                                         \
  ATTRIBUTES void planes_to_row(const T* planes, T* row, int64_t plane,                    \
                                const ConvGeometry& g) {                                   \
    row_and_planes<T, true>(row, const_cast<T*>(planes), plane, g);                         \
  }                                                                                         \
  ATTRIBUTES void weight_grad_rows(const T* tokens, const T* grads, T* partial,            \
                                   const ConvGeometry& g, int64_t begin, int64_t end) {    \
    for (int64_t y = begin; y < end; ++y) {                                                 \
      for (int64_t g0 = 0; g0 < g.dims; g0 += kLanes<T>) {                                 \
        weight_grad_row<T>(tokens, grads, partial, g, y, g0);                               \
      }                                                                                     \
    }                                                                                       \
  }
#ifdef ACMIX_VECTORS
ACMIX_CONV_KERNELS(float, ACMIX_CLONES)
ACMIX_CONV_KERNELS(double, )
#endif
#undef ACMIX_CONV_KERNELS

ConvGeometry conv_geometry(const at::Tensor& tokens, const at::Tensor& weight,
                           int64_t height, int64_t width, int64_t stride) {
  TORCH_CHECK(tokens.device().is_cpu() && weight.device().is_cpu(),
              "pieces_conv: CPU tensors only");
  TORCH_CHECK(tokens.scalar_type() == weight.scalar_type(),
              "pieces_conv: tokens and weight differ in dtype");
  TORCH_CHECK(tokens.dim() == 3 && tokens.size(1) == height * width,
              "pieces_conv: tokens must be (B, H*W, pieces * d) for the map of ", height,
              "x", width);
  TORCH_CHECK(weight.dim() == 4 && weight.size(2) == kSide && weight.size(3) == kSide &&
                  weight.size(0) % kOutputs == 0,
              "pieces_conv: weight must be (4 * d, pieces, 3, 3)");
  TORCH_CHECK(stride == 1 || stride == 2, "pieces_conv: stride 1 or 2, got ", stride);
  const int64_t dims = weight.size(0) / kOutputs, pieces = weight.size(1);
  TORCH_CHECK(tokens.size(2) == pieces * dims, "pieces_conv: tokens have ", tokens.size(2),
              " channels, the weight reads ", pieces, " pieces of ", dims);
#ifdef ACMIX_VECTORS
  const int64_t lanes = 64 / tokens.element_size();
  TORCH_CHECK(dims % lanes == 0, "pieces_conv: groups come ", lanes, " at a time; got ", dims);
#else
  TORCH_CHECK(false, "pieces_conv: built without vector extensions");
#endif
  return ConvGeometry{tokens.size(0), height, width, dims, pieces, stride,
                      (height + stride - 1) / stride, (width + stride - 1) / stride};
}

// The weight as [t][dy][dx][h][g] (weight_at); o = g * M + h in the weight's rows.
at::Tensor pack_weight(const at::Tensor& weight, const ConvGeometry& g) {
  return weight.view({g.dims, kOutputs, g.pieces, kSide, kSide})
      .permute({2, 3, 4, 1, 0})
      .contiguous();
}

// Output gradients, planes (B, M * d, H'*W'), as [pixel][h][g], row by row.
at::Tensor grads_by_output(const at::Tensor& grad_out, const ConvGeometry& g) {
  const at::Tensor planes = grad_out.contiguous();
  at::Tensor grads = empty_large({g.batch, g.out_pixels(), g.channels()}, planes.options());
#ifdef ACMIX_VECTORS
  AT_DISPATCH_FLOATING_TYPES(planes.scalar_type(), "pieces_conv_grads", [&] {
    const scalar_t* src = planes.const_data_ptr<scalar_t>();
    scalar_t* dst = grads.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, g.batch * g.out_h, 1, [&](int64_t begin, int64_t end) {
      for (int64_t index = begin; index < end; ++index) {
        const int64_t b = index / g.out_h, y = index % g.out_h;
        planes_to_row(src + b * g.channels() * g.out_pixels() + y * g.out_w,
                      dst + (b * g.out_pixels() + y * g.out_w) * g.channels(), g.out_pixels(),
                      g);
      }
    });
  });
#endif
  return grads;
}

}  // namespace

at::Tensor pieces_conv_forward(const at::Tensor& tokens, const at::Tensor& weight,
                               int64_t height, int64_t width, int64_t stride) {
  const ConvGeometry g = conv_geometry(tokens, weight, height, width, stride);
  const at::Tensor input = tokens.contiguous(), packed = pack_weight(weight, g);
  at::Tensor out = empty_large({g.batch, g.channels(), g.out_pixels()}, tokens.options());
#ifdef ACMIX_VECTORS
  AT_DISPATCH_FLOATING_TYPES(tokens.scalar_type(), "pieces_conv", [&] {
    const scalar_t* in = input.const_data_ptr<scalar_t>();
    const scalar_t* w = packed.const_data_ptr<scalar_t>();
    scalar_t* o = out.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, g.batch * g.out_h, 1, [&](int64_t begin, int64_t end) {
      // A row of outputs as tokens, then written to the planes: each plane's row in one
      // run (pixel by pixel, every store would go to another plane's page).
      std::vector<scalar_t> row(g.out_w * g.channels());
      for (int64_t index = begin; index < end; ++index) {
        const int64_t b = index / g.out_h, y = index % g.out_h;
        forward_row(in + b * g.pixels() * g.columns(), w, row.data(), g, y);
        row_to_planes(row.data(), o + b * g.channels() * g.out_pixels() + y * g.out_w,
                      g.out_pixels(), g);
      }
    });
  });
#endif
  return out;
}

std::tuple<at::Tensor, at::Tensor> pieces_conv_backward(const at::Tensor& grad_out,
                                                        const at::Tensor& tokens,
                                                        const at::Tensor& weight,
                                                        int64_t height, int64_t width,
                                                        int64_t stride) {
  const ConvGeometry g = conv_geometry(tokens, weight, height, width, stride);
  TORCH_CHECK(grad_out.scalar_type() == tokens.scalar_type() && grad_out.dim() == 3 &&
                  grad_out.size(0) == g.batch && grad_out.size(1) == g.channels() &&
                  grad_out.size(2) == g.out_pixels(),
              "pieces_conv_backward: grad_out must be (B, 4 * d, H'*W') in the tokens' dtype");
  const at::Tensor input = tokens.contiguous(), packed = pack_weight(weight, g);
  const at::Tensor grads = grads_by_output(grad_out, g);
  at::Tensor grad_tokens = empty_large_like(input);
  // Weight-gradient sums per chunk of output rows, added in order: the same result on
  // every run whatever the threads.
  const int64_t rows = g.batch * g.out_h;
  const int64_t chunks = std::min<int64_t>(rows, 32);
  at::Tensor partials = at::zeros({chunks, packed.numel()}, tokens.options());
#ifdef ACMIX_VECTORS
  AT_DISPATCH_FLOATING_TYPES(tokens.scalar_type(), "pieces_conv_backward", [&] {
    const scalar_t* in = input.const_data_ptr<scalar_t>();
    const scalar_t* w = packed.const_data_ptr<scalar_t>();
    const scalar_t* go = grads.const_data_ptr<scalar_t>();
    scalar_t* gt = grad_tokens.mutable_data_ptr<scalar_t>();
    scalar_t* part = partials.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, g.batch * g.height, 1, [&](int64_t begin, int64_t end) {
      for (int64_t index = begin; index < end; ++index) {
        const int64_t b = index / g.height, y = index % g.height;
        input_grad_row(go + b * g.out_pixels() * g.channels(), w,
                       gt + b * g.pixels() * g.columns(), g, y);
      }
    });
    at::parallel_for(0, chunks, 1, [&](int64_t begin, int64_t end) {
      for (int64_t chunk = begin; chunk < end; ++chunk) {
        const int64_t first = chunk * rows / chunks, last = (chunk + 1) * rows / chunks;
        for (int64_t index = first; index < last;) {
          // rows of one image at a time
          const int64_t b = index / g.out_h;
          const int64_t stop = std::min(last, (b + 1) * g.out_h);
          weight_grad_rows(in + b * g.pixels() * g.columns(),
                           go + b * g.out_pixels() * g.channels(),
                           part + chunk * packed.numel(), g, index - b * g.out_h,
                           stop - b * g.out_h);
          index = stop;
        }
      }
    });
  });
#endif
  // [t][dy][dx][h][g] summed over the chunks -> the weight's (g * M + h, t, dy, dx).
  const at::Tensor grad_packed =
      partials.sum(0).view({g.pieces, kSide, kSide, kOutputs, g.dims});
  at::Tensor grad_weight = grad_packed.permute({4, 3, 0, 1, 2})
                               .reshape({g.channels(), g.pieces, kSide, kSide})
                               .contiguous();
  return {grad_tokens, grad_weight};
}

}  // namespace acmix_mm

TORCH_LIBRARY_FRAGMENT(acmix_mm, m) {
  m.def(
      "pieces_conv(Tensor tokens, Tensor weight, int height, int width, int stride=1) "
      "-> Tensor");
  m.def(
      "pieces_conv_backward(Tensor grad_out, Tensor tokens, Tensor weight, int height, "
      "int width, int stride=1) -> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(acmix_mm, CPU, m) {
  m.impl("pieces_conv", &acmix_mm::pieces_conv_forward);
  m.impl("pieces_conv_backward", &acmix_mm::pieces_conv_backward);
}
