// Bindings of the runtime state: the active capability (kernel table) and
// the thread count, both owned by dispatch.cpp.
#include <pybind11/stl.h>

#include <string>

#include "common.hpp"

namespace bnfast::bindings {

// dispatch.cpp throws std::invalid_argument (ValueError in Python) for a bad
// name or count and std::runtime_error (RuntimeError) for an ISA this build
// or CPU cannot run.
void register_runtime(py::module_& m) {
    m.def("all_capabilities", &all_isa_names,
          "Every capability bnfast knows (the ISA list), compiled here or not.");
    m.def("capability", [] { return std::string(isa_name(active_isa())); });
    m.def("set_capability", [](const std::string& name) { set_active_isa(parse_isa(name)); },
          py::arg("name"));
    m.def("compiled_capabilities", &compiled_isa_names);
    m.def("supported_capabilities", &supported_isa_names);
    m.def("openmp", &have_openmp);
    m.def("default_num_threads", &default_num_threads);
    m.def("get_num_threads", &num_threads);
    m.def("set_num_threads", &set_num_threads, py::arg("n"));
    m.attr("compiler") = BNFAST_COMPILER_INFO;
}

}  // namespace bnfast::bindings
