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
template MomentsKernels<f16_t> moments_kernels<f16_t>();
template MomentsKernels<bf16_t> moments_kernels<bf16_t>();

}  // namespace bnfast::kernels::BNFAST_ISA
