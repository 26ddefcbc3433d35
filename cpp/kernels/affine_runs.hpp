// Inner loops of the per-channel affine map, shared by the affine kernel and
// the fused batch-norm training kernel. Only for files under cpp/kernels/.
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

}  // namespace bnfast::kernels::BNFAST_ISA
