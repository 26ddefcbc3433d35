// The instruction sets bnfast knows, baseline first, in order of preference.
// The one list: CMake reads the entries below (file(READ)) to build one
// kernel copy per ISA it has flags for, the dispatcher expands it into the
// Isa enum and its name table, and Python gets it from all_capabilities().
#pragma once

#define BNFAST_ISA_LIST(X) \
    X(scalar)              \
    X(avx2)                \
    X(avx512)
