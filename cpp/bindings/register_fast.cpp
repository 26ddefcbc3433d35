// Fast entry points for the common call: C-contiguous float32/float64 arrays,
// parameters already of x's dtype, plain Python bool/float/int options.
// Python's argument handling and the (A, C, B) planning cost ~20 us per call,
// ten times the kernel on a small batch; these skip both.
//
// Each returns None whenever anything is unusual (other layouts or dtypes,
// bad values, overlapping out=), and the Python layer then takes its general
// path, which owns every error message. When they do run, they compute
// exactly what the general path computes, bit for bit: the same kernels on
// the same (A, C, B) view (a C-contiguous array with C > 1 folds to the plain
// reshape; C == 1 goes to the general path),
// and the same float64 arithmetic for running statistics and the eval fold
// (tests/test_fast_path.py compares the two paths bitwise).
#include <Python.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <vector>

#include "bnfast/dispatch.hpp"
#include "common.hpp"

namespace bnfast::bindings {

namespace {

using npy = py::detail::npy_api;

// An exact ndarray (no subclass), C-contiguous, aligned, native dtype T.
template <class T>
bool plain_array(py::handle h) {
    if (Py_TYPE(h.ptr()) != reinterpret_cast<PyTypeObject*>(npy::get().PyArray_Type_)) return false;
    const auto a = py::reinterpret_borrow<py::array>(h);
    const int need = npy::NPY_ARRAY_C_CONTIGUOUS_ | npy::NPY_ARRAY_ALIGNED_;
    return (a.flags() & need) == need && has_dtype<T>(a) && a.dtype().byteorder() != '>';
}

template <class T>
bool vector_of(py::handle h, std::int64_t n, bool writeable = false) {
    if (!plain_array<T>(h)) return false;
    const auto a = py::reinterpret_borrow<py::array>(h);
    return a.ndim() == 1 && a.shape(0) == n && (!writeable || a.writeable());
}

// A float argument: exact Python float or int (not bool), finite.
bool real_arg(py::handle h, double& out) {
    if (PyFloat_CheckExact(h.ptr())) {
        out = PyFloat_AS_DOUBLE(h.ptr());
    } else if (PyLong_CheckExact(h.ptr())) {
        out = PyLong_AsDouble(h.ptr());
        if (out == -1.0 && PyErr_Occurred()) {
            PyErr_Clear();
            return false;
        }
    } else {
        return false;
    }
    return std::isfinite(out);
}

bool int_arg(py::handle h, long& out) {
    if (!PyLong_CheckExact(h.ptr())) return false;
    int overflow = 0;
    out = PyLong_AsLongAndOverflow(h.ptr(), &overflow);
    return overflow == 0 && !(out == -1 && PyErr_Occurred());
}

// out=None gives a new C-contiguous array like x; otherwise out must be a
// plain array of x's shape and dtype that is x itself or does not overlap it.
template <class T>
bool output_for(const py::array& x, py::handle out, py::array& y) {
    if (out.is_none()) {
        std::vector<py::ssize_t> shape(x.shape(), x.shape() + x.ndim());
        y = py::array_t<T>(shape);
        return true;
    }
    if (!plain_array<T>(out)) return false;
    y = py::reinterpret_borrow<py::array>(out);
    if (y.ndim() != x.ndim() || !y.writeable()) return false;
    for (py::ssize_t i = 0; i < x.ndim(); ++i)
        if (y.shape(i) != x.shape(i)) return false;
    if (y.data() == x.data()) return true;
    const auto* xs = static_cast<const char*>(x.data());
    const auto* ys = static_cast<const char*>(y.data());
    const auto bytes = static_cast<std::ptrdiff_t>(x.nbytes());
    return ys + bytes <= xs || xs + bytes <= ys;
}

// The active table's kernel for T.
template <class T>
batch_norm_train_fn<T> bn_train_kernel(const KernelTable& t) {
    if constexpr (std::is_same_v<T, float>) return t.batch_norm_train_f32;
    else return t.batch_norm_train_f64;
}

template <class T>
affine_fn<T> affine_kernel(const KernelTable& t) {
    if constexpr (std::is_same_v<T, float>) return t.affine_f32;
    else return t.affine_f64;
}

template <class T>
row_norm_forward_fn<T> row_forward_kernel(const KernelTable& t) {
    if constexpr (std::is_same_v<T, float>) return t.row_norm_forward_f32;
    else return t.row_norm_forward_f64;
}

template <class T>
const T* data_of(py::handle h) {
    return static_cast<const T*>(py::reinterpret_borrow<py::array>(h).data());
}

template <class T>
T* mutable_data_of(py::handle h) {
    return static_cast<T*>(py::reinterpret_borrow<py::array>(h).mutable_data());
}

// Optional per-channel weight/bias of x's dtype, widened to double (as the
// general path's astype(float64)).
template <class T>
bool optional_param(py::handle h, std::int64_t c, std::vector<double>& out) {
    if (h.is_none()) return true;
    if (!vector_of<T>(h, c)) return false;
    const T* p = data_of<T>(h);
    out.assign(p, p + c);
    return true;
}

template <class T>
py::object batch_norm_typed(const py::array& x, py::handle rm, py::handle rv, py::handle w,
                            py::handle b, bool training, double momentum, double eps, long axis,
                            py::handle out) {
    const py::ssize_t nd = x.ndim();
    if (nd < 2 || x.size() == 0 || axis < -nd || axis >= nd) return py::none();
    if (axis < 0) axis += nd;
    std::int64_t A = 1, B = 1;
    for (py::ssize_t i = 0; i < axis; ++i) A *= x.shape(i);
    for (py::ssize_t i = axis + 1; i < nd; ++i) B *= x.shape(i);
    const std::int64_t C = x.shape(axis);
    const std::int64_t count = A * B;
    // One channel: the general path drops the unit axis and views the data
    // as (1, 1, A*B), which the kernels reduce in another order; leave it
    // to the general path rather than differ in the last bit.
    if (C == 1) return py::none();
    if (rm.is_none() != rv.is_none()) return py::none();
    const bool has_running = !rm.is_none();
    if (has_running && !(vector_of<T>(rm, C, training) && vector_of<T>(rv, C, training)))
        return py::none();
    if (training ? (count <= 1 || !(eps > 0.0)) : !has_running) return py::none();
    if (!(momentum >= 0.0 && momentum <= 1.0)) return py::none();
    std::vector<double> wv, bv;
    if (!optional_param<T>(w, C, wv) || !optional_param<T>(b, C, bv)) return py::none();
    py::array y;
    if (!output_for<T>(x, out, y)) return py::none();

    const View3 v{A, C, B, C * B, B, 1};
    const KernelTable& t = active_table();
    const int nthreads = num_threads();
    const T* xd = static_cast<const T*>(x.data());
    T* yd = static_cast<T*>(y.mutable_data());
    if (training) {
        std::vector<double> mean(C), m2(C);
        const double* wp = wv.empty() ? nullptr : wv.data();
        const double* bp = bv.empty() ? nullptr : bv.data();
        const auto kernel = bn_train_kernel<T>(t);
        {
            py::gil_scoped_release release;
            kernel(xd, v, yd, v, wp, bp, eps, mean.data(), m2.data(), nthreads);
        }
        if (has_running) {
            T* rmp = mutable_data_of<T>(rm);
            T* rvp = mutable_data_of<T>(rv);
            const double keep = 1.0 - momentum;
            const double dof = static_cast<double>(count - 1);
            // Two loops, as the general path updates one array after the
            // other (the same even if the two arrays overlap).
            for (std::int64_t c = 0; c < C; ++c)
                rmp[c] = static_cast<T>(keep * static_cast<double>(rmp[c]) + momentum * mean[c]);
            for (std::int64_t c = 0; c < C; ++c)
                rvp[c] = static_cast<T>(keep * static_cast<double>(rvp[c]) + momentum * (m2[c] / dof));
        }
    } else {
        const T* rmp = data_of<T>(rm);
        const T* rvp = data_of<T>(rv);
        std::vector<T> scale(C), shift(C);
        for (std::int64_t c = 0; c < C; ++c) {
            const double invstd = 1.0 / std::sqrt(static_cast<double>(rvp[c]) + eps);
            const double s = wv.empty() ? invstd : invstd * wv[c];
            const double mean_s = static_cast<double>(rmp[c]) * s;
            scale[c] = static_cast<T>(s);
            shift[c] = static_cast<T>((bv.empty() ? 0.0 : bv[c]) - mean_s);
        }
        const auto kernel = affine_kernel<T>(t);
        py::gil_scoped_release release;
        kernel(xd, v, yd, v, nullptr, nullptr, scale.data(), shift.data(), 0, nthreads);
    }
    return std::move(y);
}

template <class T>
py::object row_norm_typed(const py::array& x, py::handle w, py::handle b, double eps, bool rms,
                          py::handle out) {
    const py::ssize_t nd = x.ndim();
    if (nd < 1 || x.size() == 0) return py::none();
    const std::int64_t D = x.shape(nd - 1);
    const std::int64_t R = x.size() / D;
    std::vector<T> ones, zeros;
    const T* wp;
    const T* bp;
    if (w.is_none()) {
        ones.assign(D, T(1));
        wp = ones.data();
    } else {
        if (!vector_of<T>(w, D)) return py::none();
        wp = data_of<T>(w);
    }
    if (b.is_none()) {
        zeros.assign(D, T(0));
        bp = zeros.data();
    } else {
        if (!vector_of<T>(b, D)) return py::none();
        bp = data_of<T>(b);
    }
    py::array y;
    if (!output_for<T>(x, out, y)) return py::none();
    const View3 v{1, R, D, R * D, D, 1};
    std::vector<double> mean(R), m2(R), rstd(R);
    const KernelTable& t = active_table();
    const auto kernel = row_forward_kernel<T>(t);
    const T* xd = static_cast<const T*>(x.data());
    T* yd = static_cast<T*>(y.mutable_data());
    const int nthreads = num_threads();
    {
        py::gil_scoped_release release;
        kernel(xd, v, yd, v, wp, bp, eps, rms, mean.data(), m2.data(), rstd.data(), nthreads);
    }
    return std::move(y);
}

}  // namespace

void register_fast(py::module_& m) {
    m.def(
        "batch_norm_fast",
        [](py::handle x, py::handle rm, py::handle rv, py::handle w, py::handle b,
           py::handle training, py::handle momentum, py::handle eps, py::handle axis,
           py::handle out) -> py::object {
            double mom, e;
            long ax;
            if (!PyBool_Check(training.ptr()) || !real_arg(momentum, mom) || !real_arg(eps, e) ||
                e < 0.0 || !int_arg(axis, ax))
                return py::none();
            const bool train = training.ptr() == Py_True;
            if (plain_array<float>(x))
                return batch_norm_typed<float>(py::reinterpret_borrow<py::array>(x), rm, rv, w, b,
                                               train, mom, e, ax, out);
            if (plain_array<double>(x))
                return batch_norm_typed<double>(py::reinterpret_borrow<py::array>(x), rm, rv, w, b,
                                                train, mom, e, ax, out);
            return py::none();
        },
        "batch_norm for the common case, or None (then use the general path).");
    m.def(
        "layer_norm_fast",
        [](py::handle x, py::handle w, py::handle b, py::handle axis, py::handle eps, bool rms,
           py::handle out) -> py::object {
            // eps=None: RMS norm's default, the dtype's machine epsilon.
            double e = 0.0;
            long ax;
            const bool default_eps = rms && eps.is_none();
            if ((!default_eps && (!real_arg(eps, e) || e < 0.0)) || !int_arg(axis, ax))
                return py::none();
            if (plain_array<float>(x)) {
                if (default_eps) e = std::numeric_limits<float>::epsilon();
                const auto a = py::reinterpret_borrow<py::array>(x);
                if (ax != -1 && ax != a.ndim() - 1) return py::none();
                return row_norm_typed<float>(a, w, b, e, rms, out);
            }
            if (plain_array<double>(x)) {
                if (default_eps) e = std::numeric_limits<double>::epsilon();
                const auto a = py::reinterpret_borrow<py::array>(x);
                if (ax != -1 && ax != a.ndim() - 1) return py::none();
                return row_norm_typed<double>(a, w, b, e, rms, out);
            }
            return py::none();
        },
        "layer_norm/rms_norm over the last axis for the common case, or None.");
}

}  // namespace bnfast::bindings
