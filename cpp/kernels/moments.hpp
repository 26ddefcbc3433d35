// The moments family: per-channel mean and M2.
#pragma once

#include "bnfast/half.hpp"
#include "bnfast/view3.hpp"

namespace bnfast {

// Per-C moments over A x B: writes mean[c] and m2[c] (sum of squared
// deviations) in double precision; the count is A*B for every c.
// Results are bit-identical for every nthreads >= 1.
template <class T>
using moments_fn = void (*)(const T* x, const View3& xv, double* mean, double* m2, int nthreads);

template <class T>
struct MomentsKernels {
    moments_fn<T> moments;
};

#if defined(BNFAST_ISA)
namespace kernels::BNFAST_ISA {
template <class T>
MomentsKernels<T> moments_kernels();  // moments.cpp, for float, double, f16_t, bf16_t
}
#endif

}  // namespace bnfast
