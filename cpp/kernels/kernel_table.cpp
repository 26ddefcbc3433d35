// The kernel table of one ISA (this file is compiled once per ISA).
#include "kernels.hpp"

namespace bnfast::kernels::BNFAST_ISA {

const KernelTable& kernel_table() {
    static const KernelTable table{
        Isa::BNFAST_ISA,
        &moments_f32_kernel,
        &moments_f64_kernel,
        &affine_f32_kernel,
        &affine_f64_kernel,
        &batch_norm_train_f32_kernel,
        &batch_norm_train_f64_kernel,
        &bn_backward_reduce_f32_kernel,
        &bn_backward_reduce_f64_kernel,
        &bn_backward_apply_f32_kernel,
        &bn_backward_apply_f64_kernel,
        &bn_backward_train_f32_kernel,
        &bn_backward_train_f64_kernel,
        &row_norm_forward_f32_kernel,
        &row_norm_forward_f64_kernel,
        &row_norm_backward_f32_kernel,
        &row_norm_backward_f64_kernel,
    };
    return table;
}

}  // namespace bnfast::kernels::BNFAST_ISA
