// The kernel table of one ISA (this file is compiled once per ISA): the
// families' kernels for float, double, f16_t and bf16_t.
#include "bnfast/kernel_table.hpp"

namespace bnfast::kernels::BNFAST_ISA {
namespace {

template <class T>
FamilyKernels<T> family_kernels() {
    return {moments_kernels<T>(), affine_kernels<T>(), batch_norm_kernels<T>(),
            layer_norm_kernels<T>(), group_norm_kernels<T>()};
}

}  // namespace

const KernelTable& kernel_table() {
    static const KernelTable table{Isa::BNFAST_ISA, family_kernels<float>(),
                                   family_kernels<double>(), family_kernels<f16_t>(),
                                   family_kernels<bf16_t>(), memory_floor_kernels()};
    return table;
}

}  // namespace bnfast::kernels::BNFAST_ISA
