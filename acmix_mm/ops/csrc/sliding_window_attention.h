// Sliding-window attention on padded planes (sliding_window_attention.cpp), for the
// operators built on it.
#pragma once

#include <ATen/ATen.h>

#include <optional>
#include <tuple>

namespace acmix_mm {

// query (N, d, H', W'); key and value (N, d, Hp, Wp), already padded. Returns the
// output (N, d, H', W') and the log-sum-exp of each query (N, H', W').
std::tuple<at::Tensor, at::Tensor> sliding_window_attention_forward(
    const at::Tensor& query, const at::Tensor& key, const at::Tensor& value,
    int64_t kernel_size, int64_t stride, double scale);

// Gradients of query, key and value (the padded planes).
std::tuple<at::Tensor, at::Tensor, at::Tensor> sliding_window_attention_backward(
    const at::Tensor& grad_out, const at::Tensor& query, const at::Tensor& key,
    const at::Tensor& value, const at::Tensor& out, const at::Tensor& lse,
    int64_t kernel_size, int64_t stride, double scale);

// The same on keys and values in the row phases of the stride (padded column m * S + r
// at r * W_S / S + m in rows W_S = phased_width(Wp, S) wide; at stride 1 the planes as
// they are), key_width = Wp; the key and value gradients come back phased too.
inline int64_t phased_width(int64_t width, int64_t stride) {
  return (width + stride - 1) / stride * stride;
}

std::tuple<at::Tensor, at::Tensor> phased_window_attention_forward(
    const at::Tensor& query, const at::Tensor& key, const at::Tensor& value,
    int64_t key_width, int64_t kernel_size, int64_t stride, double scale);

// The same into `out` and `lse` of the query's shape, whose rows (not planes) must be
// contiguous: a band of the rows of taller maps. Here and below the query may also be
// (B, heads, d, H', W') at any strides of images, heads and channels, rows whole (read
// in place from a projection's planes): plane n of the keys, values and outputs is then
// b * heads + h.
void phased_window_attention_forward_into(const at::Tensor& query, const at::Tensor& key,
                                          const at::Tensor& value, int64_t key_width,
                                          int64_t kernel_size, int64_t stride, double scale,
                                          at::Tensor& out, at::Tensor& lse);

// grad_query, where given, takes the query gradient (the queries' shape, rows whole):
// it is returned as the first gradient. With overwrite_key_value, the key and value
// planes (the caller's own scratch) may take their gradients in place. An undefined
// `out` (the forward's output not kept) has the weights' share of the logit gradients
// taken from the weights themselves.
std::tuple<at::Tensor, at::Tensor, at::Tensor> phased_window_attention_backward(
    const at::Tensor& grad_out, const at::Tensor& query, const at::Tensor& key,
    const at::Tensor& value, const at::Tensor& out, const at::Tensor& lse,
    int64_t key_width, int64_t kernel_size, int64_t stride, double scale,
    const std::optional<at::Tensor>& grad_query, bool overwrite_key_value = false);

}  // namespace acmix_mm
