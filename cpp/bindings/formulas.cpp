// Bindings of the per-channel float64 formulas (cpp/formulas.cpp), vectorised
// over channels for the Python general path, so it rounds exactly as the
// kernels and the fast path do.
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "bnfast/formulas.hpp"
#include "common.hpp"

namespace bnfast::bindings {

namespace {

// A float64 input: an ndarray (TypeError otherwise), 1-D, C-contiguous,
// aligned and, when n >= 0, of length n (ValueError otherwise).
const double* f64_vector(const py::handle& h, std::int64_t n, const char* func, const char* name) {
    if (!py::isinstance<py::array>(h) || !has_dtype<double>(py::reinterpret_borrow<py::array>(h)))
        throw py::type_error(std::string(func) + ": " + name + " must be a float64 NumPy array");
    const auto a = py::reinterpret_borrow<py::array>(h);
    if (a.ndim() != 1)
        throw py::value_error(std::string(func) + ": " + name + " must be 1-D");
    const int need = py::detail::npy_api::NPY_ARRAY_C_CONTIGUOUS_ |
                     py::detail::npy_api::NPY_ARRAY_ALIGNED_;
    if ((a.flags() & need) != need)
        throw py::value_error(std::string(func) + ": " + name + " must be contiguous and aligned");
    if (n >= 0 && a.shape(0) != n)
        throw py::value_error(std::string(func) + ": " + name + " must have length " +
                              std::to_string(n) + ", got " + std::to_string(a.shape(0)));
    return static_cast<const double*>(a.data());
}

std::int64_t length_of(const py::handle& h) {
    return py::reinterpret_borrow<py::array>(h).shape(0);
}

// Whether two arrays' memory ranges overlap.
bool overlaps(const py::array& a, const py::array& b) {
    const auto* pa = static_cast<const char*>(a.data());
    const auto* pb = static_cast<const char*>(b.data());
    const auto na = static_cast<std::ptrdiff_t>(a.nbytes());
    const auto nb = static_cast<std::ptrdiff_t>(b.nbytes());
    return na > 0 && nb > 0 && pa < pb + nb && pb < pa + na;
}

py::array_t<double> invstd(const py::object& m2, double count, double eps) {
    const double* m = f64_vector(m2, -1, "invstd", "m2");
    const std::int64_t n = length_of(m2);
    py::array_t<double> out(n);
    double* o = out.mutable_data();
    {
        py::gil_scoped_release release;
        for (std::int64_t c = 0; c < n; ++c) o[c] = formulas::invstd(m[c], count, eps);
    }
    return out;
}

std::pair<py::array_t<double>, py::array_t<double>> eval_fold(const py::object& mean,
                                                              const py::object& invstd,
                                                              const py::object& weight,
                                                              const py::object& bias) {
    const double* m = f64_vector(mean, -1, "eval_fold", "mean");
    const std::int64_t n = length_of(mean);
    const double* s = f64_vector(invstd, n, "eval_fold", "invstd");
    const double* w = weight.is_none() ? nullptr : f64_vector(weight, n, "eval_fold", "weight");
    const double* b = bias.is_none() ? nullptr : f64_vector(bias, n, "eval_fold", "bias");
    py::array_t<double> scale(n), shift(n);
    double* sc = scale.mutable_data();
    double* sh = shift.mutable_data();
    {
        py::gil_scoped_release release;
        for (std::int64_t c = 0; c < n; ++c) {
            const auto f = formulas::eval_fold(m[c], s[c], w != nullptr ? w[c] : 1.0,
                                               b != nullptr ? b[c] : 0.0);
            sc[c] = f.scale;
            sh[c] = f.shift;
        }
    }
    return {std::move(scale), std::move(shift)};
}

void running_update(const py::object& running, const py::object& value, double momentum) {
    if (!py::isinstance<py::array>(running))
        throw py::type_error("running_update: running must be a NumPy array");
    auto r = py::reinterpret_borrow<py::array>(running);
    // float32/float64 only: the Python layer updates half-precision running
    // statistics through a float64 copy (bnfast/_batch_norm.py).
    const auto typed = [&](auto tag) {
        using T = decltype(tag);
        const int need = py::detail::npy_api::NPY_ARRAY_C_CONTIGUOUS_ |
                         py::detail::npy_api::NPY_ARRAY_ALIGNED_;
        if (r.ndim() != 1 || (r.flags() & need) != need)
            throw py::value_error("running_update: running must be a contiguous 1-D array");
        if (!r.writeable()) throw py::value_error("running_update: running is read-only");
        const std::int64_t n = r.shape(0);
        const double* v = f64_vector(value, n, "running_update", "value");
        // value read in full before running is written, as NumPy would.
        std::vector<double> copy;
        if (overlaps(r, py::reinterpret_borrow<py::array>(value))) {
            copy.assign(v, v + n);
            v = copy.data();
        }
        T* out = static_cast<T*>(r.mutable_data());
        // The GIL stays held: the read-modify-write of shared running
        // statistics is then atomic with respect to every other Python thread
        // (the fast path updates them under the GIL too), and it is C values.
        for (std::int64_t c = 0; c < n; ++c)
            out[c] = formulas::running_update(out[c], v[c], momentum);
    };
    if (has_dtype<float>(r)) typed(float{});
    else if (has_dtype<double>(r)) typed(double{});
    else throw py::type_error("running_update: running must be float32 or float64");
}

std::pair<py::array, py::array> split_center(const py::object& mean, const py::object& dtype) {
    const double* m = f64_vector(mean, -1, "split_center", "mean");
    const std::int64_t n = length_of(mean);
    if (dtype.is_none()) throw py::type_error("split_center: dtype must be float32 or float64");
    const py::dtype dt = py::dtype::from_args(dtype);
    const auto& api = py::detail::npy_api::get();
    const auto split = [&](auto tag) -> std::pair<py::array, py::array> {
        using T = decltype(tag);
        py::array_t<T> hi(n), lo(n);
        T* h = hi.mutable_data();
        T* l = lo.mutable_data();
        {
            py::gil_scoped_release release;
            for (std::int64_t c = 0; c < n; ++c) formulas::split_center(m[c], h[c], l[c]);
        }
        return {std::move(hi), std::move(lo)};
    };
    if (api.PyArray_EquivTypes_(dt.ptr(), py::dtype::of<float>().ptr())) return split(float{});
    if (api.PyArray_EquivTypes_(dt.ptr(), py::dtype::of<double>().ptr())) return split(double{});
    throw py::type_error("split_center: dtype must be float32 or float64");
}

}  // namespace

void register_formulas(py::module_& m) {
    m.def("invstd", &invstd, py::arg("m2"), py::arg("count"), py::arg("eps"),
          "1 / sqrt(m2 / count + eps) per channel, in float64 (inf where the sum is 0).");
    m.def("eval_fold", &eval_fold, py::arg("mean"), py::arg("invstd"), py::arg("weight"),
          py::arg("bias"),
          "(scale, shift) of the eval map y = x * scale + shift: scale = invstd * weight, "
          "shift = bias - mean * scale (weight, bias float64 or None).");
    m.def("running_update", &running_update, py::arg("running"), py::arg("value"),
          py::arg("momentum"),
          "running = (1 - momentum) * running + momentum * value in float64, rounded once to "
          "running's dtype (float32 or float64), in place.");
    m.def("split_center", &split_center, py::arg("mean"), py::arg("dtype"),
          "(hi, lo) of dtype with hi = mean rounded and lo = (mean - hi) rounded.");
}

}  // namespace bnfast::bindings
