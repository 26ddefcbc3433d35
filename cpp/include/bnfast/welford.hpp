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

// Chan et al.'s parallel merge: a <- a U b. Counts stay integers; the merge
// of two blocks with equal means leaves the mean untouched (exact for
// constant data).
inline void chan_merge(Moments1& a, const Moments1& b) {
    if (b.n == 0) return;
    if (a.n == 0) {
        a = b;
        return;
    }
    const std::int64_t n = a.n + b.n;
    const double delta = b.mean - a.mean;
    const double b_frac = static_cast<double>(b.n) / static_cast<double>(n);
    a.mean += delta * b_frac;
    a.m2 += b.m2 + delta * delta * static_cast<double>(a.n) * b_frac;
    a.n = n;
}

}  // namespace BNFAST_ISA_NS
}  // namespace bnfast
