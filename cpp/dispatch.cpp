// Picks the kernel table once at import (CPUID/XGETBV, env override) and
// holds the thread count the bindings pass to kernels.
#include "bnfast/dispatch.hpp"

#include <atomic>
#include <stdexcept>

#include "bnfast/cpu_features.hpp"

#if defined(BNFAST_HAVE_OPENMP)
#include <omp.h>
#endif

namespace bnfast {

const char* isa_name(Isa isa) {
    switch (isa) {
        case Isa::scalar: return "scalar";
        case Isa::avx2: return "avx2";
        case Isa::avx512: return "avx512";
    }
    return "unknown";
}

namespace {

const KernelTable* compiled_table(Isa isa) {
    switch (isa) {
        case Isa::scalar:
#if defined(BNFAST_COMPILED_SCALAR)
            return &kernels::scalar::kernel_table();
#else
            return nullptr;
#endif
        case Isa::avx2:
#if defined(BNFAST_COMPILED_AVX2)
            return &kernels::avx2::kernel_table();
#else
            return nullptr;
#endif
        case Isa::avx512:
#if defined(BNFAST_COMPILED_AVX512)
            return &kernels::avx512::kernel_table();
#else
            return nullptr;
#endif
    }
    return nullptr;
}

const CpuFeatures& cpu() {
    static const CpuFeatures features = detect_cpu_features();
    return features;
}

std::atomic<const KernelTable*> g_table{nullptr};
std::atomic<int> g_num_threads{0};

constexpr Isa kAllIsas[] = {Isa::scalar, Isa::avx2, Isa::avx512};

}  // namespace

bool isa_compiled(Isa isa) {
    switch (isa) {
        case Isa::scalar:
#if defined(BNFAST_COMPILED_SCALAR)
            return true;
#else
            return false;
#endif
        case Isa::avx2:
#if defined(BNFAST_COMPILED_AVX2)
            return true;
#else
            return false;
#endif
        case Isa::avx512:
#if defined(BNFAST_COMPILED_AVX512)
            return true;
#else
            return false;
#endif
    }
    return false;
}

// A table is only touched (its getter lives in code compiled for that ISA)
// once the CPU is known to run it.
bool isa_supported(Isa isa) {
    if (!isa_compiled(isa)) return false;
    switch (isa) {
        case Isa::scalar: return true;
        case Isa::avx2: return cpu().avx2_fma;
        case Isa::avx512: return cpu().avx512;
    }
    return false;
}

std::vector<std::string> all_isa_names() {
    std::vector<std::string> names;
    for (Isa isa : kAllIsas) names.emplace_back(isa_name(isa));
    return names;
}

std::vector<std::string> compiled_isa_names() {
    std::vector<std::string> names;
    for (Isa isa : kAllIsas)
        if (isa_compiled(isa)) names.emplace_back(isa_name(isa));
    return names;
}

std::vector<std::string> supported_isa_names() {
    std::vector<std::string> names;
    for (Isa isa : kAllIsas)
        if (isa_supported(isa)) names.emplace_back(isa_name(isa));
    return names;
}

Isa parse_isa(const std::string& name) {
    for (Isa isa : kAllIsas)
        if (name == isa_name(isa)) return isa;
    throw std::invalid_argument("unknown CPU capability '" + name +
                                "'; expected one of: scalar, avx2, avx512");
}

void set_active_isa(Isa isa) {
    if (!isa_supported(isa)) {
        std::string have;
        for (const auto& n : supported_isa_names()) have += (have.empty() ? "" : ", ") + n;
        throw std::runtime_error(std::string("CPU capability '") + isa_name(isa) +
                                 "' is not available: this build and CPU support only: " + have);
    }
    g_table.store(compiled_table(isa));
}

Isa active_isa() { return active_table().isa; }

const KernelTable& active_table() {
    const KernelTable* t = g_table.load();
    if (t == nullptr) throw std::logic_error("bnfast dispatch used before init_dispatch()");
    return *t;
}

void init_dispatch() {
    if (g_num_threads.load() == 0) g_num_threads.store(default_num_threads());
    for (Isa isa : {Isa::avx512, Isa::avx2, Isa::scalar}) {
        if (isa_supported(isa)) {
            set_active_isa(isa);
            return;
        }
    }
}

bool have_openmp() {
#if defined(BNFAST_HAVE_OPENMP)
    return true;
#else
    return false;
#endif
}

int default_num_threads() {
#if defined(BNFAST_HAVE_OPENMP)
    const int n = omp_get_max_threads();
    return n > 0 ? n : 1;
#else
    return 1;
#endif
}

int num_threads() {
    const int n = g_num_threads.load();
    return n > 0 ? n : 1;
}

void set_num_threads(int n) {
    if (n < 1) throw std::invalid_argument("number of threads must be >= 1");
    g_num_threads.store(n);
}

}  // namespace bnfast
