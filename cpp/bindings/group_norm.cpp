// Bindings of the group-norm family: the batched kernels for layouts whose
// batch and channel axes do not collapse (channels last). Each takes 4-D
// (N, A, C, B) views: N samples, each an (A, C, B) view.
#include <cstdint>
#include <string>
#include <tuple>
#include <utility>

#include "common.hpp"

namespace bnfast::bindings {

namespace {

// The (N, A, C, B) view of a 4-D array, strides converted to elements.
BatchView3 batch_view_of(const py::array& a, const char* name) {
    if (a.ndim() != 4)
        throw py::value_error(std::string(name) + " must be a 4-D (N, A, C, B) view");
    if (!(a.flags() & py::detail::npy_api::NPY_ARRAY_ALIGNED_))
        throw py::value_error(std::string(name) + " is not aligned to its item size");
    const auto itemsize = static_cast<py::ssize_t>(a.itemsize());
    std::int64_t strides[4];
    for (int i = 0; i < 4; ++i) {
        if (a.strides(i) % itemsize != 0)
            throw py::value_error(std::string(name) +
                                  " has strides that are not a multiple of its item size");
        strides[i] = a.strides(i) / itemsize;
    }
    return BatchView3{a.shape(0), strides[0],
                      View3{a.shape(1), a.shape(2), a.shape(3), strides[1], strides[2],
                            strides[3]}};
}

BatchView3 matching_batch_view(const py::array& a, const BatchView3& like, const char* name,
                               const char* func) {
    const BatchView3 v = batch_view_of(a, name);
    if (v.N != like.N || v.v.A != like.v.A || v.v.C != like.v.C || v.v.B != like.v.B)
        throw py::value_error(std::string(func) + ": " + name + " must have x's shape");
    return v;
}

template <class T>
std::pair<py::array_t<double>, py::array_t<double>> moments_typed(const py::array& x,
                                                                  std::int64_t groups) {
    const BatchView3 xv = batch_view_of(x, "x");
    if (groups < 1 || xv.v.C % groups != 0)
        throw py::value_error("group_norm_moments: groups must divide the channels (axis 2)");
    py::array_t<double> mean({xv.N, groups}), m2({xv.N, groups});
    double* mp = mean.mutable_data();
    double* m2p = m2.mutable_data();
    const T* xd = static_cast<const T*>(x.data());
    const auto kernel = active_kernels<T>().group_norm.moments;
    const int nthreads = threads_for_call();
    call_kernel(x.nbytes(), [&] { kernel(xd, xv, groups, mp, m2p, nthreads); });
    return {std::move(mean), std::move(m2)};
}

// A per-(sample, channel) parameter: 1-D, C-contiguous, of type P, N*C long.
template <class P>
const P* sample_channel_param(const py::array& a, const BatchView3& v, const char* name) {
    return channel_param<P>(a, v.N * v.v.C, name);
}

template <class T>
std::tuple<py::array_t<double>, py::array_t<double>, py::array_t<double>> reduce_typed(
    const py::array& x, const py::array& dy, const py::array& center) {
    const char* func = "group_norm_backward_reduce";
    const BatchView3 xv = batch_view_of(x, "x");
    const BatchView3 dyv = matching_batch_view(dy, xv, "dy", func);
    if (!has_dtype<T>(dy)) throw py::type_error(std::string(func) + ": dy must have x's dtype");
    const double* ctr = sample_channel_param<double>(center, xv, "center");
    const py::ssize_t nc = static_cast<py::ssize_t>(xv.N * xv.v.C);
    py::array_t<double> sum_d(nc), sum_dy(nc), sum_dy_d(nc);
    double* p1 = sum_d.mutable_data();
    double* p2 = sum_dy.mutable_data();
    double* p3 = sum_dy_d.mutable_data();
    const T* xd = static_cast<const T*>(x.data());
    const T* dyd = static_cast<const T*>(dy.data());
    const auto kernel = active_kernels<T>().group_norm.backward_reduce;
    const int nthreads = threads_for_call();
    call_kernel(x.nbytes() + dy.nbytes(),
                [&] { kernel(xd, xv, dyd, dyv, ctr, p1, p2, p3, nthreads); });
    return {std::move(sum_d), std::move(sum_dy), std::move(sum_dy_d)};
}

template <class T>
void apply_typed(const py::array& x, const py::array& dy, py::array& dx, const py::array& hi,
                 const py::array& lo, const py::array& s, const py::array& p,
                 const py::array& q, const py::array& r) {
    const char* func = "group_norm_backward_apply";
    const BatchView3 xv = batch_view_of(x, "x");
    const BatchView3 dyv = matching_batch_view(dy, xv, "dy", func);
    const BatchView3 dxv = matching_batch_view(dx, xv, "dx", func);
    if (!has_dtype<T>(dy) || !has_dtype<T>(dx))
        throw py::type_error(std::string(func) + ": dy and dx must have x's dtype");
    if (!dx.writeable()) throw py::value_error(std::string(func) + ": dx is read-only");
    using P = compute_t<T>;  // parameters: float for half-precision x
    const P* h = sample_channel_param<P>(hi, xv, "hi");
    const P* l = sample_channel_param<P>(lo, xv, "lo");
    const P* ss = sample_channel_param<P>(s, xv, "s");
    const P* pp = sample_channel_param<P>(p, xv, "p");
    const P* qq = sample_channel_param<P>(q, xv, "q");
    const P* rr = sample_channel_param<P>(r, xv, "r");
    const T* xd = static_cast<const T*>(x.data());
    const T* dyd = static_cast<const T*>(dy.data());
    T* dxd = static_cast<T*>(dx.mutable_data());
    const auto kernel = active_kernels<T>().group_norm.backward_apply;
    const int nthreads = threads_for_call();
    call_kernel(x.nbytes() + dy.nbytes(),
                [&] { kernel(xd, xv, dyd, dyv, dxd, dxv, h, l, ss, pp, qq, rr, nthreads); });
}

template <class T>
std::pair<py::array_t<double>, py::array_t<double>> train_typed(
    const py::array& x, const py::array& dy, py::array& dx, std::int64_t groups,
    const py::array& mean, const py::array& rstd, const py::object& weight) {
    const char* func = "group_norm_backward_train";
    const BatchView3 xv = batch_view_of(x, "x");
    const BatchView3 dyv = matching_batch_view(dy, xv, "dy", func);
    const BatchView3 dxv = matching_batch_view(dx, xv, "dx", func);
    if (!has_dtype<T>(dy) || !has_dtype<T>(dx))
        throw py::type_error(std::string(func) + ": dy and dx must have x's dtype");
    if (!dx.writeable()) throw py::value_error(std::string(func) + ": dx is read-only");
    if (groups < 1 || xv.v.C % groups != 0)
        throw py::value_error(std::string(func) + ": groups must divide the channels (axis 2)");
    const double* mp = channel_param<double>(mean, xv.N * groups, "mean");
    const double* rp = channel_param<double>(rstd, xv.N * groups, "rstd");
    const double* wp = optional_f64_param(weight, xv.v.C, "weight");
    const py::ssize_t nc = static_cast<py::ssize_t>(xv.N * xv.v.C);
    py::array_t<double> sum_dy(nc), sum_dy_xc(nc);
    double* s1 = sum_dy.mutable_data();
    double* s2 = sum_dy_xc.mutable_data();
    const T* xd = static_cast<const T*>(x.data());
    const T* dyd = static_cast<const T*>(dy.data());
    T* dxd = static_cast<T*>(dx.mutable_data());
    const auto kernel = active_kernels<T>().group_norm.backward_train;
    const int nthreads = threads_for_call();
    call_kernel(x.nbytes() + dy.nbytes(), [&] {
        kernel(xd, xv, dyd, dyv, dxd, dxv, groups, mp, rp, wp, s1, s2, nthreads);
    });
    return {std::move(sum_dy), std::move(sum_dy_xc)};
}

template <class T>
py::tuple forward_typed(const py::array& x, py::array& y, std::int64_t groups,
                        const py::object& weight, const py::object& bias, double eps,
                        bool zero_var_rstd) {
    const char* func = "group_norm_forward";
    const BatchView3 xv = batch_view_of(x, "x");
    const BatchView3 yv = matching_batch_view(y, xv, "y", func);
    if (!has_dtype<T>(y)) throw py::type_error(std::string(func) + ": y must have x's dtype");
    if (!y.writeable()) throw py::value_error(std::string(func) + ": y is read-only");
    if (groups < 1 || xv.v.C % groups != 0)
        throw py::value_error(std::string(func) + ": groups must divide the channels (axis 2)");
    if (!(eps >= 0.0)) throw py::value_error(std::string(func) + ": eps must be >= 0");
    const double* wp = optional_f64_param(weight, xv.v.C, "weight");
    const double* bp = optional_f64_param(bias, xv.v.C, "bias");
    py::array_t<double> mean({xv.N, groups}), m2({xv.N, groups});
    py::array_t<bool> done({xv.N, groups});
    double* mp = mean.mutable_data();
    double* m2p = m2.mutable_data();
    auto* dp = reinterpret_cast<unsigned char*>(done.mutable_data());
    const T* xd = static_cast<const T*>(x.data());
    T* yd = static_cast<T*>(y.mutable_data());
    const auto kernel = active_kernels<T>().group_norm.forward;
    const int nthreads = threads_for_call();
    call_kernel(x.nbytes(), [&] {
        kernel(xd, xv, yd, yv, groups, wp, bp, eps, zero_var_rstd, mp, m2p, dp, nthreads);
    });
    return py::make_tuple(std::move(mean), std::move(m2), std::move(done));
}

}  // namespace

void register_group_norm(py::module_& m) {
    m.def(
        "group_norm_moments",
        [](const py::array& x, std::int64_t groups) {
            return with_dtype(x, "group_norm_moments", "x", [&](auto tag) {
                return moments_typed<decltype(tag)>(x, groups);
            });
        },
        py::arg("x"), py::arg("groups"),
        "Per-(sample, group) (mean, m2) in float64, shape (N, groups), of a 4-D (N, A, C, B) "
        "view: group g holds channels [g*C/groups, (g+1)*C/groups), reduced over A and B.");
    m.def(
        "group_norm_backward_reduce",
        [](const py::array& x, const py::array& dy, const py::array& center) {
            return with_dtype(x, "group_norm_backward_reduce", "x", [&](auto tag) {
                return reduce_typed<decltype(tag)>(x, dy, center);
            });
        },
        py::arg("x"), py::arg("dy"), py::arg("center"),
        "Per-(sample, channel) (sum(d), sum(dy), sum(dy*d)) in float64, length N*C, with "
        "d = x - center[n*C + c], over axes 1 and 3 of (N, A, C, B) views x and dy.");
    m.def(
        "group_norm_backward_apply",
        [](const py::array& x, const py::array& dy, py::array& dx, const py::array& hi,
           const py::array& lo, const py::array& s, const py::array& p, const py::array& q,
           const py::array& r) {
            with_dtype(x, "group_norm_backward_apply", "x", [&](auto tag) {
                apply_typed<decltype(tag)>(x, dy, dx, hi, lo, s, p, q, r);
            });
        },
        py::arg("x"), py::arg("dy"), py::arg("dx"), py::arg("hi"), py::arg("lo"), py::arg("s"),
        py::arg("p"), py::arg("q"), py::arg("r"),
        "dx = dy * p[k] + ((((x - hi[k]) - lo[k]) * s[k]) * q[k] + r[k]) * s[k], k = n*C + c, "
        "on (N, A, C, B) views.");
    m.def(
        "group_norm_forward",
        [](const py::array& x, py::array& y, std::int64_t groups, const py::object& weight,
           const py::object& bias, double eps, bool zero_var_rstd) {
            return with_dtype(x, "group_norm_forward", "x", [&](auto tag) {
                return forward_typed<decltype(tag)>(x, y, groups, weight, bias, eps,
                                                    zero_var_rstd);
            });
        },
        py::arg("x"), py::arg("y"), py::arg("groups"), py::arg("weight"), py::arg("bias"),
        py::arg("eps"), py::arg("zero_var_rstd"),
        "Group norm of (N, A, C, B) views in one call: writes y = ((x - hi) - lo) * scale + shift "
        "per (sample, group), returns float64 (mean, m2) and bool done, each (N, groups); "
        "groups not done (a scale beyond x's compute dtype) are left unwritten. weight, bias: "
        "float64 (C,) or None.");
    m.def(
        "group_norm_backward_train",
        [](const py::array& x, const py::array& dy, py::array& dx, std::int64_t groups,
           const py::array& mean, const py::array& rstd, const py::object& weight) {
            return with_dtype(x, "group_norm_backward_train", "x", [&](auto tag) {
                return train_typed<decltype(tag)>(x, dy, dx, groups, mean, rstd, weight);
            });
        },
        py::arg("x"), py::arg("dy"), py::arg("dx"), py::arg("groups"), py::arg("mean"),
        py::arg("rstd"), py::arg("weight"),
        "Training backward of group norm on (N, A, C, B) views: writes dx, returns per-(sample, "
        "channel) (sum_dy, sum_dy_xc) in float64, length N*C. mean, rstd: the forward's, "
        "float64 of length N*groups; weight: float64 (C,) or None.");
}

}  // namespace bnfast::bindings
