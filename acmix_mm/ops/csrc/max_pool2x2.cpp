// SAN's 2x2 max pool at stride 2 (each stage's first step), forward and backward, on
// NCHW maps. torch's max_pool2d_with_indices keeps an int64 index per output and its
// backward scatters into a zero-filled input gradient; here the argmax is one byte (its
// place in the window) and the backward writes every input once, the gradient at the
// argmax and zeros beside it. Odd last rows and columns are dropped, as the pool drops
// them (their gradient is zero). Ties go to the first maximum in the window's row-major
// order, a NaN (the last one) wins, as in torch's kernel.
#include <torch/library.h>
#include <ATen/Parallel.h>
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>

#include "large_tensors.h"
#include "vectorize.h"

#include <cmath>
#include <algorithm>
#include <cstdint>
#include <tuple>

namespace acmix_mm {
namespace {

// One output row from input rows `top` and `top + width`.
template <typename T>
ACMIX_INLINE void pool_row_impl(const T* top, int64_t width, int64_t out_w, T* out,
                                uint8_t* argmax) {
  const T* bottom = top + width;
  for (int64_t x = 0; x < out_w; ++x) {
    const T window[4] = {top[2 * x], top[2 * x + 1], bottom[2 * x], bottom[2 * x + 1]};
    T best = window[0];
    uint8_t at = 0;
    for (uint8_t k = 1; k < 4; ++k) {
      if (window[k] > best || std::isnan(window[k])) {
        best = window[k];
        at = k;
      }
    }
    out[x] = best;
    argmax[x] = at;
  }
}

// The gradient of input rows `top` and `top + width` from one output row.
template <typename T>
ACMIX_INLINE void unpool_row_impl(const T* grad_out, const uint8_t* argmax, int64_t width,
                                  int64_t out_w, T* top) {
  // The two rows are adjacent: zeroed in one run, then each window's argmax set.
  std::fill(top, top + 2 * width, T(0));
  for (int64_t x = 0; x < out_w; ++x) {
    const uint8_t at = argmax[x];
    top[(at >> 1) * width + 2 * x + (at & 1)] = grad_out[x];
  }
}

#define ACMIX_POOL_KERNELS(T, ATTRIBUTES)                                                  \
  ATTRIBUTES void pool_row(const T* top, int64_t width, int64_t out_w, T* out,            \
                           uint8_t* argmax) {                                             \
    pool_row_impl<T>(top, width, out_w, out, argmax);                                      \
  }                                                                                        \
  ATTRIBUTES void unpool_row(const T* grad_out, const uint8_t* argmax, int64_t width,     \
                             int64_t out_w, T* top) {                                     \
    unpool_row_impl<T>(grad_out, argmax, width, out_w, top);                               \
  }
ACMIX_POOL_KERNELS(float, ACMIX_CLONES)
ACMIX_POOL_KERNELS(double, )
#undef ACMIX_POOL_KERNELS

void check_maps(const at::Tensor& x, const char* name) {
  TORCH_CHECK(x.device().is_cpu() && x.dim() == 4, name,
              ": a CPU tensor (N, C, H, W) expected, got ", x.sizes());
  TORCH_CHECK(x.size(2) >= 2 && x.size(3) >= 2, name,
              ": maps of at least 2x2 pixels expected, got ", x.size(2), "x", x.size(3));
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> max_pool2x2_forward(const at::Tensor& input) {
  check_maps(input, "max_pool2x2");
  const at::Tensor x = input.contiguous();
  const int64_t planes = x.size(0) * x.size(1), height = x.size(2), width = x.size(3);
  const int64_t out_h = height / 2, out_w = width / 2;
  at::Tensor out = empty_large({x.size(0), x.size(1), out_h, out_w}, x.options());
  at::Tensor argmax = at::empty({x.size(0), x.size(1), out_h, out_w},
                                x.options().dtype(at::kByte));
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "max_pool2x2", [&] {
    const scalar_t* src = x.const_data_ptr<scalar_t>();
    scalar_t* dst = out.mutable_data_ptr<scalar_t>();
    uint8_t* at = argmax.mutable_data_ptr<uint8_t>();
    at::parallel_for(0, planes * out_h, 16, [&](int64_t begin, int64_t end) {
      for (int64_t index = begin; index < end; ++index) {
        const int64_t plane = index / out_h, y = index % out_h;
        pool_row(src + (plane * height + 2 * y) * width, width, out_w, dst + index * out_w,
                 at + index * out_w);
      }
    });
  });
  return {out, argmax};
}

at::Tensor max_pool2x2_backward(const at::Tensor& grad_out, const at::Tensor& argmax,
                                int64_t height, int64_t width) {
  TORCH_CHECK(grad_out.device().is_cpu() && grad_out.dim() == 4 &&
                  argmax.sizes() == grad_out.sizes() && argmax.scalar_type() == at::kByte &&
                  grad_out.size(2) == height / 2 && grad_out.size(3) == width / 2,
              "max_pool2x2_backward: grad_out and argmax must be CPU tensors (N, C, H / 2, "
              "W / 2)");
  const at::Tensor grads = grad_out.contiguous(), places = argmax.contiguous();
  const int64_t planes = grads.size(0) * grads.size(1), out_h = height / 2, out_w = width / 2;
  at::Tensor grad_in = empty_large({grads.size(0), grads.size(1), height, width}, grads.options());
  AT_DISPATCH_FLOATING_TYPES(grads.scalar_type(), "max_pool2x2_backward", [&] {
    const scalar_t* src = grads.const_data_ptr<scalar_t>();
    const uint8_t* at = places.const_data_ptr<uint8_t>();
    scalar_t* dst = grad_in.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, planes * out_h, 16, [&](int64_t begin, int64_t end) {
      for (int64_t index = begin; index < end; ++index) {
        const int64_t plane = index / out_h, y = index % out_h;
        unpool_row(src + index * out_w, at + index * out_w, width, out_w,
                   dst + (plane * height + 2 * y) * width);
      }
    });
    if (height % 2) {  // the dropped last row of every plane
      for (int64_t plane = 0; plane < planes; ++plane) {
        scalar_t* row = dst + (plane * height + height - 1) * width;
        std::fill(row, row + width, scalar_t(0));
      }
    }
  });
  return grad_in;
}

}  // namespace acmix_mm

TORCH_LIBRARY_FRAGMENT(acmix_mm, m) {
  m.def("max_pool2x2(Tensor input) -> (Tensor, Tensor)");
  m.def("max_pool2x2_backward(Tensor grad_out, Tensor argmax, int height, int width) -> Tensor");
}

TORCH_LIBRARY_IMPL(acmix_mm, CPU, m) {
  m.impl("max_pool2x2", &acmix_mm::max_pool2x2_forward);
  m.impl("max_pool2x2_backward", &acmix_mm::max_pool2x2_backward);
}
