// Entry points of one ISA's kernels (internal to cpp/kernels/).
#pragma once
#include "bnfast/kernel_table.hpp"

#if !defined(BNFAST_ISA)
#error "kernels.hpp is only for kernel sources compiled once per ISA"
#endif

namespace bnfast::kernels::BNFAST_ISA {

void moments_f32_kernel(const float* x, const View3& xv, double* mean,
                        double* m2, int nthreads);
void moments_f64_kernel(const double* x, const View3& xv, double* mean,
                        double* m2, int nthreads);
void affine_f32_kernel(const float* x, const View3& xv, float* y,
                       const View3& yv, const float* center_hi,
                       const float* center_lo, const float* scale,
                       const float* shift, std::int64_t param_stride_a,
                       int nthreads);
void affine_f64_kernel(const double* x, const View3& xv, double* y,
                       const View3& yv, const double* center_hi,
                       const double* center_lo, const double* scale,
                       const double* shift, std::int64_t param_stride_a,
                       int nthreads);
void row_affine_f32_kernel(const float* x, const View3& xv, float* y,
                           const View3& yv, const float* center_hi,
                           const float* center_lo, const float* scale,
                           const float* weight, const float* bias, int nthreads);
void row_affine_f64_kernel(const double* x, const View3& xv, double* y,
                           const View3& yv, const double* center_hi,
                           const double* center_lo, const double* scale,
                           const double* weight, const double* bias, int nthreads);

void batch_norm_train_f32_kernel(const float* x, const View3& xv, float* y, const View3& yv,
                                 const double* weight, const double* bias, double eps,
                                 double* mean, double* m2, int nthreads);
void batch_norm_train_f64_kernel(const double* x, const View3& xv, double* y, const View3& yv,
                                 const double* weight, const double* bias, double eps,
                                 double* mean, double* m2, int nthreads);

void bn_backward_reduce_f32_kernel(const float* x, const View3& xv, const float* dy,
                                   const View3& dyv, const double* center, double* sum_d,
                                   double* sum_dy, double* sum_dy_d, int nthreads);
void bn_backward_reduce_f64_kernel(const double* x, const View3& xv, const double* dy,
                                   const View3& dyv, const double* center, double* sum_d,
                                   double* sum_dy, double* sum_dy_d, int nthreads);
void bn_backward_apply_f32_kernel(const float* x, const View3& xv, const float* dy,
                                  const View3& dyv, float* dx, const View3& dxv,
                                  const float* hi, const float* lo, const float* p,
                                  const float* q, const float* r, int nthreads);
void bn_backward_apply_f64_kernel(const double* x, const View3& xv, const double* dy,
                                  const View3& dyv, double* dx, const View3& dxv,
                                  const double* hi, const double* lo, const double* p,
                                  const double* q, const double* r, int nthreads);
void bn_backward_train_f32_kernel(const float* x, const View3& xv, const float* dy,
                                  const View3& dyv, float* dx, const View3& dxv,
                                  const double* mean, const double* invstd, const double* weight,
                                  double* sum_dy, double* sum_dy_xc, int nthreads);
void bn_backward_train_f64_kernel(const double* x, const View3& xv, const double* dy,
                                  const View3& dyv, double* dx, const View3& dxv,
                                  const double* mean, const double* invstd, const double* weight,
                                  double* sum_dy, double* sum_dy_xc, int nthreads);

void row_norm_forward_f32_kernel(const float* x, const View3& xv, float* y, const View3& yv,
                                 const float* w, const float* b, double eps, bool rms,
                                 double* mean, double* m2, double* rstd, int nthreads);
void row_norm_forward_f64_kernel(const double* x, const View3& xv, double* y, const View3& yv,
                                 const double* w, const double* b, double eps, bool rms,
                                 double* mean, double* m2, double* rstd, int nthreads);
void row_norm_backward_f32_kernel(const float* x, const View3& xv, const float* dy,
                                  const View3& dyv, float* dx, const View3& dxv,
                                  const double* mean, const double* rstd, const float* w,
                                  bool rms, double* dweight, double* dbias, int nthreads);
void row_norm_backward_f64_kernel(const double* x, const View3& xv, const double* dy,
                                  const View3& dyv, double* dx, const View3& dxv,
                                  const double* mean, const double* rstd, const double* w,
                                  bool rms, double* dweight, double* dbias, int nthreads);

// Work at or below this many elements runs on one thread: a parallel region
// costs more than it saves there. Results do not depend on it.
constexpr std::int64_t kParallelMinElements = std::int64_t(1) << 15;

}  // namespace bnfast::kernels::BNFAST_ISA
