// Argument checks of the fast entry points (batch_norm_fast, layer_norm_fast).
//
// They take the common call: C-contiguous float32/float64 arrays, parameters
// already of x's dtype (batch_norm_fast and layer_norm_fast also take
// float16/bfloat16 x with float32 parameters, PyTorch's mixed convention),
// plain Python bool/float/int options. Python's
// argument handling and the (A, C, B) planning cost ~20 us per call, ten
// times the kernel on a small batch; these skip both. Each returns None
// whenever anything is unusual (other layouts or dtypes, bad values,
// overlapping out=), and the Python layer then takes its general path, which
// owns every error message. When they do run, they compute exactly what the
// general path computes, bit for bit: the same kernels on the same (A, C, B)
// view and the same formulas (tests/test_fast_path.py compares the two
// paths bitwise). So the checks below return false, never raise.
#pragma once
#include <Python.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <vector>

#include "common.hpp"

namespace bnfast::bindings::fast {

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
inline bool real_arg(py::handle h, double& out) {
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

inline bool int_arg(py::handle h, long& out) {
    if (!PyLong_CheckExact(h.ptr())) return false;
    int overflow = 0;
    out = PyLong_AsLongAndOverflow(h.ptr(), &overflow);
    return overflow == 0 && !(out == -1 && PyErr_Occurred());
}

// The (A, C, B) view of a C-contiguous x with channels on `axis`, as the
// general path folds it; false (the general path's call) for fewer than 2
// dimensions, no elements, an axis out of range, or one channel (which the
// general path views as (1, 1, A*B) and reduces in another order).
inline bool channel_view(const py::array& x, long axis, View3& v) {
    const py::ssize_t nd = x.ndim();
    if (nd < 2 || x.size() == 0 || axis < -nd || axis >= nd) return false;
    if (axis < 0) axis += nd;
    std::int64_t A = 1, B = 1;
    for (py::ssize_t i = 0; i < axis; ++i) A *= x.shape(i);
    for (py::ssize_t i = axis + 1; i < nd; ++i) B *= x.shape(i);
    const std::int64_t C = x.shape(axis);
    if (C == 1) return false;
    v = View3{A, C, B, C * B, B, 1};
    return true;
}

// Two C-contiguous arrays share no byte.
inline bool disjoint(const py::array& a, const py::array& b) {
    const auto* as = static_cast<const char*>(a.data());
    const auto* bs = static_cast<const char*>(b.data());
    return as + a.nbytes() <= bs || bs + b.nbytes() <= as;
}

// out=None gives a new C-contiguous array like x; otherwise out must be a
// plain array of x's shape and dtype that is x itself or does not overlap it.
template <class T>
bool output_for(const py::array& x, py::handle out, py::array& y) {
    if (out.is_none()) {
        std::vector<py::ssize_t> shape(x.shape(), x.shape() + x.ndim());
        y = py::array(x.dtype(), shape);  // (x's dtype: py::array_t knows no half types)
        return true;
    }
    if (!plain_array<T>(out)) return false;
    y = py::reinterpret_borrow<py::array>(out);
    if (y.ndim() != x.ndim() || !y.writeable()) return false;
    for (py::ssize_t i = 0; i < x.ndim(); ++i)
        if (y.shape(i) != x.shape(i)) return false;
    return y.data() == x.data() || disjoint(x, y);
}

template <class T>
const T* data_of(py::handle h) {
    return static_cast<const T*>(py::reinterpret_borrow<py::array>(h).data());
}

template <class T>
T* mutable_data_of(py::handle h) {
    return static_cast<T*>(py::reinterpret_borrow<py::array>(h).mutable_data());
}

// The dtype's machine epsilon (np.finfo(dtype).eps; bfloat16 2**-7, as
// _validate.machine_eps).
template <class T>
constexpr double machine_eps() {
    if constexpr (std::is_same_v<T, f16_t>) return 0x1p-10;
    else if constexpr (std::is_same_v<T, bf16_t>) return 0x1p-7;
    else return std::numeric_limits<T>::epsilon();
}

// Calls f(T{}, array) when x is a plain float32/float64 array (with kHalf
// also float16/bfloat16, whose parameters are then float32, compute_t<T>);
// else None.
template <bool kHalf = false, class F>
py::object with_plain_dtype(py::handle x, F&& f) {
    if (plain_array<float>(x)) return f(float{}, py::reinterpret_borrow<py::array>(x));
    if (plain_array<double>(x)) return f(double{}, py::reinterpret_borrow<py::array>(x));
    if constexpr (kHalf) {
        if (plain_array<f16_t>(x)) return f(f16_t{}, py::reinterpret_borrow<py::array>(x));
        if (plain_array<bf16_t>(x)) return f(bf16_t{}, py::reinterpret_borrow<py::array>(x));
    }
    return py::none();
}

}  // namespace bnfast::bindings::fast
