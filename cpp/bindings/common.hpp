// Validation helpers shared by the binding files. Bindings hold no math:
// they check arrays, convert them to raw views, release the GIL and call a
// kernel of the active table or a formula (cpp/formulas.cpp).
#pragma once
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <atomic>
#include <cstdint>
#include <string>
#include <type_traits>
#include <utility>

#include "bnfast/dispatch.hpp"
#include "bnfast/half.hpp"
#include "bnfast/runtime.hpp"
#include "bnfast/view3.hpp"

namespace bnfast::bindings {

namespace py = pybind11;

// Whether the calling thread is the interpreter's main thread (the only
// one where a SIGINT becomes KeyboardInterrupt). Set at import.
bool on_main_thread();

// After a kernel stopped for a SIGINT (bnfast::Interrupted), with the GIL
// held: raises what Python's handler made of the signal (KeyboardInterrupt
// by default), or KeyboardInterrupt if it raised nothing, since the call's
// outputs are incomplete.
[[noreturn]] void raise_interrupted();

// Runs a kernel call f() with the GIL released. A call on more than
// interrupt_bytes() input bytes on the main thread can be stopped by
// Ctrl-C between work items (its outputs are then undefined; inputs are
// never written).
template <class F>
void call_kernel(std::int64_t input_bytes, F&& f) {
    bool interrupted = false;
    {
        InterruptScope scope(input_bytes, on_main_thread());
        py::gil_scoped_release release;
        try {
            std::forward<F>(f)();
        } catch (const Interrupted&) {
            interrupted = true;
        }
    }
    if (interrupted) raise_interrupted();
}

// The half-precision dtypes, in native byte order: NumPy's float16, and
// bfloat16, a dtype NumPy does not have. bfloat16 arrays (ml_dtypes, the
// package JAX uses) arrive as 2-byte elements whose dtype's name is the
// type tag; nothing here imports ml_dtypes.
inline bool is_float16(const py::dtype& dt) {
    return dt.kind() == 'f' && dt.itemsize() == 2 && dt.byteorder() != '>';
}
// ml_dtypes' bfloat16: a user-defined dtype named "bfloat16". Its type
// number, fixed once registered, is remembered: the name lookup costs about
// a microsecond, as much as a tiny call's kernel.
inline bool is_bfloat16(const py::dtype& dt) {
    if (dt.kind() != 'V' || dt.itemsize() != 2 || dt.has_fields()) return false;
    static std::atomic<int> known_num{-1};
    const int num = py::detail::array_descriptor_proxy(dt.ptr())->type_num;
    if (num == known_num.load(std::memory_order_relaxed)) return true;
    if (!py::str(dt.attr("name")).equal(py::str("bfloat16"))) return false;
    known_num.store(num, std::memory_order_relaxed);
    return true;
}

// Equivalent dtype (not the same dtype object: pickled arrays and dtypes
// with metadata carry their own descriptor).
template <class T>
bool has_dtype(const py::array& a) {
    if constexpr (std::is_same_v<T, f16_t>) return is_float16(a.dtype());
    else if constexpr (std::is_same_v<T, bf16_t>) return is_bfloat16(a.dtype());
    else return py::isinstance<py::array_t<T>>(a);
}

// Calls f(T{}) with T the element type of a -- float, double, f16_t or
// bf16_t (bnfast/half.hpp) -- the one place that maps a NumPy dtype to a
// kernel's storage type.
template <class F>
decltype(auto) with_dtype(const py::array& a, const char* func, const char* name, F&& f) {
    if (has_dtype<float>(a)) return f(float{});
    if (has_dtype<double>(a)) return f(double{});
    if (has_dtype<f16_t>(a)) return f(f16_t{});
    if (has_dtype<bf16_t>(a)) return f(bf16_t{});
    throw py::type_error(std::string(func) + ": " + name +
                         " must be float32, float64, float16 or bfloat16");
}

// The active table's kernels of type T: active_kernels<T>().batch_norm.train.
template <class T>
const FamilyKernels<T>& active_kernels() {
    return active_table().of<T>();
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
            throw py::value_error(std::string(name) +
                                  " has strides that are not a multiple of its item size");
        strides[i] = a.strides(i) / itemsize;
    }
    return View3{a.shape(0), a.shape(1), a.shape(2), strides[0], strides[1], strides[2]};
}

// The view of an array that must have x's (A, C, B) shape.
inline View3 matching_view(const py::array& a, const View3& like, const char* name,
                           const char* func) {
    const View3 v = view3_of(a, name);
    if (v.A != like.A || v.C != like.C || v.B != like.B)
        throw py::value_error(std::string(func) + ": " + name + " must have x's shape");
    return v;
}

// The views of x and an output y of kernel type T: y of x's dtype and shape,
// writeable.
// The views are used through named references, not structured bindings:
// lambdas cannot capture a structured binding before C++20 (Clang 14 and
// 15 refuse; GCC accepts it as an extension).
struct InOutViews {
    View3 x, y;
};

template <class T>
InOutViews in_out_views(const py::array& x, const py::array& y, const char* func) {
    const View3 xv = view3_of(x, "x");
    const View3 yv = view3_of(y, "y");
    if (!has_dtype<T>(y)) throw py::type_error(std::string(func) + ": y must have x's dtype");
    if (xv.A != yv.A || xv.C != yv.C || xv.B != yv.B)
        throw py::value_error(std::string(func) + ": x and y must have the same shape");
    if (!y.writeable()) throw py::value_error(std::string(func) + ": y is read-only");
    return {xv, yv};
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

// A per-channel parameter: 1-D, C-contiguous, dtype T, length c.
template <class T>
const T* channel_param(const py::array& a, std::int64_t c, const char* name) {
    if (!has_dtype<T>(a) || a.ndim() != 1 || a.shape(0) != c ||
        !(a.flags() & py::array::c_style))
        throw py::value_error(std::string(name) +
                              " must be a contiguous 1-D array of length C and x's dtype");
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

// An optional per-channel float64 parameter (None: nullptr).
inline const double* optional_f64_param(const py::object& p, std::int64_t n, const char* name) {
    if (p.is_none()) return nullptr;
    return channel_param<double>(existing_array(p, name), n, name);
}

}  // namespace bnfast::bindings
