// Binding of the memory-floor family (the benchmark's floor pass).
#include <cstdint>

#include "common.hpp"

namespace bnfast::bindings {

namespace {

// A C-contiguous array of any dtype, read as its bytes.
void check_bytes(const py::array& a, const char* name) {
    if (!(a.flags() & py::array::c_style))
        throw py::value_error(std::string("memory_floor: ") + name + " must be C-contiguous");
}

}  // namespace

void register_memory_floor(py::module_& m) {
    m.def(
        "memory_floor",
        [](const py::array& src, py::array& dst, int fill) {
            check_bytes(src, "src");
            check_bytes(dst, "dst");
            if (!dst.writeable()) throw py::value_error("memory_floor: dst is read-only");
            if (fill < 0 || fill > 255)
                throw py::value_error("memory_floor: fill must be a byte value, 0 to 255");
            const auto* s = static_cast<const std::uint8_t*>(src.data());
            auto* d = static_cast<std::uint8_t*>(dst.mutable_data());
            const std::int64_t ns = src.nbytes(), nd = dst.nbytes();
            const auto kernel = active_table().memory_floor.memory_floor;
            const int nthreads = threads_for_call();
            std::uint64_t checksum = 0;
            call_kernel(ns, [&] {
                checksum = kernel(s, ns, d, nd, static_cast<std::uint8_t>(fill), nthreads);
            });
            return checksum;
        },
        py::arg("src"), py::arg("dst"), py::arg("fill") = 0,
        "Reads every byte of src and fills dst with `fill` using streaming stores, "
        "in one pass on the thread pool; returns the XOR of src's 64-bit words "
        "(native byte order, the last one zero-padded). The benchmark's memory floor.");
}

}  // namespace bnfast::bindings
