// moments_kernel entry points (the algorithm is in moments_impl.hpp).
#include "kernels.hpp"
#include "moments_impl.hpp"

namespace bnfast::kernels::BNFAST_ISA {

void moments_f32_kernel(const float* x, const View3& xv, double* mean,
                        double* m2, int nthreads) {
    moments_impl(x, xv, mean, m2, nthreads);
}

void moments_f64_kernel(const double* x, const View3& xv, double* mean,
                        double* m2, int nthreads) {
    moments_impl(x, xv, mean, m2, nthreads);
}

}  // namespace bnfast::kernels::BNFAST_ISA
