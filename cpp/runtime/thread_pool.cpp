// bnfast's thread pool (bnfast/parallel.hpp), in place of OpenMP.
//
// Why not OpenMP: measured on a shared 2-core machine, libgomp's spinning
// workers stalled calls 25-40x beside a busy process, its fork child hangs
// in the first parallel region, and both libgomp and libomp end the process
// when a thread cannot be created. This pool is built around three rules:
//
// - The caller works: it claims blocks like any helper and waits only for
//   blocks a helper has started, never for a helper that has not woken up.
//   A helper that is late (descheduled beside a busy neighbour) just finds
//   nothing left to do.
// - Helpers never exceed the cores: a call takes helpers only from the
//   cores no other bnfast call is using (callers and helpers both count).
// - Workers sleep on a condition variable after a short spin, so idle
//   workers cost nothing and never hold a core another process needs.
//
// A run's blocks are cut into one contiguous share per participant; each
// takes blocks from the front of its own share, then from the others'
// (so a loop reads long sequential streams, as OpenMP's static schedule,
// and the same thread tends to get the same share in consecutive runs).
// POSIX extras (fork handlers, signal masks, thread names) where they
// exist; the pool itself is std::thread/mutex/condition_variable, so it
// builds unchanged on Windows (clang-cl), where there is no fork.
#if !defined(_WIN32)
#define BNFAST_POSIX_THREADS 1
#include <pthread.h>
#include <signal.h>
#include <unistd.h>
#endif

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <memory>
#include <mutex>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "bnfast/parallel.hpp"
#include "bnfast/runtime.hpp"
#include "interrupt.hpp"

namespace bnfast::parallel {

namespace {

using Clock = std::chrono::steady_clock;

// A worker that finished a run polls for the next one this long before it
// sleeps: enough to bridge the gap between the runs of one kernel (a
// per-channel merge) or back-to-back calls, short enough not to take a
// busy neighbour's time.
constexpr auto kWorkerSpin = std::chrono::microseconds(30);
// The caller polls this long for helpers' last blocks before it sleeps.
constexpr auto kCallerSpin = std::chrono::microseconds(30);

// Polls done() until it holds or `spin` has passed; false on time-out.
// Each poll yields the CPU: when every core is busy the scheduler may have
// put a helper on the caller's core, and a plain spin there would keep the
// other from running (measured: +40 us on 20 us calls beside a busy loop).
// On an idle core the yield returns at once.
template <class Done>
bool poll_for(Done&& done, std::chrono::microseconds spin) {
    const auto end = Clock::now() + spin;
    while (!done()) {
        if (Clock::now() >= end) return false;
        std::this_thread::yield();  // sched_yield on POSIX, SwitchToThread on Windows
    }
    return true;
}

// Sleeps on cv (lock held) until done() holds, in long timed waits: the
// untimed condition_variable::wait of GCC 12's libstdc++ is a GLIBCXX_3.4.30
// symbol, which alone would raise the manylinux floor of a Linux wheel built
// with GCC 12 from 2_34 to 2_35; the timed wait is inline code (on
// pthread_cond_clockwait, glibc 2.30). Waking once an hour costs nothing.
template <class Done>
void sleep_until(std::condition_variable& cv, std::unique_lock<std::mutex>& lock, Done&& done) {
    while (!done()) cv.wait_for(lock, std::chrono::hours(1));
}

struct alignas(64) Share {
    std::atomic<std::int64_t> next{0};  // next block to claim (may overshoot end)
    std::int64_t end = 0;
};

// One run. Shared (shared_ptr) by the caller and the helpers it was handed
// to: a helper that wakes up after the caller returned still holds a valid
// Job, finds every share exhausted and never touches fn or ctx.
struct Job {
    BlockFn fn = nullptr;
    void* ctx = nullptr;
    std::int64_t n = 0, grain = 1, blocks = 0;
    int parts = 1;
    std::unique_ptr<Share[]> shares;
    const std::atomic<int>* stop = nullptr;  // SIGINT flag of an interruptible call
    alignas(64) std::atomic<std::int64_t> done{0};  // blocks finished (or skipped)
    alignas(64) std::atomic<bool> cancel{false};  // an error or interrupt: skip the rest
    std::atomic<bool> interrupted{false};
    std::mutex m;
    std::condition_variable cv;  // the caller waits on it for the last block
    std::exception_ptr error;    // guarded by m
};

void record_error(Job& job) {
    {
        std::lock_guard<std::mutex> lock(job.m);
        if (!job.error) job.error = std::current_exception();
    }
    job.cancel.store(true, std::memory_order_relaxed);
}

// Runs (or, once cancelled, skips) one claimed block. Returns true for the
// run's last block.
bool run_block(Job& job, std::int64_t b, int slot) {
    if (!job.cancel.load(std::memory_order_relaxed)) {
        if (job.stop != nullptr && job.stop->load(std::memory_order_relaxed) != 0) {
            job.interrupted.store(true, std::memory_order_relaxed);
            job.cancel.store(true, std::memory_order_relaxed);
        } else {
            const std::int64_t begin = b * job.grain;
            const std::int64_t end = job.n - begin < job.grain ? job.n : begin + job.grain;
            try {
                job.fn(job.ctx, begin, end, slot);
            } catch (...) {
                record_error(job);
            }
        }
    }
    return job.done.fetch_add(1, std::memory_order_acq_rel) + 1 == job.blocks;
}

// Claims and runs blocks, own share first, until every share is exhausted.
// Returns true if this participant finished the run's last block.
bool drain(Job& job, int slot) {
    bool last = false;
    for (int k = 0; k < job.parts; ++k) {
        Share& s = job.shares[(slot + k) % job.parts];
        while (s.next.load(std::memory_order_relaxed) < s.end) {
            const std::int64_t b = s.next.fetch_add(1, std::memory_order_relaxed);
            if (b >= s.end) break;
            last |= run_block(job, b, slot);
        }
    }
    return last;
}

struct Worker {
    std::mutex m;
    std::condition_variable cv;
    std::shared_ptr<Job> job;  // the next run, guarded by m
    int slot = 0;              // guarded by m
    std::atomic<bool> pending{false};
    bool lent = false;  // guarded by the pool's mutex
    std::thread thread;
};

void worker_main(Worker* w) {
#if defined(__linux__)
    pthread_setname_np(pthread_self(), "bnfast-worker");  // for top -H, gdb, py-spy
#elif defined(__APPLE__)
    pthread_setname_np("bnfast-worker");  // macOS names only the calling thread
#endif
    for (;;) {
        poll_for([w] { return w->pending.load(std::memory_order_acquire); }, kWorkerSpin);
        std::shared_ptr<Job> job;
        int slot;
        {
            std::unique_lock<std::mutex> lock(w->m);
            sleep_until(w->cv, lock, [w] { return w->job != nullptr; });
            job = std::move(w->job);
            slot = w->slot;
            w->pending.store(false, std::memory_order_relaxed);
        }
        if (drain(*job, slot)) {
            // The caller may be asleep waiting for this last block.
            std::lock_guard<std::mutex> lock(job->m);
            job->cv.notify_one();
        }
    }
}

// The workers of this process. Never destroyed: a worker blocked at exit
// must not be joined, and after a fork the child abandons the parent's
// pool (its threads do not exist there; destroying a joinable std::thread
// would call std::terminate).
struct Pool {
#if defined(BNFAST_POSIX_THREADS)
    pid_t pid = getpid();
#endif
    std::mutex m;  // guards workers, lent flags and busy
    std::vector<std::unique_ptr<Worker>> workers;
    int busy = 0;  // threads in parallel runs: callers and the helpers lent to them
};

std::atomic<Pool*> g_pool{nullptr};

#if defined(BNFAST_POSIX_THREADS)
Pool* g_fork_locked = nullptr;  // the pool whose mutex the fork prepare handler took

void before_fork() {
    Pool* p = g_pool.load(std::memory_order_acquire);
    // No run starts or ends (lends or returns workers) across the fork.
    if (p != nullptr) p->m.lock();
    g_fork_locked = p;
}

void after_fork_parent() {
    if (g_fork_locked != nullptr) g_fork_locked->m.unlock();
    g_fork_locked = nullptr;
}

void after_fork_child() {
    // Only the forking thread exists here: forget the pool (leaked on
    // purpose, see Pool); the next parallel run builds a new one.
    g_fork_locked = nullptr;
    g_pool.store(nullptr, std::memory_order_release);
}
#endif

// The pool of this process, created on first use, and again in a child
// forked without the atfork handlers (the pid check).
Pool& pool() {
    Pool* p = g_pool.load(std::memory_order_acquire);
#if defined(BNFAST_POSIX_THREADS)
    if (p != nullptr && p->pid == getpid()) return *p;
    static const int registered = pthread_atfork(before_fork, after_fork_parent, after_fork_child);
    (void)registered;
#else
    if (p != nullptr) return *p;  // no fork on Windows
#endif
    Pool* fresh = new Pool();
    if (g_pool.compare_exchange_strong(p, fresh, std::memory_order_acq_rel)) return *fresh;
    delete fresh;  // another thread built it first (p now holds it)
    return *p;
}

// Starts a worker with every signal blocked (signals go to other threads,
// Python's main thread in particular; Windows has no signal masks: its
// console delivers Ctrl-C on a thread of its own). Throws ThreadStartError.
void start_worker(Worker* w) {
#if defined(BNFAST_POSIX_THREADS)
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
#endif
    try {
        w->thread = std::thread(worker_main, w);
    } catch (const std::system_error& e) {
#if defined(BNFAST_POSIX_THREADS)
        pthread_sigmask(SIG_SETMASK, &old, nullptr);
#endif
        throw ThreadStartError(std::string("bnfast could not start a worker thread (") + e.what() +
                               "): lower the thread count with bnfast.set_num_threads");
    }
#if defined(BNFAST_POSIX_THREADS)
    pthread_sigmask(SIG_SETMASK, &old, nullptr);
#endif
}

// The helpers of one run: up to `want` idle workers (started as needed),
// counted busy with the caller until the lease ends, after the run's last
// block. A caller that gets no helper still counts while it runs alone.
class Lease {
public:
    Lease(Pool& p, int want) : p_(p) {
        std::lock_guard<std::mutex> lock(p.m);
        const int free_cores = cached_usable_cores() - p.busy - 1;
        if (want > free_cores) want = free_cores;
        lent_.reserve(static_cast<std::size_t>(want > 0 ? want : 0));
        for (auto& w : p.workers) {
            if (static_cast<int>(lent_.size()) >= want) break;
            if (!w->lent) lent_.push_back(w.get());
        }
        while (static_cast<int>(lent_.size()) < want) {
            auto w = std::make_unique<Worker>();
            start_worker(w.get());  // throws before anything is counted
            p.workers.push_back(std::move(w));
            lent_.push_back(p.workers.back().get());
        }
        for (Worker* w : lent_) w->lent = true;
        p.busy += 1 + static_cast<int>(lent_.size());
    }
    ~Lease() {
        std::lock_guard<std::mutex> lock(p_.m);
        for (Worker* w : lent_) w->lent = false;
        p_.busy -= 1 + static_cast<int>(lent_.size());
    }
    Lease(const Lease&) = delete;
    Lease& operator=(const Lease&) = delete;
    const std::vector<Worker*>& workers() const { return lent_; }

private:
    Pool& p_;
    std::vector<Worker*> lent_;
};

// One thread, no helpers: blocks only where an interrupt must be checked.
void run_alone(std::int64_t n, std::int64_t grain, BlockFn fn, void* ctx,
               const std::atomic<int>* stop) {
    if (stop == nullptr) {
        fn(ctx, 0, n, 0);
        return;
    }
    for (std::int64_t begin = 0; begin < n; begin += grain) {
        if (stop->load(std::memory_order_relaxed) != 0) throw Interrupted();
        fn(ctx, begin, n - begin < grain ? n : begin + grain, 0);
    }
}

}  // namespace

bool interruptible() noexcept { return current_stop_flag() != nullptr; }

void run(int nthreads, std::int64_t n, std::int64_t grain, BlockFn fn, void* ctx) {
    if (n <= 0) return;
    if (grain < 1) grain = 1;
    const std::int64_t blocks = (n - 1) / grain + 1;
    const std::atomic<int>* stop = current_stop_flag();
    if (nthreads <= 1 || blocks == 1) {
        run_alone(n, grain, fn, ctx, stop);
        return;
    }
    const std::int64_t want = blocks - 1 < nthreads - 1 ? blocks - 1 : nthreads - 1;
    Lease lease(pool(), static_cast<int>(want));
    const std::vector<Worker*>& lent = lease.workers();
    if (lent.empty()) {
        run_alone(n, grain, fn, ctx, stop);
        return;
    }
    auto job = std::make_shared<Job>();
    job->shares = std::make_unique<Share[]>(lent.size() + 1);
    job->fn = fn;
    job->ctx = ctx;
    job->n = n;
    job->grain = grain;
    job->blocks = blocks;
    job->parts = static_cast<int>(lent.size()) + 1;
    job->stop = stop;
    for (int s = 0; s < job->parts; ++s) {
        job->shares[s].next.store(blocks * s / job->parts, std::memory_order_relaxed);
        job->shares[s].end = blocks * (s + 1) / job->parts;
    }
    for (std::size_t i = 0; i < lent.size(); ++i) {
        Worker* w = lent[i];
        {
            std::lock_guard<std::mutex> lock(w->m);
            w->job = job;  // replaces a run the worker never woke up for
            w->slot = static_cast<int>(i) + 1;
            w->pending.store(true, std::memory_order_release);
        }
        w->cv.notify_one();
    }
    drain(*job, 0);
    if (job->done.load(std::memory_order_acquire) != blocks) {
        poll_for([&] { return job->done.load(std::memory_order_acquire) == blocks; }, kCallerSpin);
        std::unique_lock<std::mutex> lock(job->m);
        sleep_until(job->cv, lock,
                    [&] { return job->done.load(std::memory_order_acquire) == blocks; });
    }
    std::exception_ptr error;
    {
        std::lock_guard<std::mutex> lock(job->m);
        error = job->error;
    }
    if (error) std::rethrow_exception(error);
    if (job->interrupted.load(std::memory_order_relaxed)) throw Interrupted();
}

}  // namespace bnfast::parallel
