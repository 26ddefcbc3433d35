// The memory-floor family: what moving bytes costs on this machine, the
// floor the benchmark divides every pass by (not a normalization op). One
// kernel reads every byte of src and writes every byte of dst with
// streaming stores, each work item reading and writing proportional
// slices, as a fused normalization pass does; with an empty dst it is the
// read-only floor of a reduction.
#pragma once
#include <cstdint>

namespace bnfast {

// Returns the XOR of src's 64-bit words (native byte order; the last,
// partial word zero-padded): a result that needs every byte read and does
// not depend on the thread count. dst[i] = fill for every i.
using memory_floor_fn = std::uint64_t (*)(const std::uint8_t* src, std::int64_t src_bytes,
                                          std::uint8_t* dst, std::int64_t dst_bytes,
                                          std::uint8_t fill, int nthreads);

struct MemoryFloorKernels {
    memory_floor_fn memory_floor;
};

#if defined(BNFAST_ISA)
namespace kernels::BNFAST_ISA {
MemoryFloorKernels memory_floor_kernels();  // memory_floor.cpp
}
#endif

}  // namespace bnfast
