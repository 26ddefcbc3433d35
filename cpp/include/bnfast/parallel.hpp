// The kernels' view of the thread pool (cpp/runtime/thread_pool.cpp,
// compiled once). Declarations only: this header is included by the kernel
// sources, which are compiled once per ISA, so it must hold no inline code
// (an inline function compiled with AVX flags could be picked by the linker
// for every caller). The typed wrappers live in cpp/kernels/simd.hpp.
#pragma once
#include <cstdint>

namespace bnfast::parallel {

// One block of a loop: indices [begin, end), run by participant `slot`
// (0 is the calling thread; slots of one run are distinct and < nthreads,
// so they can index per-thread scratch).
using BlockFn = void (*)(void* ctx, std::int64_t begin, std::int64_t end, int slot);

// Runs fn over [0, n) cut into blocks of `grain` consecutive indices, on the
// calling thread and at most nthreads - 1 helpers (fewer when other bnfast
// calls hold the cores). Each block runs exactly once; which thread runs it
// must not matter to the results. The caller claims blocks itself and waits
// only for blocks a helper has started. Rethrows the first exception of a
// block (after every started block has finished), throws
// bnfast::ThreadStartError if a helper cannot be started and
// bnfast::Interrupted if a SIGINT stopped an interruptible call.
void run(int nthreads, std::int64_t n, std::int64_t grain, BlockFn fn, void* ctx);

// Whether the calling thread is in an interruptible call: then even a
// one-thread loop goes through run(), which checks between blocks.
bool interruptible() noexcept;

}  // namespace bnfast::parallel
