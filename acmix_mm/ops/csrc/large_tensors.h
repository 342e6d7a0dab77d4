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

// at::empty, its whole 2 MB pages marked for huge pages (tensors of at least 8 MB).
inline at::Tensor empty_large(at::IntArrayRef sizes, const at::TensorOptions& options) {
  at::Tensor tensor = at::empty(sizes, options);
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

inline at::Tensor empty_large_like(const at::Tensor& like) {
  return empty_large(like.sizes(), like.options());
}

}  // namespace acmix_mm
