// The canonical (A, C, B) view every kernel works on.
#pragma once
#include <cstdint>

namespace bnfast {

// A strided 3-D view: element (a, c, b) lives at base + a*sA + c*sC + b*sB,
// strides counted in elements (they may be zero or negative).
// Statistics are per C, reduced over A and B.
struct View3 {
    std::int64_t A, C, B;
    std::int64_t sA, sC, sB;
};

}  // namespace bnfast
