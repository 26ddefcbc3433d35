// Scalar Welford/Chan building blocks shared by the kernels.
#pragma once
#include <cmath>
#include <cstdint>

#include "bnfast/isa_namespace.hpp"

namespace bnfast {
inline namespace BNFAST_ISA_NS {

// Moments of a set of values: count, mean and M2 = sum((x - mean)^2), and
// the sum of the values as an unevaluated double-double sum_hi + sum_lo,
// from which final_mean() corrects the mean: a mean kept relative to a
// reference value, or merged by Chan's formula, rounds relative to the
// largest value involved (an outlier); the double-double sum of the chunks'
// sums does not.
struct Moments1 {
    std::int64_t n = 0;
    double mean = 0.0;
    double m2 = 0.0;
    double sum_hi = 0.0;
    double sum_lo = 0.0;
};

// (hi, lo) += (b_hi, b_lo): Knuth's TwoSum of the high parts (exact), the
// low parts and the rounding error added, then renormalized so that hi is
// the rounded sum. Non-finite values propagate through hi.
// Lane-wise for vectors of doubles (V).
template <class V>
inline void dd_add(V& hi, V& lo, V b_hi, V b_lo) {
    const V s = hi + b_hi;
    const V bb = s - hi;
    const V err = (hi - (s - bb)) + (b_hi - bb);
    const V l = (lo + b_lo) + err;
    const V h = s + l;
    lo = l - (h - s);
    hi = h;
}

// The sum n * shift + sum_d of a chunk whose pass 1 summed to sum1 and
// whose pass 2 summed the deviations from shift = sum1 / n to sum_d:
// n * shift = sum1 - r with r = sum1 - n * shift, the division's remainder,
// exact in one fused multiply-add. Sets (hi, lo) = (sum1, sum_d - r).
inline void chunk_sum(double n, double sum1, double shift, double sum_d, double& hi,
                      double& lo) {
    hi = sum1;
    lo = sum_d - std::fma(-n, shift, sum1);
}

// The sum n * v of n copies of v as (hi, lo), exactly (TwoProduct).
inline void constant_sum(double n, double v, double& hi, double& lo) {
    hi = n * v;
    lo = std::fma(n, v, -hi);
}

// The sum n * shift + sum_d of a chunk summed in one pass as deviations
// sum_d from a shift, given n * shift = p_hi + p_lo (constant_sum): TwoSum
// of p_hi and sum_d. Lane-wise for vectors of doubles (V).
template <class V>
inline void shifted_sum_from(V p_hi, V p_lo, V sum_d, V& hi, V& lo) {
    hi = p_hi + sum_d;
    const V bb = hi - p_hi;
    lo = ((p_hi - (hi - bb)) + (sum_d - bb)) + p_lo;
}
inline void shifted_chunk_sum(double n, double shift, double sum_d, double& hi, double& lo) {
    double p_hi, p_lo;
    constant_sum(n, shift, p_hi, p_lo);
    shifted_sum_from(p_hi, p_lo, sum_d, hi, lo);
}

// The mean of m from its double-double sum: `approx` (Chan's mean, made
// absolute by the caller) plus the rounded difference sum - n * approx over
// n (exact in one fused multiply-add). A constant set keeps its exact mean
// (the correction is 0); non-finite data, or a sum that overflows, keeps
// approx.
inline double final_mean(double approx, const Moments1& m) {
    if (!(approx - approx == 0.0) || m.n == 0) return approx;
    const double n = static_cast<double>(m.n);
    const double correction = (std::fma(-n, approx, m.sum_hi) + m.sum_lo) / n;
    return correction - correction == 0.0 ? approx + correction : approx;
}

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
    dd_add(a.sum_hi, a.sum_lo, b.sum_hi, b.sum_lo);
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
