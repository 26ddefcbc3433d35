// The parallel runtime's controls, for the bindings and dispatch (not for
// kernels, which see only bnfast/parallel.hpp): thread counts, the cores
// bnfast may use, and interruptible calls. Defined in cpp/runtime/.
#pragma once
#include <cstdint>
#include <stdexcept>

namespace bnfast {

// Thread count of a call, decided in one place (threads_for_call):
//   max(1, min(requested, limit, hard_limit))
//   requested  = the calling OS thread's override if set, else the process setting
//   limit      = the threadpoolctl cap (process-wide), unlimited if unset
//   hard_limit = OMP_THREAD_LIMIT, given by the Python layer, unlimited if unset
// "Unset" is 0 below. The pool then grants at most the free cores.
int threads_for_call();
void set_num_threads(int n);  // the process setting, n >= 1
int process_num_threads();
void set_thread_num_threads(int n);  // this OS thread's override; 0 clears
int thread_num_threads();            // 0 if none
void set_thread_limit(int n);        // 0: unlimited
int thread_limit();
void set_hard_thread_limit(int n);  // 0: unlimited
int hard_thread_limit();

// CPUs this process may run on (sched_getaffinity; hardware_concurrency
// elsewhere), at least 1. Re-read on every call; the pool uses the last value.
int usable_cores();
int cached_usable_cores();
int default_num_threads();  // usable_cores(): the environment is the Python layer's

// Calls whose inputs exceed this many bytes are interruptible (see
// InterruptScope); default 1 GiB.
void set_interrupt_bytes(std::int64_t n);
std::int64_t interrupt_bytes();

// Thrown by the pool when a worker thread cannot be started; a
// std::runtime_error, so Python sees a RuntimeError naming the fix.
class ThreadStartError : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

// Thrown out of a kernel that stopped early because of a SIGINT during an
// interruptible call; outputs are then undefined. The bindings turn it into
// KeyboardInterrupt (via PyErr_CheckSignals once they hold the GIL again).
class Interrupted : public std::exception {
public:
    const char* what() const noexcept override { return "bnfast call interrupted"; }
};

// While alive, for a call on more than interrupt_bytes() input bytes on
// the interpreter's main thread: a SIGINT sets a flag the pool checks
// between blocks (and is passed on to the previous handler, Python's), so
// the kernel stops early with bnfast::Interrupted. Does nothing otherwise
// (other threads never see SIGINT's Python exception, and a SIGINT left at
// SIG_DFL or SIG_IGN keeps its meaning).
class InterruptScope {
public:
    InterruptScope(std::int64_t bytes, bool main_thread);
    ~InterruptScope();
    InterruptScope(const InterruptScope&) = delete;
    InterruptScope& operator=(const InterruptScope&) = delete;

private:
    bool active_ = false;
};

}  // namespace bnfast
