// Attributes of the CPU kernels' row loops, shared by every operator's source.
#pragma once

// Each row kernel is compiled for AVX-512, AVX2 + FMA and baseline x86-64, and the
// loader picks the best the CPU has (GCC and clang function multiversioning): the
// extension stays portable across machines yet uses wide vectors where they exist.
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && \
    !defined(ACMIX_NO_CLONES)
#define ACMIX_CLONES \
  __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define ACMIX_CLONES
#endif
#if defined(__GNUC__) || defined(__clang__)
#define ACMIX_INLINE inline __attribute__((always_inline))
#else
#define ACMIX_INLINE inline
#endif

// Fixed-width vectors (GCC and clang vector extensions): 64 bytes, which each clone
// lowers to its own registers (one AVX-512 register, two AVX2 ones, four SSE ones). The
// register-blocked row kernels keep their sums in these across a whole reduction, where
// loops over memory rows would load and store the sum once per step.
#if defined(__GNUC__) || defined(__clang__)
#define ACMIX_VECTORS 1
#include <cstdint>
namespace acmix_mm {
template <typename T>
struct Vector;
template <>
struct Vector<float> {
  typedef float type __attribute__((vector_size(64)));
};
template <>
struct Vector<double> {
  typedef double type __attribute__((vector_size(64)));
};
template <typename T>
using vec_t = typename Vector<T>::type;
template <typename T>
constexpr int64_t kLanes = 64 / sizeof(T);

template <typename T>
ACMIX_INLINE vec_t<T> load(const T* p) {
  vec_t<T> v;
  __builtin_memcpy(&v, p, sizeof(v));
  return v;
}
template <typename T>
ACMIX_INLINE void store(T* p, const vec_t<T>& v) {
  __builtin_memcpy(p, &v, sizeof(v));
}
}  // namespace acmix_mm
#endif
