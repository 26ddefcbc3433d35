// Interruptible calls (bnfast::InterruptScope): a SIGINT handler that sets a
// flag the pool checks between blocks, installed only for the duration of a
// large call on the interpreter's main thread and chained to the previous
// handler (Python's, which records the signal for PyErr_CheckSignals).
//
// Windows has no sigaction (its CRT resets a signal() handler before each
// call, so chaining is racy): there no call is interruptible; Ctrl-C is
// seen by Python when the call returns.
#if !defined(_WIN32)
#include <signal.h>
#endif

#include <atomic>
#include <cstdint>

#include "bnfast/runtime.hpp"
#include "interrupt.hpp"

namespace bnfast {

namespace {
thread_local const std::atomic<int>* t_stop = nullptr;
}  // namespace

#if !defined(_WIN32)
namespace {

std::atomic<int> g_sigint{0};
struct sigaction g_previous;  // written only while no handler of ours is installed

static_assert(std::atomic<int>::is_always_lock_free, "the signal handler needs a lock-free flag");

void on_sigint(int sig, siginfo_t* info, void* context) {
    g_sigint.store(1, std::memory_order_relaxed);
    if (g_previous.sa_flags & SA_SIGINFO) {
        if (g_previous.sa_sigaction != nullptr) g_previous.sa_sigaction(sig, info, context);
    } else if (g_previous.sa_handler != SIG_DFL && g_previous.sa_handler != SIG_IGN) {
        g_previous.sa_handler(sig);
    }
}

}  // namespace

InterruptScope::InterruptScope(std::int64_t bytes, bool main_thread) {
    if (!main_thread || bytes <= interrupt_bytes() || t_stop != nullptr) return;
    struct sigaction current;
    if (sigaction(SIGINT, nullptr, &current) != 0) return;
    // Default or ignored SIGINT: the user chose to die or to ignore it.
    if (!(current.sa_flags & SA_SIGINFO) &&
        (current.sa_handler == SIG_DFL || current.sa_handler == SIG_IGN))
        return;
    g_previous = current;
    g_sigint.store(0, std::memory_order_relaxed);
    struct sigaction ours = {};
    ours.sa_sigaction = on_sigint;
    ours.sa_flags = SA_SIGINFO | (current.sa_flags & (SA_ONSTACK | SA_RESTART));
    sigemptyset(&ours.sa_mask);
    if (sigaction(SIGINT, &ours, nullptr) != 0) return;
    t_stop = &g_sigint;
    active_ = true;
}

InterruptScope::~InterruptScope() {
    if (!active_) return;
    t_stop = nullptr;
    sigaction(SIGINT, &g_previous, nullptr);
}
#else
InterruptScope::InterruptScope(std::int64_t, bool) {}
InterruptScope::~InterruptScope() { (void)active_; }  // never set here
#endif

namespace parallel {

const std::atomic<int>* current_stop_flag() noexcept { return t_stop; }

}  // namespace parallel

}  // namespace bnfast
