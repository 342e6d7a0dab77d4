// The 1x1 projection of a map's tokens, x @ weight^T + bias, on CPU through oneDNN's
// matrix product (matmul.h), forward and backward.
//
// The tokens (B, N, K) may be a view of NCHW planes (each image's matrix transposed) or
// contiguous, and the output is contiguous tokens or, with `planes`, a view of NCHW
// planes: every product then reads and writes its matrices as they lie, where the
// alternatives copy. torch's F.linear runs MKL's sgemm (AVX2 kernels on AMD CPUs), and
// oneDNN's 1x1 convolution of the map wants it channels-last: ResNet-ACmix's projection
// (64 -> 192 channels at 200x336) forward + backward 14.6 ms here against 17.2 for the
// convolution with its channels-last copies, and 11.5 against 23.8 for planes to planes
// (AMD EPYC, 2 cores).
#include <torch/library.h>
#include <ATen/ATen.h>

#include "batched_transpose.h"
#include "large_tensors.h"
#include "matmul.h"

#include <cstdint>
#include <tuple>

namespace acmix_mm {
namespace {

// Whether tokens (B, N, C) are a view of contiguous NCHW planes.
bool are_planes(const at::Tensor& tokens) { return tokens.transpose(1, 2).is_contiguous(); }

// Tokens as planes or contiguous tokens, whichever they are closer to: each image's
// matrix then has a unit stride, which the products read without a copy.
at::Tensor dense(const at::Tensor& tokens) {
  return tokens.is_contiguous() || are_planes(tokens) ? tokens : tokens.contiguous();
}

void check(const at::Tensor& x, const at::Tensor& weight) {
  TORCH_CHECK(x.device().is_cpu() && weight.device().is_cpu(),
              "linear_of_maps: CPU tensors only");
  TORCH_CHECK(x.dim() == 3 && weight.dim() == 2 && x.size(2) == weight.size(1),
              "linear_of_maps: x must be (B, N, K) and weight (M, K); got ", x.sizes(),
              " and ", weight.sizes());
  TORCH_CHECK(x.scalar_type() == weight.scalar_type(),
              "linear_of_maps: x and weight differ in dtype");
}

}  // namespace

at::Tensor linear_of_maps(const at::Tensor& x_in, const at::Tensor& weight,
                          const std::optional<at::Tensor>& bias, bool planes) {
  check(x_in, weight);
  const at::Tensor x = dense(x_in);
  const int64_t batch = x.size(0), tokens = x.size(1), outputs = weight.size(0);
  at::Tensor out = empty_large_tokens(batch, tokens, outputs, planes, x.options());
  for (int64_t b = 0; b < batch; ++b) {
    if (planes) {  // (M, N) = weight (M, K) @ (K, N)
      matmul_into(out[b].t(), weight, x[b].t(), false);
    } else {  // (N, M) = (N, K) @ weight^T (K, M)
      matmul_into(out[b], x[b], weight.t(), false);
    }
  }
  if (bias.has_value() && bias->defined()) out.add_(*bias);
  return out;
}

// The gradients of x (in x's layout: planes or contiguous tokens), of the weight and of
// the bias (empty where not `with_bias`); x's is empty where not `input_grad`.
std::tuple<at::Tensor, at::Tensor, at::Tensor> linear_of_maps_backward(
    const at::Tensor& grad_out_in, const at::Tensor& x_in, const at::Tensor& weight,
    bool with_bias, bool input_grad) {
  check(x_in, weight);
  const at::Tensor x = dense(x_in), grad_out = dense(grad_out_in);
  const int64_t batch = x.size(0), tokens = x.size(1), inputs = x.size(2);
  at::Tensor grad_x = at::empty({0}, x.options());
  if (input_grad) {
    const bool planes = are_planes(x);
    grad_x = empty_large_tokens(batch, tokens, inputs, planes, x.options());
    for (int64_t b = 0; b < batch; ++b) {
      if (planes) {  // (K, N) = weight^T (K, M) @ (M, N)
        matmul_into(grad_x[b].t(), weight.t(), grad_out[b].t(), false);
      } else {  // (N, K) = (N, M) @ weight (M, K)
        matmul_into(grad_x[b], grad_out[b], weight, false);
      }
    }
  }
  // The weight's gradient transposed, (K, M) = sum_b x_b^T (K, N) @ grad_b (N, M): with
  // x as planes its rows are the planes' (measured 5.3 against 6.6 ms for (M, K) =
  // grad_b^T @ x_b at 192 x 67200 x 64).
  at::Tensor grad_weight_t = at::empty({inputs, weight.size(0)}, weight.options());
  for (int64_t b = 0; b < batch; ++b) {
    matmul_into(grad_weight_t, x[b].t(), grad_out[b], b > 0);
  }
  at::Tensor grad_bias =
      with_bias ? grad_out.sum(at::IntArrayRef{0, 1}) : at::empty({0}, weight.options());
  // Transposed back in blocks in registers: torch's copy of the transposed view took
  // ~1 ms at 1536 x 512 (ResNet-ACmix-50's last stage).
  return {grad_x, batched_transpose(grad_weight_t.unsqueeze(0)).squeeze(0), grad_bias};
}

}  // namespace acmix_mm

TORCH_LIBRARY_FRAGMENT(acmix_mm, m) {
  m.def("linear_of_maps(Tensor x, Tensor weight, Tensor? bias, bool planes) -> Tensor");
  m.def(
      "linear_of_maps_backward(Tensor grad_out, Tensor x, Tensor weight, bool with_bias, "
      "bool input_grad) -> (Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(acmix_mm, CPU, m) {
  m.impl("linear_of_maps", &acmix_mm::linear_of_maps);
  m.impl("linear_of_maps_backward", &acmix_mm::linear_of_maps_backward);
}
