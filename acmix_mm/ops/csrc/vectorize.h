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
