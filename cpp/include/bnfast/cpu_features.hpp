// Which instruction sets this CPU and OS can run (CPUID + XGETBV on x86-64).
#pragma once

namespace bnfast {

struct CpuFeatures {
    bool avx2_fma = false;   // AVX2 + FMA, and the OS saves YMM state
    bool avx512 = false;     // AVX-512 F/BW/VL/DQ, and the OS saves ZMM state
};

CpuFeatures detect_cpu_features();

}  // namespace bnfast
