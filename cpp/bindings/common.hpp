// Validation helpers shared by the binding files. Bindings hold no math:
// they check arrays, convert them to raw views, release the GIL and call the
// active kernel table.
#pragma once
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>

#include "bnfast/view3.hpp"

namespace bnfast::bindings {

namespace py = pybind11;

// Equivalent dtype (not the same dtype object: pickled arrays and dtypes
// with metadata carry their own descriptor).
template <class T>
bool has_dtype(const py::array& a) {
    return py::isinstance<py::array_t<T>>(a);
}

// Calls f(T{}) with T the element type of a, float or double: the one place
// that maps a NumPy dtype to a kernel's type.
template <class F>
decltype(auto) with_dtype(const py::array& a, const char* func, const char* name, F&& f) {
    if (has_dtype<float>(a)) return f(float{});
    if (has_dtype<double>(a)) return f(double{});
    throw py::type_error(std::string(func) + ": " + name + " must be float32 or float64");
}

// The (A, C, B) view of a 3-D array, strides converted to elements.
inline View3 view3_of(const py::array& a, const char* name) {
    if (a.ndim() != 3) throw py::value_error(std::string(name) + " must be a 3-D (A, C, B) view");
    if (!(a.flags() & py::detail::npy_api::NPY_ARRAY_ALIGNED_))
        throw py::value_error(std::string(name) + " is not aligned to its item size");
    const auto itemsize = static_cast<py::ssize_t>(a.itemsize());
    std::int64_t strides[3];
    for (int i = 0; i < 3; ++i) {
        if (a.strides(i) % itemsize != 0)
            throw py::value_error(std::string(name) + " has strides that are not a multiple of its item size");
        strides[i] = a.strides(i) / itemsize;
    }
    return View3{a.shape(0), a.shape(1), a.shape(2), strides[0], strides[1], strides[2]};
}

// A per-channel parameter: 1-D, C-contiguous, dtype T, length c.
template <class T>
const T* channel_param(const py::array& a, std::int64_t c, const char* name) {
    if (!has_dtype<T>(a) || a.ndim() != 1 || a.shape(0) != c ||
        !(a.flags() & py::array::c_style))
        throw py::value_error(std::string(name) + " must be a contiguous 1-D array of length C and x's dtype");
    return static_cast<const T*>(a.data());
}

// An optional array argument passed as py::object: must already be an
// ndarray, so the pointer taken from it stays owned by the caller (a
// converted temporary would be freed before the kernel runs).
inline py::array existing_array(const py::object& obj, const char* name) {
    if (!py::isinstance<py::array>(obj))
        throw py::type_error(std::string(name) + " must be a NumPy array or None");
    return py::reinterpret_borrow<py::array>(obj);
}

}  // namespace bnfast::bindings
