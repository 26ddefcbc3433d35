// Portable SIMD for kernel sources: GCC/Clang vector extensions whose width
// follows the ISA the file is being compiled for. The same source gives SSE2 /
// NEON code for the baseline, AVX2 for avx2 and AVX-512 for avx512.
// Only for files under cpp/kernels/ (compiled once per ISA).
#pragma once
#include <cstdint>
#include <cstring>

#include "bnfast/isa_namespace.hpp"

#if !defined(BNFAST_ISA)
#error "simd.hpp is only for kernel sources compiled once per ISA"
#endif

#if defined(BNFAST_ISA_AVX512)
#define BNFAST_VEC_BYTES 64
#elif defined(BNFAST_ISA_AVX2)
#define BNFAST_VEC_BYTES 32
#else
#define BNFAST_VEC_BYTES 16
#endif

namespace bnfast::kernels::BNFAST_ISA {

constexpr int kVecBytes = BNFAST_VEC_BYTES;
constexpr int kLanesF64 = kVecBytes / 8;
constexpr int kLanesF32 = kVecBytes / 4;

typedef double f64v __attribute__((vector_size(BNFAST_VEC_BYTES)));
typedef float f32v __attribute__((vector_size(BNFAST_VEC_BYTES)));
// Half-width float vector: kLanesF64 floats, converted to one f64v.
typedef float f32h __attribute__((vector_size(BNFAST_VEC_BYTES / 2)));

// Unaligned loads and stores (memcpy compiles to one vector move). No
// alignment peeling anywhere: where a vector starts depends only on the
// shape, never on the address, so results never depend on allocation.
template <class V, class T>
inline V load_vec(const T* p) {
    V v;
    std::memcpy(&v, p, sizeof(V));
    return v;
}
template <class V, class T>
inline void store_vec(T* p, const V& v) {
    std::memcpy(p, &v, sizeof(V));
}

// kLanesF64 consecutive values widened to double.
inline f64v load_as_f64(const double* p) { return load_vec<f64v>(p); }
inline f64v load_as_f64(const float* p) {
    return __builtin_convertvector(load_vec<f32h>(p), f64v);
}

// Native-width vector of T, for element-wise kernels.
template <class T> struct NativeVec;
template <> struct NativeVec<float> {
    using type = f32v;
    static constexpr int lanes = kLanesF32;
};
template <> struct NativeVec<double> {
    using type = f64v;
    static constexpr int lanes = kLanesF64;
};

template <class V, class S>
inline V splat(S s) {
    return V{} + s;
}

// Lane-wise min/max that ignore NaN in `v` (callers check NaN separately).
template <class V>
inline V vmin(const V& v, const V& acc) { return v < acc ? v : acc; }
template <class V>
inline V vmax(const V& v, const V& acc) { return v > acc ? v : acc; }

// Sum of the lanes in a fixed order (lane 0 first), so the result does not
// depend on the compiler's choice of shuffle tree.
inline double sum_lanes(const f64v& v) {
    double s = v[0];
    for (int i = 1; i < kLanesF64; ++i) s += v[i];
    return s;
}
inline double min_lanes(const f64v& v) {
    double m = v[0];
    for (int i = 1; i < kLanesF64; ++i) m = v[i] < m ? v[i] : m;
    return m;
}
inline double max_lanes(const f64v& v) {
    double m = v[0];
    for (int i = 1; i < kLanesF64; ++i) m = v[i] > m ? v[i] : m;
    return m;
}

}  // namespace bnfast::kernels::BNFAST_ISA
