// The _core extension module: wires the register_* files and the dispatch
// controls.
#include <pybind11/stl.h>

#include <stdexcept>

#include "bnfast/dispatch.hpp"
#include "common.hpp"

namespace bnfast::bindings {
void register_stats(py::module_& m);
void register_norm(py::module_& m);
void register_backward(py::module_& m);
void register_fast(py::module_& m);
void register_formulas(py::module_& m);
}  // namespace bnfast::bindings

namespace py = pybind11;

PYBIND11_MODULE(_core, m) {
    m.doc() = "bnfast native kernels (internal; use the bnfast package)";
    bnfast::init_dispatch();

    m.def("capability", [] { return std::string(bnfast::isa_name(bnfast::active_isa())); });
    m.def("set_capability", [](const std::string& name) {
        bnfast::Isa isa;
        try {
            isa = bnfast::parse_isa(name);
        } catch (const std::invalid_argument& e) {
            throw py::value_error(e.what());
        }
        bnfast::set_active_isa(isa);
    });
    m.def("all_capabilities", &bnfast::all_isa_names);
    m.def("compiled_capabilities", &bnfast::compiled_isa_names);
    m.def("supported_capabilities", &bnfast::supported_isa_names);
    m.def("openmp", &bnfast::have_openmp);
    m.def("default_num_threads", &bnfast::default_num_threads);
    m.def("get_num_threads", &bnfast::num_threads);
    m.def("set_num_threads", [](int n) {
        if (n < 1) throw py::value_error("number of threads must be >= 1");
        bnfast::set_num_threads(n);
    });
    m.attr("compiler") = BNFAST_COMPILER_INFO;

    bnfast::bindings::register_stats(m);
    bnfast::bindings::register_norm(m);
    bnfast::bindings::register_backward(m);
    bnfast::bindings::register_fast(m);
    bnfast::bindings::register_formulas(m);
}
