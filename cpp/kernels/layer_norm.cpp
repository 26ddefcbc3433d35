// The layer-norm family's kernels (layer norm, RMS norm) on (1, R, D) views:
// each row is reduced and then written while it sits in L1/L2, so a pass
// costs about one read and one write of the data.
//
// layer_norm_forward: per row, mean and M2 exactly as the moments
// kernel computes them (same chunks, groups and merge order: bit-identical),
// then y = ((x - mean) * rstd) * w + b (layer norm) or y = (x * rstd) * w + b
// (RMS norm), rstd from formulas::row_rstd.
//
// layer_norm_backward: per row, the two row sums of the gradient in
// double, then dx; the column gradients (dweight, dbias) are summed per
// fixed block of rows and the blocks added in order (deterministic).
#include "layer_norm.hpp"

#include <cmath>
#include <cstdint>
#include <limits>

#include "affine_runs.hpp"
#include "bnfast/formulas.hpp"
#include "moments_impl.hpp"

namespace bnfast::kernels::BNFAST_ISA {
namespace {

// The row's rstd (formulas::row_rstd); the NaN rescan of its inf-row rule.
template <class T>
inline double row_rstd(const T* row, const View3& xv, double mean, double m2, double eps,
                       bool rms) {
    return formulas::row_rstd(mean, m2, static_cast<double>(xv.B), eps, rms, [&] {
        for (std::int64_t j = 0; j < xv.B; ++j)
            if (std::isnan(as_f64(row[j * xv.sB]))) return true;
        return false;
    });
}

// x, y of the storage type S; scalars, w, b and arithmetic of its compute
// type T (see affine_runs.hpp).
template <bool kStream, class S, class T = compute_t<S>>
inline void row_apply(const S* x, S* y, std::int64_t n, bool center, T hi, T lo, T scale,
                      const T* w, const T* b) {
    using V = typename NativeVec<S>::type;
    const V hv = splat<V>(hi), lv = splat<V>(lo), sv = splat<V>(scale);
    if (center) {
        write_run<kStream>(
            y, n,
            [&](std::int64_t j) {
                const V t = ((load_cv(x + j) - hv) - lv) * sv;
                return t * load_vec<V>(w + j) + load_vec<V>(b + j);
            },
            [&](std::int64_t j) { return (((to_compute(x[j]) - hi) - lo) * scale) * w[j] + b[j]; });
    } else {
        write_run<kStream>(
            y, n,
            [&](std::int64_t j) {
                const V t = load_cv(x + j) * sv;
                return t * load_vec<V>(w + j) + load_vec<V>(b + j);
            },
            [&](std::int64_t j) { return (to_compute(x[j]) * scale) * w[j] + b[j]; });
    }
}

// The fused loop: one row per thread while it is in cache.
template <bool kStream, class T>
void fused_row_norm(const T* x, const View3& xv, T* y, const View3& yv, const compute_t<T>* w,
                    const compute_t<T>* b, double eps, bool rms, double* mean, double* m2,
                    double* rstd, int nt) {
    using P = compute_t<T>;
    const std::int64_t R = xv.C, D = xv.B;
    // Runs of up to 64 consecutive rows per work item: each thread then reads
    // and writes long sequential streams, which the hardware prefetcher
    // follows (4 rows per item interleaved the two threads' rows: layer norm
    // of 8192x768 took 2.1 ms instead of 1.65).
    const std::int64_t rows_per_item =
        max_i64(1, min_i64(min_i64(64, R / (8 * nt)), kMaxFusedSlabBytes / static_cast<std::int64_t>(sizeof(T)) / D));
    parallel_for(nt, R, rows_per_item, [&](std::int64_t r) {
        const T* xr = x + r * xv.sC;
        slab_moments(xr, xv, mean[r], m2[r]);
        rstd[r] = row_rstd(xr, xv, mean[r], m2[r], eps, rms);
        P hi, lo;
        formulas::split_center(mean[r], hi, lo);
        row_apply<kStream>(xr, y + r * yv.sC, D, !rms, hi, lo, static_cast<P>(rstd[r]), w, b);
    });
}

// The unfused forward's apply (other layouts, after the moments kernel):
// y = ((x - hi[r]) - lo[r]) * scale[r] * w[j] + b[j] for the rows r of any
// strides, without the centring when kCenter is false.
template <bool kCenter, bool kStream, class S, class T = compute_t<S>>
void apply_rows_impl(const S* x, const View3& xv, S* y, const View3& yv, const T* hi,
                     const T* lo, const T* scale, const T* w, const T* b, int nt) {
    const std::int64_t A = xv.A, C = xv.C, B = xv.B;
    const std::int64_t rows = A * C;
    const bool contiguous = xv.sB == 1 && yv.sB == 1;
    parallel_rows(nt, rows, B, [&](std::int64_t r, std::int64_t j0, std::int64_t len) {
        const std::int64_t a = r / C, c = r % C;
        const S* xr = x + a * xv.sA + c * xv.sC;
        S* yr = y + a * yv.sA + c * yv.sC;
        const T h = kCenter ? hi[c] : T(0);
        const T l = kCenter ? lo[c] : T(0);
        const T s = scale[c];
        if (contiguous) {
            row_apply<kStream>(xr + j0, yr + j0, len, kCenter, h, l, s, w + j0, b + j0);
        } else {
            for (std::int64_t j = j0; j < j0 + len; ++j) {
                const T xj = to_compute(xr[j * xv.sB]);
                yr[j * yv.sB] = to_storage<S>(kCenter ? (((xj - h) - l) * s) * w[j] + b[j]
                                                      : (xj * s) * w[j] + b[j]);
            }
        }
    });
}

template <class S, class T = compute_t<S>>
void apply_rows(const S* x, const View3& xv, S* y, const View3& yv, const T* hi, const T* lo,
                const T* scale, const T* w, const T* b, int nthreads) {
    const std::int64_t total = xv.A * xv.C * xv.B;
    if (total == 0) return;
    const int nt = (total <= kParallelMinElements || nthreads < 1) ? 1 : nthreads;
    const bool stream = total * static_cast<std::int64_t>(sizeof(S)) >= kStreamMinBytes;
    if (hi != nullptr) {
        if (stream) apply_rows_impl<true, true>(x, xv, y, yv, hi, lo, scale, w, b, nt);
        else apply_rows_impl<true, false>(x, xv, y, yv, hi, lo, scale, w, b, nt);
    } else {
        if (stream) apply_rows_impl<false, true>(x, xv, y, yv, hi, lo, scale, w, b, nt);
        else apply_rows_impl<false, false>(x, xv, y, yv, hi, lo, scale, w, b, nt);
    }
}

template <class T>
void layer_norm_forward(const T* x, const View3& xv, T* y, const View3& yv, const compute_t<T>* w,
                        const compute_t<T>* b, double eps, bool rms, double* mean, double* m2,
                        double* rstd, int nthreads) {
    using P = compute_t<T>;
    const std::int64_t R = xv.C, D = xv.B;
    if (R == 0) return;
    if (D == 0 || xv.A != 1) {  // nothing to normalize over (callers reject it)
        for (std::int64_t r = 0; r < R; ++r)
            mean[r] = m2[r] = rstd[r] = std::numeric_limits<double>::quiet_NaN();
        return;
    }
    if (nthreads < 1) nthreads = 1;
    // Fused: one row per thread while it is in cache. Few long rows go to
    // the general kernels, which split a row across threads; both give
    // bit-identical statistics.
    const bool rows = xv.sB == 1 && yv.sB == 1 && D >= kMinRowLength &&
                      D * static_cast<std::int64_t>(sizeof(T)) <= kMaxFusedSlabBytes &&
                      R >= 4 * static_cast<std::int64_t>(nthreads);
    if (!rows) {  // other layouts: the moments kernel, then apply_rows
        moments_impl(x, xv, mean, m2, nthreads);
        Scratch<P> params_buf(3 * static_cast<std::size_t>(R));
        P* params = params_buf.get();
        P* hi = params;
        P* lo = params + R;
        P* scale = params + 2 * R;
        for (std::int64_t r = 0; r < R; ++r) {
            formulas::split_center(mean[r], hi[r], lo[r]);
            rstd[r] = row_rstd(x + r * xv.sC, xv, mean[r], m2[r], eps, rms);
            scale[r] = static_cast<P>(rstd[r]);
        }
        apply_rows(x, xv, y, yv, rms ? nullptr : hi, lo, scale, w, b, nthreads);
        return;
    }
    const int nt = (R * D <= kParallelMinElements) ? 1 : nthreads;
    if (R * D * static_cast<std::int64_t>(sizeof(T)) >= kStreamMinBytes)
        fused_row_norm<true>(x, xv, y, yv, w, b, eps, rms, mean, m2, rstd, nt);
    else
        fused_row_norm<false>(x, xv, y, yv, w, b, eps, rms, mean, m2, rstd, nt);
}

// ---------------------------------------------------------------------------

// The backward pass of one row in two steps: its sums (pass 1) give the
// row's constants, then dx and the column gradients (added into pw, pb) over
// a range of its columns (pass 2), so that wide rows can be done a column
// chunk at a time. kUnit: all three rows are contiguous.
struct RowGrad {
    double delta, mean_g, mean_gx;  // layer norm
    double k;                       // RMS norm: rstd^3 * mean(g * x)
};

template <bool kUnit, bool kRms, class T>
inline RowGrad backward_row_sums(const T* xr, std::int64_t sx, const T* gr, std::int64_t sg,
                                 std::int64_t D, double mu, double rs, const compute_t<T>* w) {
    const std::int64_t ax = kUnit ? 1 : sx, ag = kUnit ? 1 : sg;
    const double dd = static_cast<double>(D);
    double s_d = 0.0, s_g = 0.0, s_gd = 0.0;
    std::int64_t j0 = 0;
    if constexpr (kUnit) {
        // Explicit vector accumulators: the compiler may not reorder a
        // scalar floating-point sum, so a plain loop runs one element per
        // add latency. Lanes are summed in a fixed order (deterministic).
        const f64v mu_v = splat<f64v>(mu);
        f64v a_d0{}, a_g0{}, a_gd0{}, a_d1{}, a_g1{}, a_gd1{};
        for (; j0 + 2 * kLanesF64 <= D; j0 += 2 * kLanesF64) {
            const f64v x0 = load_as_f64(xr + j0), x1 = load_as_f64(xr + j0 + kLanesF64);
            const f64v d0 = kRms ? x0 : x0 - mu_v;
            const f64v d1 = kRms ? x1 : x1 - mu_v;
            const f64v g0 = load_as_f64(gr + j0) * load_as_f64(w + j0);
            const f64v g1 = load_as_f64(gr + j0 + kLanesF64) * load_as_f64(w + j0 + kLanesF64);
            a_d0 += d0;
            a_d1 += d1;
            a_g0 += g0;
            a_g1 += g1;
            a_gd0 += g0 * d0;
            a_gd1 += g1 * d1;
        }
        s_d = sum_lanes(a_d0 + a_d1);
        s_g = sum_lanes(a_g0 + a_g1);
        s_gd = sum_lanes(a_gd0 + a_gd1);
    }
    for (std::int64_t j = j0; j < D; ++j) {
        const double xj = as_f64(xr[j * ax]);
        const double d = kRms ? xj : xj - mu;
        const double g = as_f64(gr[j * ag]) * static_cast<double>(w[j]);
        s_d += d;
        s_g += g;
        s_gd += g * d;
    }
    RowGrad c{};
    if constexpr (kRms) {
        // dx = rstd * g - x * rstd^3 * mean(g * x)
        c.k = rs * rs * rs * s_gd / dd;
    } else {
        // The stored mean was rounded to T: s_d / D moves it to the exact one.
        c.delta = s_d / dd;
        c.mean_g = s_g / dd;
        c.mean_gx = rs * (s_gd - c.delta * s_g) / dd;
    }
    return c;
}

// Pass 2 over columns [j0, j1). Chunk edges are multiples of the vector
// width, so each element takes the same (vector or scalar) path as in a
// whole-row pass: the bits do not depend on the chunking.
template <bool kUnit, bool kRms, class T>
inline void backward_row_apply(const T* xr, std::int64_t sx, const T* gr, std::int64_t sg,
                               T* out, std::int64_t so, std::int64_t j0, std::int64_t j1,
                               double mu, double rs, const RowGrad& c, const compute_t<T>* w,
                               double* __restrict pw, double* __restrict pb) {
    const std::int64_t ax = kUnit ? 1 : sx, ag = kUnit ? 1 : sg, ao = kUnit ? 1 : so;
    std::int64_t j = j0;
    if constexpr (kRms) {
        if constexpr (kUnit) {  // explicit vectors (one-instruction conversions)
            const f64v rs_v = splat<f64v>(rs), k_v = splat<f64v>(c.k);
            for (; j + kLanesF64 <= j1; j += kLanesF64) {
                const f64v xj = load_as_f64(xr + j);
                const f64v dyj = load_as_f64(gr + j);
                store_from_f64(out + j, rs_v * (dyj * load_as_f64(w + j)) - xj * k_v);
                store_vec(pw + j, load_vec<f64v>(pw + j) + (dyj * xj) * rs_v);
                store_vec(pb + j, load_vec<f64v>(pb + j) + dyj);
            }
        }
        for (; j < j1; ++j) {
            const double xj = as_f64(xr[j * ax]);
            const double dyj = as_f64(gr[j * ag]);
            out[j * ao] = from_f64<T>(rs * (dyj * static_cast<double>(w[j])) - xj * c.k);
            pw[j] += dyj * xj * rs;
            pb[j] += dyj;
        }
    } else {
        if constexpr (kUnit) {
            const f64v mu_v = splat<f64v>(mu), delta_v = splat<f64v>(c.delta);
            const f64v rs_v = splat<f64v>(rs), mg_v = splat<f64v>(c.mean_g);
            const f64v mgx_v = splat<f64v>(c.mean_gx);
            for (; j + kLanesF64 <= j1; j += kLanesF64) {
                const f64v xhat = ((load_as_f64(xr + j) - mu_v) - delta_v) * rs_v;
                const f64v dyj = load_as_f64(gr + j);
                const f64v g = dyj * load_as_f64(w + j);
                store_from_f64(out + j, rs_v * ((g - mg_v) - xhat * mgx_v));
                store_vec(pw + j, load_vec<f64v>(pw + j) + dyj * xhat);
                store_vec(pb + j, load_vec<f64v>(pb + j) + dyj);
            }
        }
        for (; j < j1; ++j) {
            const double xhat = ((as_f64(xr[j * ax]) - mu) - c.delta) * rs;
            const double dyj = as_f64(gr[j * ag]);
            const double g = dyj * static_cast<double>(w[j]);
            out[j * ao] = from_f64<T>(rs * (g - c.mean_g - xhat * c.mean_gx));
            pw[j] += dyj * xhat;
            pb[j] += dyj;
        }
    }
}

// Rows wider than kColChunk go kSubRows at a time: their sums first, then
// pass 2 a chunk of kColChunk columns at a time over all of them, so that
// the chunk's column gradients stay in L1 (4096 columns of pw and pb are 64 KB,
// more than L1: wide rows ran at half the speed of 768-wide ones).
constexpr std::int64_t kSubRows = 8;
constexpr std::int64_t kColChunk = 1024;  // a multiple of every vector width

template <bool kUnit, bool kRms, class T>
void backward_rows(const T* x, const View3& xv, const T* dy, const View3& dyv, T* dx,
                   const View3& dxv, const double* mean, const double* rstd,
                   const compute_t<T>* w, std::int64_t r_begin, std::int64_t r_end, double* pw,
                   double* pb) {
    const std::int64_t D = xv.B;
    // Rows of one chunk: row by row, while each row is still in L1.
    const std::int64_t sub = D > kColChunk ? kSubRows : 1;
    RowGrad consts[kSubRows];
    for (std::int64_t r0 = r_begin; r0 < r_end; r0 += sub) {
        const std::int64_t r1 = min_i64(r0 + sub, r_end);
        for (std::int64_t r = r0; r < r1; ++r)
            consts[r - r0] = backward_row_sums<kUnit, kRms>(x + r * xv.sC, xv.sB, dy + r * dyv.sC,
                                                            dyv.sB, D, mean[r], rstd[r], w);
        for (std::int64_t j0 = 0; j0 < D; j0 += kColChunk) {
            const std::int64_t j1 = min_i64(j0 + kColChunk, D);
            for (std::int64_t r = r0; r < r1; ++r)
                backward_row_apply<kUnit, kRms>(x + r * xv.sC, xv.sB, dy + r * dyv.sC, dyv.sB,
                                                dx + r * dxv.sC, dxv.sB, j0, j1, mean[r], rstd[r],
                                                consts[r - r0], w, pw, pb);
        }
    }
}

template <class T>
void layer_norm_backward(const T* x, const View3& xv, const T* dy, const View3& dyv, T* dx,
                         const View3& dxv, const double* mean, const double* rstd,
                         const compute_t<T>* w, bool rms, double* dweight, double* dbias,
                         int nthreads) {
    const std::int64_t R = xv.C, D = xv.B;
    for (std::int64_t j = 0; j < D; ++j) dweight[j] = dbias[j] = 0.0;
    if (R == 0 || D == 0) return;
    if (nthreads < 1) nthreads = 1;
    // Fixed blocks of rows (shape-only) for the column sums, added in order:
    // at least kSubRows rows each (a block of one row paid for a whole
    // column-gradient buffer), at most 64 blocks and ~32 MB of partial sums.
    const std::int64_t blocks =
        max_i64(1, min_i64(min_i64(R / kSubRows, 64), (std::int64_t(1) << 21) / D));
    const int nt = (R * D <= kParallelMinElements) ? 1 : nthreads;
    const bool unit = xv.sB == 1 && dyv.sB == 1 && dxv.sB == 1;
    Scratch<double> partial_buf(2 * static_cast<std::size_t>(blocks * D));
    double* partial = partial_buf.get();
    parallel_for(nt, blocks, 1, [&](std::int64_t blk) {
        double* pw = partial + 2 * blk * D;
        double* pb = pw + D;
        for (std::int64_t j = 0; j < D; ++j) pw[j] = pb[j] = 0.0;
        const std::int64_t r0 = part_begin(blk, R, blocks), r1 = part_begin(blk + 1, R, blocks);
        if (unit && rms)
            backward_rows<true, true>(x, xv, dy, dyv, dx, dxv, mean, rstd, w, r0, r1, pw, pb);
        else if (unit)
            backward_rows<true, false>(x, xv, dy, dyv, dx, dxv, mean, rstd, w, r0, r1, pw, pb);
        else if (rms)
            backward_rows<false, true>(x, xv, dy, dyv, dx, dxv, mean, rstd, w, r0, r1, pw, pb);
        else
            backward_rows<false, false>(x, xv, dy, dyv, dx, dxv, mean, rstd, w, r0, r1, pw, pb);
    });
    for (std::int64_t blk = 0; blk < blocks; ++blk) {
        const double* pw = partial + 2 * blk * D;
        for (std::int64_t j = 0; j < D; ++j) {
            dweight[j] += pw[j];
            dbias[j] += pw[D + j];
        }
    }
}

}  // namespace

template <class T>
LayerNormKernels<T> layer_norm_kernels() {
    return {&layer_norm_forward<T>, &layer_norm_backward<T>};
}

template LayerNormKernels<float> layer_norm_kernels<float>();
template LayerNormKernels<double> layer_norm_kernels<double>();
template LayerNormKernels<f16_t> layer_norm_kernels<f16_t>();
template LayerNormKernels<bf16_t> layer_norm_kernels<bf16_t>();

}  // namespace bnfast::kernels::BNFAST_ISA
