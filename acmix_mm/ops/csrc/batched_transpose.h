// (B, R, S) -> (B, S, R) on CPU, 16 x 16 blocks transposed in registers
// (batched_transpose.cpp).
#pragma once

#include <ATen/ATen.h>

namespace acmix_mm {

at::Tensor batched_transpose(const at::Tensor& input);

}  // namespace acmix_mm
