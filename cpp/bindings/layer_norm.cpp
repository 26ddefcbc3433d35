// Bindings of the layer-norm family (layer norm and RMS norm): forward,
// backward and the fast entry point layer_norm_fast.
#include <cstdint>
#include <limits>
#include <tuple>
#include <utility>
#include <vector>

#include "common.hpp"
#include "fast_args.hpp"

namespace bnfast::bindings {

namespace {

template <class T>
std::tuple<py::array_t<double>, py::array_t<double>, py::array_t<double>> forward_typed(
    const py::array& x, py::array& y, const py::array& w, const py::array& b, double eps,
    bool rms) {
    const View3 xv = view3_of(x, "x");
    const View3 yv = matching_view(y, xv, "y", "layer_norm_forward");
    if (!has_dtype<T>(y)) throw py::type_error("layer_norm_forward: y must have x's dtype");
    if (!y.writeable()) throw py::value_error("layer_norm_forward: y is read-only");
    if (xv.A != 1) throw py::value_error("layer_norm_forward: x must be a (1, R, D) view");
    if (!(eps >= 0.0)) throw py::value_error("layer_norm_forward: eps must be >= 0");
    using P = compute_t<T>;  // parameters: float for half-precision x
    const P* wp = channel_param<P>(w, xv.B, "weight");
    const P* bp = channel_param<P>(b, xv.B, "bias");
    py::array_t<double> mean(xv.C), m2(xv.C), rstd(xv.C);
    double* mean_ptr = mean.mutable_data();
    double* m2_ptr = m2.mutable_data();
    double* rstd_ptr = rstd.mutable_data();
    const T* xd = static_cast<const T*>(x.data());
    T* yd = static_cast<T*>(y.mutable_data());
    const auto kernel = active_kernels<T>().layer_norm.forward;
    const int nthreads = threads_for_call();
    call_kernel(x.nbytes(), [&] {
        kernel(xd, xv, yd, yv, wp, bp, eps, rms, mean_ptr, m2_ptr, rstd_ptr, nthreads);
    });
    return {std::move(mean), std::move(m2), std::move(rstd)};
}

template <class T>
std::pair<py::array_t<double>, py::array_t<double>> backward_typed(
    const py::array& x, const py::array& dy, py::array& dx, const py::array& mean,
    const py::array& rstd, const py::array& w, bool rms) {
    const GradViews views = grad_views<T>(x, dy, dx, "layer_norm_backward");
    const View3& xv = views.x;
    const View3& dyv = views.dy;
    const View3& dxv = views.dx;
    if (xv.A != 1) throw py::value_error("layer_norm_backward: x must be a (1, R, D) view");
    const double* mp = channel_param<double>(mean, xv.C, "mean");
    const double* rp = channel_param<double>(rstd, xv.C, "rstd");
    const compute_t<T>* wp = channel_param<compute_t<T>>(w, xv.B, "weight");
    py::array_t<double> dweight(xv.B), dbias(xv.B);
    double* dw_ptr = dweight.mutable_data();
    double* db_ptr = dbias.mutable_data();
    const T* xd = static_cast<const T*>(x.data());
    const T* dyd = static_cast<const T*>(dy.data());
    T* dxd = static_cast<T*>(dx.mutable_data());
    const auto kernel = active_kernels<T>().layer_norm.backward;
    const int nthreads = threads_for_call();
    call_kernel(x.nbytes() + dy.nbytes(), [&] {
        kernel(xd, xv, dyd, dyv, dxd, dxv, mp, rp, wp, rms, dw_ptr, db_ptr, nthreads);
    });
    return {std::move(dweight), std::move(dbias)};
}

// layer_norm_fast (see fast_args.hpp): the forward over the last axis.
template <class T>
py::object fast_typed(const py::array& x, py::handle w, py::handle b, double eps, bool rms,
                      py::handle out) {
    const py::ssize_t nd = x.ndim();
    if (nd < 1 || x.size() == 0) return py::none();
    const std::int64_t D = x.shape(nd - 1);
    const std::int64_t R = x.size() / D;
    using P = compute_t<T>;  // parameters: float32 for half x
    std::vector<P> ones, zeros;
    const P* wp;
    const P* bp;
    if (w.is_none()) {
        ones.assign(D, P(1));
        wp = ones.data();
    } else {
        if (!fast::vector_of<P>(w, D)) return py::none();
        wp = fast::data_of<P>(w);
    }
    if (b.is_none()) {
        zeros.assign(D, P(0));
        bp = zeros.data();
    } else {
        if (!fast::vector_of<P>(b, D)) return py::none();
        bp = fast::data_of<P>(b);
    }
    py::array y;
    if (!fast::output_for<T>(x, out, y)) return py::none();
    const View3 v{1, R, D, R * D, D, 1};
    std::vector<double> mean(R), m2(R), rstd(R);
    const auto kernel = active_kernels<T>().layer_norm.forward;
    const T* xd = static_cast<const T*>(x.data());
    T* yd = static_cast<T*>(y.mutable_data());
    const int nthreads = threads_for_call();
    call_kernel(x.nbytes(), [&] {
        kernel(xd, v, yd, v, wp, bp, eps, rms, mean.data(), m2.data(), rstd.data(), nthreads);
    });
    return std::move(y);
}

}  // namespace

void register_layer_norm(py::module_& m) {
    m.def(
        "layer_norm_forward",
        [](const py::array& x, py::array& y, const py::array& w, const py::array& b, double eps,
           bool rms) {
            return with_dtype(x, "layer_norm_forward", "x", [&](auto tag) {
                return forward_typed<decltype(tag)>(x, y, w, b, eps, rms);
            });
        },
        py::arg("x"), py::arg("y"), py::arg("weight"), py::arg("bias"), py::arg("eps"),
        py::arg("rms"),
        "Layer (rms=False) or RMS (rms=True) normalization of the rows of a (1, R, D) view: "
        "returns per-row (mean, m2, rstd) in float64 and writes y.");
    m.def(
        "layer_norm_backward",
        [](const py::array& x, const py::array& dy, py::array& dx, const py::array& mean,
           const py::array& rstd, const py::array& w, bool rms) {
            return with_dtype(x, "layer_norm_backward", "x", [&](auto tag) {
                return backward_typed<decltype(tag)>(x, dy, dx, mean, rstd, w, rms);
            });
        },
        py::arg("x"), py::arg("dy"), py::arg("dx"), py::arg("mean"), py::arg("rstd"),
        py::arg("weight"), py::arg("rms"),
        "Backward of layer_norm_forward: writes dx, returns (dweight, dbias) in float64.");
    m.def(
        "layer_norm_fast",
        [](py::handle x, py::handle w, py::handle b, py::handle axis, py::handle eps, bool rms,
           py::handle out) -> py::object {
            // eps=None: RMS norm's default, the dtype's machine epsilon.
            double e = 0.0;
            long ax;
            const bool default_eps = rms && eps.is_none();
            if ((!default_eps && (!fast::real_arg(eps, e) || e < 0.0)) || !fast::int_arg(axis, ax))
                return py::none();
            return fast::with_plain_dtype<true>(x, [&](auto tag, const py::array& xa) -> py::object {
                using T = decltype(tag);
                if (default_eps) e = fast::machine_eps<T>();
                if (ax != -1 && ax != xa.ndim() - 1) return py::none();
                return fast_typed<T>(xa, w, b, e, rms, out);
            });
        },
        "layer_norm/rms_norm over the last axis for the common case, or None.");
}

}  // namespace bnfast::bindings
