// ACmix's convolution path on NCHW planes (narrow_pieces_conv.cpp), for the operators
// built on it.
#pragma once

#include <ATen/ATen.h>

#include <optional>
#include <tuple>

namespace acmix_mm {

// planes (B, d * P, H, W), piece-major; weight (4 * d, P, 3, 3). Returns the output
// (B, 4 * d, H, W), plus addend (of the output's shape) where given: the sum of the two
// paths of ACmix's layer without a pass of its own.
at::Tensor narrow_pieces_conv_forward(const at::Tensor& planes, const at::Tensor& weight,
                                      const std::optional<at::Tensor>& addend);

// The gradients of the planes and the weight. Where grad_into (the planes' shape,
// contiguous) is given, the planes' gradient is added to it in place, and it is
// returned as that gradient.
std::tuple<at::Tensor, at::Tensor> narrow_pieces_conv_backward(
    const at::Tensor& grad_out, const at::Tensor& planes, const at::Tensor& weight,
    const std::optional<at::Tensor>& grad_into);

}  // namespace acmix_mm
