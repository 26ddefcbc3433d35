// The table of kernel entry points, one table per compiled instruction set.
// Pure C++: nothing here knows about Python.
#pragma once
#include <cstdint>

#include "bnfast/view3.hpp"

namespace bnfast {

enum class Isa : int { scalar = 0, avx2 = 1, avx512 = 2 };
constexpr int kIsaCount = 3;

const char* isa_name(Isa isa);

// Per-C moments over A x B: writes mean[c] and m2[c] (sum of squared
// deviations) in double precision; the count is A*B for every c.
// Results are bit-identical for every nthreads >= 1.
template <class T>
using moments_fn = void (*)(const T* x, const View3& xv, double* mean,
                            double* m2, int nthreads);

// Per-C affine map y = ((x - center_hi[p]) - center_lo[p]) * scale[p] + shift[p],
// or y = x * scale[p] + shift[p] when center_hi is null (the folded eval
// form), with parameter index p = a * param_stride_a + c (0 for per-channel
// parameters as in batch norm, C for per-(sample, channel) ones as in group
// norm). x and y have the same A, C, B but their own strides; y may equal x.
template <class T>
using affine_fn = void (*)(const T* x, const View3& xv, T* y, const View3& yv,
                           const T* center_hi, const T* center_lo,
                           const T* scale, const T* shift,
                           std::int64_t param_stride_a, int nthreads);

// Batch-norm training forward: per-C mean and M2 (as moments_fn, bit-identical
// to it) and y = ((x - mean) * invstd) * weight + bias with
// invstd = 1/sqrt(M2/(A*B) + eps); weight/bias (length C, double) may be null.
template <class T>
using batch_norm_train_fn = void (*)(const T* x, const View3& xv, T* y, const View3& yv,
                                     const double* weight, const double* bias, double eps,
                                     double* mean, double* m2, int nthreads);

// Batch-norm backward, reduction: with d = x - center[c], per-C sums of d,
// dy and dy*d over A x B in double (deterministic for any nthreads).
template <class T>
using bn_backward_reduce_fn = void (*)(const T* x, const View3& xv, const T* dy,
                                       const View3& dyv, const double* center, double* sum_d,
                                       double* sum_dy, double* sum_dy_d, int nthreads);

// Batch-norm backward, apply: dx = dy*p[c] + ((x - hi[c]) - lo[c])*q[c] + r[c].
template <class T>
using bn_backward_apply_fn = void (*)(const T* x, const View3& xv, const T* dy,
                                      const View3& dyv, T* dx, const View3& dxv, const T* hi,
                                      const T* lo, const T* p, const T* q, const T* r,
                                      int nthreads);

// Batch-norm training backward in one call: the sums of bn_backward_reduce_fn
// about center = mean, then per channel, with n = A*B,
//   delta = sum_d/n (the stored mean's rounding), sum_dy_xc = sum_dy_d - delta*sum_dy,
//   p = invstd*w, q = -(sum_dy_xc*invstd*invstd/n)*p, r = -(sum_dy/n)*p,
// and dx = dy*p + ((x - hi) - lo)*q + r with hi + lo = mean + delta (p, q,
// r, hi, lo rounded to T). Writes sum_dy[c] and sum_dy_xc[c] (for dweight
// and dbias). weight (double, length C) may be null. NCHW-like layouts
// reduce and apply each channel while its slab is in cache; the results are
// bit-identical to the two-pass form and to any nthreads.
template <class T>
using bn_backward_train_fn = void (*)(const T* x, const View3& xv, const T* dy,
                                      const View3& dyv, T* dx, const View3& dxv,
                                      const double* mean, const double* invstd,
                                      const double* weight, double* sum_dy, double* sum_dy_xc,
                                      int nthreads);
// Row normalization forward on (1, R, D): per-row mean and M2 (bit-identical
// to moments_fn), rstd, and y = ((x - mean) * rstd) * w + b, or
// (x * rstd) * w + b for RMS norm (rstd = 1/sqrt(M2/D + mean^2 + eps); 0 for a
// row with +-inf and no NaN, as PyTorch). w, b: length D.
template <class T>
using row_norm_forward_fn = void (*)(const T* x, const View3& xv, T* y, const View3& yv,
                                     const T* w, const T* b, double eps, bool rms,
                                     double* mean, double* m2, double* rstd, int nthreads);

// Row normalization backward on (1, R, D): dx, and the column gradients
// dweight[j] = sum_r dy * xhat, dbias[j] = sum_r dy in double.
template <class T>
using row_norm_backward_fn = void (*)(const T* x, const View3& xv, const T* dy,
                                      const View3& dyv, T* dx, const View3& dxv,
                                      const double* mean, const double* rstd, const T* w,
                                      bool rms, double* dweight, double* dbias, int nthreads);

struct KernelTable {
    Isa isa;
    moments_fn<float> moments_f32;
    moments_fn<double> moments_f64;
    affine_fn<float> affine_f32;
    affine_fn<double> affine_f64;
    batch_norm_train_fn<float> batch_norm_train_f32;
    batch_norm_train_fn<double> batch_norm_train_f64;
    bn_backward_reduce_fn<float> bn_backward_reduce_f32;
    bn_backward_reduce_fn<double> bn_backward_reduce_f64;
    bn_backward_apply_fn<float> bn_backward_apply_f32;
    bn_backward_apply_fn<double> bn_backward_apply_f64;
    bn_backward_train_fn<float> bn_backward_train_f32;
    bn_backward_train_fn<double> bn_backward_train_f64;
    row_norm_forward_fn<float> row_norm_forward_f32;
    row_norm_forward_fn<double> row_norm_forward_f64;
    row_norm_backward_fn<float> row_norm_backward_f32;
    row_norm_backward_fn<double> row_norm_backward_f64;
};

// One getter per compiled instruction set (defined in kernels/kernel_table.cpp,
// compiled once per ISA into bnfast::kernels::<isa>). Only call the ones
// compiled into this build.
namespace kernels {
namespace scalar { const KernelTable& kernel_table(); }
namespace avx2 { const KernelTable& kernel_table(); }
namespace avx512 { const KernelTable& kernel_table(); }
}  // namespace kernels

}  // namespace bnfast
