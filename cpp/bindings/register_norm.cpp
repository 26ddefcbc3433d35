// Bindings of the normalization kernels.
#include "bnfast/dispatch.hpp"
#include "common.hpp"

namespace bnfast::bindings {

namespace {

template <class T>
void affine_typed(const py::array& x, py::array& y, const py::object& center_hi,
                  const py::object& center_lo, const py::array& scale,
                  const py::array& shift, affine_fn<T> kernel) {
    const View3 xv = view3_of(x, "x");
    const View3 yv = view3_of(y, "y");
    if (!has_dtype<T>(y)) throw py::type_error("affine: y must have x's dtype");
    if (xv.A != yv.A || xv.C != yv.C || xv.B != yv.B)
        throw py::value_error("affine: x and y must have the same shape");
    if (!y.writeable()) throw py::value_error("affine: y is read-only");
    const T* hi = nullptr;
    const T* lo = nullptr;
    if (!center_hi.is_none()) {
        hi = channel_param<T>(py::cast<py::array>(center_hi), xv.C, "center_hi");
        lo = channel_param<T>(py::cast<py::array>(center_lo), xv.C, "center_lo");
    }
    const T* sc = channel_param<T>(scale, xv.C, "scale");
    const T* sh = channel_param<T>(shift, xv.C, "shift");
    const T* xd = static_cast<const T*>(x.data());
    T* yd = static_cast<T*>(y.mutable_data());
    const int nthreads = num_threads();
    py::gil_scoped_release release;
    kernel(xd, xv, yd, yv, hi, lo, sc, sh, nthreads);
}

}  // namespace

void register_norm(py::module_& m) {
    m.def(
        "affine",
        [](const py::array& x, py::array& y, const py::object& center_hi,
           const py::object& center_lo, const py::array& scale, const py::array& shift) {
            const KernelTable& t = active_table();
            if (has_dtype<float>(x))
                affine_typed<float>(x, y, center_hi, center_lo, scale, shift, t.affine_f32);
            else if (has_dtype<double>(x))
                affine_typed<double>(x, y, center_hi, center_lo, scale, shift, t.affine_f64);
            else
                throw py::type_error("affine: x must be float32 or float64");
        },
        py::arg("x"), py::arg("y"), py::arg("center_hi"), py::arg("center_lo"),
        py::arg("scale"), py::arg("shift"),
        "y[a,c,b] = ((x - center_hi[c]) - center_lo[c]) * scale[c] + shift[c]; "
        "y = x * scale[c] + shift[c] when center_hi is None.");
}

}  // namespace bnfast::bindings
