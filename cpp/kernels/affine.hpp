// The affine family: the per-channel (or per-(sample, channel)) affine map.
#pragma once
#include <cstdint>

#include "bnfast/view3.hpp"

namespace bnfast {

// y = ((x - center_hi[p]) - center_lo[p]) * scale[p] + shift[p], or
// y = x * scale[p] + shift[p] when center_hi is null (the folded eval form),
// with parameter index p = a * param_stride_a + c (0 for per-channel
// parameters as in batch norm, C for per-(sample, channel) ones as in group
// norm). x and y have the same A, C, B but their own strides; y may equal x.
template <class T>
using affine_fn = void (*)(const T* x, const View3& xv, T* y, const View3& yv,
                           const T* center_hi, const T* center_lo, const T* scale,
                           const T* shift, std::int64_t param_stride_a, int nthreads);

template <class T>
struct AffineKernels {
    affine_fn<T> affine;
};

#if defined(BNFAST_ISA)
namespace kernels::BNFAST_ISA {
template <class T>
AffineKernels<T> affine_kernels();  // affine.cpp, for float and double
}
#endif

}  // namespace bnfast
