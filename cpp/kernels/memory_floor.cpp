// The memory-floor kernel (memory_floor.hpp): the widest plain loads and
// streaming stores this ISA has, on the thread pool, with no arithmetic
// worth the name, so its time is the cost of the bytes alone.
#include "memory_floor.hpp"

#include <cstring>

#include "simd.hpp"

namespace bnfast::kernels::BNFAST_ISA {
namespace {

typedef std::uint64_t u64v __attribute__((vector_size(BNFAST_VEC_BYTES)));
constexpr std::int64_t kLine = 64;
constexpr int kVecPerLine = static_cast<int>(kLine / kVecBytes);
// Lines of src per work item: 256 KiB, many items per thread on a large
// array (for balance) and few enough that claiming one costs nothing.
constexpr std::int64_t kItemLines = 4096;

// Start of part k of n units cut into `parts` nearly equal parts.
std::int64_t part_start(std::int64_t k, std::int64_t n, std::int64_t parts) {
    return k * (n / parts) + (k < n % parts ? k : n % parts);
}

// XOR of the 64-bit words of src[begin, end), begin a multiple of 8.
std::uint64_t xor_words(const std::uint8_t* src, std::int64_t begin, std::int64_t end) {
    u64v acc[kVecPerLine] = {};
    std::int64_t i = begin;
    for (; i + kLine <= end; i += kLine)
        for (int v = 0; v < kVecPerLine; ++v) acc[v] ^= load_vec<u64v>(src + i + v * kVecBytes);
    std::uint64_t h = 0;
    for (int v = 0; v < kVecPerLine; ++v)
        for (int l = 0; l < kVecBytes / 8; ++l) h ^= acc[v][l];
    for (; i < end; i += 8) {  // the last line's words, the final one zero-padded
        std::uint64_t w = 0;
        std::memcpy(&w, src + i, static_cast<std::size_t>(end - i < 8 ? end - i : 8));
        h ^= w;
    }
    return h;
}

// dst[begin, end) = fill, streaming whole aligned vectors.
void fill_stream(std::uint8_t* dst, std::int64_t begin, std::int64_t end, std::uint8_t fill) {
    std::int64_t i = begin;
    const auto addr = reinterpret_cast<std::uintptr_t>(dst + i);
    const std::int64_t head = static_cast<std::int64_t>((kVecBytes - addr % kVecBytes) % kVecBytes);
    for (const std::int64_t stop = i + head < end ? i + head : end; i < stop; ++i) dst[i] = fill;
    f32v pattern;
    std::memset(&pattern, fill, sizeof(pattern));
    for (; i + kVecBytes <= end; i += kVecBytes)
        stream_vec(reinterpret_cast<float*>(dst + i), pattern);
    for (; i < end; ++i) dst[i] = fill;
}

std::uint64_t memory_floor_impl(const std::uint8_t* src, std::int64_t src_bytes,
                                std::uint8_t* dst, std::int64_t dst_bytes, std::uint8_t fill,
                                int nthreads) {
    const std::int64_t src_lines = (src_bytes + kLine - 1) / kLine;
    const std::int64_t dst_lines = (dst_bytes + kLine - 1) / kLine;
    const std::int64_t most = src_lines > dst_lines ? src_lines : dst_lines;
    const std::int64_t items = (most + kItemLines - 1) / kItemLines;
    if (items == 0) return 0;
    Scratch<std::uint64_t> partial(static_cast<std::size_t>(nthreads > 1 ? nthreads : 1));
    for (int t = 0; t < (nthreads > 1 ? nthreads : 1); ++t) partial.get()[t] = 0;
    parallel_blocks(nthreads, items, 1, [&](std::int64_t k0, std::int64_t k1, int slot) {
        for (std::int64_t k = k0; k < k1; ++k) {
            const std::int64_t s0 = part_start(k, src_lines, items) * kLine;
            const std::int64_t s1 = part_start(k + 1, src_lines, items) * kLine;
            partial.get()[slot] ^= xor_words(src, s0, s1 < src_bytes ? s1 : src_bytes);
            const std::int64_t d0 = part_start(k, dst_lines, items) * kLine;
            const std::int64_t d1 = part_start(k + 1, dst_lines, items) * kLine;
            fill_stream(dst, d0, d1 < dst_bytes ? d1 : dst_bytes, fill);
        }
    });
    std::uint64_t h = 0;  // XOR is order-free: the same for every thread count
    for (int t = 0; t < (nthreads > 1 ? nthreads : 1); ++t) h ^= partial.get()[t];
    return h;
}

}  // namespace

MemoryFloorKernels memory_floor_kernels() { return {&memory_floor_impl}; }

}  // namespace bnfast::kernels::BNFAST_ISA
