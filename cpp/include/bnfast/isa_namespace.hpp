// Per-ISA namespace for inline code.
//
// Kernel sources are compiled once per instruction set with different flags.
// Any inline function or template they instantiate would otherwise get the
// same mangled name in every copy, and the linker would keep one of them at
// random -- possibly an AVX-512 copy called on a CPU without AVX-512. Every
// header with inline code therefore opens `inline namespace BNFAST_ISA_NS`,
// which is the ISA's name inside kernel TUs and `generic` elsewhere.
#pragma once

#if defined(BNFAST_ISA)
#define BNFAST_ISA_NS BNFAST_ISA
#else
#define BNFAST_ISA_NS generic
#endif
