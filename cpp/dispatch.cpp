// Picks the kernel table once at import (CPUID/XGETBV, env override). The
// thread counts live in cpp/runtime/threads.cpp.
#include "bnfast/dispatch.hpp"

#include <atomic>
#include <iterator>
#include <stdexcept>

#include "bnfast/compiled_isas.hpp"
#include "bnfast/cpu_features.hpp"

namespace bnfast {

namespace {

// Every ISA of isa_list.hpp, baseline first.
constexpr Isa kAllIsas[] = {
#define BNFAST_ISA_ENUM(name) Isa::name,
    BNFAST_ISA_LIST(BNFAST_ISA_ENUM)
#undef BNFAST_ISA_ENUM
};

// The ISAs built into this module come from BNFAST_COMPILED_ISA_LIST(X),
// which CMake generates (bnfast/compiled_isas.hpp) from isa_list.hpp and the
// ISAs it has flags for.
const KernelTable* compiled_table(Isa isa) {
    switch (isa) {
#define BNFAST_ISA_TABLE(name) \
    case Isa::name:            \
        return &kernels::name::kernel_table();
        BNFAST_COMPILED_ISA_LIST(BNFAST_ISA_TABLE)
#undef BNFAST_ISA_TABLE
        default:
            return nullptr;
    }
}

const CpuFeatures& cpu() {
    static const CpuFeatures features = detect_cpu_features();
    return features;
}

// Whether the CPU and OS can run an ISA's code (a new ISA needs its test here).
bool cpu_runs(Isa isa) {
    switch (isa) {
        case Isa::scalar: return true;
        case Isa::avx2: return cpu().avx2_fma;
        case Isa::avx512: return cpu().avx512;
    }
    return false;
}

std::atomic<const KernelTable*> g_table{nullptr};

}  // namespace

const char* isa_name(Isa isa) {
    switch (isa) {
#define BNFAST_ISA_NAME(name) \
    case Isa::name:           \
        return #name;
        BNFAST_ISA_LIST(BNFAST_ISA_NAME)
#undef BNFAST_ISA_NAME
    }
    return "unknown";
}

bool isa_compiled(Isa isa) {
    switch (isa) {
#define BNFAST_ISA_COMPILED(name) \
    case Isa::name:               \
        return true;
        BNFAST_COMPILED_ISA_LIST(BNFAST_ISA_COMPILED)
#undef BNFAST_ISA_COMPILED
        default:
            return false;
    }
}

// A table is only touched (its getter lives in code compiled for that ISA)
// once the CPU is known to run it.
bool isa_supported(Isa isa) { return isa_compiled(isa) && cpu_runs(isa); }

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
    std::string all;
    for (Isa isa : kAllIsas) {
        if (name == isa_name(isa)) return isa;
        all += (all.empty() ? "" : ", ") + std::string(isa_name(isa));
    }
    throw std::invalid_argument("unknown CPU capability '" + name + "'; expected one of: " + all);
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

// The last supported ISA of the list: the list runs baseline first.
void init_dispatch() {
    for (auto it = std::rbegin(kAllIsas); it != std::rend(kAllIsas); ++it) {
        if (isa_supported(*it)) {
            set_active_isa(*it);
            return;
        }
    }
}

// The kernels run on bnfast's own pool (cpp/runtime/thread_pool.cpp).
bool have_openmp() { return false; }

}  // namespace bnfast
