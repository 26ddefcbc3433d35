// Element-wise normalization maps.
//
// affine_kernel: y = ((x - center_hi[p]) - center_lo[p]) * scale[p] + shift[p]
// (training: centre first, so offset data keeps its precision and a constant
// channel maps to exactly shift[p]), or y = x * scale[p] + shift[p] when no
// centre is given (eval: everything folded into one FMA per element). The
// centre is split into hi + lo parts of T so float32 data is centred on the
// double-precision mean without converting every element to double.
#include <cstdint>

#include "affine.hpp"

#include "affine_runs.hpp"
#include "simd.hpp"

namespace bnfast::kernels::BNFAST_ISA {
namespace {

template <bool kCenter, bool kStream, class S, class T = compute_t<S>>
void affine_impl(const S* x, const View3& xv, S* y, const View3& yv,
                 const T* hi, const T* lo, const T* scale, const T* shift,
                 std::int64_t ps, int nt, const T* periodic) {
    const std::int64_t A = xv.A, C = xv.C, B = xv.B;
    if (periodic != nullptr) {  // see affine_run_periodic
        const std::int64_t ext = C + NativeVec<T>::lanes;
        parallel_periodic_blocks(nt, A, C, [&](std::int64_t r0, std::int64_t nr) {
            affine_run_periodic<kCenter, kStream>(x + r0 * C, y + r0 * C, nr * C, C, periodic,
                                                  periodic + ext, periodic + 2 * ext,
                                                  periodic + 3 * ext);
        });
    } else if (xv.sB == 1 && yv.sB == 1 && B > 1) {
        parallel_rows(nt, A * C, B, [&](std::int64_t r, std::int64_t j0, std::int64_t len) {
            const std::int64_t a = r / C, c = r % C;
            const std::int64_t p = a * ps + c;
            affine_run_bcast<kCenter, kStream>(
                x + a * xv.sA + c * xv.sC + j0, y + a * yv.sA + c * yv.sC + j0, len,
                kCenter ? hi[p] : T(0), kCenter ? lo[p] : T(0), scale[p], shift[p]);
        });
    } else if (xv.sC == 1 && yv.sC == 1 && C > 1) {
        parallel_rows(nt, A * B, C, [&](std::int64_t r, std::int64_t j0, std::int64_t len) {
            // (N, C) data has B == 1: skip two 64-bit divisions per short row.
            const std::int64_t a = B == 1 ? r : r / B, b = B == 1 ? 0 : r % B;
            const std::int64_t p0 = a * ps + j0;
            affine_run_vec<kCenter, kStream>(
                x + a * xv.sA + b * xv.sB + j0, y + a * yv.sA + b * yv.sB + j0, len,
                kCenter ? hi + p0 : nullptr, kCenter ? lo + p0 : nullptr, scale + p0,
                shift + p0);
        });
    } else {
        // Any other strides: plain element loops, a (a, c) row at a time.
        parallel_rows(nt, A * C, B, [&](std::int64_t r, std::int64_t j0, std::int64_t len) {
            const std::int64_t a = r / C, c = r % C;
            const std::int64_t p = a * ps + c;
            const T h = kCenter ? hi[p] : T(0);
            const T l = kCenter ? lo[p] : T(0);
            const S* xr = x + a * xv.sA + c * xv.sC;
            S* yr = y + a * yv.sA + c * yv.sC;
            for (std::int64_t b = j0; b < j0 + len; ++b)
                yr[b * yv.sB] = to_storage<S>(
                    affine_one<kCenter>(to_compute(xr[b * xv.sB]), h, l, scale[p], shift[p]));
        });
    }
}

template <class S>
void affine(const S* x, const View3& xv, S* y, const View3& yv, const compute_t<S>* hi,
            const compute_t<S>* lo, const compute_t<S>* scale, const compute_t<S>* shift,
            std::int64_t ps, int nthreads) {
    using T = compute_t<S>;
    const std::int64_t total = xv.A * xv.C * xv.B;
    if (total == 0) return;
    const int nt = (total <= kParallelMinElements || nthreads < 1) ? 1 : nthreads;
    const bool stream = total * static_cast<std::int64_t>(sizeof(S)) >= kStreamMinBytes;
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

}  // namespace

template <class T>
AffineKernels<T> affine_kernels() {
    return {&affine<T>};
}

template AffineKernels<float> affine_kernels<float>();
template AffineKernels<double> affine_kernels<double>();
template AffineKernels<f16_t> affine_kernels<f16_t>();
template AffineKernels<bf16_t> affine_kernels<bf16_t>();

}  // namespace bnfast::kernels::BNFAST_ISA
