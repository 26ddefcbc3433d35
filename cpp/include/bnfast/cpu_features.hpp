// Which instruction sets this CPU and OS can run (CPUID + XGETBV on x86-64),
// and the size of a core's L2 cache.
#pragma once
#include <cstdint>

namespace bnfast {

struct CpuFeatures {
    bool avx2_fma = false;   // AVX2 + FMA, and the OS saves YMM state
    bool avx512 = false;     // AVX-512 F/BW/VL/DQ, and the OS saves ZMM state
};

CpuFeatures detect_cpu_features();

// One core's L2 data cache in bytes as the kernels size their work to it:
// the OS's answer (read once), 0 where the OS does not say, or the value set
// by set_l2_cache_bytes (tests: to reach each path on any machine).
std::int64_t l2_cache_bytes();
void set_l2_cache_bytes(std::int64_t n);  // n < 0: the OS's answer again

}  // namespace bnfast
