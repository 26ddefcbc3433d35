// Portable SIMD for kernel sources: GCC/Clang vector extensions whose width
// follows the ISA the file is being compiled for. The same source gives SSE2 /
// NEON code for the baseline, AVX2 for avx2 and AVX-512 for avx512.
// Only for files under cpp/kernels/ (compiled once per ISA).
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>
#if defined(__SSE2__)
// GCC 12's AVX-512 intrinsics make "undefined" vectors from themselves
// (_mm512_undefined_pd), which -Wmaybe-uninitialized reports once they are
// inlined into our loops (GCC bug 105593).
// (Clang has no such warning, and would warn about the unknown option.)
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop
#else
#include <immintrin.h>
#endif
#endif

#include "bnfast/half.hpp"
#include "bnfast/isa_namespace.hpp"
#include "bnfast/parallel.hpp"

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

// For the conversions of the hot loops, which GCC otherwise may leave as
// calls (bf16_narrow_pair, with its NaN branch, went through the PLT).
#define BNFAST_ALWAYS_INLINE inline __attribute__((always_inline))

namespace bnfast::kernels::BNFAST_ISA {

constexpr int kVecBytes = BNFAST_VEC_BYTES;
constexpr int kLanesF64 = kVecBytes / 8;
constexpr int kLanesF32 = kVecBytes / 4;

typedef double f64v __attribute__((vector_size(BNFAST_VEC_BYTES)));
typedef float f32v __attribute__((vector_size(BNFAST_VEC_BYTES)));
// Half-width float vector: kLanesF64 floats, converted to one f64v.
typedef float f32h __attribute__((vector_size(BNFAST_VEC_BYTES / 2)));
// Integer vectors for the half-precision conversions: u32v as wide as f32v,
// u16h its kLanesF32 16-bit patterns, u32h/u16q the kLanesF64-lane ones.
typedef std::uint32_t u32v __attribute__((vector_size(BNFAST_VEC_BYTES)));
typedef std::uint16_t u16h __attribute__((vector_size(BNFAST_VEC_BYTES / 2)));
typedef std::uint32_t u32h __attribute__((vector_size(BNFAST_VEC_BYTES / 2)));
typedef std::uint16_t u16q __attribute__((vector_size(BNFAST_VEC_BYTES / 4)));

// Unaligned loads and stores (memcpy compiles to one vector move).
// Reductions never peel for alignment: where a vector starts depends only on
// the shape, never on the address, so sums never depend on allocation. Only
// element-wise writers peel a scalar head before streaming stores
// (write_run, periodic_run), where each element gets the same operations
// either way.
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
// GCC 12 splits __builtin_convertvector of 8 floats to 8 doubles into
// four 128-bit conversions plus shuffles (half of pass 2's instructions),
// so the x86 widths use the one-instruction conversion directly.
inline f64v load_as_f64(const float* p) {
#if defined(BNFAST_ISA_AVX512)
    const __m512d v = _mm512_cvtps_pd(_mm256_loadu_ps(p));
    return reinterpret_cast<const f64v&>(v);
#elif defined(BNFAST_ISA_AVX2)
    const __m256d v = _mm256_cvtps_pd(_mm_loadu_ps(p));
    return reinterpret_cast<const f64v&>(v);
#else
    return __builtin_convertvector(load_vec<f32h>(p), f64v);
#endif
}

// kLanesF64 doubles rounded to T and stored at p (unaligned).
inline void store_from_f64(double* p, const f64v& v) { store_vec(p, v); }
inline void store_from_f64(float* p, const f64v& v) {
#if defined(BNFAST_ISA_AVX512)
    _mm256_storeu_ps(p, _mm512_cvtpd_ps(reinterpret_cast<const __m512d&>(v)));
#elif defined(BNFAST_ISA_AVX2)
    _mm_storeu_ps(p, _mm256_cvtpd_ps(reinterpret_cast<const __m256d&>(v)));
#else
    store_vec(p, __builtin_convertvector(v, f32h));
#endif
}

// ---------------------------------------------------------------------------
// Half-precision storage (bnfast/half.hpp): elements are widened to float
// when read and rounded to nearest, ties to even, when written. Every
// conversion is exact or correctly rounded, so the twin (which rounds with
// NumPy / ml_dtypes) and every ISA give the same bits for the same float.

template <class To, class From>
inline To bit_cast_(const From& v) {
    static_assert(sizeof(To) == sizeof(From));
    To out;
    std::memcpy(&out, &v, sizeof(To));
    return out;
}

// float16 <-> float, portable (any CPU): bit manipulation plus one float
// addition for the subnormal results, which rounds them as the hardware
// does (round to nearest even; the kernels never change the rounding mode).
inline float f16_bits_to_float(std::uint16_t h) {
    const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
    const std::uint32_t exp = (h >> 10) & 0x1fu, man = h & 0x3ffu;
    if (exp == 0x1fu) return bit_cast_<float>(sign | 0x7f800000u | (man << 13));  // inf, NaN
    if (exp != 0) return bit_cast_<float>(sign | ((exp + 112u) << 23) | (man << 13));
    // zero or subnormal: man * 2^-24, exact in float
    const float mag = static_cast<float>(man) * 0x1p-24f;
    return bit_cast_<float>(sign | bit_cast_<std::uint32_t>(mag));
}

inline std::uint16_t float_to_f16_bits(float f) {
    std::uint32_t u = bit_cast_<std::uint32_t>(f);
    const std::uint32_t sign = (u >> 16) & 0x8000u;
    u &= 0x7fffffffu;
    std::uint32_t out;
    if (u >= 0x47800000u) {  // >= 65536 (rounds to inf), inf or NaN (kept quiet)
        out = u > 0x7f800000u ? 0x7e00u : 0x7c00u;
    } else if (u < 0x38800000u) {  // below 2^-14: a subnormal half or zero
        // Adding 0.5 puts the value's 2^-24 units in the low mantissa bits,
        // rounded by the float addition itself.
        const float shifted = bit_cast_<float>(u) + 0.5f;
        out = bit_cast_<std::uint32_t>(shifted) - 0x3f000000u;
    } else {
        const std::uint32_t odd = (u >> 13) & 1u;
        u += 0xc8000fffu + odd;  // rebias the exponent (-112 << 23), round half to even
        out = u >> 13;           // values in [65520, 65536) carry into inf here
    }
    return static_cast<std::uint16_t>(out | sign);
}

// bfloat16 <-> float: the upper half of a float's bits. Narrowing rounds
// the lower half to nearest even in integer arithmetic (a carry into the
// exponent gives the next binade or inf, as it should); NaN stays NaN and
// quiet (a NaN whose payload is all in the lower half would otherwise
// become inf).
inline float bf16_bits_to_float(std::uint16_t h) {
    return bit_cast_<float>(static_cast<std::uint32_t>(h) << 16);
}

inline std::uint16_t float_to_bf16_bits(float f) {
    const std::uint32_t u = bit_cast_<std::uint32_t>(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<std::uint16_t>((u >> 16) | 0x40u);
    return static_cast<std::uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

// Element conversions: to_compute widens a stored element to the compute
// type (the identity for float and double), to_storage<S> rounds a compute
// value to S, as_f64 reads an element as double.
inline float to_compute(float v) { return v; }
inline double to_compute(double v) { return v; }
inline float to_compute(f16_t v) { return f16_bits_to_float(v.bits); }
inline float to_compute(bf16_t v) { return bf16_bits_to_float(v.bits); }

template <class S>
inline S to_storage(compute_t<S> v) {
    if constexpr (std::is_same_v<S, f16_t>) return f16_t{float_to_f16_bits(v)};
    else if constexpr (std::is_same_v<S, bf16_t>) return bf16_t{float_to_bf16_bits(v)};
    else return v;
}

template <class S>
inline double as_f64(S v) { return static_cast<double>(to_compute(v)); }

// A double result stored as S: through float for the half types (the
// compute type; the twin rounds the same way, float64 -> float32 -> S).
template <class S>
inline S from_f64(double v) {
    if constexpr (kIsHalf<S>) return to_storage<S>(static_cast<float>(v));
    else return static_cast<S>(v);
}

// kLanesF64 floats to doubles and back: one instruction on x86 (GCC 12
// splits __builtin_convertvector of them into pieces, see load_as_f64).
inline f64v widen_f32h(const f32h& h) {
#if defined(BNFAST_ISA_AVX512)
    return bit_cast_<f64v>(_mm512_cvtps_pd(bit_cast_<__m256>(h)));
#elif defined(BNFAST_ISA_AVX2)
    return bit_cast_<f64v>(_mm256_cvtps_pd(bit_cast_<__m128>(h)));
#else
    return __builtin_convertvector(h, f64v);
#endif
}
inline f32h narrow_f64v(const f64v& v) {
#if defined(BNFAST_ISA_AVX512)
    return bit_cast_<f32h>(_mm512_cvtpd_ps(bit_cast_<__m512d>(v)));
#elif defined(BNFAST_ISA_AVX2)
    return bit_cast_<f32h>(_mm256_cvtpd_ps(bit_cast_<__m256d>(v)));
#else
    return __builtin_convertvector(v, f32h);
#endif
}

// The low 16 bits of each 32-bit lane (vpmovdw in avx512; GCC builds
// __builtin_convertvector of it from a permute there). The zero-masked
// forms: the plain ones start from an "undefined" vector (GCC bug 105593).
template <class H, class W>
inline H low_halves(const W& r) {
#if defined(BNFAST_ISA_AVX512)
    if constexpr (sizeof(W) == 64) {
        return bit_cast_<H>(_mm512_maskz_cvtepi32_epi16(0xffff, bit_cast_<__m512i>(r)));
    } else if constexpr (sizeof(W) == 32) {
        return bit_cast_<H>(_mm256_maskz_cvtepi32_epi16(0xff, bit_cast_<__m256i>(r)));
    }
#endif
    return __builtin_convertvector(r, H);
}

// Vectors of bfloat16: the same operations as the scalar ones, lane-wise.
// Widening is a zero extension and a shift (one vpmovzxwd each on x86:
// GCC 12 splits __builtin_convertvector of it into 128-bit pieces there).
template <class W, class H>
inline W bf16_widen_lanes(const H& h) {
#if defined(BNFAST_ISA_AVX512)
    if constexpr (sizeof(W) == 64) {
        // (the zero-masked form: the plain one starts from an "undefined"
        // vector, GCC bug 105593, as the 512-bit shift intrinsics do)
        return bit_cast_<W>(_mm512_maskz_cvtepu16_epi32(0xffff, bit_cast_<__m256i>(h))) << 16;
    } else if constexpr (sizeof(W) == 32) {
        return bit_cast_<W>(_mm256_slli_epi32(_mm256_cvtepu16_epi32(bit_cast_<__m128i>(h)), 16));
    }
#elif defined(BNFAST_ISA_AVX2)
    if constexpr (sizeof(W) == 32) {
        return bit_cast_<W>(_mm256_slli_epi32(_mm256_cvtepu16_epi32(bit_cast_<__m128i>(h)), 16));
    }
#endif
    return __builtin_convertvector(h, W) << 16;
}

// Narrowing, in two steps: bf16_round gives each 32-bit lane's rounded
// bfloat16 pattern in its low 16 bits (round to nearest even by integer
// addition; NaN lanes, found by a float compare, keep their upper half
// with the quiet bit set), low_halves / bf16_pack keep those 16 bits.
template <class W>
BNFAST_ALWAYS_INLINE W bf16_round(const W& u) {
#if defined(BNFAST_ISA_AVX512)
    if constexpr (sizeof(W) == 64) {
        const __m512 f = bit_cast_<__m512>(u);
        const W t = u >> 16;
        const W r = (u + 0x7fffu + (t & 1u)) >> 16;
        const __mmask16 nan = _mm512_cmp_ps_mask(f, f, _CMP_UNORD_Q);
        return bit_cast_<W>(_mm512_mask_or_epi32(bit_cast_<__m512i>(r), nan, bit_cast_<__m512i>(t),
                                                 _mm512_set1_epi32(0x40)));
    }
#endif
#if defined(BNFAST_ISA_AVX512) || defined(BNFAST_ISA_AVX2)
    if constexpr (sizeof(W) == 32) {
        const __m256i x = bit_cast_<__m256i>(u);
        const __m256 f = _mm256_castsi256_ps(x);
        const __m256i t = _mm256_srli_epi32(x, 16);
        const __m256i r = _mm256_srli_epi32(
            _mm256_add_epi32(_mm256_add_epi32(x, _mm256_set1_epi32(0x7fff)),
                             _mm256_and_si256(t, _mm256_set1_epi32(1))),
            16);
        const __m256 nan = _mm256_cmp_ps(f, f, _CMP_UNORD_Q);
        return bit_cast_<W>(_mm256_castps_si256(
            _mm256_blendv_ps(_mm256_castsi256_ps(r),
                             _mm256_castsi256_ps(_mm256_or_si256(t, _mm256_set1_epi32(0x40))),
                             nan)));
    }
#endif
    const auto is_nan = (u & 0x7fffffffu) > 0x7f800000u;  // lanes of all ones or zeros
    const W nan = bit_cast_<W>(is_nan);
    const W rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
    const W quiet = (u >> 16) | 0x40u;
    return (quiet & nan) | (rounded & ~nan);
}
template <class H, class W>
inline H bf16_narrow_lanes(const W& u) {
    const W r = bf16_round(u);
#if defined(BNFAST_ISA_AVX2)
    if constexpr (sizeof(W) == 32) {  // packus: the lanes are < 2^16
        const __m256i x = bit_cast_<__m256i>(r);
        return bit_cast_<H>(
            _mm256_castsi256_si128(_mm256_permute4x64_epi64(_mm256_packus_epi32(x, x), 0x08)));
    } else if constexpr (sizeof(W) == 16) {
        const __m128i x = bit_cast_<__m128i>(r);
        return bit_cast_<H>(_mm_cvtsi128_si64(_mm_packus_epi32(x, x)));
    }
#endif
    return low_halves<H>(r);
}

// kLanesF32 elements of S as one f32v, and back.
inline f32v load_f32v(const float* p) { return load_vec<f32v>(p); }
inline f32v load_f32v(const f16_t* p) {
#if defined(BNFAST_ISA_AVX512)
    // The zero-masked form: GCC 12's plain one starts from an undefined
    // vector, which -Werror=uninitialized rejects where it is inlined
    // (bug 105593, as in the bfloat16 conversions).
    const __m512 v =
        _mm512_maskz_cvtph_ps(0xffff, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
    return reinterpret_cast<const f32v&>(v);
#elif defined(BNFAST_ISA_AVX2)
    const __m256 v = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    return reinterpret_cast<const f32v&>(v);
#else
    f32v v;
    for (int i = 0; i < kLanesF32; ++i) v[i] = f16_bits_to_float(p[i].bits);
    return v;
#endif
}
inline f32v load_f32v(const bf16_t* p) {
    return bit_cast_<f32v>(bf16_widen_lanes<u32v>(load_vec<u16h>(p)));
}

inline void store_f32v(float* p, const f32v& v) { store_vec(p, v); }
inline void store_f32v(f16_t* p, const f32v& v) {
#if defined(BNFAST_ISA_AVX512)
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(p),
                        _mm512_cvtps_ph(reinterpret_cast<const __m512&>(v),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
#elif defined(BNFAST_ISA_AVX2)
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p),
                     _mm256_cvtps_ph(reinterpret_cast<const __m256&>(v), _MM_FROUND_TO_NEAREST_INT));
#else
    for (int i = 0; i < kLanesF32; ++i) p[i].bits = float_to_f16_bits(v[i]);
#endif
}
inline void store_f32v(bf16_t* p, const f32v& v) {
    store_vec(p, bf16_narrow_lanes<u16h>(bit_cast_<u32v>(v)));
}

// Two consecutive vectors (2 * kLanesF32 elements) rounded to bfloat16 as
// one vector of 16-bit patterns: on x86 one pack and one permute for both
// (a 32->16 narrowing per vector costs about as much as the pair's).
#if defined(BNFAST_ISA_AVX512) || defined(BNFAST_ISA_AVX2)
#if defined(BNFAST_ISA_AVX512)
using bf16_pair = __m512i;
#else
using bf16_pair = __m256i;
#endif
#if defined(BNFAST_ISA_AVX2)
// bf16_round of lanes known not to be NaN.
BNFAST_ALWAYS_INLINE __m256i bf16_round_finite(const __m256i x) {
    return _mm256_srli_epi32(
        _mm256_add_epi32(_mm256_add_epi32(x, _mm256_set1_epi32(0x7fff)),
                         _mm256_and_si256(_mm256_srli_epi32(x, 16), _mm256_set1_epi32(1))),
        16);
}
#endif
BNFAST_ALWAYS_INLINE bf16_pair bf16_narrow_pair(const f32v& a, const f32v& b) {
#if defined(BNFAST_ISA_AVX2)
    // One compare finds a NaN in either vector; without one (the common
    // case) the lanes skip bf16_round's blend (three uops per vector on
    // recent Intel cores: a third of the narrowing).
    const __m256 fa = bit_cast_<__m256>(a), fb = bit_cast_<__m256>(b);
    __m256i ra, rb;
    if (__builtin_expect(_mm256_movemask_ps(_mm256_cmp_ps(fa, fb, _CMP_UNORD_Q)) == 0, 1)) {
        ra = bf16_round_finite(_mm256_castps_si256(fa));
        rb = bf16_round_finite(_mm256_castps_si256(fb));
    } else {
        ra = bit_cast_<__m256i>(bf16_round(bit_cast_<u32v>(a)));
        rb = bit_cast_<__m256i>(bf16_round(bit_cast_<u32v>(b)));
    }
#else
    const u32v ra = bf16_round(bit_cast_<u32v>(a)), rb = bf16_round(bit_cast_<u32v>(b));
#endif
#if defined(BNFAST_ISA_AVX512)
    // packus works per 128-bit lane: qwords a0 b0 a1 b1 ... -> a0..a3 b0..b3
    const __m512i packed = _mm512_packus_epi32(bit_cast_<__m512i>(ra), bit_cast_<__m512i>(rb));
    return _mm512_maskz_permutexvar_epi64(0xff, _mm512_setr_epi64(0, 2, 4, 6, 1, 3, 5, 7), packed);
#else
    const __m256i packed = _mm256_packus_epi32(bit_cast_<__m256i>(ra), bit_cast_<__m256i>(rb));
    return _mm256_permute4x64_epi64(packed, 0xD8);
#endif
}
#endif

// Two consecutive vectors rounded to float16 as one full register: a
// single vector's halves fill half a register, and AVX2 streamed them 16
// bytes at a time (most of the samples of float16 eval on Zen 4). The same
// conversions as store_f32v, so the same bits.
#if defined(BNFAST_ISA_AVX512)
BNFAST_ALWAYS_INLINE __m512i f16_narrow_pair(const f32v& a, const f32v& b) {
    constexpr int kRound = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
    const __m256i lo = _mm512_maskz_cvtps_ph(0xffff, reinterpret_cast<const __m512&>(a), kRound);
    const __m256i hi = _mm512_maskz_cvtps_ph(0xffff, reinterpret_cast<const __m512&>(b), kRound);
    return _mm512_inserti64x4(_mm512_zextsi256_si512(lo), hi, 1);
}
#elif defined(BNFAST_ISA_AVX2)
BNFAST_ALWAYS_INLINE __m256i f16_narrow_pair(const f32v& a, const f32v& b) {
    constexpr int kRound = _MM_FROUND_TO_NEAREST_INT;
    const __m128i lo = _mm256_cvtps_ph(reinterpret_cast<const __m256&>(a), kRound);
    const __m128i hi = _mm256_cvtps_ph(reinterpret_cast<const __m256&>(b), kRound);
    return _mm256_inserti128_si256(_mm256_zextsi128_si256(lo), hi, 1);
}
#endif
#if defined(BNFAST_ISA_AVX512) || defined(BNFAST_ISA_AVX2)
// The pair narrowing of the storage type p points to.
BNFAST_ALWAYS_INLINE auto narrow_pair(const bf16_t*, const f32v& a, const f32v& b) {
    return bf16_narrow_pair(a, b);
}
BNFAST_ALWAYS_INLINE auto narrow_pair(const f16_t*, const f32v& a, const f32v& b) {
    return f16_narrow_pair(a, b);
}
#endif
// Two consecutive vectors rounded to half precision S, stored as one.
template <class S>
BNFAST_ALWAYS_INLINE void store_f32v2(S* p, const f32v& a, const f32v& b) {
#if defined(BNFAST_ISA_AVX512) || defined(BNFAST_ISA_AVX2)
    store_vec(p, narrow_pair(p, a, b));
#else
    store_f32v(p, a);
    store_f32v(p + kLanesF32, b);
#endif
}

// 2 * kLanesF32 consecutive bfloat16 values in even/odd order: loaded as
// kLanesF32 32-bit words, word k holds elements 2k (low half) and 2k + 1
// (high half), so `even` = word << 16 and `odd` = word & 0xffff0000 are the
// two widened vectors without any shuffle, and bf16_join_even_odd puts the
// rounded values back into the same words. Only for maps whose parameters
// do not depend on the element's position (map_run): the order of the
// lanes is not the order of the elements.
BNFAST_ALWAYS_INLINE void load_bf16_even_odd(const bf16_t* p, f32v& even, f32v& odd) {
    const u32v w = load_vec<u32v>(p);
    even = bit_cast_<f32v>(w << 16);
    odd = bit_cast_<f32v>(w & 0xffff0000u);
}
BNFAST_ALWAYS_INLINE u32v bf16_join_even_odd(const f32v& even, const f32v& odd) {
    const u32v e = bit_cast_<u32v>(even), o = bit_cast_<u32v>(odd);
    // Without a NaN in either vector (the common case) the rounding is the
    // integer addition alone, and the odd lanes' result is masked in place
    // instead of shifted down and back; NaN lanes take bf16_round's path.
#if defined(BNFAST_ISA_AVX512)
    const bool finite = _mm512_cmp_ps_mask(bit_cast_<__m512>(even), bit_cast_<__m512>(odd),
                                           _CMP_UNORD_Q) == 0;
#elif defined(BNFAST_ISA_AVX2)
    const bool finite = _mm256_movemask_ps(_mm256_cmp_ps(bit_cast_<__m256>(even),
                                                         bit_cast_<__m256>(odd), _CMP_UNORD_Q)) == 0;
#else
    constexpr bool finite = false;
#endif
    if (__builtin_expect(finite, 1)) {
        const u32v re = (e + 0x7fffu + ((e >> 16) & 1u)) >> 16;
        const u32v ro = (o + 0x7fffu + ((o >> 16) & 1u)) & 0xffff0000u;
        return re | ro;
    }
    return bf16_round(e) | (bf16_round(o) << 16);
}

// kLanesF64 half elements widened to double, and doubles stored as S
// (through float, see from_f64).
inline f64v load_as_f64(const f16_t* p) {
#if defined(BNFAST_ISA_AVX512)
    const __m512d v =
        _mm512_cvtps_pd(_mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
    return reinterpret_cast<const f64v&>(v);
#elif defined(BNFAST_ISA_AVX2)
    const __m256d v =
        _mm256_cvtps_pd(_mm_cvtph_ps(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))));
    return reinterpret_cast<const f64v&>(v);
#else
    f64v v;
    for (int i = 0; i < kLanesF64; ++i) v[i] = f16_bits_to_float(p[i].bits);
    return v;
#endif
}
inline f64v load_as_f64(const bf16_t* p) {
#if defined(BNFAST_ISA_AVX512)
    const __m256i u = _mm256_slli_epi32(
        _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))), 16);
    return bit_cast_<f64v>(_mm512_cvtps_pd(_mm256_castsi256_ps(u)));
#elif defined(BNFAST_ISA_AVX2)
    // four patterns into the upper halves of 32-bit lanes: one unpack
    const __m128i u = _mm_unpacklo_epi16(
        _mm_setzero_si128(), _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
    return bit_cast_<f64v>(_mm256_cvtps_pd(_mm_castsi128_ps(u)));
#else
    return widen_f32h(bit_cast_<f32h>(bf16_widen_lanes<u32h>(load_vec<u16q>(p))));
#endif
}
inline void store_from_f64(f16_t* p, const f64v& v) {
#if defined(BNFAST_ISA_AVX512)
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p),
                     _mm256_cvtps_ph(_mm512_cvtpd_ps(reinterpret_cast<const __m512d&>(v)),
                                     _MM_FROUND_TO_NEAREST_INT));
#elif defined(BNFAST_ISA_AVX2)
    _mm_storel_epi64(reinterpret_cast<__m128i*>(p),
                     _mm_cvtps_ph(_mm256_cvtpd_ps(reinterpret_cast<const __m256d&>(v)),
                                  _MM_FROUND_TO_NEAREST_INT));
#else
    for (int i = 0; i < kLanesF64; ++i) p[i].bits = float_to_f16_bits(static_cast<float>(v[i]));
#endif
}
inline void store_from_f64(bf16_t* p, const f64v& v) {
    store_vec(p, bf16_narrow_lanes<u16q>(bit_cast_<u32h>(narrow_f64v(v))));
}

// The compute-type vector of elements i..i+L-1 of storage S (load_cv), and
// its store rounded to S (store_cv): float and double as they are.
inline f32v load_cv(const float* p) { return load_vec<f32v>(p); }
inline f64v load_cv(const double* p) { return load_vec<f64v>(p); }
inline f32v load_cv(const f16_t* p) { return load_f32v(p); }
inline f32v load_cv(const bf16_t* p) { return load_f32v(p); }
inline void store_cv(float* p, const f32v& v) { store_vec(p, v); }
inline void store_cv(double* p, const f64v& v) { store_vec(p, v); }
inline void store_cv(f16_t* p, const f32v& v) { store_f32v(p, v); }
inline void store_cv(bf16_t* p, const f32v& v) { store_f32v(p, v); }

// Non-temporal ("streaming") store of one full vector to p, which must be
// aligned to kVecBytes: the cache line is written to memory without being
// read first (a plain store reads every line it writes: a third of a large
// pass's memory traffic). A plain store where the ISA has no such store.
inline void stream_vec(float* p, const f32v& v) {
#if defined(BNFAST_ISA_AVX512)
    _mm512_stream_ps(p, reinterpret_cast<const __m512&>(v));
#elif defined(BNFAST_ISA_AVX2)
    _mm256_stream_ps(p, reinterpret_cast<const __m256&>(v));
#elif defined(__SSE2__)
    _mm_stream_ps(p, reinterpret_cast<const __m128&>(v));
#else
    std::memcpy(p, &v, sizeof(v));
#endif
}
inline void stream_vec(double* p, const f64v& v) {
#if defined(BNFAST_ISA_AVX512)
    _mm512_stream_pd(p, reinterpret_cast<const __m512d&>(v));
#elif defined(BNFAST_ISA_AVX2)
    _mm256_stream_pd(p, reinterpret_cast<const __m256d&>(v));
#elif defined(__SSE2__)
    _mm_stream_pd(p, reinterpret_cast<const __m128d&>(v));
#else
    std::memcpy(p, &v, sizeof(v));
#endif
}

// Half storage: the rounded vector is half as wide as f32v, streamed where
// that is a full SSE/AVX register (p is then aligned to it: write_run and
// periodic_run stream from a cache-line boundary in steps of one vector).
template <class S>
inline void stream_half(S* p, const f32v& v) {
#if defined(BNFAST_ISA_AVX512) || defined(BNFAST_ISA_AVX2)
    u16h h;
    store_f32v(reinterpret_cast<S*>(&h), v);
#if defined(BNFAST_ISA_AVX512)
    _mm256_stream_si256(reinterpret_cast<__m256i*>(p), reinterpret_cast<const __m256i&>(h));
#else
    _mm_stream_si128(reinterpret_cast<__m128i*>(p), reinterpret_cast<const __m128i&>(h));
#endif
#else
    store_f32v(p, v);
#endif
}
inline void stream_vec(f16_t* p, const f32v& v) { stream_half(p, v); }
inline void stream_vec(bf16_t* p, const f32v& v) { stream_half(p, v); }
// Two vectors of half precision (store_f32v2), streamed as one full
// register at p (aligned to it: write_run and periodic_run stream from a
// cache-line boundary in steps of two vectors).
template <class S>
BNFAST_ALWAYS_INLINE void stream_vec2(S* p, const f32v& a, const f32v& b) {
#if defined(BNFAST_ISA_AVX512)
    _mm512_stream_si512(reinterpret_cast<__m512i*>(p), narrow_pair(p, a, b));
#elif defined(BNFAST_ISA_AVX2)
    _mm256_stream_si256(reinterpret_cast<__m256i*>(p), narrow_pair(p, a, b));
#else
    store_f32v2(p, a, b);
#endif
}

// One vector of words streamed at p (aligned to it).
template <class S>
BNFAST_ALWAYS_INLINE void stream_words(S* p, const u32v& w) {
#if defined(BNFAST_ISA_AVX512)
    _mm512_stream_si512(reinterpret_cast<__m512i*>(p), bit_cast_<__m512i>(w));
#elif defined(BNFAST_ISA_AVX2)
    _mm256_stream_si256(reinterpret_cast<__m256i*>(p), bit_cast_<__m256i>(w));
#else
    store_vec(p, w);
#endif
}

// Streaming stores are weakly ordered: each thread that made them fences
// before its results are read by anyone else.
inline void stream_fence() {
#if defined(__SSE2__)
    _mm_sfence();
#endif
}

// Outputs at least this large are written with streaming stores: they do
// not fit in the caches for the next operation anyway, and skipping the
// read of each line makes a memory-bound pass up to ~1.5x faster.
constexpr std::int64_t kStreamMinBytes = std::int64_t(8) << 20;

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
// Half storage computes in float vectors.
template <> struct NativeVec<f16_t> : NativeVec<float> {};
template <> struct NativeVec<bf16_t> : NativeVec<float> {};

// Every lane s. (s - 0, not 0 + s: +0 + -0 is +0, which lost the sign of
// a -0.0 parameter, a bias of -0.0 giving +0.0 where the twin gives -0.0.)
template <class V, class S>
inline V splat(S s) {
    return s - V{};
}

// Streaming pays only over whole cache lines: shorter runs (a 7x7 image
// row is 196 bytes) keep plain stores.
constexpr std::int64_t kStreamMinRunBytes = 1024;
constexpr std::int64_t kCacheLine = 64;

// Elements of y before its first cache-line boundary (clamped to n), or -1
// if a run of n elements should not be streamed.
template <class T>
inline std::int64_t stream_head(const T* y, std::int64_t n) {
    const auto addr = reinterpret_cast<std::uintptr_t>(y);
    if (n * static_cast<std::int64_t>(sizeof(T)) < kStreamMinRunBytes || addr % sizeof(T) != 0)
        return -1;
    const std::int64_t head = static_cast<std::int64_t>(
        ((kCacheLine - addr % kCacheLine) % kCacheLine) / sizeof(T));
    return head < n ? head : n;
}

// Half-precision runs are written two vectors at a time (store_f32v2: one
// full register; for bfloat16 one narrowing of both); the values are the
// same either way.
template <class T>
constexpr bool kPairStores = std::is_same_v<T, bf16_t> || std::is_same_v<T, f16_t>;

// Writes y[0..n): L values at a time from vec(i) (the vector of elements
// i..i+L-1), single ones from one(i). With kStream, long runs are streamed
// from the first cache-line boundary on (one() covers the head). vec and
// one apply the same operations in T, so the values do not depend on which
// elements take which path. For half storage T both give float values,
// rounded to T as they are stored (store_cv, to_storage).
template <bool kStream, class T, class VecFn, class OneFn>
inline void write_run(T* y, std::int64_t n, VecFn&& vec, OneFn&& one) {
    constexpr int L = NativeVec<T>::lanes;
    std::int64_t i = 0;
    if constexpr (kStream) {
        const std::int64_t head = stream_head(y, n);
        if (head >= 0) {
            for (; i < head; ++i) y[i] = to_storage<T>(one(i));
            if constexpr (kPairStores<T>)
                for (; i + 2 * L <= n; i += 2 * L) stream_vec2(y + i, vec(i), vec(i + L));
            for (; i + L <= n; i += L) stream_vec(y + i, vec(i));
        }
    }
    if constexpr (kPairStores<T>)
        for (; i + 2 * L <= n; i += 2 * L) store_f32v2(y + i, vec(i), vec(i + L));
    for (; i + L <= n; i += L) store_cv(y + i, vec(i));
    for (; i < n; ++i) y[i] = to_storage<T>(one(i));
}

// y[i] = f(x[i]) for i in [0, n): write_run for a map that is the same at
// every position (per-run parameters), f(V) on a vector of compute-type
// values, one(i) for single elements (the same operations in T). bfloat16
// runs take their vectors in even/odd order (load_bf16_even_odd): no
// shuffle to widen or to narrow. Pass f with its parameters captured by
// value: a copy held here is then kept in registers (captures by reference
// were reloaded at every step, the stores being allowed to alias them).
template <bool kStream, class S, class MapFn, class OneFn>
BNFAST_ALWAYS_INLINE void map_run(const S* x, S* y, std::int64_t n, const MapFn& map_fn,
                                  OneFn&& one) {
    const MapFn f = map_fn;
    if constexpr (std::is_same_v<S, bf16_t>) {
        constexpr int L2 = 2 * kLanesF32;
        auto pair = [&](std::int64_t i) {
            f32v even, odd;
            load_bf16_even_odd(x + i, even, odd);
            return bf16_join_even_odd(f(even), f(odd));
        };
        std::int64_t i = 0;
        if constexpr (kStream) {
            const std::int64_t head = stream_head(y, n);
            if (head >= 0) {
                for (; i < head; ++i) y[i] = to_storage<S>(one(i));
                for (; i + L2 <= n; i += L2) stream_words(y + i, pair(i));
            }
        }
        for (; i + L2 <= n; i += L2) store_vec(y + i, pair(i));
        for (; i < n; ++i) y[i] = to_storage<S>(one(i));
    } else {
        write_run<kStream>(y, n, [&](std::int64_t i) { return f(load_cv(x + i)); }, one);
    }
}

// Whole rows of C channels stored one after another ((N, C) and NHWC data)
// as one flat run of n elements starting at channel 0: element i belongs to
// channel ph = i % C. vec(i, ph) gives the vector of elements i..i+L-1 (its
// parameters start at index ph of arrays repeated to C + L entries, see
// fill_periodic), one(i, ph) a single element. Rows of a few dozen channels
// are too short to vectorize (and to align for streaming) one at a time; as
// one run only its two ends are scalar.
template <bool kStream, class T, class VecFn, class OneFn>
inline void periodic_run(T* y, std::int64_t n, std::int64_t C, VecFn&& vec, OneFn&& one) {
    constexpr int L = NativeVec<T>::lanes;
    const std::int64_t step = L % C;  // phase advance per vector
    std::int64_t i = 0, ph = 0;       // ph == i % C throughout
    auto scalar = [&]() {
        y[i] = to_storage<T>(one(i, ph));
        ++i;
        if (++ph == C) ph = 0;
    };
    auto advance = [&]() {
        i += L;
        ph += step;
        if (ph >= C) ph -= C;
    };
    if constexpr (kStream) {
        const std::int64_t head = stream_head(y, n);
        if (head >= 0) {
            while (i < head) scalar();
            if constexpr (kPairStores<T>) {
                while (i + 2 * L <= n) {
                    const auto a = vec(i, ph);
                    advance();
                    stream_vec2(y + i - L, a, vec(i, ph));
                    advance();
                }
            }
            while (i + L <= n) {  // (a for loop here trips Clang's -Wfor-loop-analysis)
                stream_vec(y + i, vec(i, ph));
                advance();
            }
        }
    }
    if constexpr (kPairStores<T>) {
        while (i + 2 * L <= n) {
            const auto a = vec(i, ph);
            advance();
            store_f32v2(y + i - L, a, vec(i, ph));
            advance();
        }
    }
    while (i + L <= n) {
        store_cv(y + i, vec(i, ph));
        advance();
    }
    while (i < n) scalar();
}

// Parameters repeated for a periodic run: ext[j] = p[j % C] for
// j < C + lanes, so the vector at any phase is one contiguous load.
template <class T>
inline void fill_periodic(const T* p, std::int64_t C, T* ext) {
    const std::int64_t n = C + NativeVec<T>::lanes;
    for (std::int64_t j = 0; j < n; j += C)  // whole copies: no division per entry
        std::memcpy(ext + j, p, static_cast<std::size_t>(n - j < C ? n - j : C) * sizeof(T));
}

// Work at or below this many elements runs on one thread: a parallel run
// costs more than it saves there. Results do not depend on it.
constexpr std::int64_t kParallelMinElements = std::int64_t(1) << 15;

// Elements per block of the element-wise loops (parallel_rows): small
// enough to share out and to check for Ctrl-C often, large enough that
// claiming a block (one atomic add) costs nothing.
constexpr std::int64_t kBlockElements = std::int64_t(1) << 14;

template <class F>
void call_block(void* ctx, std::int64_t begin, std::int64_t end, int slot) {
    (*static_cast<F*>(ctx))(begin, end, slot);
    stream_fence();  // a block's streaming stores are done before the run ends
}

// Runs f(begin, end, slot) over [0, n) in blocks of `grain` indices on up
// to nt threads (bnfast/parallel.hpp; slot < nt indexes per-thread
// scratch). Which thread runs which block never changes a result. One
// thread calls f directly on the whole range: no pool, no per-block calls
// (unless the call is interruptible, which needs the checks between blocks).
template <class F>
inline void parallel_blocks(int nt, std::int64_t n, std::int64_t grain, F&& f) {
    if (n <= 0) return;
    if (nt <= 1 && !parallel::interruptible()) {
        f(std::int64_t(0), n, 0);
        stream_fence();
        return;
    }
    using Fn = std::remove_reference_t<F>;
    parallel::run(nt, n, grain, &call_block<Fn>, const_cast<void*>(static_cast<const void*>(&f)));
}

// f(i) for every i in [0, n), blocks of `grain` consecutive indices.
template <class F>
inline void parallel_for(int nt, std::int64_t n, std::int64_t grain, F&& f) {
    parallel_blocks(nt, n, grain, [&](std::int64_t begin, std::int64_t end, int) {
        for (std::int64_t i = begin; i < end; ++i) f(i);
    });
}

// f(r, j0, len) over `rows` rows of `len` elements: blocks of whole rows
// of about kBlockElements elements, or, for longer rows, spans of
// kBlockElements elements (a multiple of every vector width, so each
// element takes the same vector or scalar path as in the whole row).
template <class F>
inline void parallel_rows(int nt, std::int64_t rows, std::int64_t len, F&& f) {
    if (len <= kBlockElements) {
        const std::int64_t per = len > 0 ? kBlockElements / len : kBlockElements;
        parallel_blocks(nt, rows, per, [&](std::int64_t begin, std::int64_t end, int) {
            for (std::int64_t r = begin; r < end; ++r) f(r, std::int64_t(0), len);
        });
        return;
    }
    const std::int64_t spans = (len + kBlockElements - 1) / kBlockElements;
    parallel_blocks(nt, rows * spans, 1, [&](std::int64_t begin, std::int64_t end, int) {
        for (std::int64_t i = begin; i < end; ++i) {
            const std::int64_t r = i / spans, j0 = (i % spans) * kBlockElements;
            f(r, j0, len - j0 < kBlockElements ? len - j0 : kBlockElements);
        }
    });
}

// The work items of periodic runs over A whole rows of C elements: blocks
// of about 16K elements, f(r0, nr) for rows [r0, r0 + nr), on nt threads.
template <class F>
inline void parallel_periodic_blocks(int nt, std::int64_t A, std::int64_t C, F&& f) {
    const std::int64_t rows_per = C >= 16384 ? 1 : 16384 / C;
    const std::int64_t blocks = (A + rows_per - 1) / rows_per;
    parallel_for(nt, blocks, 1, [&](std::int64_t k) {
        const std::int64_t r0 = k * rows_per;
        f(r0, A - r0 < rows_per ? A - r0 : rows_per);
    });
}

// A kernel's scratch array: inline (on the caller's stack) when it is
// small, on the heap otherwise, and freed on every exit. Tiny calls (a
// (4, 16) batch) spent more time in malloc/free than in arithmetic.
template <class T, std::size_t kInline = 256>
class Scratch {
public:
    explicit Scratch(std::size_t n) : ptr_(n <= kInline ? inline_ : new T[n]) {}
    ~Scratch() {
        if (ptr_ != inline_) delete[] ptr_;
    }
    Scratch(const Scratch&) = delete;
    Scratch& operator=(const Scratch&) = delete;
    T* get() { return ptr_; }

private:
    T inline_[kInline];
    T* ptr_;
};

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
