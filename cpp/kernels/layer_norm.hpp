// The layer-norm family: layer norm and RMS norm over the rows of a (1, R, D)
// view (R rows of D values; weight and bias per column).
#pragma once

#include "bnfast/half.hpp"
#include "bnfast/view3.hpp"

namespace bnfast {

// Forward: per-row mean and M2 (bit-identical to moments_fn), rstd
// (formulas::row_rstd), and y = ((x - mean) * rstd) * w + b, or
// (x * rstd) * w + b for RMS norm. w, b: length D, of the compute type
// (float for half storage).
template <class T>
using layer_norm_forward_fn = void (*)(const T* x, const View3& xv, T* y, const View3& yv,
                                       const compute_t<T>* w, const compute_t<T>* b, double eps,
                                       bool rms,
                                       double* mean, double* m2, double* rstd, int nthreads);

// Backward: dx, and the column gradients dweight[j] = sum_r dy * xhat,
// dbias[j] = sum_r dy in double.
template <class T>
using layer_norm_backward_fn = void (*)(const T* x, const View3& xv, const T* dy,
                                        const View3& dyv, T* dx, const View3& dxv,
                                        const double* mean, const double* rstd,
                                        const compute_t<T>* w,
                                        bool rms, double* dweight, double* dbias, int nthreads);

template <class T>
struct LayerNormKernels {
    layer_norm_forward_fn<T> forward;
    layer_norm_backward_fn<T> backward;
};

#if defined(BNFAST_ISA)
namespace kernels::BNFAST_ISA {
template <class T>
LayerNormKernels<T> layer_norm_kernels();  // layer_norm.cpp, for float, double, f16_t, bf16_t
}
#endif

}  // namespace bnfast
