// affine_kernel: y = ((x - center_hi[c]) - center_lo[c]) * scale[c] + shift[c]
// (training: centre first, so offset data keeps its precision and a constant
// channel maps to exactly shift[c]), or y = x * scale[c] + shift[c] when no
// centre is given (eval: everything folded into one FMA per element).
// The centre is split into hi + lo parts of T so float32 data is centred on
// the double-precision mean without converting every element to double.
#include <cstdint>

#include "kernels.hpp"
#include "simd.hpp"

namespace bnfast::kernels::BNFAST_ISA {
namespace {

template <bool kCenter, class T>
inline T affine_one(T x, T hi, T lo, T scale, T shift) {
    if constexpr (kCenter) {
        return ((x - hi) - lo) * scale + shift;
    } else {
        return x * scale + shift;
    }
}

// One contiguous run with per-run parameters (rows along B).
template <bool kCenter, class T>
inline void affine_run_bcast(const T* x, T* y, std::int64_t n, T hi, T lo,
                             T scale, T shift) {
    using V = typename NativeVec<T>::type;
    constexpr int L = NativeVec<T>::lanes;
    const V hi_v = splat<V>(hi), lo_v = splat<V>(lo);
    const V scale_v = splat<V>(scale), shift_v = splat<V>(shift);
    std::int64_t i = 0;
    for (; i + L <= n; i += L) {
        const V xv = load_vec<V>(x + i);
        V yv;
        if constexpr (kCenter) {
            yv = ((xv - hi_v) - lo_v) * scale_v + shift_v;
        } else {
            yv = xv * scale_v + shift_v;
        }
        store_vec(y + i, yv);
    }
    for (; i < n; ++i) y[i] = affine_one<kCenter>(x[i], hi, lo, scale, shift);
}

// One contiguous run of channels with per-element parameters (rows along C).
template <bool kCenter, class T>
inline void affine_run_vec(const T* x, T* y, std::int64_t n, const T* hi,
                           const T* lo, const T* scale, const T* shift) {
    using V = typename NativeVec<T>::type;
    constexpr int L = NativeVec<T>::lanes;
    std::int64_t i = 0;
    for (; i + L <= n; i += L) {
        const V xv = load_vec<V>(x + i);
        const V scale_v = load_vec<V>(scale + i);
        const V shift_v = load_vec<V>(shift + i);
        V yv;
        if constexpr (kCenter) {
            yv = ((xv - load_vec<V>(hi + i)) - load_vec<V>(lo + i)) * scale_v + shift_v;
        } else {
            yv = xv * scale_v + shift_v;
        }
        store_vec(y + i, yv);
    }
    for (; i < n; ++i) {
        const T h = kCenter ? hi[i] : T(0);
        const T l = kCenter ? lo[i] : T(0);
        y[i] = affine_one<kCenter>(x[i], h, l, scale[i], shift[i]);
    }
}

template <bool kCenter, class T>
void affine_impl(const T* x, const View3& xv, T* y, const View3& yv,
                 const T* hi, const T* lo, const T* scale, const T* shift,
                 int nthreads) {
    const std::int64_t A = xv.A, C = xv.C, B = xv.B;
    const std::int64_t total = A * C * B;
    if (total == 0) return;
    const int nt = (total <= kParallelMinElements || nthreads < 1) ? 1 : nthreads;

    if (xv.sB == 1 && yv.sB == 1 && B > 1) {
        const std::int64_t rows = A * C;
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
        for (std::int64_t r = 0; r < rows; ++r) {
            const std::int64_t a = r / C, c = r % C;
            affine_run_bcast<kCenter>(x + a * xv.sA + c * xv.sC, y + a * yv.sA + c * yv.sC,
                                      B, kCenter ? hi[c] : T(0), kCenter ? lo[c] : T(0),
                                      scale[c], shift[c]);
        }
    } else if (xv.sC == 1 && yv.sC == 1 && C > 1) {
        const std::int64_t rows = A * B;
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
        for (std::int64_t r = 0; r < rows; ++r) {
            const std::int64_t a = r / B, b = r % B;
            affine_run_vec<kCenter>(x + a * xv.sA + b * xv.sB, y + a * yv.sA + b * yv.sB,
                                    C, hi, lo, scale, shift);
        }
    } else {
        // Any other strides: plain element loops.
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
        for (std::int64_t a = 0; a < A; ++a) {
            for (std::int64_t c = 0; c < C; ++c) {
                const T h = kCenter ? hi[c] : T(0);
                const T l = kCenter ? lo[c] : T(0);
                const T* xr = x + a * xv.sA + c * xv.sC;
                T* yr = y + a * yv.sA + c * yv.sC;
                for (std::int64_t b = 0; b < B; ++b)
                    yr[b * yv.sB] = affine_one<kCenter>(xr[b * xv.sB], h, l, scale[c], shift[c]);
            }
        }
    }
}

template <class T>
void affine_dispatch(const T* x, const View3& xv, T* y, const View3& yv,
                     const T* hi, const T* lo, const T* scale, const T* shift,
                     int nthreads) {
    if (hi != nullptr) {
        affine_impl<true>(x, xv, y, yv, hi, lo, scale, shift, nthreads);
    } else {
        affine_impl<false>(x, xv, y, yv, hi, lo, scale, shift, nthreads);
    }
}

}  // namespace

void affine_f32_kernel(const float* x, const View3& xv, float* y,
                       const View3& yv, const float* center_hi,
                       const float* center_lo, const float* scale,
                       const float* shift, int nthreads) {
    affine_dispatch(x, xv, y, yv, center_hi, center_lo, scale, shift, nthreads);
}

void affine_f64_kernel(const double* x, const View3& xv, double* y,
                       const View3& yv, const double* center_hi,
                       const double* center_lo, const double* scale,
                       const double* shift, int nthreads) {
    affine_dispatch(x, xv, y, yv, center_hi, center_lo, scale, shift, nthreads);
}

}  // namespace bnfast::kernels::BNFAST_ISA
