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

#if !defined(__clang__)
// Transposes 16 vectors of 16 floats in registers: rows[i][j] -> rows[j][i], as four
// stages that each swap one bit of the row index with the same bit of the column index
// (two-source shuffles, one instruction each with AVX-512). For moving data between
// tokens (channels last) and planes sixteen values at a time. GCC's __builtin_shuffle;
// elsewhere callers take their scalar loops.
#define ACMIX_TRANSPOSE 1
typedef int32_t shuffle_mask_t __attribute__((vector_size(64)));

template <int H>
ACMIX_INLINE void transpose_stage(vec_t<float>* rows, shuffle_mask_t low, shuffle_mask_t high) {
  for (int i = 0; i < 16; ++i) {
    if (i & H) continue;
    const vec_t<float> a = rows[i], b = rows[i + H];
    rows[i] = __builtin_shuffle(a, b, low);
    rows[i + H] = __builtin_shuffle(a, b, high);
  }
}

ACMIX_INLINE void transpose16(vec_t<float>* rows) {
  // Row i keeps its columns j without bit H and takes row i + H's in their place.
  transpose_stage<8>(rows, shuffle_mask_t{0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23},
                     shuffle_mask_t{8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31});
  transpose_stage<4>(rows, shuffle_mask_t{0, 1, 2, 3, 16, 17, 18, 19, 8, 9, 10, 11, 24, 25, 26, 27},
                     shuffle_mask_t{4, 5, 6, 7, 20, 21, 22, 23, 12, 13, 14, 15, 28, 29, 30, 31});
  transpose_stage<2>(rows, shuffle_mask_t{0, 1, 16, 17, 4, 5, 20, 21, 8, 9, 24, 25, 12, 13, 28, 29},
                     shuffle_mask_t{2, 3, 18, 19, 6, 7, 22, 23, 10, 11, 26, 27, 14, 15, 30, 31});
  transpose_stage<1>(rows, shuffle_mask_t{0, 16, 2, 18, 4, 20, 6, 22, 8, 24, 10, 26, 12, 28, 14, 30},
                     shuffle_mask_t{1, 17, 3, 19, 5, 21, 7, 23, 9, 25, 11, 27, 13, 29, 15, 31});
}

// {a0, b0, a1, b1, ...}: the first halves of a and b interleaved (low), and the second
// halves (high). For runs of the two phases of a stride-2 row taken back to pixel order.
ACMIX_INLINE void interleave(vec_t<float> a, vec_t<float> b, vec_t<float>& low,
                             vec_t<float>& high) {
  low = __builtin_shuffle(a, b, shuffle_mask_t{0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6,
                                               22, 7, 23});
  high = __builtin_shuffle(a, b, shuffle_mask_t{8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13,
                                                29, 14, 30, 15, 31});
}

// The vector of row[x + M .. x + M + L) from first = row[x ..) and last = row[x + N - 1 ..)
// (0 <= M < N <= L): a window column between two loaded ones, by one two-source shuffle
// (the mask folds to a constant) rather than another unaligned load.
template <typename T>
struct ShuffleMask;
template <>
struct ShuffleMask<float> {
  typedef int32_t type __attribute__((vector_size(64)));
};
template <>
struct ShuffleMask<double> {
  typedef int64_t type __attribute__((vector_size(64)));
};

template <typename T, int N, int M>
ACMIX_INLINE vec_t<T> column_between(const vec_t<T>& first, const vec_t<T>& last) {
  if constexpr (M == 0) {
    return first;
  } else if constexpr (M == N - 1) {
    return last;
  } else {
    constexpr int L = kLanes<T>;
    typename ShuffleMask<T>::type mask;
    for (int e = 0; e < L; ++e) mask[e] = M + e < L ? M + e : L + M + e - (N - 1);
    return __builtin_shuffle(first, last, mask);
  }
}

// Whether the loader picked the AVX-512 clones (ACMIX_CLONES), where such a shuffle is
// one instruction; AVX2 lowers 16-lane shuffles to sequences slower than the loads.
#if defined(__x86_64__) && !defined(ACMIX_NO_CLONES)
#define ACMIX_SHUFFLES 1
inline bool shuffles_pay() { return __builtin_cpu_supports("x86-64-v4"); }
#endif
#endif
}  // namespace acmix_mm
#endif
