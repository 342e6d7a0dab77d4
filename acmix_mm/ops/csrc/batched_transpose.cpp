// (B, R, S) -> (B, S, R), contiguous: the copy between NCHW maps and channels-last ones
// (C x HW planes and HW x C tokens). torch's copy to channels-last runs the generic
// strided loop (64 channels at 128x160: about 1.1 ms here); blocks of 16 x 16 transposed
// in registers take a fraction of that.
#include <torch/library.h>
#include <ATen/Parallel.h>
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>

#include "batched_transpose.h"
#include "large_tensors.h"
#include "vectorize.h"

#include <algorithm>
#include <cstdint>
#include <type_traits>

namespace acmix_mm {
namespace {

constexpr int64_t kSide = 16;  // the blocks' side

// Rows [r0, r0 + n) (n <= kSide) of one (R, S) matrix to columns of its (S, R) transpose.
template <typename T>
ACMIX_INLINE void transpose_rows_impl(const T* src, T* dst, int64_t rows, int64_t cols,
                                      int64_t r0, int64_t n) {
  int64_t c0 = 0;
#ifdef ACMIX_TRANSPOSE
  if constexpr (std::is_same_v<T, float>) {
    for (; n == kSide && c0 + kSide <= cols; c0 += kSide) {
      vec_t<T> block[kSide];
      for (int u = 0; u < kSide; ++u) block[u] = load(src + (r0 + u) * cols + c0);
      transpose16(block);
      for (int u = 0; u < kSide; ++u) store(dst + (c0 + u) * rows + r0, block[u]);
    }
  }
#endif
  // The rest a block of columns at a time, so that each row of dst is written in runs.
  for (; c0 < cols; c0 += kSide) {
    const int64_t m = std::min(kSide, cols - c0);
    for (int64_t c = c0; c < c0 + m; ++c) {
      for (int64_t r = r0; r < r0 + n; ++r) dst[c * rows + r] = src[r * cols + c];
    }
  }
}

#define ACMIX_TRANSPOSE_KERNELS(T, ATTRIBUTES)                                             \
  ATTRIBUTES void transpose_rows(const T* src, T* dst, int64_t rows, int64_t cols,       \
                                 int64_t r0, int64_t n) {                                \
    transpose_rows_impl<T>(src, dst, rows, cols, r0, n);                                  \
  }
ACMIX_TRANSPOSE_KERNELS(float, ACMIX_CLONES)
ACMIX_TRANSPOSE_KERNELS(double, )
#undef ACMIX_TRANSPOSE_KERNELS

}  // namespace

at::Tensor batched_transpose(const at::Tensor& input) {
  TORCH_CHECK(input.device().is_cpu() && input.dim() == 3,
              "batched_transpose: a CPU tensor (B, R, S) expected, got ", input.sizes());
  const at::Tensor x = input.contiguous();
  const int64_t batch = x.size(0), rows = x.size(1), cols = x.size(2);
  at::Tensor out = empty_large({batch, cols, rows}, x.options());
  const int64_t blocks = (rows + kSide - 1) / kSide;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "batched_transpose", [&] {
    const scalar_t* src = x.const_data_ptr<scalar_t>();
    scalar_t* dst = out.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, batch * blocks, 1, [&](int64_t begin, int64_t end) {
      for (int64_t index = begin; index < end; ++index) {
        const int64_t b = index / blocks, r0 = index % blocks * kSide;
        transpose_rows(src + b * rows * cols, dst + b * rows * cols, rows, cols, r0,
                       std::min(kSide, rows - r0));
      }
    });
  });
  return out;
}

}  // namespace acmix_mm

TORCH_LIBRARY_FRAGMENT(acmix_mm, m) { m.def("batched_transpose(Tensor input) -> Tensor"); }

TORCH_LIBRARY_IMPL(acmix_mm, CPU, m) {
  m.impl("batched_transpose", &acmix_mm::batched_transpose);
}
