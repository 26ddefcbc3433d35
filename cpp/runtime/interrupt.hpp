// Internal to cpp/runtime/: the stop flag the pool checks between blocks.
#pragma once
#include <atomic>

namespace bnfast::parallel {

// The SIGINT flag of the calling thread's interruptible call, or nullptr
// outside one (see bnfast::InterruptScope).
const std::atomic<int>* current_stop_flag() noexcept;

}  // namespace bnfast::parallel
