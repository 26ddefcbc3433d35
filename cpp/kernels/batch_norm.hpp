// The batch-norm family: the training forward and the backward kernels
// (group and instance norm run on the backward reduce/apply pair too).
#pragma once

#include "bnfast/half.hpp"
#include "bnfast/view3.hpp"

namespace bnfast {

// Training forward: per-C mean and M2 (as moments_fn, bit-identical to it)
// and y = ((x - mean) * invstd) * weight + bias with
// invstd = 1/sqrt(M2/(A*B) + eps); weight/bias (length C, double) may be null.
template <class T>
using batch_norm_train_fn = void (*)(const T* x, const View3& xv, T* y, const View3& yv,
                                     const double* weight, const double* bias, double eps,
                                     double* mean, double* m2, int nthreads);

// Backward, reduction: with d = x - center[c], per-C sums of d, dy and dy*d
// over A x B in double (deterministic for any nthreads).
template <class T>
using batch_norm_backward_reduce_fn = void (*)(const T* x, const View3& xv, const T* dy,
                                               const View3& dyv, const double* center,
                                               double* sum_d, double* sum_dy, double* sum_dy_d,
                                               int nthreads);

// Backward, apply: dx = dy*p[c] + ((((x - hi[c]) - lo[c])*s[c])*q[c] + r[c])*s[c];
// the parameters of the compute type (float for half storage).
template <class T>
using batch_norm_backward_apply_fn = void (*)(const T* x, const View3& xv, const T* dy,
                                              const View3& dyv, T* dx, const View3& dxv,
                                              const compute_t<T>* hi, const compute_t<T>* lo,
                                              const compute_t<T>* s, const compute_t<T>* p,
                                              const compute_t<T>* q, const compute_t<T>* r,
                                              int nthreads);

// Training backward in one call: the sums of the reduce about center = mean,
// then per channel formulas::batch_norm_backward_params (s, p, q, r and the exact
// mean, split into hi + lo of T) and the apply. Writes sum_dy[c] and
// sum_dy_xc[c] (for dweight and dbias). weight (double, length C) may be
// null. NCHW-like layouts reduce and apply each channel while its slab is in
// cache; the results are bit-identical to the two-pass form and to any
// nthreads.
template <class T>
using batch_norm_backward_train_fn = void (*)(const T* x, const View3& xv, const T* dy,
                                              const View3& dyv, T* dx, const View3& dxv,
                                              const double* mean, const double* invstd,
                                              const double* weight, double* sum_dy,
                                              double* sum_dy_xc, int nthreads);

template <class T>
struct BatchNormKernels {
    batch_norm_train_fn<T> train;
    batch_norm_backward_reduce_fn<T> backward_reduce;
    batch_norm_backward_apply_fn<T> backward_apply;
    batch_norm_backward_train_fn<T> backward_train;
};

#if defined(BNFAST_ISA)
namespace kernels::BNFAST_ISA {
template <class T>
BatchNormKernels<T> batch_norm_kernels();  // batch_norm.cpp, for float, double, f16_t, bf16_t
// Fills the backward_* entries (batch_norm_backward.cpp).
template <class T>
void add_batch_norm_backward_kernels(BatchNormKernels<T>& k);
}  // namespace kernels::BNFAST_ISA
#endif

}  // namespace bnfast
