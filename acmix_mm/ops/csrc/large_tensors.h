// Large scratch and output tensors of the CPU kernels, on huge pages where the system
// grants them on request.
//
// A map's planes are tens of MB (64 channels at 200x336: 18 MB a padded plane set),
// larger than glibc keeps in its heap, so each one is fresh memory from the kernel,
// faulted in 4 KB page by page on first touch: in the ACmix layer's step that was ~19%
// of the time, in the kernel's fault handler. Linux's transparent huge pages default to
// `madvise` on most distributions: a range marked MADV_HUGEPAGE before it is touched
// faults in 2 MB at a time. (The planes are also walked across their channels, where a
// 4 KB page each would outnumber the TLB.) Where the system refuses, nothing changes.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace acmix_mm {

// Marks the whole 2 MB pages of a new tensor of at least 8 MB for huge pages.
inline at::Tensor on_huge_pages(at::Tensor tensor) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  constexpr uintptr_t kHugePage = uintptr_t{2} << 20;
  const uintptr_t start = reinterpret_cast<uintptr_t>(tensor.data_ptr());
  const uintptr_t bytes = tensor.nbytes();
  if (tensor.device().is_cpu() && bytes >= 4 * kHugePage) {
    const uintptr_t first = (start + kHugePage - 1) & ~(kHugePage - 1);
    const uintptr_t last = (start + bytes) & ~(kHugePage - 1);
    // Advice only: an error (no THP in this kernel) leaves the usual pages.
    if (last > first) madvise(reinterpret_cast<void*>(first), last - first, MADV_HUGEPAGE);
  }
#endif
  return tensor;
}

// at::empty on huge pages (on_huge_pages).
inline at::Tensor empty_large(at::IntArrayRef sizes, const at::TensorOptions& options) {
  return on_huge_pages(at::empty(sizes, options));
}

// Uninitialised tokens (B, N, C) on huge pages, laid out as NCHW planes (B, C, N) where
// `planes`. A tensor of its own with those strides, not a transposed view: autograd adds
// a second gradient into a first one in place only where the first is not a view (else
// it allocates the sum: 49 MB and 4.6 ms for ACmix's projection at 200x336).
inline at::Tensor empty_large_tokens(int64_t batch, int64_t tokens, int64_t channels,
                                     bool planes, const at::TensorOptions& options) {
  if (!planes) return empty_large({batch, tokens, channels}, options);
  return on_huge_pages(
      at::empty_strided({batch, tokens, channels}, {tokens * channels, 1, tokens}, options));
}

inline at::Tensor empty_large_like(const at::Tensor& like) {
  return empty_large(like.sizes(), like.options());
}

}  // namespace acmix_mm
