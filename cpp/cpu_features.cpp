// CPU feature detection: CPUID for what the processor has, XGETBV for what the
// operating system saves on context switch (a CPU with AVX-512 under an OS
// that does not save ZMM state must not run AVX-512 code).
#include "bnfast/cpu_features.hpp"

#include <atomic>

#if defined(__linux__)
#include <unistd.h>
#elif defined(__APPLE__)
#include <sys/sysctl.h>
#include <sys/types.h>
#endif

#if defined(__x86_64__) || defined(_M_X64)
#if defined(__GNUC__) || defined(__clang__)
#include <cpuid.h>
#define BNFAST_X86_CPUID 1
#endif
#endif

namespace bnfast {

#if defined(BNFAST_X86_CPUID)
namespace {

unsigned long long read_xcr0() {
    unsigned int eax = 0, edx = 0;
    // xgetbv with ecx = 0, written as bytes so no -mxsave is needed here.
    __asm__ volatile(".byte 0x0f, 0x01, 0xd0" : "=a"(eax), "=d"(edx) : "c"(0));
    return (static_cast<unsigned long long>(edx) << 32) | eax;
}

}  // namespace

CpuFeatures detect_cpu_features() {
    CpuFeatures f;
    unsigned int eax = 0, ebx = 0, ecx = 0, edx = 0;
    if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx)) return f;
    const bool has_osxsave = (ecx >> 27) & 1u;
    const bool has_avx = (ecx >> 28) & 1u;
    const bool has_fma = (ecx >> 12) & 1u;
    const bool has_f16c = (ecx >> 29) & 1u;  // float16 conversions (avx2 and avx512 builds)
    if (!has_osxsave || !has_avx) return f;
    const unsigned long long xcr0 = read_xcr0();
    const bool os_ymm = (xcr0 & 0x6u) == 0x6u;     // SSE + AVX state
    const bool os_zmm = (xcr0 & 0xE6u) == 0xE6u;   // + opmask, ZMM_Hi256, Hi16_ZMM
    if (!__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx)) return f;
    const bool has_avx2 = (ebx >> 5) & 1u;
    const bool has_avx512f = (ebx >> 16) & 1u;
    const bool has_avx512dq = (ebx >> 17) & 1u;
    const bool has_avx512bw = (ebx >> 30) & 1u;
    const bool has_avx512vl = (ebx >> 31) & 1u;
    f.avx2_fma = os_ymm && has_avx2 && has_fma && has_f16c;
    f.avx512 = f.avx2_fma && os_zmm && has_avx512f && has_avx512dq && has_avx512bw &&
               has_avx512vl;
    return f;
}
#else
CpuFeatures detect_cpu_features() { return CpuFeatures{}; }
#endif

namespace {

std::int64_t read_l2_cache_bytes() {
#if defined(__linux__) && defined(_SC_LEVEL2_CACHE_SIZE)
    const long n = sysconf(_SC_LEVEL2_CACHE_SIZE);  // glibc: from CPUID or sysfs
    return n > 0 ? static_cast<std::int64_t>(n) : 0;
#elif defined(__APPLE__)
    std::int64_t n = 0;
    std::size_t len = sizeof(n);
    if (sysctlbyname("hw.l2cachesize", &n, &len, nullptr, 0) != 0 || len != sizeof(n)) return 0;
    return n > 0 ? n : 0;
#else
    return 0;
#endif
}

std::atomic<std::int64_t> g_l2_override{-1};

}  // namespace

std::int64_t l2_cache_bytes() {
    const std::int64_t set = g_l2_override.load(std::memory_order_relaxed);
    if (set >= 0) return set;
    static const std::int64_t bytes = read_l2_cache_bytes();  // thread-safe initialization
    return bytes;
}

void set_l2_cache_bytes(std::int64_t n) {
    g_l2_override.store(n < 0 ? -1 : n, std::memory_order_relaxed);
}

}  // namespace bnfast
