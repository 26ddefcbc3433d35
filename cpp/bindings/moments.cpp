// Bindings of the moments family.
#include <utility>

#include "common.hpp"

namespace bnfast::bindings {

void register_moments(py::module_& m) {
    m.def(
        "moments",
        [](const py::array& x) {
            return with_dtype(x, "moments", "x", [&](auto tag) {
                using T = decltype(tag);
                const View3 v = view3_of(x, "x");
                py::array_t<double> mean(v.C), m2(v.C);
                const T* xd = static_cast<const T*>(x.data());
                double* mean_ptr = mean.mutable_data();
                double* m2_ptr = m2.mutable_data();
                const auto kernel = active_kernels<T>().moments.moments;
                const int nthreads = threads_for_call();
                call_kernel(x.nbytes(),
                            [&] { kernel(xd, v, mean_ptr, m2_ptr, nthreads); });
                return std::make_pair(std::move(mean), std::move(m2));
            });
        },
        py::arg("x"), "Per-C (mean, m2) in float64 over axes 0 and 2 of a 3-D (A, C, B) view.");
}

}  // namespace bnfast::bindings
