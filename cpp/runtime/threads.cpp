// The thread-count settings and the usable cores (bnfast/runtime.hpp).
// Plain atomics: read on every call, set from any Python thread.
#include <atomic>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <thread>

#if defined(__linux__)
#include <sched.h>
#endif

#include "bnfast/runtime.hpp"

namespace bnfast {

namespace {

std::atomic<int> g_num_threads{0};  // 0 until set: default_num_threads()
std::atomic<int> g_thread_limit{0};
std::atomic<int> g_hard_limit{0};
std::atomic<int> g_cores{0};
std::atomic<std::int64_t> g_interrupt_bytes{std::int64_t(1) << 30};
thread_local int t_override = 0;

int at_least_one(const char* what, int n) {
    if (n < 1) throw std::invalid_argument(std::string(what) + " must be >= 1");
    return n;
}

}  // namespace

int usable_cores() {
    int n = 0;
#if defined(__linux__)
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof(set), &set) == 0) n = CPU_COUNT(&set);
#endif
    if (n < 1) n = static_cast<int>(std::thread::hardware_concurrency());
    if (n < 1) n = 1;
    g_cores.store(n, std::memory_order_relaxed);
    return n;
}

int cached_usable_cores() {
    const int n = g_cores.load(std::memory_order_relaxed);
    return n > 0 ? n : usable_cores();
}

int default_num_threads() { return usable_cores(); }

int process_num_threads() {
    const int n = g_num_threads.load(std::memory_order_relaxed);
    return n > 0 ? n : cached_usable_cores();  // no syscall on every call
}

void set_num_threads(int n) {
    g_num_threads.store(at_least_one("number of threads", n), std::memory_order_relaxed);
}

void set_thread_num_threads(int n) {
    t_override = n == 0 ? 0 : at_least_one("number of threads", n);
}

int thread_num_threads() { return t_override; }

void set_thread_limit(int n) {
    g_thread_limit.store(n == 0 ? 0 : at_least_one("thread limit", n), std::memory_order_relaxed);
}

int thread_limit() { return g_thread_limit.load(std::memory_order_relaxed); }

void set_hard_thread_limit(int n) {
    g_hard_limit.store(n == 0 ? 0 : at_least_one("thread limit", n), std::memory_order_relaxed);
}

int hard_thread_limit() { return g_hard_limit.load(std::memory_order_relaxed); }

int threads_for_call() {
    int n = t_override > 0 ? t_override : process_num_threads();
    const int limit = g_thread_limit.load(std::memory_order_relaxed);
    const int hard = g_hard_limit.load(std::memory_order_relaxed);
    if (limit > 0 && limit < n) n = limit;
    if (hard > 0 && hard < n) n = hard;
    return n > 0 ? n : 1;
}

void set_interrupt_bytes(std::int64_t n) {
    if (n < 0) throw std::invalid_argument("interrupt_bytes must be >= 0");
    g_interrupt_bytes.store(n, std::memory_order_relaxed);
}

std::int64_t interrupt_bytes() { return g_interrupt_bytes.load(std::memory_order_relaxed); }

}  // namespace bnfast
