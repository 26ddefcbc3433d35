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

template <bool kCenter, class T>
void affine_impl(const T* x, const View3& xv, T* y, const View3& yv,
                 const T* hi, const T* lo, const T* scale, const T* shift,
                 std::int64_t ps, int nthreads) {
    const std::int64_t A = xv.A, C = xv.C, B = xv.B;
    const std::int64_t total = A * C * B;
    if (total == 0) return;
    const int nt = (total <= kParallelMinElements || nthreads < 1) ? 1 : nthreads;

    if (xv.sB == 1 && yv.sB == 1 && B > 1) {
        const std::int64_t rows = A * C;
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
        for (std::int64_t r = 0; r < rows; ++r) {
            const std::int64_t a = r / C, c = r % C;
            const std::int64_t p = a * ps + c;
            affine_run_bcast<kCenter>(x + a * xv.sA + c * xv.sC, y + a * yv.sA + c * yv.sC,
                                      B, kCenter ? hi[p] : T(0), kCenter ? lo[p] : T(0),
                                      scale[p], shift[p]);
        }
    } else if (xv.sC == 1 && yv.sC == 1 && C > 1) {
        const std::int64_t rows = A * B;
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
        for (std::int64_t r = 0; r < rows; ++r) {
            const std::int64_t a = r / B, b = r % B;
            const std::int64_t p0 = a * ps;
            affine_run_vec<kCenter>(x + a * xv.sA + b * xv.sB, y + a * yv.sA + b * yv.sB, C,
                                    kCenter ? hi + p0 : nullptr, kCenter ? lo + p0 : nullptr,
                                    scale + p0, shift + p0);
        }
    } else {
        // Any other strides: plain element loops.
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
        for (std::int64_t a = 0; a < A; ++a) {
            for (std::int64_t c = 0; c < C; ++c) {
                const std::int64_t p = a * ps + c;
                const T h = kCenter ? hi[p] : T(0);
                const T l = kCenter ? lo[p] : T(0);
                const T* xr = x + a * xv.sA + c * xv.sC;
                T* yr = y + a * yv.sA + c * yv.sC;
                for (std::int64_t b = 0; b < B; ++b)
                    yr[b * yv.sB] = affine_one<kCenter>(xr[b * xv.sB], h, l, scale[p], shift[p]);
            }
        }
    }
}

template <class T>
void affine_dispatch(const T* x, const View3& xv, T* y, const View3& yv,
                     const T* hi, const T* lo, const T* scale, const T* shift,
                     std::int64_t ps, int nthreads) {
    if (hi != nullptr) {
        affine_impl<true>(x, xv, y, yv, hi, lo, scale, shift, ps, nthreads);
    } else {
        affine_impl<false>(x, xv, y, yv, hi, lo, scale, shift, ps, nthreads);
    }
}

// ---------------------------------------------------------------------------
// Row normalization + per-column affine.

template <bool kCenter, class T>
inline T row_affine_one(T x, T hi, T lo, T scale, T w, T b) {
    const T t = kCenter ? ((x - hi) - lo) * scale : x * scale;
    return t * w + b;
}

template <bool kCenter, class T>
inline void row_affine_run(const T* x, T* y, std::int64_t n, T hi, T lo, T scale,
                           const T* w, const T* b) {
    using V = typename NativeVec<T>::type;
    constexpr int L = NativeVec<T>::lanes;
    const V hi_v = splat<V>(hi), lo_v = splat<V>(lo), scale_v = splat<V>(scale);
    std::int64_t i = 0;
    for (; i + L <= n; i += L) {
        const V xv = load_vec<V>(x + i);
        V t;
        if constexpr (kCenter) {
            t = ((xv - hi_v) - lo_v) * scale_v;
        } else {
            t = xv * scale_v;
        }
        store_vec(y + i, t * load_vec<V>(w + i) + load_vec<V>(b + i));
    }
    for (; i < n; ++i) y[i] = row_affine_one<kCenter>(x[i], hi, lo, scale, w[i], b[i]);
}

template <bool kCenter, class T>
void row_affine_impl(const T* x, const View3& xv, T* y, const View3& yv,
                     const T* hi, const T* lo, const T* scale, const T* w,
                     const T* b, int nthreads) {
    const std::int64_t A = xv.A, C = xv.C, B = xv.B;
    const std::int64_t total = A * C * B;
    if (total == 0) return;
    const int nt = (total <= kParallelMinElements || nthreads < 1) ? 1 : nthreads;
    const std::int64_t rows = A * C;
    const bool contiguous = xv.sB == 1 && yv.sB == 1;
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
    for (std::int64_t r = 0; r < rows; ++r) {
        const std::int64_t a = r / C, c = r % C;
        const T* xr = x + a * xv.sA + c * xv.sC;
        T* yr = y + a * yv.sA + c * yv.sC;
        const T h = kCenter ? hi[c] : T(0);
        const T l = kCenter ? lo[c] : T(0);
        if (contiguous) {
            row_affine_run<kCenter>(xr, yr, B, h, l, scale[c], w, b);
        } else {
            for (std::int64_t j = 0; j < B; ++j)
                yr[j * yv.sB] = row_affine_one<kCenter>(xr[j * xv.sB], h, l, scale[c], w[j], b[j]);
        }
    }
}

template <class T>
void row_affine_dispatch(const T* x, const View3& xv, T* y, const View3& yv,
                         const T* hi, const T* lo, const T* scale, const T* w,
                         const T* b, int nthreads) {
    if (hi != nullptr) {
        row_affine_impl<true>(x, xv, y, yv, hi, lo, scale, w, b, nthreads);
    } else {
        row_affine_impl<false>(x, xv, y, yv, hi, lo, scale, w, b, nthreads);
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
