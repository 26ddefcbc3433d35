// Bindings of the batch-norm family: the training forward, the backward
// kernels and the fast entry points batch_norm_fast and batch_norm_backward_fast.
#include <cstdint>
#include <tuple>
#include <utility>
#include <vector>

#include "bnfast/formulas.hpp"
#include "common.hpp"
#include "fast_args.hpp"

namespace bnfast::bindings {

namespace {

template <class T>
std::pair<py::array_t<double>, py::array_t<double>> train_typed(const py::array& x, py::array& y,
                                                                const py::object& weight,
                                                                const py::object& bias,
                                                                double eps) {
    const InOutViews views = in_out_views<T>(x, y, "batch_norm_train");
    const View3& xv = views.x;
    const View3& yv = views.y;
    if (!(eps >= 0.0)) throw py::value_error("batch_norm_train: eps must be >= 0");
    const double* w = optional_f64_param(weight, xv.C, "weight");
    const double* b = optional_f64_param(bias, xv.C, "bias");
    py::array_t<double> mean(xv.C), m2(xv.C);
    double* mean_ptr = mean.mutable_data();
    double* m2_ptr = m2.mutable_data();
    const T* xd = static_cast<const T*>(x.data());
    T* yd = static_cast<T*>(y.mutable_data());
    const auto kernel = active_kernels<T>().batch_norm.train;
    const int nthreads = threads_for_call();
    call_kernel(x.nbytes(),
                [&] { kernel(xd, xv, yd, yv, w, b, eps, mean_ptr, m2_ptr, nthreads); });
    return {std::move(mean), std::move(m2)};
}

template <class T>
std::tuple<py::array_t<double>, py::array_t<double>, py::array_t<double>> reduce_typed(
    const py::array& x, const py::array& dy, const py::array& center) {
    const View3 xv = view3_of(x, "x");
    const View3 dyv = matching_view(dy, xv, "dy", "batch_norm_backward_reduce");
    if (!has_dtype<T>(dy))
        throw py::type_error("batch_norm_backward_reduce: dy must have x's dtype");
    const double* ctr = channel_param<double>(center, xv.C, "center");
    py::array_t<double> sum_d(xv.C), sum_dy(xv.C), sum_dy_d(xv.C);
    double* p1 = sum_d.mutable_data();
    double* p2 = sum_dy.mutable_data();
    double* p3 = sum_dy_d.mutable_data();
    const T* xd = static_cast<const T*>(x.data());
    const T* dyd = static_cast<const T*>(dy.data());
    const auto kernel = active_kernels<T>().batch_norm.backward_reduce;
    const int nthreads = threads_for_call();
    call_kernel(x.nbytes() + dy.nbytes(),
                [&] { kernel(xd, xv, dyd, dyv, ctr, p1, p2, p3, nthreads); });
    return {std::move(sum_d), std::move(sum_dy), std::move(sum_dy_d)};
}

template <class T>
void apply_typed(const py::array& x, const py::array& dy, py::array& dx, const py::array& hi,
                 const py::array& lo, const py::array& s, const py::array& p,
                 const py::array& q, const py::array& r) {
    const GradViews views = grad_views<T>(x, dy, dx, "batch_norm_backward_apply");
    const View3& xv = views.x;
    const View3& dyv = views.dy;
    const View3& dxv = views.dx;
    using P = compute_t<T>;  // parameters: float for half-precision x
    const P* h = channel_param<P>(hi, xv.C, "hi");
    const P* l = channel_param<P>(lo, xv.C, "lo");
    const P* ss = channel_param<P>(s, xv.C, "s");
    const P* pp = channel_param<P>(p, xv.C, "p");
    const P* qq = channel_param<P>(q, xv.C, "q");
    const P* rr = channel_param<P>(r, xv.C, "r");
    const T* xd = static_cast<const T*>(x.data());
    const T* dyd = static_cast<const T*>(dy.data());
    T* dxd = static_cast<T*>(dx.mutable_data());
    const auto kernel = active_kernels<T>().batch_norm.backward_apply;
    const int nthreads = threads_for_call();
    call_kernel(x.nbytes() + dy.nbytes(),
                [&] { kernel(xd, xv, dyd, dyv, dxd, dxv, h, l, ss, pp, qq, rr, nthreads); });
}

template <class T>
std::pair<py::array_t<double>, py::array_t<double>> backward_train_typed(
    const py::array& x, const py::array& dy, py::array& dx, const py::array& mean,
    const py::array& invstd, const py::object& weight) {
    const GradViews views = grad_views<T>(x, dy, dx, "batch_norm_backward_train");
    const View3& xv = views.x;
    const View3& dyv = views.dy;
    const View3& dxv = views.dx;
    const double* mp = channel_param<double>(mean, xv.C, "mean");
    const double* ip = channel_param<double>(invstd, xv.C, "invstd");
    const double* wp = optional_f64_param(weight, xv.C, "weight");
    py::array_t<double> sum_dy(xv.C), sum_dy_xc(xv.C);
    double* s1 = sum_dy.mutable_data();
    double* s2 = sum_dy_xc.mutable_data();
    const T* xd = static_cast<const T*>(x.data());
    const T* dyd = static_cast<const T*>(dy.data());
    T* dxd = static_cast<T*>(dx.mutable_data());
    const auto kernel = active_kernels<T>().batch_norm.backward_train;
    const int nthreads = threads_for_call();
    call_kernel(x.nbytes() + dy.nbytes(),
                [&] { kernel(xd, xv, dyd, dyv, dxd, dxv, mp, ip, wp, s1, s2, nthreads); });
    return {std::move(sum_dy), std::move(sum_dy_xc)};
}

// ---------------------------------------------------------------------------
// batch_norm_fast (see fast_args.hpp).

// Optional per-channel weight/bias of x's dtype, widened to double (as the
// general path's astype(float64)).
template <class T>
bool optional_param(py::handle h, std::int64_t c, std::vector<double>& out) {
    if (h.is_none()) return true;
    if (!fast::vector_of<T>(h, c)) return false;
    const T* p = fast::data_of<T>(h);
    out.assign(p, p + c);
    return true;
}

template <class T>
py::object fast_typed(const py::array& x, py::handle rm, py::handle rv, py::handle w,
                      py::handle b, bool training, double momentum, double eps, long axis,
                      py::handle out) {
    using P = compute_t<T>;  // parameters and statistics: float32 for half x
    View3 v;
    if (!fast::channel_view(x, axis, v)) return py::none();
    const std::int64_t C = v.C;
    const std::int64_t count = v.A * v.B;
    if (rm.is_none() != rv.is_none()) return py::none();
    const bool has_running = !rm.is_none();
    if (has_running &&
        !(fast::vector_of<P>(rm, C, training) && fast::vector_of<P>(rv, C, training)))
        return py::none();
    if (training ? (count <= 1 || !(eps > 0.0)) : !has_running) return py::none();
    if (!(momentum >= 0.0 && momentum <= 1.0)) return py::none();
    std::vector<double> wv, bv;
    if (!optional_param<P>(w, C, wv) || !optional_param<P>(b, C, bv)) return py::none();
    py::array y;
    if (!fast::output_for<T>(x, out, y)) return py::none();

    const FamilyKernels<T>& k = active_kernels<T>();
    const int nthreads = threads_for_call();
    const T* xd = static_cast<const T*>(x.data());
    T* yd = static_cast<T*>(y.mutable_data());
    if (training) {
        std::vector<double> mean(C), m2(C);
        const double* wp = wv.empty() ? nullptr : wv.data();
        const double* bp = bv.empty() ? nullptr : bv.data();
        call_kernel(x.nbytes(), [&] {
            k.batch_norm.train(xd, v, yd, v, wp, bp, eps, mean.data(), m2.data(), nthreads);
        });
        if (has_running) {
            P* rmp = fast::mutable_data_of<P>(rm);
            P* rvp = fast::mutable_data_of<P>(rv);
            const double n = static_cast<double>(count);
            // Two loops, as the general path updates one array after the
            // other (the same even if the two arrays overlap).
            for (std::int64_t c = 0; c < C; ++c)
                rmp[c] = formulas::running_update(rmp[c], mean[c], momentum);
            for (std::int64_t c = 0; c < C; ++c)
                rvp[c] = formulas::running_update(
                    rvp[c], formulas::unbiased_variance(m2[c], n), momentum);
        }
    } else {
        const P* rmp = fast::data_of<P>(rm);
        const P* rvp = fast::data_of<P>(rv);
        std::vector<P> scale(C), shift(C);
        for (std::int64_t c = 0; c < C; ++c) {
            const double invstd = formulas::invstd(static_cast<double>(rvp[c]), 1.0, eps);
            const auto f = formulas::eval_fold(static_cast<double>(rmp[c]), invstd,
                                               wv.empty() ? 1.0 : wv[c], bv.empty() ? 0.0 : bv[c]);
            scale[c] = static_cast<P>(f.scale);
            shift[c] = static_cast<P>(f.shift);
        }
        call_kernel(x.nbytes(), [&] {
            k.affine.affine(xd, v, yd, v, nullptr, nullptr, scale.data(), shift.data(), 0,
                            nthreads);
        });
    }
    return std::move(y);
}

// batch_norm_backward_fast: the training backward for the common call
// (plain arrays of one dtype, statistics and weight of that dtype, as
// batch_norm(..., return_stats=True) gives them), bit for bit the general
// path's result: the same kernel on the same view, the same roundings.
template <class T>
py::object backward_fast_typed(const py::array& dy, const py::array& x, py::handle mean,
                               py::handle invstd, py::handle weight, long axis,
                               py::handle out) {
    View3 v;
    if (!fast::channel_view(x, axis, v)) return py::none();
    const std::int64_t C = v.C;
    if (!fast::plain_array<T>(dy) || dy.ndim() != x.ndim()) return py::none();
    for (py::ssize_t i = 0; i < x.ndim(); ++i)
        if (dy.shape(i) != x.shape(i)) return py::none();
    if (!fast::vector_of<T>(mean, C) || !fast::vector_of<T>(invstd, C)) return py::none();
    if (!weight.is_none() && !fast::vector_of<T>(weight, C)) return py::none();
    // out may be dy itself (the kernel reads each dy before writing that
    // element); any other overlap with x or dy takes the general path, which
    // computes through a temporary.
    py::array dx;
    if (!fast::output_for<T>(x, out, dx)) return py::none();
    if (!out.is_none() && (dx.data() == x.data() || (!out.is(dy) && !fast::disjoint(dx, dy))))
        return py::none();
    const T* mp = fast::data_of<T>(mean);
    const T* ip = fast::data_of<T>(invstd);
    std::vector<double> mv(mp, mp + C), iv(ip, ip + C), wv;
    if (!weight.is_none()) {
        const T* wp = fast::data_of<T>(weight);
        wv.assign(wp, wp + C);
    }
    std::vector<double> sum_dy(static_cast<std::size_t>(C)), sum_dy_xc(static_cast<std::size_t>(C));
    const T* xd = static_cast<const T*>(x.data());
    const T* dyd = static_cast<const T*>(dy.data());
    T* dxd = static_cast<T*>(dx.mutable_data());
    const auto kernel = active_kernels<T>().batch_norm.backward_train;
    const int nthreads = threads_for_call();
    call_kernel(x.nbytes() + dy.nbytes(), [&] {
        kernel(xd, v, dyd, v, dxd, v, mv.data(), iv.data(), wv.empty() ? nullptr : wv.data(),
               sum_dy.data(), sum_dy_xc.data(), nthreads);
    });
    // dweight and dbias rounded once from float64, as the general path's astype.
    py::array_t<T> dbias(C);
    T* db = dbias.mutable_data();
    for (std::int64_t c = 0; c < C; ++c) db[c] = static_cast<T>(sum_dy[c]);
    py::object dweight = py::none();
    if (!wv.empty()) {
        py::array_t<T> dw(C);
        T* dwp = dw.mutable_data();
        for (std::int64_t c = 0; c < C; ++c) dwp[c] = static_cast<T>(sum_dy_xc[c] * iv[c]);
        dweight = std::move(dw);
    }
    return py::make_tuple(dx, dweight, dbias);
}

}  // namespace

void register_batch_norm(py::module_& m) {
    m.def(
        "batch_norm_train",
        [](const py::array& x, py::array& y, const py::object& weight, const py::object& bias,
           double eps) {
            return with_dtype(x, "batch_norm_train", "x", [&](auto tag) {
                return train_typed<decltype(tag)>(x, y, weight, bias, eps);
            });
        },
        py::arg("x"), py::arg("y"), py::arg("weight"), py::arg("bias"), py::arg("eps"),
        "Per-C (mean, m2) of an (A, C, B) view (as moments) and y = (x - mean) * "
        "invstd * weight + bias, invstd = 1/sqrt(m2/(A*B) + eps); weight/bias float64 or None.");
    m.def(
        "batch_norm_backward_reduce",
        [](const py::array& x, const py::array& dy, const py::array& center) {
            return with_dtype(x, "batch_norm_backward_reduce", "x", [&](auto tag) {
                return reduce_typed<decltype(tag)>(x, dy, center);
            });
        },
        py::arg("x"), py::arg("dy"), py::arg("center"),
        "Per-C (sum(d), sum(dy), sum(dy*d)) in float64 with d = x - center[c], over "
        "axes 0 and 2 of (A, C, B) views x and dy.");
    m.def(
        "batch_norm_backward_apply",
        [](const py::array& x, const py::array& dy, py::array& dx, const py::array& hi,
           const py::array& lo, const py::array& s, const py::array& p, const py::array& q,
           const py::array& r) {
            with_dtype(x, "batch_norm_backward_apply", "x", [&](auto tag) {
                apply_typed<decltype(tag)>(x, dy, dx, hi, lo, s, p, q, r);
            });
        },
        py::arg("x"), py::arg("dy"), py::arg("dx"), py::arg("hi"), py::arg("lo"), py::arg("s"),
        py::arg("p"), py::arg("q"), py::arg("r"),
        "dx = dy * p[c] + ((((x - hi[c]) - lo[c]) * s[c]) * q[c] + r[c]) * s[c] on (A, C, B) "
        "views.");
    m.def(
        "batch_norm_backward_train",
        [](const py::array& x, const py::array& dy, py::array& dx, const py::array& mean,
           const py::array& invstd, const py::object& weight) {
            return with_dtype(x, "batch_norm_backward_train", "x", [&](auto tag) {
                return backward_train_typed<decltype(tag)>(x, dy, dx, mean, invstd, weight);
            });
        },
        py::arg("x"), py::arg("dy"), py::arg("dx"), py::arg("mean"), py::arg("invstd"),
        py::arg("weight"),
        "Training backward of batch norm on (A, C, B) views: writes dx, returns "
        "(sum_dy, sum_dy_xc) in float64 (sum of dy * (x - exact mean)).");
    m.def(
        "batch_norm_fast",
        [](py::handle x, py::handle rm, py::handle rv, py::handle w, py::handle b,
           py::handle training, py::handle momentum, py::handle eps, py::handle axis,
           py::handle out) -> py::object {
            double mom, e;
            long ax;
            if (!PyBool_Check(training.ptr()) || !fast::real_arg(momentum, mom) ||
                !fast::real_arg(eps, e) || e < 0.0 || !fast::int_arg(axis, ax))
                return py::none();
            const bool train = training.ptr() == Py_True;
            return fast::with_plain_dtype<true>(x, [&](auto tag, const py::array& xa) {
                return fast_typed<decltype(tag)>(xa, rm, rv, w, b, train, mom, e, ax, out);
            });
        },
        "batch_norm for the common case, or None (then use the general path).");
    m.def(
        "batch_norm_backward_fast",
        [](py::handle dy, py::handle x, py::handle mean, py::handle invstd, py::handle weight,
           py::handle axis, py::handle training, py::handle out) -> py::object {
            long ax;
            if (training.ptr() != Py_True || !fast::int_arg(axis, ax)) return py::none();
            return fast::with_plain_dtype(x, [&](auto tag, const py::array& xa) {
                return backward_fast_typed<decltype(tag)>(py::reinterpret_borrow<py::array>(dy),
                                                          xa, mean, invstd, weight, ax, out);
            });
        },
        "batch_norm_backward (training=True) for the common case, or None (then use the "
        "general path).");
}

}  // namespace bnfast::bindings
