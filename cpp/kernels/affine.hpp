// The affine family: the per-channel (or per-(sample, channel)) affine map.
#pragma once
#include <cstdint>

#include "bnfast/half.hpp"
#include "bnfast/view3.hpp"

namespace bnfast {

// y = ((x - center_hi[p]) - center_lo[p]) * scale[p] + shift[p], or
// y = x * scale[p] + shift[p] when center_hi is null (the folded eval form),
// with parameter index p = a * param_stride_a + c (0 for per-channel
// parameters as in batch norm, C for per-(sample, channel) ones as in group
// norm). x and y have the same A, C, B but their own strides; y may equal x.
// x and y are of the storage type S, the parameters of its compute type
// (float for the half types, bnfast/half.hpp).
template <class S>
using affine_fn = void (*)(const S* x, const View3& xv, S* y, const View3& yv,
                           const compute_t<S>* center_hi, const compute_t<S>* center_lo,
                           const compute_t<S>* scale, const compute_t<S>* shift,
                           std::int64_t param_stride_a, int nthreads);

template <class T>
struct AffineKernels {
    affine_fn<T> affine;
};

#if defined(BNFAST_ISA)
namespace kernels::BNFAST_ISA {
template <class T>
AffineKernels<T> affine_kernels();  // affine.cpp, for float, double, f16_t, bf16_t
}
#endif

}  // namespace bnfast
