// Bindings of the backward kernels.
#include <tuple>
#include <utility>

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
    const View3 dyv = matching_view(dy, xv, "dy", "batch_norm_backward_reduce");
    if (!has_dtype<T>(dy)) throw py::type_error("batch_norm_backward_reduce: dy must have x's dtype");
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

// The views of x, dy and dx for a kernel that writes dx: the same shape,
// x's dtype, dx writeable.
struct GradViews {
    View3 x, dy, dx;
};

template <class T>
GradViews grad_views(const py::array& x, const py::array& dy, const py::array& dx,
                     const char* func) {
    const View3 xv = view3_of(x, "x");
    const View3 dyv = matching_view(dy, xv, "dy", func);
    const View3 dxv = matching_view(dx, xv, "dx", func);
    if (!has_dtype<T>(dy) || !has_dtype<T>(dx))
        throw py::type_error(std::string(func) + ": dy and dx must have x's dtype");
    if (!dx.writeable()) throw py::value_error(std::string(func) + ": dx is read-only");
    return {xv, dyv, dxv};
}

template <class T>
void apply_typed(const py::array& x, const py::array& dy, py::array& dx, const py::array& hi,
                 const py::array& lo, const py::array& p, const py::array& q,
                 const py::array& r, bn_backward_apply_fn<T> kernel) {
    const auto [xv, dyv, dxv] = grad_views<T>(x, dy, dx, "batch_norm_backward_apply");
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

template <class T>
std::pair<py::array_t<double>, py::array_t<double>> train_typed(
    const py::array& x, const py::array& dy, py::array& dx, const py::array& mean,
    const py::array& invstd, const py::object& weight, bn_backward_train_fn<T> kernel) {
    const auto [xv, dyv, dxv] = grad_views<T>(x, dy, dx, "batch_norm_backward_train");
    const double* mp = channel_param<double>(mean, xv.C, "mean");
    const double* ip = channel_param<double>(invstd, xv.C, "invstd");
    const double* wp =
        weight.is_none() ? nullptr
                         : channel_param<double>(existing_array(weight, "weight"), xv.C, "weight");
    py::array_t<double> sum_dy(xv.C), sum_dy_xc(xv.C);
    double* s1 = sum_dy.mutable_data();
    double* s2 = sum_dy_xc.mutable_data();
    const T* xd = static_cast<const T*>(x.data());
    const T* dyd = static_cast<const T*>(dy.data());
    T* dxd = static_cast<T*>(dx.mutable_data());
    const int nthreads = num_threads();
    {
        py::gil_scoped_release release;
        kernel(xd, xv, dyd, dyv, dxd, dxv, mp, ip, wp, s1, s2, nthreads);
    }
    return {std::move(sum_dy), std::move(sum_dy_xc)};
}

template <class T>
std::tuple<py::array_t<double>, py::array_t<double>, py::array_t<double>> row_forward_typed(
    const py::array& x, py::array& y, const py::array& w, const py::array& b, double eps,
    bool rms, row_norm_forward_fn<T> kernel) {
    const View3 xv = view3_of(x, "x");
    const View3 yv = matching_view(y, xv, "y", "layer_norm_forward");
    if (!has_dtype<T>(y)) throw py::type_error("layer_norm_forward: y must have x's dtype");
    if (!y.writeable()) throw py::value_error("layer_norm_forward: y is read-only");
    if (xv.A != 1) throw py::value_error("layer_norm_forward: x must be a (1, R, D) view");
    if (!(eps >= 0.0)) throw py::value_error("layer_norm_forward: eps must be >= 0");
    const T* wp = channel_param<T>(w, xv.B, "weight");
    const T* bp = channel_param<T>(b, xv.B, "bias");
    py::array_t<double> mean(xv.C), m2(xv.C), rstd(xv.C);
    double* mean_ptr = mean.mutable_data();
    double* m2_ptr = m2.mutable_data();
    double* rstd_ptr = rstd.mutable_data();
    const T* xd = static_cast<const T*>(x.data());
    T* yd = static_cast<T*>(y.mutable_data());
    const int nthreads = num_threads();
    {
        py::gil_scoped_release release;
        kernel(xd, xv, yd, yv, wp, bp, eps, rms, mean_ptr, m2_ptr, rstd_ptr, nthreads);
    }
    return {std::move(mean), std::move(m2), std::move(rstd)};
}

template <class T>
std::pair<py::array_t<double>, py::array_t<double>> row_backward_typed(
    const py::array& x, const py::array& dy, py::array& dx, const py::array& mean,
    const py::array& rstd, const py::array& w, bool rms, row_norm_backward_fn<T> kernel) {
    const auto [xv, dyv, dxv] = grad_views<T>(x, dy, dx, "layer_norm_backward");
    if (xv.A != 1) throw py::value_error("layer_norm_backward: x must be a (1, R, D) view");
    const double* mp = channel_param<double>(mean, xv.C, "mean");
    const double* rp = channel_param<double>(rstd, xv.C, "rstd");
    const T* wp = channel_param<T>(w, xv.B, "weight");
    py::array_t<double> dweight(xv.B), dbias(xv.B);
    double* dw_ptr = dweight.mutable_data();
    double* db_ptr = dbias.mutable_data();
    const T* xd = static_cast<const T*>(x.data());
    const T* dyd = static_cast<const T*>(dy.data());
    T* dxd = static_cast<T*>(dx.mutable_data());
    const int nthreads = num_threads();
    {
        py::gil_scoped_release release;
        kernel(xd, xv, dyd, dyv, dxd, dxv, mp, rp, wp, rms, dw_ptr, db_ptr, nthreads);
    }
    return {std::move(dweight), std::move(dbias)};
}

}  // namespace

void register_backward(py::module_& m) {
    m.def(
        "layer_norm_forward",
        [](const py::array& x, py::array& y, const py::array& w, const py::array& b, double eps,
           bool rms) {
            const KernelTable& t = active_table();
            if (has_dtype<float>(x)) return row_forward_typed<float>(x, y, w, b, eps, rms, t.row_norm_forward_f32);
            if (has_dtype<double>(x)) return row_forward_typed<double>(x, y, w, b, eps, rms, t.row_norm_forward_f64);
            throw py::type_error("layer_norm_forward: x must be float32 or float64");
        },
        py::arg("x"), py::arg("y"), py::arg("weight"), py::arg("bias"), py::arg("eps"),
        py::arg("rms"),
        "Layer (rms=False) or RMS (rms=True) normalization of the rows of a (1, R, D) view: "
        "returns per-row (mean, m2, rstd) in float64 and writes y.");
    m.def(
        "layer_norm_backward",
        [](const py::array& x, const py::array& dy, py::array& dx, const py::array& mean,
           const py::array& rstd, const py::array& w, bool rms) {
            const KernelTable& t = active_table();
            if (has_dtype<float>(x))
                return row_backward_typed<float>(x, dy, dx, mean, rstd, w, rms, t.row_norm_backward_f32);
            if (has_dtype<double>(x))
                return row_backward_typed<double>(x, dy, dx, mean, rstd, w, rms, t.row_norm_backward_f64);
            throw py::type_error("layer_norm_backward: x must be float32 or float64");
        },
        py::arg("x"), py::arg("dy"), py::arg("dx"), py::arg("mean"), py::arg("rstd"),
        py::arg("weight"), py::arg("rms"),
        "Backward of layer_norm_forward: writes dx, returns (dweight, dbias) in float64.");
    m.def(
        "batch_norm_backward_reduce",
        [](const py::array& x, const py::array& dy, const py::array& center) {
            const KernelTable& t = active_table();
            if (has_dtype<float>(x)) return reduce_typed<float>(x, dy, center, t.bn_backward_reduce_f32);
            if (has_dtype<double>(x)) return reduce_typed<double>(x, dy, center, t.bn_backward_reduce_f64);
            throw py::type_error("batch_norm_backward_reduce: x must be float32 or float64");
        },
        py::arg("x"), py::arg("dy"), py::arg("center"),
        "Per-C (sum(d), sum(dy), sum(dy*d)) in float64 with d = x - center[c], over "
        "axes 0 and 2 of (A, C, B) views x and dy.");
    m.def(
        "batch_norm_backward_train",
        [](const py::array& x, const py::array& dy, py::array& dx, const py::array& mean,
           const py::array& invstd, const py::object& weight) {
            const KernelTable& t = active_table();
            if (has_dtype<float>(x))
                return train_typed<float>(x, dy, dx, mean, invstd, weight, t.bn_backward_train_f32);
            if (has_dtype<double>(x))
                return train_typed<double>(x, dy, dx, mean, invstd, weight, t.bn_backward_train_f64);
            throw py::type_error("batch_norm_backward_train: x must be float32 or float64");
        },
        py::arg("x"), py::arg("dy"), py::arg("dx"), py::arg("mean"), py::arg("invstd"),
        py::arg("weight"),
        "Training backward of batch norm on (A, C, B) views: writes dx, returns "
        "(sum_dy, sum_dy_xc) in float64 (sum of dy * (x - exact mean)).");
    m.def(
        "batch_norm_backward_apply",
        [](const py::array& x, const py::array& dy, py::array& dx, const py::array& hi,
           const py::array& lo, const py::array& p, const py::array& q, const py::array& r) {
            const KernelTable& t = active_table();
            if (has_dtype<float>(x))
                apply_typed<float>(x, dy, dx, hi, lo, p, q, r, t.bn_backward_apply_f32);
            else if (has_dtype<double>(x))
                apply_typed<double>(x, dy, dx, hi, lo, p, q, r, t.bn_backward_apply_f64);
            else
                throw py::type_error("batch_norm_backward_apply: x must be float32 or float64");
        },
        py::arg("x"), py::arg("dy"), py::arg("dx"), py::arg("hi"), py::arg("lo"), py::arg("p"),
        py::arg("q"), py::arg("r"),
        "dx = dy * p[c] + ((x - hi[c]) - lo[c]) * q[c] + r[c] on (A, C, B) views.");
}

}  // namespace bnfast::bindings
