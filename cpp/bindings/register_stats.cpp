// Bindings of the statistics kernels.
#include <utility>

#include "bnfast/dispatch.hpp"
#include "common.hpp"

namespace bnfast::bindings {

namespace {

template <class T>
std::pair<py::array_t<double>, py::array_t<double>> moments_typed(
    const py::array& x, moments_fn<T> kernel) {
    const View3 v = view3_of(x, "x");
    py::array_t<double> mean(v.C), m2(v.C);
    const T* data = static_cast<const T*>(x.data());
    double* mean_ptr = mean.mutable_data();
    double* m2_ptr = m2.mutable_data();
    const int nthreads = num_threads();
    {
        py::gil_scoped_release release;
        kernel(data, v, mean_ptr, m2_ptr, nthreads);
    }
    return {std::move(mean), std::move(m2)};
}

}  // namespace

void register_stats(py::module_& m) {
    m.def(
        "moments",
        [](const py::array& x) {
            const KernelTable& t = active_table();
            if (has_dtype<float>(x)) return moments_typed<float>(x, t.moments_f32);
            if (has_dtype<double>(x)) return moments_typed<double>(x, t.moments_f64);
            throw py::type_error("moments: x must be float32 or float64");
        },
        py::arg("x"),
        "Per-C (mean, m2) in float64 over axes 0 and 2 of a 3-D (A, C, B) view.");
}

}  // namespace bnfast::bindings
