// The training backward's shared pieces, for batch_norm_backward.cpp and
// group_norm.cpp (group and instance norm reduce per (sample, channel) with
// the batch-norm arithmetic): the per-channel sums about a centre and the dx
// formula. Only for files under cpp/kernels/.
#pragma once
#include <cstdint>

#include "bnfast/view3.hpp"
#include "moments_impl.hpp"
#include "simd.hpp"

namespace bnfast::kernels::BNFAST_ISA {

struct Sums3 {
    double d = 0.0, dy = 0.0, dy_d = 0.0;
    void add(const Sums3& o) {
        d += o.d;
        dy += o.dy;
        dy_d += o.dy_d;
    }
};

// Sums over the flat range [begin, end) of one channel (rows along B).
template <class T>
Sums3 row_range_sums(const T* xc, const View3& xv, const T* dyc, const View3& dyv,
                     double center, std::int64_t begin, std::int64_t end,
                     bool prefetch_rows = false) {
    f64v d0{}, dy0{}, dyd0{}, d1{}, dy1{}, dyd1{};
    double d_t = 0.0, dy_t = 0.0, dyd_t = 0.0;
    const f64v center_v = splat<f64v>(center);
    const bool contiguous = xv.sB == 1 && dyv.sB == 1;
    for_each_row_span(xv.B, begin, end, [&](std::int64_t a, std::int64_t b, std::int64_t len) {
        const T* xp = xc + a * xv.sA + b * xv.sB;
        const T* dp = dyc + a * dyv.sA + b * dyv.sB;
        std::int64_t i = 0;
        const T* pxp = nullptr;  // the next row of x and dy (prefetch_rows)
        const T* pdp = nullptr;
        if (prefetch_rows && a + 1 < xv.A) {
            pxp = xp + xv.sA;
            pdp = dp + dyv.sA;
        }
        if (contiguous) {
            for (; i + 2 * kLanesF64 <= len; i += 2 * kLanesF64) {
                // One line of each per 64 bytes of the row (the step is 32
                // or 64 bytes of float32), into L2.
                if (pxp != nullptr && ((i * static_cast<std::int64_t>(sizeof(T))) & 63) <
                                          2 * kLanesF64 * static_cast<std::int64_t>(sizeof(T))) {
                    __builtin_prefetch(pxp + i, 0, 2);
                    __builtin_prefetch(pdp + i, 0, 2);
                }
                const f64v dA = load_as_f64(xp + i) - center_v;
                const f64v dB = load_as_f64(xp + i + kLanesF64) - center_v;
                const f64v gA = load_as_f64(dp + i);
                const f64v gB = load_as_f64(dp + i + kLanesF64);
                d0 += dA;
                d1 += dB;
                dy0 += gA;
                dy1 += gB;
                dyd0 += gA * dA;
                dyd1 += gB * dB;
            }
            for (; i < len; ++i) {
                const double d = as_f64(xp[i]) - center;
                const double g = as_f64(dp[i]);
                d_t += d;
                dy_t += g;
                dyd_t += g * d;
            }
        } else {
            for (; i < len; ++i) {
                const double d = as_f64(xp[i * xv.sB]) - center;
                const double g = as_f64(dp[i * dyv.sB]);
                d_t += d;
                dy_t += g;
                dyd_t += g * d;
            }
        }
    });
    Sums3 s;
    s.d = sum_lanes(d0 + d1) + d_t;
    s.dy = sum_lanes(dy0 + dy1) + dy_t;
    s.dy_d = sum_lanes(dyd0 + dyd1) + dyd_t;
    return s;
}

// The channel path's sums (rows of a tile of tw unit-stride channels about
// ctr): two rows per pass over the accumulators, half their loads and
// stores (the loop was bound by those, not by memory), each channel's
// additions in row order.
template <class T>
inline void add_row_pair(const T* __restrict x0, const T* __restrict x1, const T* __restrict g0,
                         const T* __restrict g1, const double* __restrict ctr, std::int64_t tw,
                         double* __restrict pd, double* __restrict pg, double* __restrict pgd) {
    for (std::int64_t c = 0; c < tw; ++c) {
        const double d0 = as_f64(x0[c]) - ctr[c];
        const double d1 = as_f64(x1[c]) - ctr[c];
        const double gv0 = as_f64(g0[c]);
        const double gv1 = as_f64(g1[c]);
        pd[c] = (pd[c] + d0) + d1;
        pg[c] = (pg[c] + gv0) + gv1;
        pgd[c] = (pgd[c] + gv0 * d0) + gv1 * d1;
    }
}

// One row of the same (channel strides sx, sg: 1 on the unit path).
template <class T>
inline void add_row(const T* __restrict x0, std::int64_t sx, const T* __restrict g0,
                    std::int64_t sg, const double* __restrict ctr, std::int64_t tw,
                    double* __restrict pd, double* __restrict pg, double* __restrict pgd) {
    for (std::int64_t c = 0; c < tw; ++c) {
        const double d = as_f64(x0[c * sx]) - ctr[c];
        const double gv = as_f64(g0[c * sg]);
        pd[c] += d;
        pg[c] += gv;
        pgd[c] += gv * d;
    }
}

// dx = dy * p + ((((x - hi) - lo) * s) * q + r) * s, on scalars and vectors
// alike (see batch_norm_backward.cpp: xhat first, s applied twice, never
// s * s).
template <class T>
inline T backward_dx(T x, T dy, T hi, T lo, T s, T p, T q, T r) {
    return dy * p + ((((x - hi) - lo) * s) * q + r) * s;
}

}  // namespace bnfast::kernels::BNFAST_ISA
