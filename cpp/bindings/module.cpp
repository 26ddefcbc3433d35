// The _core extension module: one register_* function per binding file.
#include "bnfast/dispatch.hpp"
#include "common.hpp"

namespace bnfast::bindings {
void register_runtime(py::module_& m);
void register_moments(py::module_& m);
void register_affine(py::module_& m);
void register_batch_norm(py::module_& m);
void register_layer_norm(py::module_& m);
void register_group_norm(py::module_& m);
void register_formulas(py::module_& m);
void register_memory_floor(py::module_& m);
}  // namespace bnfast::bindings

PYBIND11_MODULE(_core, m) {
    m.doc() = "bnfast native kernels (internal; use the bnfast package)";
    bnfast::init_dispatch();
    bnfast::bindings::register_runtime(m);
    bnfast::bindings::register_moments(m);
    bnfast::bindings::register_affine(m);
    bnfast::bindings::register_batch_norm(m);
    bnfast::bindings::register_layer_norm(m);
    bnfast::bindings::register_group_norm(m);
    bnfast::bindings::register_formulas(m);
    bnfast::bindings::register_memory_floor(m);
}
