// Bindings of the normalization kernels.
#include <cstdint>
#include <utility>

#include "bnfast/dispatch.hpp"
#include "common.hpp"

namespace bnfast::bindings {

namespace {

struct Pair3 {
    View3 xv, yv;
};

template <class T>
Pair3 check_xy(const py::array& x, const py::array& y, const char* func) {
    const View3 xv = view3_of(x, "x");
    const View3 yv = view3_of(y, "y");
    if (!has_dtype<T>(y)) throw py::type_error(std::string(func) + ": y must have x's dtype");
    if (xv.A != yv.A || xv.C != yv.C || xv.B != yv.B)
        throw py::value_error(std::string(func) + ": x and y must have the same shape");
    if (!y.writeable()) throw py::value_error(std::string(func) + ": y is read-only");
    return {xv, yv};
}

template <class T>
void affine_typed(const py::array& x, py::array& y, const py::object& center_hi,
                  const py::object& center_lo, const py::array& scale,
                  const py::array& shift, std::int64_t ps, affine_fn<T> kernel) {
    const auto [xv, yv] = check_xy<T>(x, y, "affine");
    if (ps < 0) throw py::value_error("affine: param_stride_a must be >= 0");
    // Parameters are indexed a * ps + c.
    if (xv.A > 1 && ps > (INT64_MAX - xv.C) / (xv.A - 1))
        throw py::value_error("affine: param_stride_a is too large for x");
    const std::int64_t n_params = (ps == 0 || xv.A == 0) ? xv.C : (xv.A - 1) * ps + xv.C;
    const T* hi = nullptr;
    const T* lo = nullptr;
    if (!center_hi.is_none()) {
        hi = channel_param<T>(existing_array(center_hi, "center_hi"), n_params, "center_hi");
        lo = channel_param<T>(existing_array(center_lo, "center_lo"), n_params, "center_lo");
    }
    const T* sc = channel_param<T>(scale, n_params, "scale");
    const T* sh = channel_param<T>(shift, n_params, "shift");
    const T* xd = static_cast<const T*>(x.data());
    T* yd = static_cast<T*>(y.mutable_data());
    const int nthreads = num_threads();
    py::gil_scoped_release release;
    kernel(xd, xv, yd, yv, hi, lo, sc, sh, ps, nthreads);
}

const double* optional_f64_param(const py::object& p, std::int64_t n, const char* name) {
    if (p.is_none()) return nullptr;
    return channel_param<double>(existing_array(p, name), n, name);
}

template <class T>
std::pair<py::array_t<double>, py::array_t<double>> batch_norm_train_typed(
    const py::array& x, py::array& y, const py::object& weight, const py::object& bias,
    double eps, batch_norm_train_fn<T> kernel) {
    const auto [xv, yv] = check_xy<T>(x, y, "batch_norm_train");
    if (!(eps >= 0.0)) throw py::value_error("batch_norm_train: eps must be >= 0");
    const double* w = optional_f64_param(weight, xv.C, "weight");
    const double* b = optional_f64_param(bias, xv.C, "bias");
    py::array_t<double> mean(xv.C), m2(xv.C);
    double* mean_ptr = mean.mutable_data();
    double* m2_ptr = m2.mutable_data();
    const T* xd = static_cast<const T*>(x.data());
    T* yd = static_cast<T*>(y.mutable_data());
    const int nthreads = num_threads();
    {
        py::gil_scoped_release release;
        kernel(xd, xv, yd, yv, w, b, eps, mean_ptr, m2_ptr, nthreads);
    }
    return {std::move(mean), std::move(m2)};
}

}  // namespace

void register_norm(py::module_& m) {
    m.def(
        "batch_norm_train",
        [](const py::array& x, py::array& y, const py::object& weight, const py::object& bias,
           double eps) {
            const KernelTable& t = active_table();
            if (has_dtype<float>(x))
                return batch_norm_train_typed<float>(x, y, weight, bias, eps, t.batch_norm_train_f32);
            if (has_dtype<double>(x))
                return batch_norm_train_typed<double>(x, y, weight, bias, eps, t.batch_norm_train_f64);
            throw py::type_error("batch_norm_train: x must be float32 or float64");
        },
        py::arg("x"), py::arg("y"), py::arg("weight"), py::arg("bias"), py::arg("eps"),
        "Per-C (mean, m2) of an (A, C, B) view (as moments) and y = (x - mean) * "
        "invstd * weight + bias, invstd = 1/sqrt(m2/(A*B) + eps); weight/bias float64 or None.");
    m.def(
        "affine",
        [](const py::array& x, py::array& y, const py::object& center_hi,
           const py::object& center_lo, const py::array& scale, const py::array& shift,
           std::int64_t param_stride_a) {
            const KernelTable& t = active_table();
            if (has_dtype<float>(x))
                affine_typed<float>(x, y, center_hi, center_lo, scale, shift, param_stride_a,
                                    t.affine_f32);
            else if (has_dtype<double>(x))
                affine_typed<double>(x, y, center_hi, center_lo, scale, shift, param_stride_a,
                                     t.affine_f64);
            else
                throw py::type_error("affine: x must be float32 or float64");
        },
        py::arg("x"), py::arg("y"), py::arg("center_hi"), py::arg("center_lo"),
        py::arg("scale"), py::arg("shift"), py::arg("param_stride_a") = 0,
        "y[a,c,b] = ((x - center_hi[p]) - center_lo[p]) * scale[p] + shift[p] with "
        "p = a * param_stride_a + c; y = x * scale[p] + shift[p] when center_hi is None.");
}

}  // namespace bnfast::bindings
