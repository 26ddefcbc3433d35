// The layer-norm family's kernels (layer norm, RMS norm) on (1, R, D) views:
// each row is reduced and then written while it sits in L1/L2, so a pass
// costs about one read and one write of the data.
//
// layer_norm_forward: per row, mean and M2 exactly as the moments
// kernel computes them (same chunks, groups and merge order: bit-identical),
// then y = ((x - mean) * rstd) * w + b (layer norm) or y = (x * rstd) * w + b
// (RMS norm), rstd from formulas::row_rstd.
//
// layer_norm_backward: per row, the row sums of the gradient, then dx
// (float64 arithmetic for float64 data; float32 with float64 sums for
// float32 and half data, see backward_row_sums_f32); the column gradients
// (dweight, dbias) are summed per fixed block of rows and the blocks added
// in order (deterministic).
#include "layer_norm.hpp"

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>

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
        // The next row is prefetched into L2 during pass 2 of this one's
        // statistics (slab_moments' `next`, as moments_rows does): pass 2
        // and the apply read from cache, and without it memory idled through
        // both, reads and writes never overlapping (the row loop took the
        // read floor plus the read + write floor).
        slab_moments(xr, xv, mean[r], m2[r], r + 1 < R ? xr + xv.sC : nullptr);
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

// ---------------------------------------------------------------------------
// float32 and half rows: float32 arithmetic, as PyTorch's
// CPU kernels, with float64 where it matters. In float64 the backward was
// compute-bound (three conversions and ~20 operations per element at 4 or 8
// lanes: 2x the memory floor at AVX-512, 2.4-2.9x at AVX2). Here:
// - the row sums add float32 differences and products (x - mean, g = dy *
//   w, g * (x - mean)) in float64: the twin's sums of the same float32 terms
//   differ only by float64 rounding, so the row constants agree;
// - the row constants are computed in float64 and rounded once; the stored
//   mean plus its correction is split hi + lo (x - hi is exact near the
//   mean: a float32 centre alone would cost ulp(mean) / std of xhat);
// - dx is formed in float32: rstd * ((g - mean_g) - xhat * mean_gx), xhat =
//   ((x - hi) - lo) * rstd (layer norm), rstd * (g - xhat * m) with xhat =
//   x * rstd (RMS norm): rstd is applied, never cubed, so nothing leaves
//   float32's range that the result does not;
// - the column gradients are summed over the kSubRows rows of a group in
//   float32 registers and added to the float64 partial sums once per group.
// Errors are a few float32 ulps of the terms (README: gradients to 1e-4
// relative for float32; the twin computes in float64).
template <class T>
constexpr bool kFloatGrad = std::is_same_v<compute_t<T>, float>;

// The halves of v widened (exact), in registers. Halves copied out with
// memcpy went through the stack (GCC 12: a 64-byte store reloaded as two
// 32-byte loads per vector, a store-forwarding wait); in registers the
// backward of 32x4096 in cache took 139 us instead of 157 (AVX-512, one
// thread). The values are the same.
inline void widen_halves(const f32v& v, f64v& lo, f64v& hi) {
#if defined(BNFAST_ISA_AVX512)
    const __m512 w = bit_cast_<__m512>(v);
    lo = bit_cast_<f64v>(_mm512_cvtps_pd(_mm512_castps512_ps256(w)));
    hi = bit_cast_<f64v>(_mm512_cvtps_pd(_mm512_extractf32x8_ps(w, 1)));
#elif defined(BNFAST_ISA_AVX2)
    const __m256 w = bit_cast_<__m256>(v);
    lo = bit_cast_<f64v>(_mm256_cvtps_pd(_mm256_castps256_ps128(w)));
    hi = bit_cast_<f64v>(_mm256_cvtps_pd(_mm256_extractf128_ps(w, 1)));
#else
    f32h l, h;
    std::memcpy(&l, &v, sizeof(f32h));
    std::memcpy(&h, reinterpret_cast<const char*>(&v) + sizeof(f32h), sizeof(f32h));
    lo = widen_f32h(l);
    hi = widen_f32h(h);
#endif
}

// a + b as a fused multiply-add by 1 (a * 1 is exact: the same rounding
// as a + b). Zen's two FP-add pipes also run the conversions, its two FMA
// pipes had only the products: the row sums' additions go to the latter.
inline f64v add_on_fma_pipe(const f64v& a, const f64v& b) {
#if defined(BNFAST_ISA_AVX512)
    return bit_cast_<f64v>(_mm512_fmadd_pd(bit_cast_<__m512d>(a), _mm512_set1_pd(1.0),
                                           bit_cast_<__m512d>(b)));
#elif defined(BNFAST_ISA_AVX2)
    return bit_cast_<f64v>(_mm256_fmadd_pd(bit_cast_<__m256d>(a), _mm256_set1_pd(1.0),
                                           bit_cast_<__m256d>(b)));
#else
    return a + b;
#endif
}

// The lanes of v added to acc in float64: its two halves widened (exact),
// added, and added to acc (lane order fixed).
inline void add_widened(const f32v& v, f64v& acc) {
    f64v lo, hi;
    widen_halves(v, lo, hi);
    acc = add_on_fma_pipe(acc, add_on_fma_pipe(lo, hi));
}

// The float32 constants of one row's dx.
struct RowGradF32 {
    float hi, lo, rs, mean_g, mean_gx;  // RMS norm: mean_gx holds m = rstd * mean(g * x)
};

template <bool kUnit, bool kRms, class T>
inline RowGradF32 backward_row_sums_f32(const T* xr, std::int64_t x_stride, const T* gr,
                                        std::int64_t g_stride, std::int64_t D, double mean,
                                        double rs, const float* w) {
    constexpr std::int64_t L = kLanesF32;
    const std::int64_t ax = kUnit ? 1 : x_stride, ag = kUnit ? 1 : g_stride;
    // The reference both passes centre on: the stored mean as float32.
    const float mu = kRms ? 0.0f : static_cast<float>(mean);
    const f32v mu_v = splat<f32v>(mu);
    f64v s_d{}, s_g{}, s_gd{};
    const std::int64_t dv = kUnit ? D - D % L : 0;  // the vector part
    for (std::int64_t j = 0; j < dv; j += L) {
        const f32v d = kRms ? load_cv(xr + j) : load_cv(xr + j) - mu_v;
        const f32v g = load_cv(gr + j) * load_vec<f32v>(w + j);
        add_widened(d, s_d);
        add_widened(g, s_g);
        add_widened(g * d, s_gd);
    }
    double sd = sum_lanes(s_d), sg = sum_lanes(s_g), sgd = sum_lanes(s_gd);
    for (std::int64_t j = dv; j < D; ++j) {
        const float d = kRms ? to_compute(xr[j * ax]) : to_compute(xr[j * ax]) - mu;
        const float g = to_compute(gr[j * ag]) * w[j];
        sd += static_cast<double>(d);
        sg += static_cast<double>(g);
        sgd += static_cast<double>(g * d);
    }
    const double dd = static_cast<double>(D);
    RowGradF32 c{};
    c.rs = static_cast<float>(rs);
    if constexpr (kRms) {
        c.mean_gx = static_cast<float>(rs * sgd / dd);
    } else {
        const double delta = sd / dd;  // the stored mean was rounded: move to the exact one
        const double centre = static_cast<double>(mu) + delta;
        c.hi = static_cast<float>(centre);
        c.lo = static_cast<float>(centre - static_cast<double>(c.hi));
        c.mean_g = static_cast<float>(sg / dd);
        c.mean_gx = static_cast<float>(rs * (sgd - delta * sg) / dd);
    }
    return c;
}

template <bool kRms>
inline float dx_f32(float xj, float dyj, float wj, const RowGradF32& c, float& xhat) {
    xhat = kRms ? xj * c.rs : ((xj - c.hi) - c.lo) * c.rs;
    const float g = dyj * wj;
    return kRms ? c.rs * (g - xhat * c.mean_gx) : c.rs * ((g - c.mean_g) - xhat * c.mean_gx);
}

// Rows [r_begin, r_end) of float32/half data, kSubRows at a time (kUnit:
// unit-stride rows, in vectors; otherwise the same formulas one element at
// a time): their sums, then dx and the column gradients over the group (the
// rows are in L1/L2 from the sums). Columns [head, head + a multiple of L)
// go in vectors, a tile of kColChunk columns at a time and row by row within
// it, the tile's gradient terms added over the rows in float32 (acc_w,
// acc_b, in L1) and then to pw/pb in float64; the other columns take the
// same operations one at a time. No value depends on which columns take
// vectors (head follows dx's alignment). kStream: dx rows from column head
// on start on a vector boundary, and are written with streaming stores.
//
// Row by row, not the group's rows side by side: rows of a power-of-two
// pitch (4096 columns, 1024) put every row's x, dy and dx at one L1 set and
// one 4 KB offset, and each dx store held up the next row's loads (the
// backward of 128x1024 took 4.1 ns per value, of 128x4000 0.85).
template <bool kUnit, bool kRms, bool kStream, class T>
void backward_rows_f32(const T* x, const View3& xv, const T* dy, const View3& dyv, T* dx,
                       const View3& dxv, const double* mean, const double* rstd, const float* w,
                       std::int64_t head, std::int64_t r_begin, std::int64_t r_end, double* pw,
                       double* pb) {
    constexpr std::int64_t L = kLanesF32;
    const std::int64_t D = xv.B;
    const std::int64_t jv = kUnit ? min_i64(head, D) : D;  // the vector part [jv, je)
    const std::int64_t je = kUnit ? jv + (D - jv) - (D - jv) % L : D;
    const std::int64_t ax = kUnit ? 1 : xv.sB, ag = kUnit ? 1 : dyv.sB, ao = kUnit ? 1 : dxv.sB;
    alignas(64) float acc_w[kColChunk];
    alignas(64) float acc_b[kColChunk];
    RowGradF32 c[kSubRows];
    for (std::int64_t r0 = r_begin; r0 < r_end; r0 += kSubRows) {
        const std::int64_t nr = min_i64(kSubRows, r_end - r0);
        for (std::int64_t k = 0; k < nr; ++k) {
            const std::int64_t r = r0 + k;
            c[k] = backward_row_sums_f32<kUnit, kRms>(x + r * xv.sC, xv.sB, dy + r * dyv.sC,
                                                      dyv.sB, D, mean[r], rstd[r], w);
        }
        for (std::int64_t jt = jv; jt < je; jt += kColChunk) {
            const std::int64_t tn = min_i64(kColChunk, je - jt);
            for (std::int64_t i = 0; i < tn; i += L) {
                store_vec(acc_w + i, f32v{});
                store_vec(acc_b + i, f32v{});
            }
            for (std::int64_t k = 0; k < nr; ++k) {
                const std::int64_t r = r0 + k;
                const T* xr = x + r * xv.sC + jt;
                const T* gr = dy + r * dyv.sC + jt;
                T* outr = dx + r * dxv.sC + jt;
                const float* wr = w + jt;
                const f32v hi = splat<f32v>(c[k].hi), lo = splat<f32v>(c[k].lo);
                const f32v rs = splat<f32v>(c[k].rs), mg = splat<f32v>(c[k].mean_g);
                const f32v mgx = splat<f32v>(c[k].mean_gx);
                // dx of columns i..i+L-1, their terms added to the tile.
                const auto dx_vec = [&](std::int64_t i) {
                    const f32v xj = load_cv(xr + i);
                    const f32v dyj = load_cv(gr + i);
                    const f32v xhat = kRms ? xj * rs : ((xj - hi) - lo) * rs;
                    const f32v g = dyj * load_vec<f32v>(wr + i);
                    store_vec(acc_w + i, load_vec<f32v>(acc_w + i) + dyj * xhat);
                    store_vec(acc_b + i, load_vec<f32v>(acc_b + i) + dyj);
                    return kRms ? rs * (g - xhat * mgx) : rs * ((g - mg) - xhat * mgx);
                };
                std::int64_t i = 0;
                if constexpr (kPairStores<T>) {  // half dx: two vectors per narrowing
                    for (; i + 2 * L <= tn; i += 2 * L) {
                        const f32v a = dx_vec(i);
                        store_f32v2(outr + i, a, dx_vec(i + L));
                    }
                }
                for (; i < tn; i += L) {
                    if constexpr (kStream) {
                        stream_vec(outr + i, dx_vec(i));
                    } else {
                        store_cv(outr + i, dx_vec(i));
                    }
                }
            }
            for (std::int64_t i = 0; i < tn; i += L) {
                f64v w_lo, w_hi, b_lo, b_hi;
                widen_halves(load_vec<f32v>(acc_w + i), w_lo, w_hi);
                widen_halves(load_vec<f32v>(acc_b + i), b_lo, b_hi);
                double* pwj = pw + jt + i;
                double* pbj = pb + jt + i;
                store_vec(pwj, load_vec<f64v>(pwj) + w_lo);
                store_vec(pwj + kLanesF64, load_vec<f64v>(pwj + kLanesF64) + w_hi);
                store_vec(pbj, load_vec<f64v>(pbj) + b_lo);
                store_vec(pbj + kLanesF64, load_vec<f64v>(pbj + kLanesF64) + b_hi);
            }
        }
        // The columns outside the vector part: the same operations, one
        // column at a time.
        const auto one_column = [&](std::int64_t j) {
            float a_w = 0.0f, a_b = 0.0f;
            for (std::int64_t k = 0; k < nr; ++k) {
                const std::int64_t r = r0 + k;
                const float dyj = to_compute(dy[r * dyv.sC + j * ag]);
                float xhat;
                dx[r * dxv.sC + j * ao] = to_storage<T>(
                    dx_f32<kRms>(to_compute(x[r * xv.sC + j * ax]), dyj, w[j], c[k], xhat));
                a_w += dyj * xhat;
                a_b += dyj;
            }
            pw[j] += static_cast<double>(a_w);
            pb[j] += static_cast<double>(a_b);
        };
        for (std::int64_t j = 0; j < jv; ++j) one_column(j);
        for (std::int64_t j = je; j < D; ++j) one_column(j);
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
    // Streaming stores for a large float32 dx whose rows all lie alike
    // against the vector boundaries (row pitch a multiple of the vector):
    // the vectors then start at column `head`, the first boundary. (Row 0
    // had to start on one, which NumPy's large arrays, 16-byte aligned, never
    // did: dx then cost a read for ownership too.)
    const auto dx_addr = reinterpret_cast<std::uintptr_t>(dx);
    const bool stream = std::is_same_v<T, float> && unit &&
                        R * D * static_cast<std::int64_t>(sizeof(T)) >= kStreamMinBytes &&
                        dx_addr % sizeof(T) == 0 &&
                        (dxv.sC * static_cast<std::int64_t>(sizeof(T))) % kVecBytes == 0;
    const std::int64_t head =
        stream ? static_cast<std::int64_t>((kVecBytes - dx_addr % kVecBytes) % kVecBytes /
                                           sizeof(T))
               : 0;
    Scratch<double> partial_buf(2 * static_cast<std::size_t>(blocks * D));
    double* partial = partial_buf.get();
    parallel_for(nt, blocks, 1, [&](std::int64_t blk) {
        double* pw = partial + 2 * blk * D;
        double* pb = pw + D;
        for (std::int64_t j = 0; j < D; ++j) pw[j] = pb[j] = 0.0;
        const std::int64_t r0 = part_begin(blk, R, blocks), r1 = part_begin(blk + 1, R, blocks);
        if constexpr (kFloatGrad<T>) {
            if (stream && rms)
                backward_rows_f32<true, true, true>(x, xv, dy, dyv, dx, dxv, mean, rstd, w,
                                                    head, r0, r1, pw, pb);
            else if (stream)
                backward_rows_f32<true, false, true>(x, xv, dy, dyv, dx, dxv, mean, rstd, w,
                                                     head, r0, r1, pw, pb);
            else if (unit && rms)
                backward_rows_f32<true, true, false>(x, xv, dy, dyv, dx, dxv, mean, rstd, w,
                                                     head, r0, r1, pw, pb);
            else if (unit)
                backward_rows_f32<true, false, false>(x, xv, dy, dyv, dx, dxv, mean, rstd, w,
                                                      head, r0, r1, pw, pb);
            else if (rms)
                backward_rows_f32<false, true, false>(x, xv, dy, dyv, dx, dxv, mean, rstd, w,
                                                      head, r0, r1, pw, pb);
            else
                backward_rows_f32<false, false, false>(x, xv, dy, dyv, dx, dxv, mean, rstd, w,
                                                       head, r0, r1, pw, pb);
            if (stream) stream_fence();  // by the thread that streamed
            return;
        }
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
