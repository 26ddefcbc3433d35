// The layer-norm family: layer norm and RMS norm over the rows of a (1, R, D)
// view (R rows of D values; weight and bias per column).
#pragma once

#include "bnfast/view3.hpp"

namespace bnfast {

// Forward: per-row mean and M2 (bit-identical to moments_fn), rstd
// (formulas::row_rstd), and y = ((x - mean) * rstd) * w + b, or
// (x * rstd) * w + b for RMS norm. w, b: length D.
template <class T>
using layer_norm_forward_fn = void (*)(const T* x, const View3& xv, T* y, const View3& yv,
                                       const T* w, const T* b, double eps, bool rms,
                                       double* mean, double* m2, double* rstd, int nthreads);

// Backward: dx, and the column gradients dweight[j] = sum_r dy * xhat,
// dbias[j] = sum_r dy in double.
template <class T>
using layer_norm_backward_fn = void (*)(const T* x, const View3& xv, const T* dy,
                                        const View3& dyv, T* dx, const View3& dxv,
                                        const double* mean, const double* rstd, const T* w,
                                        bool rms, double* dweight, double* dbias, int nthreads);

template <class T>
struct LayerNormKernels {
    layer_norm_forward_fn<T> forward;
    layer_norm_backward_fn<T> backward;
};

#if defined(BNFAST_ISA)
namespace kernels::BNFAST_ISA {
template <class T>
LayerNormKernels<T> layer_norm_kernels();  // layer_norm.cpp, for float and double
}
#endif

}  // namespace bnfast
