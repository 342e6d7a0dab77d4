// ACmix's convolution path on NCHW planes for narrow groups (d = 4 channels a piece:
// SAN-ACmix-19's first stage), forward and backward, on CPU.
//
// The planes are piece-major (channel p * d + g); group g reads channel g of each of
// the P pieces and writes the M = 4 outputs g * M + h (as pieces_conv.cpp, which runs
// across groups in vectors and needs d a multiple of the lanes). With four groups a
// vector of groups is too narrow, so these kernels run along a row of pixels instead:
// each loaded vector of an input row feeds the 16 outputs of the four groups, whose
// weights are scalars. oneDNN runs this shape as a grouped convolution far below its
// arithmetic rate, or dense at four times the multiply-adds.
//
// 3x3, stride 1, zero padding 1; d = 4, M = 4 and P a multiple of 3. Rows are read
// through per-thread copies padded with zeros (one column before, a vector's lanes
// after), so that every vector load of a window is in bounds and the borders need no
// branches.
#include <torch/library.h>
#include <ATen/Parallel.h>
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>

#include "large_tensors.h"
#include "vectorize.h"

#include <algorithm>
#include <climits>
#include <cstdint>
#include <vector>

namespace acmix_mm {
namespace {

constexpr int kGroups = 4;   // d
constexpr int kOuts = 4;     // M
constexpr int kPieceBlock = 3;  // pieces per pass of the input gradient

struct PlanesGeometry {
  int64_t batch, pieces, height, width, pitch;
  int64_t channels() const { return pieces * kGroups; }
  int64_t outputs() const { return kOuts * kGroups; }
  int64_t plane() const { return height * width; }
  // Weight (M * d, P, 3, 3), row-major: output o, piece p, tap (dy, dx).
  int64_t weight_at(int64_t o, int64_t p, int64_t dy, int64_t dx) const {
    return ((o * pieces + p) * 3 + dy) * 3 + dx;
  }
};

#ifdef ACMIX_VECTORS
// Row r of each of `count` planes from `planes` on, copied to rows[c] at column 1 with
// zeros around it (rows of g.pitch); zeros where r is outside the map.
template <typename T>
ACMIX_INLINE void padded_rows(const T* planes, int64_t count, int64_t r,
                              const PlanesGeometry& g, T* rows) {
  for (int64_t c = 0; c < count; ++c) {
    T* row = rows + c * g.pitch;
    std::fill(row, row + g.pitch, T(0));
    if (r < 0 || r >= g.height) continue;
    const T* src = planes + c * g.plane() + r * g.width;
    std::copy(src, src + g.width, row + 1);
  }
}

// The first n <= L lanes of v to dst: a row's last vector ends at the row.
template <typename T>
ACMIX_INLINE void store_first(T* dst, const vec_t<T>& v, int64_t n) {
  if (n == kLanes<T>) {
    store(dst, v);
    return;
  }
  T lanes[kLanes<T>];
  store(lanes, v);
  std::copy(lanes, lanes + n, dst);
}

// Output row y of one image: out[o][y][x] = sum_{p, dy, dx} w[o][p][dy][dx] *
// in[p * d + o / M][y + dy - 1][x + dx - 1]. rows[dy]: the padded input rows y + dy - 1
// of every channel.
template <typename T>
ACMIX_INLINE void forward_row_impl(const T* const* rows, const T* weight, T* out,
                                   const PlanesGeometry& g, int64_t y) {
  using V = vec_t<T>;
  constexpr int64_t L = kLanes<T>;
  for (int64_t x0 = 0; x0 < g.width; x0 += L) {
    V acc[kGroups][kOuts] = {};
    for (int64_t p = 0; p < g.pieces; ++p) {
      for (int dy = 0; dy < 3; ++dy) {
        const T* in = rows[dy] + p * kGroups * g.pitch + x0;
        for (int dx = 0; dx < 3; ++dx) {
          for (int gr = 0; gr < kGroups; ++gr) {
            const V v = load(in + gr * g.pitch + dx);
            for (int h = 0; h < kOuts; ++h) {
              acc[gr][h] += weight[g.weight_at(gr * kOuts + h, p, dy, dx)] * v;
            }
          }
        }
      }
    }
    const int64_t n = std::min(L, g.width - x0);
    for (int gr = 0; gr < kGroups; ++gr) {
      for (int h = 0; h < kOuts; ++h) {
        store_first(out + (gr * kOuts + h) * g.plane() + y * g.width + x0, acc[gr][h], n);
      }
    }
  }
}

// Input row y of one image: grad_in[p * d + g][y][x] = sum_{h, dy, dx}
// w[g * M + h][p][dy][dx] * grad_out[g * M + h][y - dy + 1][x - dx + 1]. rows[dy]: the
// padded output-gradient rows y - dy + 1 of every output.
template <typename T>
ACMIX_INLINE void input_grad_row_impl(const T* const* rows, const T* weight, T* grad_in,
                                      const PlanesGeometry& g, int64_t y) {
  using V = vec_t<T>;
  constexpr int64_t L = kLanes<T>;
  for (int64_t x0 = 0; x0 < g.width; x0 += L) {
    for (int64_t p0 = 0; p0 < g.pieces; p0 += kPieceBlock) {
      V acc[kPieceBlock][kGroups] = {};
      for (int dy = 0; dy < 3; ++dy) {
        for (int gr = 0; gr < kGroups; ++gr) {
          for (int h = 0; h < kOuts; ++h) {
            const int64_t o = gr * kOuts + h;
            const T* go = rows[dy] + o * g.pitch + x0;
            for (int dx = 0; dx < 3; ++dx) {
              // grad_out column x - dx + 1 sits at padded column x - dx + 2
              const V v = load(go + 2 - dx);
              for (int p = 0; p < kPieceBlock; ++p) {
                acc[p][gr] += weight[g.weight_at(o, p0 + p, dy, dx)] * v;
              }
            }
          }
        }
      }
      const int64_t n = std::min(L, g.width - x0);
      for (int p = 0; p < kPieceBlock; ++p) {
        for (int gr = 0; gr < kGroups; ++gr) {
          store_first(grad_in + ((p0 + p) * kGroups + gr) * g.plane() + y * g.width + x0,
                      acc[p][gr], n);
        }
      }
    }
  }
}

// Output row y's share of the weight gradient, as vectors of lane sums added to
// partial ([o][p][dy][dx] vectors): grad_out[o][y][x] * in[p * d + g][y + dy - 1][x + dx -
// 1] over the row. rows[dy]: the padded input rows y + dy - 1; grads: the padded
// output-gradient rows y of every output (zeros beyond the row end, so that the last
// vector's extra lanes add nothing).
template <typename T>
ACMIX_INLINE void weight_grad_row_impl(const T* const* rows, const T* grads, T* partial,
                                       const PlanesGeometry& g) {
  using V = vec_t<T>;
  constexpr int64_t L = kLanes<T>;
  for (int gr = 0; gr < kGroups; ++gr) {
    for (int64_t p = 0; p < g.pieces; ++p) {
      for (int dy = 0; dy < 3; ++dy) {
        const T* in = rows[dy] + (p * kGroups + gr) * g.pitch;
        V acc[kOuts][3] = {};
        for (int64_t x0 = 0; x0 < g.width; x0 += L) {
          const V v0 = load(in + x0), v1 = load(in + x0 + 1), v2 = load(in + x0 + 2);
          for (int h = 0; h < kOuts; ++h) {
            const V go = load(grads + (gr * kOuts + h) * g.pitch + 1 + x0);
            acc[h][0] += go * v0;
            acc[h][1] += go * v1;
            acc[h][2] += go * v2;
          }
        }
        for (int h = 0; h < kOuts; ++h) {
          for (int dx = 0; dx < 3; ++dx) {
            T* dst = partial + g.weight_at(gr * kOuts + h, p, dy, dx) * L;
            store(dst, load(dst) + acc[h][dx]);
          }
        }
      }
    }
  }
}
#endif

#define ACMIX_NARROW_KERNELS(T, ATTRIBUTES)                                                 \
  ATTRIBUTES void forward_row(const T* const* rows, const T* weight, T* out,               \
                              const PlanesGeometry& g, int64_t y) {                        \
    forward_row_impl<T>(rows, weight, out, g, y);                                          \
  }                                                                                        \
  ATTRIBUTES void input_grad_row(const T* const* rows, const T* weight, T* grad_in,        \
                                 const PlanesGeometry& g, int64_t y) {                     \
    input_grad_row_impl<T>(rows, weight, grad_in, g, y);                                   \
  }                                                                                        \
  ATTRIBUTES void weight_grad_row(const T* const* rows, const T* grads, T* partial,        \
                                  const PlanesGeometry& g) {                               \
    weight_grad_row_impl<T>(rows, grads, partial, g);                                      \
  }
#ifdef ACMIX_VECTORS
ACMIX_NARROW_KERNELS(float, ACMIX_CLONES)
ACMIX_NARROW_KERNELS(double, )
#endif
#undef ACMIX_NARROW_KERNELS

PlanesGeometry planes_geometry(const at::Tensor& planes, const at::Tensor& weight) {
  TORCH_CHECK(planes.device().is_cpu() && weight.device().is_cpu(),
              "narrow_pieces_conv: CPU tensors only");
  TORCH_CHECK(planes.scalar_type() == weight.scalar_type(),
              "narrow_pieces_conv: planes and weight differ in dtype");
  TORCH_CHECK(weight.dim() == 4 && weight.size(0) == kOuts * kGroups && weight.size(2) == 3 &&
                  weight.size(3) == 3 && weight.size(1) % kPieceBlock == 0,
              "narrow_pieces_conv: weight must be (16, P, 3, 3), P a multiple of 3");
  TORCH_CHECK(planes.dim() == 4 && planes.size(1) == weight.size(1) * kGroups,
              "narrow_pieces_conv: planes must be (B, 4 * P, H, W) for the weight's ",
              weight.size(1), " pieces");
#ifndef ACMIX_VECTORS
  TORCH_CHECK(false, "narrow_pieces_conv: built without vector extensions");
#endif
  const int64_t lanes = 64 / planes.element_size();
  return PlanesGeometry{planes.size(0), weight.size(1), planes.size(2), planes.size(3),
                        (planes.size(3) + 2 + lanes + lanes - 1) / lanes * lanes};
}

// Runs body(y, rows) for the rows y in [begin, end) of one image, rows[dy] pointing at
// the padded rows y + order * (dy - 1) of `count` planes. The copies rotate through three
// slots: each row is copied once per run of rows.
template <typename T, typename Body>
void with_row_windows(const T* planes, int64_t count, const PlanesGeometry& g, int64_t begin,
                      int64_t end, int order, Body body) {
  std::vector<T> slots(3 * count * g.pitch);
  int64_t held[3] = {INT64_MIN, INT64_MIN, INT64_MIN};  // the row each slot holds
  for (int64_t y = begin; y < end; ++y) {
    const T* rows[3];
    for (int dy = 0; dy < 3; ++dy) {
      const int64_t r = y + order * (dy - 1);
      const int64_t slot = ((r % 3) + 3) % 3;
      T* rows_of_slot = slots.data() + slot * count * g.pitch;
      if (held[slot] != r) {
        padded_rows(planes, count, r, g, rows_of_slot);
        held[slot] = r;
      }
      rows[dy] = rows_of_slot;
    }
    body(y, rows);
  }
}

}  // namespace

at::Tensor narrow_pieces_conv_forward(const at::Tensor& planes, const at::Tensor& weight) {
  const PlanesGeometry g = planes_geometry(planes, weight);
  const at::Tensor in = planes.contiguous(), w = weight.contiguous();
  at::Tensor out = empty_large({g.batch, g.outputs(), g.height, g.width}, planes.options());
#ifdef ACMIX_VECTORS
  AT_DISPATCH_FLOATING_TYPES(planes.scalar_type(), "narrow_pieces_conv", [&] {
    const scalar_t* src = in.const_data_ptr<scalar_t>();
    const scalar_t* wd = w.const_data_ptr<scalar_t>();
    scalar_t* dst = out.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, g.batch * g.height, 1, [&](int64_t begin, int64_t end) {
      for (int64_t index = begin; index < end;) {
        const int64_t b = index / g.height, stop = std::min(end, (b + 1) * g.height);
        with_row_windows(src + b * g.channels() * g.plane(), g.channels(), g,
                         index - b * g.height, stop - b * g.height, 1,
                         [&](int64_t y, const scalar_t* const* rows) {
                           forward_row(rows, wd, dst + b * g.outputs() * g.plane(), g, y);
                         });
        index = stop;
      }
    });
  });
#endif
  return out;
}

std::tuple<at::Tensor, at::Tensor> narrow_pieces_conv_backward(const at::Tensor& grad_out,
                                                               const at::Tensor& planes,
                                                               const at::Tensor& weight) {
  const PlanesGeometry g = planes_geometry(planes, weight);
  TORCH_CHECK(grad_out.sizes() == at::IntArrayRef({g.batch, g.outputs(), g.height, g.width}) &&
                  grad_out.scalar_type() == planes.scalar_type(),
              "narrow_pieces_conv_backward: grad_out must be (B, 16, H, W) in the planes' dtype");
  const at::Tensor in = planes.contiguous(), w = weight.contiguous(), go = grad_out.contiguous();
  at::Tensor grad_in = empty_large_like(in);
  // Weight-gradient lane sums per chunk of rows, added in order: the same result on every
  // run whatever the threads.
  const int64_t rows = g.batch * g.height, chunks = std::min<int64_t>(rows, 32);
  const int64_t lanes = 64 / planes.element_size();
  at::Tensor partials = at::zeros({chunks, w.numel(), lanes}, planes.options());
#ifdef ACMIX_VECTORS
  AT_DISPATCH_FLOATING_TYPES(planes.scalar_type(), "narrow_pieces_conv_backward", [&] {
    const scalar_t* src = in.const_data_ptr<scalar_t>();
    const scalar_t* wd = w.const_data_ptr<scalar_t>();
    const scalar_t* gd = go.const_data_ptr<scalar_t>();
    scalar_t* gi = grad_in.mutable_data_ptr<scalar_t>();
    scalar_t* part = partials.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, rows, 1, [&](int64_t begin, int64_t end) {
      for (int64_t index = begin; index < end;) {
        const int64_t b = index / g.height, stop = std::min(end, (b + 1) * g.height);
        with_row_windows(gd + b * g.outputs() * g.plane(), g.outputs(), g, index - b * g.height,
                         stop - b * g.height, -1,
                         [&](int64_t y, const scalar_t* const* window) {
                           input_grad_row(window, wd, gi + b * g.channels() * g.plane(), g, y);
                         });
        index = stop;
      }
    });
    at::parallel_for(0, chunks, 1, [&](int64_t begin, int64_t end) {
      std::vector<scalar_t> grads(g.outputs() * g.pitch);
      for (int64_t chunk = begin; chunk < end; ++chunk) {
        const int64_t first = chunk * rows / chunks, last = (chunk + 1) * rows / chunks;
        for (int64_t index = first; index < last;) {
          const int64_t b = index / g.height, stop = std::min(last, (b + 1) * g.height);
          const scalar_t* image = src + b * g.channels() * g.plane();
          const scalar_t* image_grads = gd + b * g.outputs() * g.plane();
          with_row_windows(image, g.channels(), g, index - b * g.height, stop - b * g.height, 1,
                           [&](int64_t y, const scalar_t* const* window) {
                             padded_rows(image_grads, g.outputs(), y, g, grads.data());
                             weight_grad_row(window, grads.data(),
                                             part + chunk * w.numel() * lanes, g);
                           });
          index = stop;
        }
      }
    });
  });
#endif
  at::Tensor grad_weight = partials.sum(0).sum(1).view(weight.sizes()).contiguous();
  return {grad_in, grad_weight};
}

}  // namespace acmix_mm

TORCH_LIBRARY_FRAGMENT(acmix_mm, m) {
  m.def("narrow_pieces_conv(Tensor planes, Tensor weight) -> Tensor");
  m.def(
      "narrow_pieces_conv_backward(Tensor grad_out, Tensor planes, Tensor weight) "
      "-> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(acmix_mm, CPU, m) {
  m.impl("narrow_pieces_conv", &acmix_mm::narrow_pieces_conv_forward);
  m.impl("narrow_pieces_conv_backward", &acmix_mm::narrow_pieces_conv_backward);
}
