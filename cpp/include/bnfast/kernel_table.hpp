// The kernel table of one instruction set: it only collects the families'
// kernels (each family header declares its own), for float, double and the
// half-precision storage types f16_t, bf16_t (bnfast/half.hpp).
// Pure C++: nothing here knows about Python.
#pragma once
#include <type_traits>

#include "bnfast/isa_list.hpp"
#include "kernels/affine.hpp"
#include "kernels/batch_norm.hpp"
#include "kernels/group_norm.hpp"
#include "kernels/layer_norm.hpp"
#include "kernels/memory_floor.hpp"
#include "kernels/moments.hpp"

namespace bnfast {

enum class Isa : int {
#define BNFAST_ISA_ENUM(name) name,
    BNFAST_ISA_LIST(BNFAST_ISA_ENUM)
#undef BNFAST_ISA_ENUM
};

const char* isa_name(Isa isa);

template <class T>
struct FamilyKernels {
    MomentsKernels<T> moments;
    AffineKernels<T> affine;
    BatchNormKernels<T> batch_norm;
    LayerNormKernels<T> layer_norm;
    GroupNormKernels<T> group_norm;
};

struct KernelTable {
    Isa isa;
    FamilyKernels<float> f32;
    FamilyKernels<double> f64;
    FamilyKernels<f16_t> f16;    // float16 storage, float compute
    FamilyKernels<bf16_t> bf16;  // bfloat16 storage, float compute
    MemoryFloorKernels memory_floor;  // untyped: moves bytes

    // table.of<T>().batch_norm.train
    template <class T>
    const FamilyKernels<T>& of() const {
        if constexpr (std::is_same_v<T, float>) return f32;
        else if constexpr (std::is_same_v<T, double>) return f64;
        else if constexpr (std::is_same_v<T, f16_t>) return f16;
        else {
            static_assert(std::is_same_v<T, bf16_t>, "float, double, f16_t or bf16_t");
            return bf16;
        }
    }
};

// One getter per instruction set (kernels/kernel_table.cpp, compiled once per
// ISA into bnfast::kernels::<isa>). Only the compiled ones are defined, and
// only call one once the CPU is known to run it.
namespace kernels {
#define BNFAST_ISA_GETTER(name) \
    namespace name {            \
    const KernelTable& kernel_table(); \
    }
BNFAST_ISA_LIST(BNFAST_ISA_GETTER)
#undef BNFAST_ISA_GETTER
}  // namespace kernels

}  // namespace bnfast
