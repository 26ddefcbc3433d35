// Bindings of the affine family.
#include <cstdint>

#include "common.hpp"

namespace bnfast::bindings {

namespace {

template <class T>
void affine_typed(const py::array& x, py::array& y, const py::object& center_hi,
                  const py::object& center_lo, const py::array& scale, const py::array& shift,
                  std::int64_t ps) {
    const InOutViews views = in_out_views<T>(x, y, "affine");
    const View3& xv = views.x;
    const View3& yv = views.y;
    if (ps < 0) throw py::value_error("affine: param_stride_a must be >= 0");
    // Parameters are indexed a * ps + c.
    if (xv.A > 1 && ps > (INT64_MAX - xv.C) / (xv.A - 1))
        throw py::value_error("affine: param_stride_a is too large for x");
    const std::int64_t n_params = (ps == 0 || xv.A == 0) ? xv.C : (xv.A - 1) * ps + xv.C;
    using P = compute_t<T>;  // parameters: float for half-precision x
    const P* hi = nullptr;
    const P* lo = nullptr;
    if (!center_hi.is_none()) {
        hi = channel_param<P>(existing_array(center_hi, "center_hi"), n_params, "center_hi");
        lo = channel_param<P>(existing_array(center_lo, "center_lo"), n_params, "center_lo");
    }
    const P* sc = channel_param<P>(scale, n_params, "scale");
    const P* sh = channel_param<P>(shift, n_params, "shift");
    const T* xd = static_cast<const T*>(x.data());
    T* yd = static_cast<T*>(y.mutable_data());
    const auto kernel = active_kernels<T>().affine.affine;
    const int nthreads = threads_for_call();
    call_kernel(x.nbytes(), [&] { kernel(xd, xv, yd, yv, hi, lo, sc, sh, ps, nthreads); });
}

}  // namespace

void register_affine(py::module_& m) {
    m.def(
        "affine",
        [](const py::array& x, py::array& y, const py::object& center_hi,
           const py::object& center_lo, const py::array& scale, const py::array& shift,
           std::int64_t param_stride_a) {
            with_dtype(x, "affine", "x", [&](auto tag) {
                affine_typed<decltype(tag)>(x, y, center_hi, center_lo, scale, shift,
                                            param_stride_a);
            });
        },
        py::arg("x"), py::arg("y"), py::arg("center_hi"), py::arg("center_lo"),
        py::arg("scale"), py::arg("shift"), py::arg("param_stride_a") = 0,
        "y[a,c,b] = ((x - center_hi[p]) - center_lo[p]) * scale[p] + shift[p] with "
        "p = a * param_stride_a + c; y = x * scale[p] + shift[p] when center_hi is None.");
}

}  // namespace bnfast::bindings
