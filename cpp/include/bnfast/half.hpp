// Half-precision storage types: float16 (IEEE binary16) and bfloat16, as
// 16-bit patterns. They are storage types only: kernels widen each element
// to float (their compute type, ComputeOf) when they read it and round back
// when they write it; the conversions are per ISA (kernels/simd.hpp: F16C /
// AVX-512 instructions where the build has them, portable code elsewhere).
// Plain structs with no member functions, so this header is safe to share
// between translation units compiled for different instruction sets.
#pragma once
#include <cstdint>

namespace bnfast {

struct f16_t {
    std::uint16_t bits;
};
struct bf16_t {
    std::uint16_t bits;
};
static_assert(sizeof(f16_t) == 2 && sizeof(bf16_t) == 2, "16-bit storage types");

// The type a kernel computes in for storage type S: float for the half
// types, S itself for float and double.
template <class S>
struct ComputeOf {
    using type = S;
};
template <>
struct ComputeOf<f16_t> {
    using type = float;
};
template <>
struct ComputeOf<bf16_t> {
    using type = float;
};
template <class S>
using compute_t = typename ComputeOf<S>::type;

template <class S>
constexpr bool kIsHalf = sizeof(S) == 2;

}  // namespace bnfast
