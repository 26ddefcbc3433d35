// Scalar Welford/Chan building blocks shared by the kernels.
#pragma once
#include <cstdint>

#include "bnfast/isa_namespace.hpp"

namespace bnfast {
inline namespace BNFAST_ISA_NS {

// Moments of a set of values: count, mean and M2 = sum((x - mean)^2).
struct Moments1 {
    std::int64_t n = 0;
    double mean = 0.0;
    double m2 = 0.0;
};

// Chan et al.'s parallel merge: a <- a U b. Counts stay integers; blocks
// with equal means merge with delta = 0 (exact for constant data); a
// non-finite mean (inf or NaN data) propagates as NumPy's mean would
// (inf + finite = inf, inf - inf = NaN) and makes M2 NaN.
inline void chan_merge(Moments1& a, const Moments1& b) {
    if (b.n == 0) return;
    if (a.n == 0) {
        a = b;
        return;
    }
    const std::int64_t n = a.n + b.n;
    if (!(a.mean - a.mean == 0.0 && b.mean - b.mean == 0.0)) {
        a.mean = a.mean + b.mean;
        a.m2 = a.m2 + b.m2 + (a.mean - a.mean);  // NaN
        a.n = n;
        return;
    }
    const double delta = b.mean == a.mean ? 0.0 : b.mean - a.mean;
    const double b_frac = static_cast<double>(b.n) / static_cast<double>(n);
    a.mean += delta * b_frac;
    a.m2 += b.m2 + delta * delta * static_cast<double>(a.n) * b_frac;
    a.n = n;
}

}  // namespace BNFAST_ISA_NS
}  // namespace bnfast
