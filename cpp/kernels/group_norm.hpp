// The group-norm family (group and instance norm). group_norm_forward and
// group_norm_backward_train do a whole pass in one call for every layout.
//
// Each kernel takes a batch of N samples, sample n at x + n*sN, each an
// (A, C, B) view (channels on C, the spatial axes on A and B), and does
// for all samples in one call what one call of an existing kernel does for
// one sample, so there is no per-sample loop in Python.
//
// Threads: see each kernel. The per-sample kernels give the same bits for
// every thread count, so the choice never changes a result.
#pragma once
#include <cstdint>

#include "bnfast/half.hpp"
#include "bnfast/view3.hpp"

namespace bnfast {

// N samples at stride sN (elements), each the (A, C, B) view v.
struct BatchView3 {
    std::int64_t N, sN;
    View3 v;
};

// Training backward in one call, for every layout: per (sample, group)
// the per-channel sums of d = x - mean[n*G + g], dy and dy*d (each channel's
// values summed in one fixed order, whatever the threads), then
// formulas::group_norm_backward_params, then dx = dy*p + ((((x - hi) - lo)*s)*q
// + r)*s with the parameters rounded to compute_t<T> (hi + lo the exact
// mean). mean and rstd (N*G, double) are the forward's; weight (C, double)
// may be null. Writes sum_dy[n*C + c] and sum_dy_xc[n*C + c] (dweight,
// dbias). Channels-first blocks are reduced and applied by one thread while
// they are in cache; channels-last samples likewise, one per thread. The
// results are bit-identical for every nthreads.
template <class T>
using group_norm_backward_train_fn = void (*)(const T* x, const BatchView3& xv, const T* dy,
                                              const BatchView3& dyv, T* dx, const BatchView3& dxv,
                                              std::int64_t groups, const double* mean,
                                              const double* rstd, const double* weight,
                                              double* sum_dy, double* sum_dy_xc, int nthreads);

// Forward in one call, for every layout: per (sample, group) the mean and
// M2 (moments_impl's arithmetic: a channels-first group of contiguous
// channels as one row, as the moments kernel over (N*G, per*A*B) rows;
// otherwise per-channel moments merged per group by Chan's formula in
// channel order, means relative to the group's first channel mean, the
// merged mean corrected by the double-double sum of the channels' exact
// sums count*mean), then
// rstd = formulas::invstd(m2, count, eps) (0 where m2 == 0 == eps with
// zero_var_rstd), and y = ((x - hi) - lo) * scale[c] + shift[c] with
// scale = rstd * weight[c], shift = bias[c], hi + lo = mean, all rounded to
// compute_t<T> (weight/bias: double, C, may be null). A group whose scale
// (any finite one) is not 0 or a normal number of compute_t<T> is not
// written: done[n*G + g] = 0 there (1 elsewhere), for the caller to map it
// in float64. Writes mean[n*G + g], m2[n*G + g]. Each group (channels
// first) or sample (channels last) is reduced and written by one thread
// while it is in cache when there are enough of them; the results are
// bit-identical for every nthreads. y may be x itself.
template <class T>
using group_norm_forward_fn = void (*)(const T* x, const BatchView3& xv, T* y,
                                       const BatchView3& yv, std::int64_t groups,
                                       const double* weight, const double* bias, double eps,
                                       bool zero_var_rstd, double* mean, double* m2,
                                       unsigned char* done, int nthreads);

template <class T>
struct GroupNormKernels {
    group_norm_backward_train_fn<T> backward_train;
    group_norm_forward_fn<T> forward;
};

#if defined(BNFAST_ISA)
namespace kernels::BNFAST_ISA {
template <class T>
GroupNormKernels<T> group_norm_kernels();  // group_norm.cpp, for float, double, f16_t, bf16_t
}
#endif

}  // namespace bnfast
