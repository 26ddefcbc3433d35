// Bindings of the backward kernels.
#include <tuple>

#include "bnfast/dispatch.hpp"
#include "common.hpp"

namespace bnfast::bindings {

namespace {

View3 matching_view(const py::array& a, const View3& like, const char* name, const char* func) {
    const View3 v = view3_of(a, name);
    if (v.A != like.A || v.C != like.C || v.B != like.B)
        throw py::value_error(std::string(func) + ": " + name + " must have x's shape");
    return v;
}

template <class T>
std::tuple<py::array_t<double>, py::array_t<double>, py::array_t<double>> reduce_typed(
    const py::array& x, const py::array& dy, const py::array& center,
    bn_backward_reduce_fn<T> kernel) {
    const View3 xv = view3_of(x, "x");
    const View3 dyv = matching_view(dy, xv, "dy", "bn_backward_reduce");
    if (!has_dtype<T>(dy)) throw py::type_error("bn_backward_reduce: dy must have x's dtype");
    const double* ctr = channel_param<double>(center, xv.C, "center");
    py::array_t<double> sum_d(xv.C), sum_dy(xv.C), sum_dy_d(xv.C);
    double* p1 = sum_d.mutable_data();
    double* p2 = sum_dy.mutable_data();
    double* p3 = sum_dy_d.mutable_data();
    const T* xd = static_cast<const T*>(x.data());
    const T* dyd = static_cast<const T*>(dy.data());
    const int nthreads = num_threads();
    {
        py::gil_scoped_release release;
        kernel(xd, xv, dyd, dyv, ctr, p1, p2, p3, nthreads);
    }
    return {std::move(sum_d), std::move(sum_dy), std::move(sum_dy_d)};
}

template <class T>
void apply_typed(const py::array& x, const py::array& dy, py::array& dx, const py::array& hi,
                 const py::array& lo, const py::array& p, const py::array& q,
                 const py::array& r, bn_backward_apply_fn<T> kernel) {
    const View3 xv = view3_of(x, "x");
    const View3 dyv = matching_view(dy, xv, "dy", "bn_backward_apply");
    const View3 dxv = matching_view(dx, xv, "dx", "bn_backward_apply");
    if (!has_dtype<T>(dy) || !has_dtype<T>(dx))
        throw py::type_error("bn_backward_apply: dy and dx must have x's dtype");
    if (!dx.writeable()) throw py::value_error("bn_backward_apply: dx is read-only");
    const T* h = channel_param<T>(hi, xv.C, "hi");
    const T* l = channel_param<T>(lo, xv.C, "lo");
    const T* pp = channel_param<T>(p, xv.C, "p");
    const T* qq = channel_param<T>(q, xv.C, "q");
    const T* rr = channel_param<T>(r, xv.C, "r");
    const T* xd = static_cast<const T*>(x.data());
    const T* dyd = static_cast<const T*>(dy.data());
    T* dxd = static_cast<T*>(dx.mutable_data());
    const int nthreads = num_threads();
    py::gil_scoped_release release;
    kernel(xd, xv, dyd, dyv, dxd, dxv, h, l, pp, qq, rr, nthreads);
}

}  // namespace

void register_backward(py::module_& m) {
    m.def(
        "bn_backward_reduce",
        [](const py::array& x, const py::array& dy, const py::array& center) {
            const KernelTable& t = active_table();
            if (has_dtype<float>(x)) return reduce_typed<float>(x, dy, center, t.bn_backward_reduce_f32);
            if (has_dtype<double>(x)) return reduce_typed<double>(x, dy, center, t.bn_backward_reduce_f64);
            throw py::type_error("bn_backward_reduce: x must be float32 or float64");
        },
        py::arg("x"), py::arg("dy"), py::arg("center"),
        "Per-C (sum(d), sum(dy), sum(dy*d)) in float64 with d = x - center[c], over "
        "axes 0 and 2 of (A, C, B) views x and dy.");
    m.def(
        "bn_backward_apply",
        [](const py::array& x, const py::array& dy, py::array& dx, const py::array& hi,
           const py::array& lo, const py::array& p, const py::array& q, const py::array& r) {
            const KernelTable& t = active_table();
            if (has_dtype<float>(x))
                apply_typed<float>(x, dy, dx, hi, lo, p, q, r, t.bn_backward_apply_f32);
            else if (has_dtype<double>(x))
                apply_typed<double>(x, dy, dx, hi, lo, p, q, r, t.bn_backward_apply_f64);
            else
                throw py::type_error("bn_backward_apply: x must be float32 or float64");
        },
        py::arg("x"), py::arg("dy"), py::arg("dx"), py::arg("hi"), py::arg("lo"), py::arg("p"),
        py::arg("q"), py::arg("r"),
        "dx = dy * p[c] + ((x - hi[c]) - lo[c]) * q[c] + r[c] on (A, C, B) views.");
}

}  // namespace bnfast::bindings
