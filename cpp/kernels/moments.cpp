// The moments family's kernels (the algorithm is in moments_impl.hpp, shared
// with the fused batch-norm and layer-norm kernels).
#include "moments.hpp"

#include "moments_impl.hpp"

namespace bnfast::kernels::BNFAST_ISA {

template <class T>
MomentsKernels<T> moments_kernels() {
    return {&moments_impl<T>};
}

template MomentsKernels<float> moments_kernels<float>();
template MomentsKernels<double> moments_kernels<double>();

}  // namespace bnfast::kernels::BNFAST_ISA
