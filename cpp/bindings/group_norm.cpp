// Bindings of the group-norm family: the forward and the training backward
// of a batch in one call. Each takes 4-D (N, A, C, B) views: N samples,
// each an (A, C, B) view.
#include <cstdint>
#include <string>
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
