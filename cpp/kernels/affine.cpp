// Element-wise normalization maps.
//
// affine_kernel: y = ((x - center_hi[p]) - center_lo[p]) * scale[p] + shift[p]
// (training: centre first, so offset data keeps its precision and a constant
// channel maps to exactly shift[p]), or y = x * scale[p] + shift[p] when no
// centre is given (eval: everything folded into one FMA per element). The
// centre is split into hi + lo parts of T so float32 data is centred on the
// double-precision mean without converting every element to double.
//
// row_affine_kernel: the same per-row normalization followed by a
// per-column weight and bias (layer norm, RMS norm).
#include <cstdint>

#include "affine_runs.hpp"
#include "kernels.hpp"
#include "simd.hpp"

namespace bnfast::kernels::BNFAST_ISA {
namespace {


template <bool kCenter, bool kStream, class T>
void affine_impl(const T* x, const View3& xv, T* y, const View3& yv,
                 const T* hi, const T* lo, const T* scale, const T* shift,
                 std::int64_t ps, int nt, const T* periodic) {
    const std::int64_t A = xv.A, C = xv.C, B = xv.B;
    parallel_region(nt, [&] {
        if (periodic != nullptr) {  // see affine_run_periodic
            const std::int64_t ext = C + NativeVec<T>::lanes;
            for_each_periodic_block(A, C, [&](std::int64_t r0, std::int64_t nr) {
                affine_run_periodic<kCenter, kStream>(
                    x + r0 * C, y + r0 * C, nr * C, C, periodic, periodic + ext,
                    periodic + 2 * ext, periodic + 3 * ext);
            });
        } else if (xv.sB == 1 && yv.sB == 1 && B > 1) {
            const std::int64_t rows = A * C;
#pragma omp for schedule(static) nowait
            for (std::int64_t r = 0; r < rows; ++r) {
                const std::int64_t a = r / C, c = r % C;
                const std::int64_t p = a * ps + c;
                affine_run_bcast<kCenter, kStream>(
                    x + a * xv.sA + c * xv.sC, y + a * yv.sA + c * yv.sC, B,
                    kCenter ? hi[p] : T(0), kCenter ? lo[p] : T(0), scale[p], shift[p]);
            }
        } else if (xv.sC == 1 && yv.sC == 1 && C > 1) {
            const std::int64_t rows = A * B;
#pragma omp for schedule(static) nowait
            for (std::int64_t r = 0; r < rows; ++r) {
                // (N, C) data has B == 1: skip two 64-bit divisions per short row.
                const std::int64_t a = B == 1 ? r : r / B, b = B == 1 ? 0 : r % B;
                const std::int64_t p0 = a * ps;
                affine_run_vec<kCenter, kStream>(
                    x + a * xv.sA + b * xv.sB, y + a * yv.sA + b * yv.sB, C,
                    kCenter ? hi + p0 : nullptr, kCenter ? lo + p0 : nullptr, scale + p0,
                    shift + p0);
            }
        } else {
            // Any other strides: plain element loops.
#pragma omp for schedule(static) nowait
            for (std::int64_t a = 0; a < A; ++a) {
                for (std::int64_t c = 0; c < C; ++c) {
                    const std::int64_t p = a * ps + c;
                    const T h = kCenter ? hi[p] : T(0);
                    const T l = kCenter ? lo[p] : T(0);
                    const T* xr = x + a * xv.sA + c * xv.sC;
                    T* yr = y + a * yv.sA + c * yv.sC;
                    for (std::int64_t b = 0; b < B; ++b)
                        yr[b * yv.sB] =
                            affine_one<kCenter>(xr[b * xv.sB], h, l, scale[p], shift[p]);
                }
            }
        }
        if constexpr (kStream) stream_fence();
    });
}

template <class T>
void affine_dispatch(const T* x, const View3& xv, T* y, const View3& yv,
                     const T* hi, const T* lo, const T* scale, const T* shift,
                     std::int64_t ps, int nthreads) {
    const std::int64_t total = xv.A * xv.C * xv.B;
    if (total == 0) return;
    const int nt = (total <= kParallelMinElements || nthreads < 1) ? 1 : nthreads;
    const bool stream = total * static_cast<std::int64_t>(sizeof(T)) >= kStreamMinBytes;
    // Whole (A, C) rows back to back, per-channel parameters, short rows:
    // the periodic path (parameters repeated to C + lanes entries each).
    const std::int64_t C = xv.C;
    const bool is_periodic = xv.B == 1 && ps == 0 && C > 1 && C < 4096 && xv.sC == 1 &&
                             yv.sC == 1 && xv.sA == C && yv.sA == C;
    const std::int64_t ext = C + NativeVec<T>::lanes;
    Scratch<T> periodic_buf(is_periodic ? 4 * static_cast<std::size_t>(ext) : 0);
    T* periodic = is_periodic ? periodic_buf.get() : nullptr;
    if (is_periodic) {
        if (hi != nullptr) {
            fill_periodic(hi, C, periodic);
            fill_periodic(lo, C, periodic + ext);
        }
        fill_periodic(scale, C, periodic + 2 * ext);
        fill_periodic(shift, C, periodic + 3 * ext);
    }
    if (hi != nullptr) {
        if (stream) affine_impl<true, true>(x, xv, y, yv, hi, lo, scale, shift, ps, nt, periodic);
        else affine_impl<true, false>(x, xv, y, yv, hi, lo, scale, shift, ps, nt, periodic);
    } else {
        if (stream) affine_impl<false, true>(x, xv, y, yv, hi, lo, scale, shift, ps, nt, periodic);
        else affine_impl<false, false>(x, xv, y, yv, hi, lo, scale, shift, ps, nt, periodic);
    }
}

// ---------------------------------------------------------------------------
// Row normalization + per-column affine.

template <bool kCenter, class T>
inline T row_affine_one(T x, T hi, T lo, T scale, T w, T b) {
    const T t = kCenter ? ((x - hi) - lo) * scale : x * scale;
    return t * w + b;
}

template <bool kCenter, bool kStream, class T>
inline void row_affine_run(const T* x, T* y, std::int64_t n, T hi, T lo, T scale,
                           const T* w, const T* b) {
    using V = typename NativeVec<T>::type;
    const V hi_v = splat<V>(hi), lo_v = splat<V>(lo), scale_v = splat<V>(scale);
    write_run<kStream>(
        y, n,
        [&](std::int64_t i) {
            const V xv = load_vec<V>(x + i);
            V t;
            if constexpr (kCenter) {
                t = ((xv - hi_v) - lo_v) * scale_v;
            } else {
                t = xv * scale_v;
            }
            return t * load_vec<V>(w + i) + load_vec<V>(b + i);
        },
        [&](std::int64_t i) { return row_affine_one<kCenter>(x[i], hi, lo, scale, w[i], b[i]); });
}

template <bool kCenter, bool kStream, class T>
void row_affine_impl(const T* x, const View3& xv, T* y, const View3& yv,
                     const T* hi, const T* lo, const T* scale, const T* w,
                     const T* b, int nt) {
    const std::int64_t A = xv.A, C = xv.C, B = xv.B;
    const std::int64_t rows = A * C;
    const bool contiguous = xv.sB == 1 && yv.sB == 1;
    parallel_region(nt, [&] {
#pragma omp for schedule(static) nowait
        for (std::int64_t r = 0; r < rows; ++r) {
            const std::int64_t a = r / C, c = r % C;
            const T* xr = x + a * xv.sA + c * xv.sC;
            T* yr = y + a * yv.sA + c * yv.sC;
            const T h = kCenter ? hi[c] : T(0);
            const T l = kCenter ? lo[c] : T(0);
            if (contiguous) {
                row_affine_run<kCenter, kStream>(xr, yr, B, h, l, scale[c], w, b);
            } else {
                for (std::int64_t j = 0; j < B; ++j)
                    yr[j * yv.sB] =
                        row_affine_one<kCenter>(xr[j * xv.sB], h, l, scale[c], w[j], b[j]);
            }
        }
        if constexpr (kStream) stream_fence();
    });
}

template <class T>
void row_affine_dispatch(const T* x, const View3& xv, T* y, const View3& yv,
                         const T* hi, const T* lo, const T* scale, const T* w,
                         const T* b, int nthreads) {
    const std::int64_t total = xv.A * xv.C * xv.B;
    if (total == 0) return;
    const int nt = (total <= kParallelMinElements || nthreads < 1) ? 1 : nthreads;
    const bool stream = total * static_cast<std::int64_t>(sizeof(T)) >= kStreamMinBytes;
    if (hi != nullptr) {
        if (stream) row_affine_impl<true, true>(x, xv, y, yv, hi, lo, scale, w, b, nt);
        else row_affine_impl<true, false>(x, xv, y, yv, hi, lo, scale, w, b, nt);
    } else {
        if (stream) row_affine_impl<false, true>(x, xv, y, yv, hi, lo, scale, w, b, nt);
        else row_affine_impl<false, false>(x, xv, y, yv, hi, lo, scale, w, b, nt);
    }
}

}  // namespace

void affine_f32_kernel(const float* x, const View3& xv, float* y,
                       const View3& yv, const float* center_hi,
                       const float* center_lo, const float* scale,
                       const float* shift, std::int64_t param_stride_a,
                       int nthreads) {
    affine_dispatch(x, xv, y, yv, center_hi, center_lo, scale, shift, param_stride_a, nthreads);
}

void affine_f64_kernel(const double* x, const View3& xv, double* y,
                       const View3& yv, const double* center_hi,
                       const double* center_lo, const double* scale,
                       const double* shift, std::int64_t param_stride_a,
                       int nthreads) {
    affine_dispatch(x, xv, y, yv, center_hi, center_lo, scale, shift, param_stride_a, nthreads);
}

void row_affine_f32_kernel(const float* x, const View3& xv, float* y,
                           const View3& yv, const float* center_hi,
                           const float* center_lo, const float* scale,
                           const float* weight, const float* bias, int nthreads) {
    row_affine_dispatch(x, xv, y, yv, center_hi, center_lo, scale, weight, bias, nthreads);
}

void row_affine_f64_kernel(const double* x, const View3& xv, double* y,
                           const View3& yv, const double* center_hi,
                           const double* center_lo, const double* scale,
                           const double* weight, const double* bias, int nthreads) {
    row_affine_dispatch(x, xv, y, yv, center_hi, center_lo, scale, weight, bias, nthreads);
}

}  // namespace bnfast::kernels::BNFAST_ISA
