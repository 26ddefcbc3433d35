// Inner loops of the per-channel affine map, shared by the affine kernel and
// the fused batch-norm training kernel. Only for files under cpp/kernels/.
//
// x and y are of the storage type S; the parameters and the arithmetic are
// of its compute type T = compute_t<S> (float for the half types: each
// element is widened as it is loaded and rounded once as it is stored).
#pragma once
#include <cstdint>

#include "simd.hpp"

namespace bnfast::kernels::BNFAST_ISA {

template <bool kCenter, class T>
inline T affine_one(T x, T hi, T lo, T scale, T shift) {
    if constexpr (kCenter) {
        return ((x - hi) - lo) * scale + shift;
    } else {
        return x * scale + shift;
    }
}

// One contiguous run with per-run parameters (rows along B).
template <bool kCenter, bool kStream = false, class S, class T = compute_t<S>>
inline void affine_run_bcast(const S* x, S* y, std::int64_t n, T hi, T lo,
                             T scale, T shift) {
    using V = typename NativeVec<S>::type;
    const V hi_v = splat<V>(hi), lo_v = splat<V>(lo);
    const V scale_v = splat<V>(scale), shift_v = splat<V>(shift);
    map_run<kStream>(
        x, y, n,
        [=](const V& xv) {
            if constexpr (kCenter) {
                return ((xv - hi_v) - lo_v) * scale_v + shift_v;
            } else {
                return xv * scale_v + shift_v;
            }
        },
        [&](std::int64_t i) { return affine_one<kCenter>(to_compute(x[i]), hi, lo, scale, shift); });
}

// One contiguous run of channels with per-element parameters (rows along C).
template <bool kCenter, bool kStream = false, class S, class T = compute_t<S>>
inline void affine_run_vec(const S* x, S* y, std::int64_t n, const T* hi,
                           const T* lo, const T* scale, const T* shift) {
    using V = typename NativeVec<S>::type;
    write_run<kStream>(
        y, n,
        [&](std::int64_t i) {
            const V xv = load_cv(x + i);
            const V scale_v = load_vec<V>(scale + i);
            const V shift_v = load_vec<V>(shift + i);
            if constexpr (kCenter) {
                return ((xv - load_vec<V>(hi + i)) - load_vec<V>(lo + i)) * scale_v + shift_v;
            } else {
                return xv * scale_v + shift_v;
            }
        },
        [&](std::int64_t i) {
            const T h = kCenter ? hi[i] : T(0);
            const T l = kCenter ? lo[i] : T(0);
            return affine_one<kCenter>(to_compute(x[i]), h, l, scale[i], shift[i]);
        });
}

// affine_run_vec over whole rows back to back (see periodic_run); hi, lo,
// scale and shift repeated to C + lanes entries by fill_periodic.
template <bool kCenter, bool kStream, class S, class T = compute_t<S>>
inline void affine_run_periodic(const S* x, S* y, std::int64_t n, std::int64_t C,
                                const T* hi, const T* lo, const T* scale, const T* shift) {
    using V = typename NativeVec<S>::type;
    periodic_run<kStream>(
        y, n, C,
        [&](std::int64_t i, std::int64_t ph) {
            const V xv = load_cv(x + i);
            if constexpr (kCenter) {
                return ((xv - load_vec<V>(hi + ph)) - load_vec<V>(lo + ph)) *
                           load_vec<V>(scale + ph) +
                       load_vec<V>(shift + ph);
            } else {
                return xv * load_vec<V>(scale + ph) + load_vec<V>(shift + ph);
            }
        },
        [&](std::int64_t i, std::int64_t ph) {
            const T h = kCenter ? hi[ph] : T(0);
            const T l = kCenter ? lo[ph] : T(0);
            return affine_one<kCenter>(to_compute(x[i]), h, l, scale[ph], shift[ph]);
        });
}

}  // namespace bnfast::kernels::BNFAST_ISA
