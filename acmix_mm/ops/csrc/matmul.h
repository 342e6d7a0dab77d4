// Matrix products of the CPU kernels in float32 through oneDNN.
//
// torch's float32 matmul on the CPU calls MKL's sgemm, which on AMD CPUs runs its AVX2
// kernels: SAN's products (a few rows or a few columns against a band's pixels) ran
// 2-4.5x slower there than oneDNN's (392 x 8 x 20480: 2.8 against 0.8 ms; AMD EPYC, 2
// cores). torch reaches oneDNN's matmul through at::native::mkldnn_matmul, which
// libtorch_cpu exports without a public header: declared here weak, so that a torch
// without it (or built without oneDNN) leaves it null and the products take at::mm.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Context.h>

namespace at {
namespace native {
// result = beta * result + alpha * (mat1 @ mat2); float32, bfloat16 and float16.
TORCH_API void mkldnn_matmul(const Tensor& mat1, const Tensor& mat2, const Tensor& result,
                             float beta, float alpha) __attribute__((weak));
}  // namespace native
}  // namespace at

namespace acmix_mm {

// result = a @ b, or result += a @ b where `accumulate`; any strides (views of bands).
inline void matmul_into(at::Tensor result, const at::Tensor& a, const at::Tensor& b,
                        bool accumulate) {
  if (a.scalar_type() == at::kFloat && &at::native::mkldnn_matmul != nullptr &&
      at::hasMKLDNN()) {
    at::native::mkldnn_matmul(a, b, result, accumulate ? 1.f : 0.f, 1.f);
  } else if (accumulate) {
    result.addmm_(a, b);
  } else {
    at::mm_out(result, a, b);
  }
}

}  // namespace acmix_mm
