// Bindings of the runtime state: the active capability (kernel table,
// dispatch.cpp) and the thread counts (runtime/threads.cpp).
#include <pybind11/stl.h>
#include <pythread.h>

#include <cstdint>
#include <optional>
#include <string>

#include "bnfast/cpu_features.hpp"
#include "common.hpp"

namespace bnfast::bindings {

namespace {

// None <-> 0 ("unset") for the optional counts; 0 itself is refused.
int count_or_unset(std::optional<int> n, const char* what) {
    if (!n) return 0;
    if (*n < 1) throw py::value_error(std::string(what) + " must be >= 1 or None");
    return *n;
}

std::optional<int> unset_as_none(int n) { return n > 0 ? std::optional<int>(n) : std::nullopt; }

unsigned long g_main_thread = 0;

}  // namespace

bool on_main_thread() { return PyThread_get_thread_ident() == g_main_thread; }

void raise_interrupted() {
    if (PyErr_CheckSignals() != 0) throw py::error_already_set();
    PyErr_SetNone(PyExc_KeyboardInterrupt);
    throw py::error_already_set();
}

// dispatch.cpp and threads.cpp throw std::invalid_argument (ValueError in
// Python) for a bad name or count and std::runtime_error (RuntimeError) for
// an ISA this build or CPU cannot run.
void register_runtime(py::module_& m) {
    g_main_thread =
        py::module_::import("threading").attr("main_thread")().attr("ident").cast<unsigned long>();
    m.def("all_capabilities", &all_isa_names,
          "Every capability bnfast knows (the ISA list), compiled here or not.");
    m.def("capability", [] { return std::string(isa_name(active_isa())); });
    m.def("set_capability", [](const std::string& name) { set_active_isa(parse_isa(name)); },
          py::arg("name"));
    m.def("compiled_capabilities", &compiled_isa_names);
    m.def("supported_capabilities", &supported_isa_names);
    m.def("openmp", &have_openmp, "Whether the kernels run on OpenMP threads.");
    m.def("default_num_threads", &default_num_threads,
          "The usable cores (the default when no setting or environment variable applies).");
    m.def("usable_cores", &usable_cores,
          "CPUs this process may run on (its affinity mask), at least 1.");
    m.def("get_num_threads", &threads_for_call,
          "The thread count the next call on this OS thread requests: max(1, min(this "
          "thread's override or the process setting, the thread limit, the hard limit)).");
    m.def("set_num_threads", &set_num_threads, py::arg("n"),
          "The process-wide thread count (n >= 1).");
    m.def(
        "get_thread_num_threads", [] { return unset_as_none(thread_num_threads()); },
        "This OS thread's override of the thread count, or None.");
    m.def(
        "set_thread_num_threads",
        [](std::optional<int> n) { set_thread_num_threads(count_or_unset(n, "number of threads")); },
        py::arg("n"), "Set (n >= 1) or clear (None) this OS thread's override.");
    m.def(
        "get_thread_limit", [] { return unset_as_none(thread_limit()); },
        "The process-wide cap (threadpoolctl), or None for no cap.");
    m.def(
        "set_thread_limit",
        [](std::optional<int> n) { set_thread_limit(count_or_unset(n, "thread limit")); },
        py::arg("n"), "Set (n >= 1) or clear (None) the process-wide cap (threadpoolctl).");
    m.def(
        "get_hard_thread_limit", [] { return unset_as_none(hard_thread_limit()); },
        "The hard cap (OMP_THREAD_LIMIT), or None.");
    m.def(
        "set_hard_thread_limit",
        [](std::optional<int> n) { set_hard_thread_limit(count_or_unset(n, "thread limit")); },
        py::arg("n"), "Set (n >= 1) or clear (None) the hard cap (OMP_THREAD_LIMIT).");
    m.def("get_interrupt_bytes", &interrupt_bytes,
          "Calls on more input bytes than this check for Ctrl-C between work items.");
    m.def("set_interrupt_bytes", &set_interrupt_bytes, py::arg("n"),
          "Set the interruptible-call threshold in bytes (n >= 0; default 1 GiB).");
    m.def("l2_cache_bytes", &l2_cache_bytes,
          "One core's L2 cache in bytes as the kernels use it (0: unknown).");
    m.def("set_l2_cache_bytes", &set_l2_cache_bytes, py::arg("n"),
          "Set the L2 size the kernels assume (tests); n < 0 restores the OS's answer.");
    m.attr("compiler") = BNFAST_COMPILER_INFO;
}

}  // namespace bnfast::bindings
