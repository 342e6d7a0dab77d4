// ACmix's convolution path on NCHW planes, forward and backward, on CPU: for narrow
// groups (d = 4 channels a piece: SAN-ACmix-19's first stage) and for the projection
// as planes (ResNet-ACmix's, which the attention path reads as planes too).
//
// The planes are piece-major (channel p * d + g); group g reads channel g of each of
// the P pieces and writes the M = 4 outputs g * M + h (as pieces_conv.cpp, which runs
// across groups in vectors of tokens and needs d a multiple of the lanes). These
// kernels run along a row of pixels instead, four groups at a time (a block): each
// loaded vector of an input row feeds the 16 outputs of the block's four groups, whose
// weights are scalars. oneDNN runs this shape as a grouped convolution far below its
// arithmetic rate, or dense at d times the multiply-adds.
//
// 3x3, stride 1, zero padding 1; d a multiple of 4, M = 4 and P a multiple of 3. Rows
// are read through per-thread copies padded with zeros (a cache line before, a vector's
// lanes after), so that every vector load of a window is in bounds and the borders
// need no branches.
#include <torch/library.h>
#include <ATen/Parallel.h>
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>

#include "large_tensors.h"
#include "narrow_pieces_conv.h"
#include "vectorize.h"

#include <algorithm>
#include <climits>
#include <cstdint>
#include <vector>

namespace acmix_mm {
namespace {

constexpr int kGroups = 4;   // groups of a block
constexpr int kOuts = 4;     // M
constexpr int kPieceBlock = 3;  // pieces per pass of the input gradient

struct PlanesGeometry {
  // Copied rows are `pitch` wide, their columns from `lead` on (zeros around them).
  int64_t batch, pieces, dims, height, width, pitch, lead;
  int64_t channels() const { return pieces * dims; }
  int64_t outputs() const { return kOuts * dims; }
  int64_t blocks() const { return dims / kGroups; }
  int64_t block_channels() const { return pieces * kGroups; }
  int64_t block_outputs() const { return kOuts * kGroups; }
  int64_t plane() const { return height * width; }
  // Weight (M * d, P, 3, 3), row-major: output o, piece p, tap (dy, dx); for a block's
  // outputs from its first one on (o < 16).
  int64_t weight_at(int64_t o, int64_t p, int64_t dy, int64_t dx) const {
    return ((o * pieces + p) * 3 + dy) * 3 + dx;
  }
};

// The first 64-byte aligned element at or after p (buffers allocated a line longer).
template <typename T>
T* aligned_start(T* p) {
  const auto at = reinterpret_cast<std::uintptr_t>(p);
  return reinterpret_cast<T*>((at + 63) / 64 * 64);
}

#ifdef ACMIX_VECTORS
// Row r of `count` planes, in runs of `run` consecutive planes `step` planes apart from
// `planes` on, copied to rows[c] at column g.lead with zeros around it (rows of g.pitch);
// zeros where r is outside the map. A block's inputs are runs of its 4 groups' channels,
// d apart (one run per piece); outputs are one run.
template <typename T>
ACMIX_INLINE void padded_rows(const T* planes, int64_t count, int64_t run, int64_t step,
                              int64_t r, const PlanesGeometry& g, T* rows) {
  for (int64_t c = 0; c < count; ++c) {
    T* row = rows + c * g.pitch;
    if (r < 0 || r >= g.height) {
      std::fill(row, row + g.pitch, T(0));
      continue;
    }
    const T* src = planes + (c / run * step + c % run) * g.plane() + r * g.width;
    std::fill(row, row + g.lead, T(0));  // the margins only: the row between is copied over
    std::copy(src, src + g.width, row + g.lead);
    std::fill(row + g.lead + g.width, row + g.pitch, T(0));
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

// Pixels of a row in a kernel's tile: kTileVectors vectors, so that each scalar weight
// (broadcast) serves that many multiply-adds and each loaded vector several outputs.
// One vector a tile took ~1.3 loads per multiply-add (64 channels at 200x336: forward
// 7.8 ms, where the tokens kernel, pieces_conv.cpp, took 5.2).
constexpr int64_t kTileVectors = 4;

// The first n <= L values from src in a vector, zeros after them.
template <typename T>
ACMIX_INLINE vec_t<T> load_first(const T* src, int64_t n) {
  if (n == kLanes<T>) return load(src);
  T lanes[kLanes<T>] = {};
  std::copy(src, src + n, lanes);
  return load(lanes);
}

// The first n lanes of a tile's vectors to dst (n <= the tile's pixels), plus those of
// addend where it is given (the same offsets in a map of dst's layout).
template <typename T>
ACMIX_INLINE void store_tile(T* dst, const vec_t<T>* acc, int64_t n, const T* addend) {
  for (int64_t v = 0; v < kTileVectors && v * kLanes<T> < n; ++v) {
    const int64_t lanes = std::min(kLanes<T>, n - v * kLanes<T>);
    vec_t<T> value = acc[v];
    if (addend != nullptr) value += load_first(addend + v * kLanes<T>, lanes);
    store_first(dst + v * kLanes<T>, value, lanes);
  }
}

// The row kernels take rows[dy * count + c]: channel c's row for window row dy (count
// channels of a block), each at the row's column 0. Copied rows have zeros around them
// (padded_rows). The forward pass reads wide rows where they lie (direct: 64 channels at
// 200x336, forward 9.5 -> 7.1 ms, AMD EPYC family 25, 2 threads; read so, the input
// gradient ran ~9% slower and the weight gradient no faster: they keep the copies):
// only inside the row, in tiles that end one column before either edge, the last one
// shifted back over its neighbour (its shared outputs computed again to the same
// values), and the two edge columns value by value.

// The first column of a row's tile from x0 on: as they come where the rows are copies;
// read in place, tiles of columns [1, W - 1), the last shifted back to end there.
ACMIX_INLINE int64_t tile_start(const PlanesGeometry& g, bool direct, int64_t span,
                                int64_t x0) {
  return direct ? std::min(x0, g.width - 1 - span) : x0;
}

// A tile of output row y of one image for a block's four groups: out[o][y][x] = sum_{p,
// dy, dx} w[o][p][dy][dx] * in[p * d + o / M][y + dy - 1][x + dx - 1] for x in [x0, x0 +
// n). rows: the input rows y + dy - 1 of the block's channels.
template <typename T>
ACMIX_INLINE void forward_tile(const T* const* rows, const T* weight, T* out, const T* addend,
                               const PlanesGeometry& g, int64_t y, int64_t x0, int64_t n) {
  using V = vec_t<T>;
  constexpr int64_t L = kLanes<T>, N = kTileVectors;
  const int64_t count = g.block_channels();
  for (int gr = 0; gr < kGroups; ++gr) {
    V acc[kOuts][N] = {};
    for (int64_t p = 0; p < g.pieces; ++p) {
      for (int dy = 0; dy < 3; ++dy) {
        const T* in = rows[dy * count + p * kGroups + gr] + x0 - 1;
        for (int dx = 0; dx < 3; ++dx) {
          V v[N];
          for (int t = 0; t < N; ++t) v[t] = load(in + dx + t * L);
          for (int h = 0; h < kOuts; ++h) {
            const T w = weight[g.weight_at(gr * kOuts + h, p, dy, dx)];
            for (int t = 0; t < N; ++t) acc[h][t] += w * v[t];
          }
        }
      }
    }
    for (int h = 0; h < kOuts; ++h) {
      const int64_t at = (gr * kOuts + h) * g.plane() + y * g.width + x0;
      store_tile(out + at, acc[h], n, addend == nullptr ? nullptr : addend + at);
    }
  }
}

// Column x (0 or W - 1) of forward_tile, value by value, rows read in place.
template <typename T>
ACMIX_INLINE void forward_edge(const T* const* rows, const T* weight, T* out, const T* addend,
                               const PlanesGeometry& g, int64_t y, int64_t x) {
  for (int64_t o = 0; o < g.block_outputs(); ++o) {
    T sum = 0;
    for (int64_t p = 0; p < g.pieces; ++p) {
      for (int dy = 0; dy < 3; ++dy) {
        const T* in = rows[dy * g.block_channels() + p * kGroups + o / kOuts];
        for (int dx = 0; dx < 3; ++dx) {
          const int64_t column = x + dx - 1;
          if (column >= 0 && column < g.width) {
            sum += weight[g.weight_at(o, p, dy, dx)] * in[column];
          }
        }
      }
    }
    const int64_t at = o * g.plane() + y * g.width + x;
    out[at] = addend == nullptr ? sum : addend[at] + sum;
  }
}

// Output row y (forward_tile), from copied rows or rows in place (direct). (Loops over
// the tiles here rather than a helper taking the tile as a lambda: a lambda is compiled
// apart from the caller's clone, for the baseline CPU.)
template <typename T>
ACMIX_INLINE void forward_row_impl(const T* const* rows, const T* weight, T* out,
                                   const T* addend, const PlanesGeometry& g, int64_t y,
                                   bool direct) {
  constexpr int64_t span = kTileVectors * kLanes<T>;
  for (int64_t x0 = direct; x0 < g.width - direct; x0 += span) {
    const int64_t start = tile_start(g, direct, span, x0);
    forward_tile(rows, weight, out, addend, g, y, start, std::min(span, g.width - start));
  }
  if (direct) {
    forward_edge(rows, weight, out, addend, g, y, 0);
    forward_edge(rows, weight, out, addend, g, y, g.width - 1);
  }
}

// Input row y of one image: grad_in[p * d + g][y][x] = sum_{h, dy, dx}
// w[g * M + h][p][dy][dx] * grad_out[g * M + h][y - dy + 1][x - dx + 1], for a block's
// four groups. rows: the padded output-gradient rows y - dy + 1 of the block's
// outputs.
template <typename T, int PB>
ACMIX_INLINE void input_grad_pieces(const T* const* rows, const T* weight, T* grad_in,
                                    const T* addend, const PlanesGeometry& g, int64_t y,
                                    int64_t x0, int64_t n, int gr, int64_t p0) {
  using V = vec_t<T>;
  constexpr int64_t L = kLanes<T>, N = kTileVectors;
  V acc[PB][N] = {};
  for (int h = 0; h < kOuts; ++h) {
    const int64_t o = gr * kOuts + h;
    for (int dy = 0; dy < 3; ++dy) {
      const T* go = rows[dy * g.block_outputs() + o] + x0;
      for (int dx = 0; dx < 3; ++dx) {
        V v[N];  // grad_out columns x - dx + 1
        for (int t = 0; t < N; ++t) v[t] = load(go + 1 - dx + t * L);
        for (int p = 0; p < PB; ++p) {
          const T w = weight[g.weight_at(o, p0 + p, dy, dx)];
          for (int t = 0; t < N; ++t) acc[p][t] += w * v[t];
        }
      }
    }
  }
  for (int p = 0; p < PB; ++p) {
    const int64_t at = ((p0 + p) * g.dims + gr) * g.plane() + y * g.width + x0;
    store_tile(grad_in + at, acc[p], n, addend == nullptr ? nullptr : addend + at);
  }
}

// Input row y of one image: grad_in[p * d + g][y][x] = sum_{h, dy, dx}
// w[g * M + h][p][dy][dx] * grad_out[g * M + h][y - dy + 1][x - dx + 1], for a block's
// four groups. rows: the output-gradient rows y - dy + 1 of the block's outputs. Six
// pieces a pass where they divide P (24 sums in registers: each loaded vector of output
// gradients serves six pieces), else three.
template <typename T>
ACMIX_INLINE void input_grad_row_impl(const T* const* rows, const T* weight, T* grad_in,
                                      const T* addend, const PlanesGeometry& g, int64_t y) {
  constexpr int64_t span = kTileVectors * kLanes<T>;
  for (int64_t x0 = 0; x0 < g.width; x0 += span) {
    const int64_t n = std::min(span, g.width - x0);
    for (int gr = 0; gr < kGroups; ++gr) {
      if (g.pieces % 6 == 0) {
        for (int64_t p0 = 0; p0 < g.pieces; p0 += 6) {
          input_grad_pieces<T, 6>(rows, weight, grad_in, addend, g, y, x0, n, gr, p0);
        }
      } else {
        for (int64_t p0 = 0; p0 < g.pieces; p0 += kPieceBlock) {
          input_grad_pieces<T, kPieceBlock>(rows, weight, grad_in, addend, g, y, x0, n, gr,
                                            p0);
        }
      }
    }
  }
}

// Output row y's share of the weight gradient, as vectors of lane sums added to
// partial ([o][p][dy][dx] vectors): grad_out[o][y][x] * in[p * d + g][y + dy - 1][x + dx -
// 1] over the row. rows: the padded input rows y + dy - 1; grads: the padded
// output-gradient rows y of every output (zeros beyond the row end, so that the last
// vector's extra lanes add nothing).
template <typename T, int PB>
ACMIX_INLINE void weight_grad_pieces(const T* const* rows, const T* grads, T* partial,
                                     const PlanesGeometry& g, int gr, int64_t p0, int dy) {
  using V = vec_t<T>;
  constexpr int64_t L = kLanes<T>;
  V acc[PB][kOuts][3] = {};
  for (int64_t x0 = 0; x0 < g.width; x0 += L) {
    V v[PB][3];
    for (int p = 0; p < PB; ++p) {
      const T* in = rows[dy * g.block_channels() + (p0 + p) * kGroups + gr] + x0 - 1;
      for (int dx = 0; dx < 3; ++dx) v[p][dx] = load(in + dx);
    }
    for (int h = 0; h < kOuts; ++h) {
      const V go = load(grads + (gr * kOuts + h) * g.pitch + g.lead + x0);
      for (int p = 0; p < PB; ++p) {
        for (int dx = 0; dx < 3; ++dx) acc[p][h][dx] += go * v[p][dx];
      }
    }
  }
  for (int p = 0; p < PB; ++p) {
    for (int h = 0; h < kOuts; ++h) {
      for (int dx = 0; dx < 3; ++dx) {
        T* dst = partial + g.weight_at(gr * kOuts + h, p0 + p, dy, dx) * L;
        store(dst, load(dst) + acc[p][h][dx]);
      }
    }
  }
}

// Output row y's share of the weight gradient, as vectors of lane sums added to
// partial ([o][p][dy][dx] vectors): grad_out[o][y][x] * in[p * d + g][y + dy - 1][x + dx -
// 1] over the row. rows: the padded input rows y + dy - 1; grads: the padded
// output-gradient rows y of every output (zeros beyond the row end, so that the last
// vector's extra lanes add nothing). Two pieces a pass: each loaded output gradient
// serves 24 sums.
template <typename T>
ACMIX_INLINE void weight_grad_row_impl(const T* const* rows, const T* grads, T* partial,
                                       const PlanesGeometry& g) {
  for (int gr = 0; gr < kGroups; ++gr) {
    for (int dy = 0; dy < 3; ++dy) {
      int64_t p = 0;
      for (; p + 2 <= g.pieces; p += 2) weight_grad_pieces<T, 2>(rows, grads, partial, g, gr, p, dy);
      for (; p < g.pieces; ++p) weight_grad_pieces<T, 1>(rows, grads, partial, g, gr, p, dy);
    }
  }
}
#endif

#define ACMIX_NARROW_KERNELS(T, ATTRIBUTES)                                                 \
  ATTRIBUTES void forward_row(const T* const* rows, const T* weight, T* out,               \
                              const T* addend, const PlanesGeometry& g, int64_t y,         \
                              bool direct) {                                               \
    forward_row_impl<T>(rows, weight, out, addend, g, y, direct);                          \
  }                                                                                        \
  ATTRIBUTES void input_grad_row(const T* const* rows, const T* weight, T* grad_in,        \
                                 const T* addend, const PlanesGeometry& g, int64_t y) {    \
    input_grad_row_impl<T>(rows, weight, grad_in, addend, g, y);                           \
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
  TORCH_CHECK(weight.dim() == 4 && weight.size(0) % (kOuts * kGroups) == 0 &&
                  weight.size(2) == 3 && weight.size(3) == 3 &&
                  weight.size(1) % kPieceBlock == 0,
              "narrow_pieces_conv: weight must be (4 * d, P, 3, 3), d a multiple of 4 and P "
              "of 3");
  const int64_t dims = weight.size(0) / kOuts;
  TORCH_CHECK(planes.dim() == 4 && planes.size(1) == weight.size(1) * dims,
              "narrow_pieces_conv: planes must be (B, d * P, H, W) for the weight's ",
              weight.size(1), " pieces of d = ", dims, " channels");
#ifndef ACMIX_VECTORS
  TORCH_CHECK(false, "narrow_pieces_conv: built without vector extensions");
#endif
  // Copied rows start a cache line in (lead), so that the copies store whole lines (a
  // lead of one column: the backward pass ~3% slower).
  const int64_t lanes = 64 / planes.element_size();
  return PlanesGeometry{planes.size(0), weight.size(1), dims, planes.size(2), planes.size(3),
                        (planes.size(3) + lanes + 1 + kTileVectors * lanes + lanes - 1) /
                            lanes * lanes,
                        lanes};
}

// Asks for row r of the planes padded_rows would copy, a cache line at a time: the
// next row's copy then reads from the caches. The planes' rows are many streams (48 for
// ResNet-ACmix's blocks), more than the hardware prefetchers follow: without this the
// copies took half of the forward pass (64 channels at 200x336).
template <typename T>
ACMIX_INLINE void prefetch_rows(const T* planes, int64_t count, int64_t run, int64_t step,
                                int64_t r, const PlanesGeometry& g) {
  if (r < 0 || r >= g.height) return;
  constexpr int64_t kLine = 64 / sizeof(T);
  for (int64_t c = 0; c < count; ++c) {
    const T* src = planes + (c / run * step + c % run) * g.plane() + r * g.width;
    for (int64_t x = 0; x < g.width; x += kLine) __builtin_prefetch(src + x);
  }
}

// Whether the forward pass reads a map's rows in place (direct): where a row holds a
// tile (of float32, the widest) and the two edge columns.
bool reads_in_place(const PlanesGeometry& g) {
  return g.width >= kTileVectors * kLanes<float> + 2;
}

// Runs body(y, rows) for the rows y in [begin, end) of one image, rows[dy * count + c]
// pointing at column 0 of row y + order * (dy - 1) of plane c of `count` planes (runs of
// `run`, `step` apart: padded_rows). Rows outside the map are zeros. The rows are the
// planes' own where `direct`, else copies with zeros around them, rotating through
// three slots (each row copied once per run of rows). Either way the next row is asked
// for ahead of its use.
template <typename T, typename Body>
void with_row_windows(const T* planes, int64_t count, int64_t run, int64_t step,
                      const PlanesGeometry& g, int64_t begin, int64_t end, int order,
                      bool direct, Body body) {
  std::vector<T> storage((direct ? g.width : 3 * count * g.pitch) + 64 / sizeof(T));
  T* slots = aligned_start(storage.data());  // direct: a zero row
  std::vector<const T*> rows(3 * count);
  int64_t held[3] = {INT64_MIN, INT64_MIN, INT64_MIN};  // the row each slot holds
  for (int64_t y = begin; y < end; ++y) {
    for (int dy = 0; dy < 3; ++dy) {
      const int64_t r = y + order * (dy - 1);
      for (int64_t c = 0; direct && c < count; ++c) {
        rows[dy * count + c] =
            r < 0 || r >= g.height
                ? slots
                : planes + (c / run * step + c % run) * g.plane() + r * g.width;
      }
      if (direct) continue;
      const int64_t slot = ((r % 3) + 3) % 3;
      T* rows_of_slot = slots + slot * count * g.pitch;
      if (held[slot] != r) {
        padded_rows(planes, count, run, step, r, g, rows_of_slot);
        held[slot] = r;
      }
      for (int64_t c = 0; c < count; ++c) {
        rows[dy * count + c] = rows_of_slot + c * g.pitch + g.lead;
      }
    }
    // the next y's new row: y + 2 either way
    if (y + 1 < end) prefetch_rows(planes, count, run, step, y + 2, g);
    body(y, rows.data());
  }
}

// Runs body(b, block, first, stop) over the rows [begin, end) of the units (image b,
// block of groups), height rows each, a unit's share of the range at a time.
template <typename Body>
void for_unit_rows(const PlanesGeometry& g, int64_t begin, int64_t end, Body body) {
  for (int64_t index = begin; index < end;) {
    const int64_t unit = index / g.height, stop = std::min(end, (unit + 1) * g.height);
    body(unit / g.blocks(), unit % g.blocks(), index - unit * g.height, stop - unit * g.height);
    index = stop;
  }
}

}  // namespace

// A map added to an output or input gradient as the kernels store it: (B, channels, H,
// W) in the planes' dtype, contiguous (an undefined tensor where none).
at::Tensor addend_of(const std::optional<at::Tensor>& addend, const PlanesGeometry& g,
                     int64_t channels, const at::Tensor& planes, const char* what) {
  if (!addend.has_value()) return at::Tensor();
  TORCH_CHECK(addend->sizes() == at::IntArrayRef({g.batch, channels, g.height, g.width}) &&
                  addend->scalar_type() == planes.scalar_type(),
              "narrow_pieces_conv: ", what, " must be (B, ", channels,
              ", H, W) in the planes' dtype");
  return addend->contiguous();
}

template <typename T>
const T* data_or_null(const at::Tensor& t) {
  return t.defined() ? t.const_data_ptr<T>() : nullptr;
}

at::Tensor narrow_pieces_conv_forward(const at::Tensor& planes, const at::Tensor& weight,
                                      const std::optional<at::Tensor>& addend_in) {
  const PlanesGeometry g = planes_geometry(planes, weight);
  const at::Tensor in = planes.contiguous(), w = weight.contiguous();
  const at::Tensor addend = addend_of(addend_in, g, g.outputs(), planes, "the output's addend");
  at::Tensor out = empty_large({g.batch, g.outputs(), g.height, g.width}, planes.options());
#ifdef ACMIX_VECTORS
  AT_DISPATCH_FLOATING_TYPES(planes.scalar_type(), "narrow_pieces_conv", [&] {
    const scalar_t* src = in.const_data_ptr<scalar_t>();
    const scalar_t* wd = w.const_data_ptr<scalar_t>();
    scalar_t* dst = out.mutable_data_ptr<scalar_t>();
    const scalar_t* add = data_or_null<scalar_t>(addend);
    const int64_t block_weights = g.block_outputs() * g.pieces * 9;
    const bool direct = reads_in_place(g);
    at::parallel_for(0, g.batch * g.blocks() * g.height, 1, [&](int64_t begin, int64_t end) {
      for_unit_rows(g, begin, end, [&](int64_t b, int64_t block, int64_t first, int64_t stop) {
        const scalar_t* image = src + (b * g.channels() + block * kGroups) * g.plane();
        const int64_t outs = (b * g.outputs() + block * g.block_outputs()) * g.plane();
        with_row_windows(image, g.block_channels(), kGroups, g.dims, g, first, stop, 1, direct,
                         [&](int64_t y, const scalar_t* const* rows) {
                           forward_row(rows, wd + block * block_weights, dst + outs,
                                       add == nullptr ? nullptr : add + outs, g, y, direct);
                         });
      });
    });
  });
#endif
  return out;
}

std::tuple<at::Tensor, at::Tensor> narrow_pieces_conv_backward(
    const at::Tensor& grad_out, const at::Tensor& planes, const at::Tensor& weight,
    const std::optional<at::Tensor>& grad_into) {
  const PlanesGeometry g = planes_geometry(planes, weight);
  TORCH_CHECK(grad_out.sizes() == at::IntArrayRef({g.batch, g.outputs(), g.height, g.width}) &&
                  grad_out.scalar_type() == planes.scalar_type(),
              "narrow_pieces_conv_backward: grad_out must be (B, 4 * d, H, W) in the planes' "
              "dtype");
  const at::Tensor in = planes.contiguous(), w = weight.contiguous(), go = grad_out.contiguous();
  TORCH_CHECK(!grad_into.has_value() || grad_into->is_contiguous(),
              "narrow_pieces_conv_backward: the gradient to add to must be contiguous");
  const at::Tensor addend =
      addend_of(grad_into, g, g.channels(), planes, "the gradient to add to");
  at::Tensor grad_in = addend.defined() ? addend : empty_large_like(in);
  // Weight-gradient lane sums per chunk of rows and block, added in order: the same
  // result on every run whatever the threads. 32 chunks of work in all (fewer chunks
  // of more blocks).
  const int64_t rows = g.batch * g.height;
  const int64_t chunks = std::min<int64_t>(rows, std::max<int64_t>(1, 32 / g.blocks()));
  const int64_t lanes = 64 / planes.element_size();
  at::Tensor partials = at::zeros({chunks, w.numel(), lanes}, planes.options());
#ifdef ACMIX_VECTORS
  AT_DISPATCH_FLOATING_TYPES(planes.scalar_type(), "narrow_pieces_conv_backward", [&] {
    const scalar_t* src = in.const_data_ptr<scalar_t>();
    const scalar_t* wd = w.const_data_ptr<scalar_t>();
    const scalar_t* gd = go.const_data_ptr<scalar_t>();
    scalar_t* gi = grad_in.mutable_data_ptr<scalar_t>();
    const scalar_t* add = data_or_null<scalar_t>(addend);
    scalar_t* part = partials.mutable_data_ptr<scalar_t>();
    const int64_t block_weights = g.block_outputs() * g.pieces * 9;
    at::parallel_for(0, g.batch * g.blocks() * g.height, 1, [&](int64_t begin, int64_t end) {
      for_unit_rows(g, begin, end, [&](int64_t b, int64_t block, int64_t first, int64_t stop) {
        const scalar_t* grads = gd + (b * g.outputs() + block * g.block_outputs()) * g.plane();
        with_row_windows(grads, g.block_outputs(), g.block_outputs(), 0, g, first, stop, -1,
                         false, [&](int64_t y, const scalar_t* const* window) {
                           const int64_t at = (b * g.channels() + block * kGroups) * g.plane();
                           input_grad_row(window, wd + block * block_weights, gi + at,
                                          add == nullptr ? nullptr : add + at, g, y);
                         });
      });
    });
    at::parallel_for(0, chunks * g.blocks(), 1, [&](int64_t begin, int64_t end) {
      std::vector<scalar_t> grads_storage(g.block_outputs() * g.pitch + lanes);
      scalar_t* grads = aligned_start(grads_storage.data());
      for (int64_t item = begin; item < end; ++item) {
        const int64_t chunk = item / g.blocks(), block = item % g.blocks();
        const int64_t first = chunk * rows / chunks, last = (chunk + 1) * rows / chunks;
        scalar_t* partial = part + (chunk * w.numel() + block * block_weights) * lanes;
        for (int64_t index = first; index < last;) {
          const int64_t b = index / g.height, stop = std::min(last, (b + 1) * g.height);
          const scalar_t* image = src + (b * g.channels() + block * kGroups) * g.plane();
          const scalar_t* image_grads =
              gd + (b * g.outputs() + block * g.block_outputs()) * g.plane();
          with_row_windows(image, g.block_channels(), kGroups, g.dims, g, index - b * g.height,
                           stop - b * g.height, 1, false,
                           [&](int64_t y, const scalar_t* const* window) {
                             padded_rows(image_grads, g.block_outputs(), g.block_outputs(), 0,
                                         y, g, grads);
                             prefetch_rows(image_grads, g.block_outputs(), g.block_outputs(), 0,
                                           y + 1, g);
                             weight_grad_row(window, grads, partial, g);
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
  m.impl("narrow_pieces_conv", [](const at::Tensor& planes, const at::Tensor& weight) {
    return acmix_mm::narrow_pieces_conv_forward(planes, weight, std::nullopt);
  });
  m.impl("narrow_pieces_conv_backward",
         [](const at::Tensor& grad_out, const at::Tensor& planes, const at::Tensor& weight) {
           return acmix_mm::narrow_pieces_conv_backward(grad_out, planes, weight, std::nullopt);
         });
}
