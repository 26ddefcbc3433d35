// The moments kernel's building blocks (inline, per ISA), shared by the
// moments kernel and the fused batch-norm training kernel so both compute
// bit-identical statistics. Only for files under cpp/kernels/.
//
// moments_kernel: per-C count/mean/M2 over the A x B slab of an (A, C, B) view.
//
// Accuracy: each slab is cut into chunks (kChunk elements on the rows path,
// kChannelChunkScale * kChunk per tile on the channel path, half that of
// float64; cache resident).
// Pass 1 sums a chunk and tracks min/max (in double; in float32 for float32
// data, see Pass1AccF32), then pass 2 sums its deviations from that chunk
// mean and their squares in double with the usual correction term,
// re-reading the chunk from cache. Chunks are
// merged with Chan's formula. This is a blocked two-pass algorithm: it never
// forms E[x^2] - E[x]^2, so offset data keeps its variance. A chunk whose
// min equals its max is constant: mean = that value, M2 = 0 exactly.
// On the channel path with unit channel stride, chunks after a tile's first
// are first tried in one pass: pass 2 alone, shifted by the tile's running
// mean, kept when its cancellation bound holds (kOnePassFactor), else redone
// as above. On the row path every chunk of at least kOnePassMinChunk values
// is first tried in one pass the same way, shifted by the mean of a few
// values sampled across it (sampled_shift). Both results depend only on the
// data and the shape.
//
// Determinism: the work is cut into chunks and groups by the shape alone;
// each group is reduced sequentially by whichever thread takes it, and
// groups are merged in index order. The thread count only changes who does
// the work, never the arithmetic.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <new>
#include <type_traits>

#include "bnfast/view3.hpp"
#include "bnfast/welford.hpp"
#include "simd.hpp"

namespace bnfast::kernels::BNFAST_ISA {

constexpr std::int64_t kChunk = 4096;                   // elements per two-pass chunk
constexpr std::int64_t kGroupTarget = std::int64_t(1) << 18;  // elements per work item
constexpr std::int64_t kMaxGroups = 64;                 // work items per channel, at most
constexpr std::int64_t kTileChannels = 512;             // channels per item, channel path
// Channel path chunk: kChannelChunkScale * kChunk values of a tile (128 KB
// of float32: L2-resident between the two passes; half as many values of
// float64, since a chunk and the next one, prefetched during its pass,
// filled the whole 512 KB L2 of a Zen 3 in float64). Each chunk ends with a
// per-channel merge of ~20 operations, so short chunks of wide tiles (16
// rows of 512 channels at scale 2) spent more time merging than summing.
constexpr std::int64_t kChannelChunkScale = 8;
// Chunks per row group of the channel path, at least (see moments_channels).
constexpr std::int64_t kMinGroupChunks = 16;
// Channel path with unit channel stride: blocks of kRegBlock vectors of
// channels are summed over a chunk's rows in registers, not in the scratch
// arrays (one load and store of each accumulator per value otherwise). The
// order of the additions per channel is the same, so are the results.
constexpr int kRegBlock = 4;
// Pass 2 keeps four vectors per block of channels (sum, compensation,
// squares, shift). Blocks of 4 on AVX2 too, though its 16 registers cannot
// hold them all (the shifts and compensations, touched once per 8 rows, go
// to the stack): a block of 4 float32 vectors reads whole 64-byte lines, and
// blocks of 2 read half a line per row, whose other half was evicted from
// L1 before the next strip came for it where rows lie 4 KB apart (65536x1024
// float32 on a Zen 3: 2.9x -> 2.2x the read floor). The baseline keeps 2
// (blocks of 1 ran 2.5x slower: too few chains).
constexpr int kRegBlock2 = kVecBytes >= 32 ? 4 : 2;
// Both passes can walk a chunk of a tile in blocks of rows across the
// whole tile (row_block()), at least kRowBlock rows: a register block walking
// all rows of a chunk down a column strip reads 64 rows 4 KB apart (1024
// float32 channels), all in the same L1 sets, and the prefetcher does not
// follow 64 streams. Each channel's additions keep their order either way.
constexpr std::int64_t kRowBlock = 8;
// The channel path's one-pass chunks (see tile_moments) are kept when
// kOnePassFactor * n * dbar^2 <= M2, dbar the mean deviation from the shift:
// then the sum of squares is at most (1 + 1/kOnePassFactor) M2, so its
// rounding moves M2 by no more than that factor times the two-pass
// rounding, and sum |d| <= sqrt(n * sum d^2) stays within the same factor's
// square root of the two-pass bound on the deviations' rounding (the mean).
constexpr double kOnePassFactor = 1.0;
// A one-pass chunk's sums of deviations d from its shift (n values, sum_d,
// sum_dd) are kept when kOnePassFactor * n * dbar^2 <= M2 (above); false
// for NaN, and for an infinite sum of squares.
// Lane-wise for vectors of doubles (V: a mask of the lanes that hold).
template <class V>
inline auto one_pass_holds(V n, V sum_d, V sum_dd) {
    const V ss = sum_d * sum_d / n;
    return (sum_dd - sum_dd == V{}) & (kOnePassFactor * ss <= sum_dd - ss);
}
// Row-path chunks of at least this many values are tried in one pass first
// (see row_range_moments); shorter ones cost little either way.
constexpr std::int64_t kOnePassMinChunk = 256;
// Values of a chunk averaged into its one-pass shift.
constexpr int kShiftSamples = 16;
// Rows along B shorter than this go to the channel path: per-channel
// overhead would dominate a row path over many tiny rows.
constexpr std::int64_t kMinRowLength = 16;

// Fused kernels (a channel or row reduced, then written, while it is in
// cache) take slabs up to this size; larger ones are not in cache for the
// second pass anyway, and a work item of a whole slab that size would delay
// an interrupt check (and a thread's share) too long.
constexpr std::int64_t kMaxFusedSlabBytes = std::int64_t(32) << 20;

constexpr double kInf = std::numeric_limits<double>::infinity();

inline std::int64_t min_i64(std::int64_t a, std::int64_t b) { return a < b ? a : b; }
inline std::int64_t max_i64(std::int64_t a, std::int64_t b) { return a > b ? a : b; }

// Start of part g of n items cut into `parts` nearly equal parts (no
// overflow for any int64 n).
inline std::int64_t part_begin(std::int64_t g, std::int64_t n, std::int64_t parts) {
    return g * (n / parts) + min_i64(g, n % parts);
}

// Number of groups a reduction of n elements is cut into (shape-only).
inline std::int64_t group_count(std::int64_t n) {
    const std::int64_t g = (n + kGroupTarget - 1) / kGroupTarget;
    return max_i64(1, min_i64(g, kMaxGroups));
}

// Moments of one chunk from its pass-1 results; returns false if pass 2 is
// needed (finite, non-constant data).
inline bool chunk_from_pass1(std::int64_t n, double sum, double lo, double hi,
                             Moments1& out) {
    out.n = n;
    out.sum_hi = sum;
    out.sum_lo = 0.0;
    if (std::isnan(sum)) {  // NaN in the data
        out.mean = sum;
        out.m2 = sum;
        return true;
    }
    if (std::isinf(sum)) {  // +-inf in the data (or overflow): mean is that inf
        out.mean = sum;
        out.m2 = std::numeric_limits<double>::quiet_NaN();
        return true;
    }
    if (lo == hi) {  // constant chunk: exact
        out.mean = lo;
        out.m2 = 0.0;
        constant_sum(static_cast<double>(n), lo, out.sum_hi, out.sum_lo);
        return true;
    }
    return false;
}

// A chunk's mean (relative to ref) and M2 from its n values' sums of
// deviations from shift (the corrected two-pass formulas; the one-pass
// chunks use them too). Lane-wise for vectors of doubles (V).
template <class V>
inline V shifted_mean(V n, V shift, V ref, V sum_d) {
    return (shift - ref) + sum_d / n;
}
template <class V>
inline V shifted_m2(V n, V sum_d, V sum_dd) {
    return sum_dd - sum_d * sum_d / n;
}

// sum1: pass 1's sum, shift = sum1 / n; the mean is relative to ref.
inline void chunk_from_pass2(std::int64_t n, double sum1, double shift, double ref,
                             double sum_d, double sum_dd, Moments1& out) {
    const double dn = static_cast<double>(n);
    chunk_sum(dn, sum1, shift, sum_d, out.sum_hi, out.sum_lo);
    out.mean = shifted_mean(dn, shift, ref, sum_d);
    double m2 = shifted_m2(dn, sum_d, sum_dd);
    if (m2 < 0.0) m2 = 0.0;  // rounding; keeps NaN
    out.m2 = m2;
}

// ---------------------------------------------------------------------------
// Row path: per channel, the slab is A rows of B elements (stride sB).

// Pass 1's scalar part (strided data and the ends of contiguous runs), in
// double for both accumulators.
struct Pass1Tail {
    double sum, lo, hi;
    void reset() {
        sum = 0.0;
        lo = kInf;
        hi = -kInf;
    }
    void add(double v) {
        sum += v;
        lo = v < lo ? v : lo;
        hi = v > hi ? v : hi;
    }
    double min_with(double m) const { return m < lo ? m : lo; }
    double max_with(double m) const { return m > hi ? m : hi; }
};

struct Pass1Acc {
    using V = f64v;
    static constexpr int kLanes = kLanesF64;
    template <class T>
    static V load(const T* p) { return load_as_f64(p); }

    f64v sum0, sum1, lo, hi, lo1, hi1;
    Pass1Tail tail;
    void reset() {
        sum0 = f64v{};
        sum1 = f64v{};
        lo = lo1 = splat<f64v>(kInf);
        hi = hi1 = splat<f64v>(-kInf);
        tail.reset();
    }
    void add_scalar(double v) { tail.add(v); }
    double sum() const { return sum_lanes(sum0 + sum1) + tail.sum; }
    double min() const { return tail.min_with(min_lanes(vmin(lo1, lo))); }
    double max() const { return tail.max_with(max_lanes(vmax(hi1, hi))); }
};

// a * b + c rounded once where the ISA has a fused multiply-add (avx2,
// avx512), a * b + c otherwise (the baseline: no FMA in SSE2, and a libm
// call would be slow). The build never contracts a * b + c by itself.
inline f64v fma_v(const f64v& a, const f64v& b, const f64v& c) {
#if defined(BNFAST_ISA_AVX512)
    return bit_cast_<f64v>(_mm512_fmadd_pd(bit_cast_<__m512d>(a), bit_cast_<__m512d>(b),
                                           bit_cast_<__m512d>(c)));
#elif defined(BNFAST_ISA_AVX2)
    return bit_cast_<f64v>(_mm256_fmadd_pd(bit_cast_<__m256d>(a), bit_cast_<__m256d>(b),
                                           bit_cast_<__m256d>(c)));
#else
    return a * b + c;
#endif
}
inline double fma_s(double a, double b, double c) {
#if defined(BNFAST_ISA_AVX512) || defined(BNFAST_ISA_AVX2)
    return std::fma(a, b, c);  // one instruction with -mfma
#else
    return a * b + c;
#endif
}

// a * b - round(a * b), exactly (TwoProduct's low part, as constant_sum),
// lane-wise: one FMA where the ISA has it, the libm fma per lane otherwise.
inline f64v product_error(const f64v& a, const f64v& b) {
#if defined(BNFAST_ISA_AVX512) || defined(BNFAST_ISA_AVX2)
    return fma_v(a, b, -(a * b));
#else
    f64v r;
    for (int i = 0; i < kLanesF64; ++i) r[i] = std::fma(a[i], b[i], -(a[i] * b[i]));
    return r;
#endif
}

// s + c += b: Knuth's TwoSum adds b to s and its rounding error to c
// (exact: s_new + err == s + b). Lane-wise for vectors, or scalars.
template <class V>
inline void two_sum_into(V& s, V& c, const V& b) {
    const V t = s + b;
    const V bb = t - s;
    c += (s - (t - bb)) + (b - bb);
    s = t;
}

// Pass 2's accumulators: the sum of the deviations d = x - shift as a
// compensated sum (s, c), the sum of their squares in q0..q3 (four chains:
// FMA latency). The deviations of each block of kP2Vec vectors are added as
// a tree, and the block's sum goes into (s, c) by TwoSum: the sum of a chunk
// holding an outlier rounds at the outlier's scale twice per block instead
// of once per value of its chain (a chain of 256 values put the mean of
// [1e16] + a million ones 20 ulps off; see docs/design.md, "Statistics").
// In runs of kP2Blocks blocks the block sums are first added plainly, and
// only their sum goes through TwoSum: one more rounding at the outlier's
// scale per block, and a quarter of the TwoSums, whose dependent chain of
// six additions per block held Zen 3's in-cache pass at ~0.19 ns per value
// (0.15 with runs of 4 blocks; the same bits on data without outliers).
constexpr int kP2Vec = 4;
constexpr int kP2Blocks = 4;
struct Pass2Acc {
    f64v s, c, q0, q1, q2, q3;
    double s_tail, c_tail, q_tail;
    void reset() {
        s = c = q0 = q1 = q2 = q3 = f64v{};
        s_tail = c_tail = q_tail = 0.0;
    }
    void add_scalar(double d) {
        two_sum_into(s_tail, c_tail, d);
        q_tail = fma_s(d, d, q_tail);
    }
    // The lanes and the tail, compensated (a plain sum of the lanes would
    // round at the outlier's scale once per lane).
    double sum_d() const {
        double hi = 0.0, lo = 0.0;
        for (int i = 0; i < kLanesF64; ++i) {
            two_sum_into(hi, lo, s[i]);
            lo += c[i];
        }
        two_sum_into(hi, lo, s_tail);
        lo += c_tail;
        return hi + lo;
    }
    double sum_dd() const { return sum_lanes((q0 + q1) + (q2 + q3)) + q_tail; }
};

// Prefetch of the next chunk while pass 2 works on the cached one: pass 2
// does not touch memory, so without it the memory bus idled through every
// pass 2 (the passes took the sum of their times, not the larger). A walk
// over contiguous pieces of the next chunk, one cache line per step,
// into L2 (prefetcht1: the current chunk stays in L1).
struct PrefetchWalk {
    const char* p = nullptr;     // next line to fetch
    const char* stop = nullptr;  // end of the current piece
    // The remaining pieces: rows of the row path (a, b, left) or rows of a
    // channel tile (row, row_end).
    const void* base = nullptr;
    std::int64_t a = 0, b = 0, left = 0;
    std::int64_t B = 0, sA = 0, elem = 0;
    bool active() const { return p != nullptr; }
    void next_piece() {
        if (left <= 0) {
            p = nullptr;
            return;
        }
        const std::int64_t len = min_i64(B - b, left);
        const char* start = static_cast<const char*>(base) + (a * sA + b) * elem;
        p = start;
        stop = start + len * elem;
        left -= len;
        ++a;
        b = 0;
    }
    // Starts a walk over the flat range [begin, end) of a slab with rows of
    // B contiguous elements of `elem` bytes at stride sA elements.
    void start_rows(const void* xc, std::int64_t B_, std::int64_t sA_, std::int64_t elem_,
                    std::int64_t begin, std::int64_t end) {
        base = xc;
        B = B_;
        sA = sA_;
        elem = elem_;
        a = begin / B;
        b = begin % B;
        left = end - begin;
        next_piece();
    }
    // Starts a walk over rows [r_begin, r_end) of a channel tile: tw
    // contiguous elements from row_ptr(r) + c0 (unit channel stride only).
    const View3* view = nullptr;
    std::int64_t row = 0, row_end = 0, c0 = 0, tw = 0;
    // One cache line per 64 bytes the caller consumed.
    void step(std::int64_t bytes) {
        if (p != nullptr && p + bytes < stop) {  // within the piece: no checks per line
            for (std::int64_t k = 0; k < bytes; k += 64) __builtin_prefetch(p + k, 0, 2);
            p += bytes;
            return;
        }
        for (; bytes > 0 && p != nullptr; bytes -= 64) {
            __builtin_prefetch(p, 0, 2);
            p += 64;
            if (p >= stop) {
                if (view != nullptr) next_row();
                else next_piece();
            }
        }
    }
    void next_row() {
        if (row >= row_end) {
            p = nullptr;
            return;
        }
        const View3& v = *view;
        const std::int64_t off = v.B == 1 ? row * v.sA : (row / v.B) * v.sA + (row % v.B) * v.sB;
        p = static_cast<const char*>(base) + (off + c0) * elem;
        stop = p + tw * elem;
        ++row;
    }
    void start_tile(const void* x, const View3& v, std::int64_t elem_, std::int64_t c0_,
                    std::int64_t tw_, std::int64_t r_begin, std::int64_t r_end) {
        base = x;
        view = &v;
        elem = elem_;
        c0 = c0_;
        tw = tw_;
        row = r_begin;
        row_end = r_end;
        next_row();
    }
};

// Pass 1 of float32 data runs in float32: min and max are exact in any
// precision, and the sum only picks the shift of pass 2, whose corrected
// two-pass result does not depend on the shift being exact (an error of
// ~1e-5 relative in the shift moves M2 by ~eps * (shift error / std)^2).
// Half the vector operations of a float64 pass 1 and no conversions. A sum
// that overflows float32 (finite data near 1e38) is redone in float64 by
// the caller.
struct Pass1AccF32 {
    using V = f32v;
    static constexpr int kLanes = kLanesF32;
    template <class S>
    static V load(const S* p) { return load_f32v(p); }

    f32v sum0, sum1, lo, hi, lo1, hi1;
    Pass1Tail tail;
    void reset() {
        sum0 = sum1 = f32v{};
        lo = lo1 = splat<f32v>(std::numeric_limits<float>::infinity());
        hi = hi1 = splat<f32v>(-std::numeric_limits<float>::infinity());
        tail.reset();
    }
    void add_scalar(double v) { tail.add(v); }
    double sum() const {
        const f32v s = sum0 + sum1;
        double total = s[0];
        for (int i = 1; i < kLanesF32; ++i) total += s[i];
        return total + tail.sum;
    }
    double min() const {
        const f32v v = vmin(lo1, lo);
        double m = v[0];
        for (int i = 1; i < kLanesF32; ++i) m = v[i] < m ? v[i] : m;
        return tail.min_with(m);
    }
    double max() const {
        const f32v v = vmax(hi1, hi);
        double m = v[0];
        for (int i = 1; i < kLanesF32; ++i) m = v[i] > m ? v[i] : m;
        return tail.max_with(m);
    }
};

// Pass 1 in float32 for float32 data and for the half types (widened to
// float by the load: exact, and a sum of float16 values stays far from the
// float32 range; bfloat16 has float32's range and takes the same redo in
// double on overflow).
template <class T>
constexpr bool kPass1F32 = std::is_same_v<T, float> || kIsHalf<T>;

template <class T>
struct Pass1Of {
    using type = std::conditional_t<kPass1F32<T>, Pass1AccF32, Pass1Acc>;
};

// Pass 1 over one contiguous or strided segment, in the accumulator's
// precision (Pass1Acc: double; Pass1AccF32: float32 data in float32).
template <class T, class Acc>
inline void pass1_segment(const T* p, std::int64_t n, std::int64_t stride, Acc& acc) {
    constexpr int L = Acc::kLanes;
    std::int64_t i = 0;
    if (stride == 1) {
        for (; i + 2 * L <= n; i += 2 * L) {
            const typename Acc::V v0 = Acc::load(p + i);
            const typename Acc::V v1 = Acc::load(p + i + L);
            acc.sum0 += v0;
            acc.sum1 += v1;
            // Two min and two max chains: one chain per pair of loads
            // waited on the latency of two dependent min operations.
            acc.lo = vmin(v0, acc.lo);
            acc.hi = vmax(v0, acc.hi);
            acc.lo1 = vmin(v1, acc.lo1);
            acc.hi1 = vmax(v1, acc.hi1);
        }
        // Single vectors before the scalar tail, as in pass 2: rows of 49
        // float32 values (7x7 images) left 17 to the dependent double
        // additions of the tail on AVX-512 (8x32x7x7 training, one thread,
        // in cache: 16.3 -> 13.5 us).
        for (; i + L <= n; i += L) {
            const typename Acc::V v0 = Acc::load(p + i);
            acc.sum0 += v0;
            acc.lo = vmin(v0, acc.lo);
            acc.hi = vmax(v0, acc.hi);
        }
        for (; i < n; ++i) acc.add_scalar(as_f64(p[i]));
    } else {
        for (; i < n; ++i) acc.add_scalar(as_f64(p[i * stride]));
    }
}

// One block of kP2Vec vectors of pass 2 at p: the squares of the deviations
// into q0..q3, their tree sum returned.
template <class T>
inline f64v pass2_block(const T* p, const f64v& shift_v, f64v& q0, f64v& q1, f64v& q2, f64v& q3,
                        PrefetchWalk& pf) {
    constexpr int L = kLanesF64;
    const f64v d0 = load_as_f64(p) - shift_v;
    const f64v d1 = load_as_f64(p + L) - shift_v;
    const f64v d2 = load_as_f64(p + 2 * L) - shift_v;
    const f64v d3 = load_as_f64(p + 3 * L) - shift_v;
    q0 = fma_v(d0, d0, q0);
    q1 = fma_v(d1, d1, q1);
    q2 = fma_v(d2, d2, q2);
    q3 = fma_v(d3, d3, q3);
    pf.step(kP2Vec * L * static_cast<std::int64_t>(sizeof(T)));
    return (d0 + d1) + (d2 + d3);
}

template <class T>
inline void pass2_segment(const T* p, std::int64_t n, std::int64_t stride,
                          double shift, Pass2Acc& acc, PrefetchWalk& pf) {
    constexpr int L = kLanesF64;
    std::int64_t i = 0;
    if (stride == 1) {
        const f64v shift_v = splat<f64v>(shift);
        // The accumulators in locals: as members of acc, GCC 12 kept q0..q3
        // on the stack (a load, FMA and store per vector). Four chains hid
        // that on Zen 4 (no time measured either way), but nothing needs
        // the round trip. The operations and their order are unchanged.
        f64v s = acc.s, c = acc.c, q0 = acc.q0, q1 = acc.q1, q2 = acc.q2, q3 = acc.q3;
        constexpr std::int64_t kBlock = kP2Vec * L;
        for (; i + kP2Blocks * kBlock <= n; i += kP2Blocks * kBlock) {
            f64v run = pass2_block(p + i, shift_v, q0, q1, q2, q3, pf);
            for (int k = 1; k < kP2Blocks; ++k)
                run += pass2_block(p + i + k * kBlock, shift_v, q0, q1, q2, q3, pf);
            two_sum_into(s, c, run);
        }
        for (; i + kBlock <= n; i += kBlock)
            two_sum_into(s, c, pass2_block(p + i, shift_v, q0, q1, q2, q3, pf));
        // Single vectors before the scalar tail: rows of 49 or 196 values
        // (7x7, 14x14 images) would otherwise leave up to 31 per row to it.
        for (; i + L <= n; i += L) {
            const f64v d = load_as_f64(p + i) - shift_v;
            two_sum_into(s, c, d);
            q0 = fma_v(d, d, q0);
        }
        acc.s = s;
        acc.c = c;
        acc.q0 = q0;
        acc.q1 = q1;
        acc.q2 = q2;
        acc.q3 = q3;
        for (; i < n; ++i) acc.add_scalar(as_f64(p[i]) - shift);
    } else {
        for (; i < n; ++i)
            acc.add_scalar(as_f64(p[i * stride]) - shift);
    }
}

// Calls f(a, b, length) for the row pieces covering the flat index range
// [begin, end) of an A x B slab with rows of B (flat index = a*B + b).
template <class F>
inline void for_each_row_span(std::int64_t B, std::int64_t begin, std::int64_t end, F&& f) {
    std::int64_t a = begin / B;
    std::int64_t b = begin % B;
    for (std::int64_t left = end - begin; left > 0; ++a, b = 0) {
        const std::int64_t len = min_i64(B - b, left);
        f(a, b, len);
        left -= len;
    }
}

// The same pieces of one channel's slab as f(pointer, length).
template <class T, class F>
inline void for_each_row_piece(const T* xc, const View3& v, std::int64_t begin,
                               std::int64_t end, F&& f) {
    for_each_row_span(v.B, begin, end, [&](std::int64_t a, std::int64_t b, std::int64_t len) {
        f(xc + a * v.sA + b * v.sB, len);
    });
}

// Reference value of a channel: its first element if finite, else 0.
//
// All means are kept relative to it until the very end: merging small
// chunks or groups of offset data (mean 1e8, std 1) with absolute means
// would round each mean to ulp(1e8) and the Chan merge would turn that into
// variance error (1e-9 relative here). Relative to a value of the data the
// means are O(std) and keep full precision. A constant channel stays exact:
// every chunk mean is ref - ref = 0. The mean returned is not ref + mean,
// which rounds to ulp(ref) (5e5 ulps off for [1e16] + a million ones), but
// final_mean() of the absolute double-double sums kept beside.
template <class T>
inline double reference_value(const T* p) {
    const double v = as_f64(*p);
    return v - v == 0.0 ? v : 0.0;
}

// The one-pass shift of the flat range [lo, hi) of channel slab xc: the
// mean of kShiftSamples values at the midpoints of equal parts of it (an
// exact mean for a linear trend; within std / 4 of the mean of random data,
// where one_pass_holds needs std). false if it is not finite.
template <class T>
inline bool sampled_shift(const T* xc, const View3& v, std::int64_t lo, std::int64_t hi,
                          double& shift) {
    const std::int64_t step = (hi - lo) / kShiftSamples;
    std::int64_t a = (lo + step / 2) / v.B, b = (lo + step / 2) % v.B;
    double sum = 0.0;
    for (int k = 0; k < kShiftSamples; ++k) {
        sum += as_f64(xc[a * v.sA + b * v.sB]);
        b += step;
        if (b >= v.B) {
            a += b / v.B;
            b %= v.B;
        }
    }
    shift = sum / kShiftSamples;
    return shift - shift == 0.0;
}

// Moments of the flat range [begin, end) of channel slab xc, mean relative
// to ref.
// next: the slab to be reduced after this range, if known (its first chunk
// is prefetched during the last chunk's pass 2; a row of 4096 values is a
// single chunk, and nothing else would fetch ahead).
template <class T>
Moments1 row_range_moments(const T* xc, const View3& v, std::int64_t begin,
                           std::int64_t end, double ref, const T* next = nullptr) {
    Moments1 acc;
    typename Pass1Of<T>::type p1;
    Pass2Acc p2;
    // Pass 2's prefetch: the rest of this range's next chunk, else `next`.
    const auto start_prefetch = [&](PrefetchWalk& pf, std::int64_t hi) {
        if (v.sB == 1 && hi < end)
            pf.start_rows(xc, v.B, v.sA, static_cast<std::int64_t>(sizeof(T)), hi,
                          min_i64(hi + kChunk, end));
        else if (v.sB == 1 && next != nullptr)
            pf.start_rows(next, v.B, v.sA, static_cast<std::int64_t>(sizeof(T)), 0,
                          min_i64(kChunk, v.A * v.B));
    };
    for (std::int64_t lo = begin; lo < end; lo += kChunk) {
        const std::int64_t hi = min_i64(lo + kChunk, end);
        // One pass first: pass 2 alone, shifted by the mean of kShiftSamples
        // values spread over the chunk, kept where one_pass_holds (then its
        // M2 is as good as the two-pass one). That is every chunk of data
        // that is not far from its own sampled mean: random data, trends
        // (the samples are the midpoints of equal parts). An outlier, a
        // constant chunk off the shift, inf or NaN fail it and take the two
        // passes below. Pass 1 was a third of the statistics' time.
        double shift;
        if (hi - lo >= kOnePassMinChunk && sampled_shift(xc, v, lo, hi, shift)) {
            p2.reset();
            PrefetchWalk pf;
            start_prefetch(pf, hi);
            for_each_row_piece(xc, v, lo, hi, [&](const T* p, std::int64_t len) {
                pass2_segment(p, len, v.sB, shift, p2, pf);
            });
            const double dn = static_cast<double>(hi - lo);
            const double sd = p2.sum_d(), sdd = p2.sum_dd();
            if (one_pass_holds(dn, sd, sdd)) {
                Moments1 chunk;
                chunk.n = hi - lo;
                chunk.mean = shifted_mean(dn, shift, ref, sd);
                chunk.m2 = shifted_m2(dn, sd, sdd);  // >= 0: it holds
                shifted_chunk_sum(dn, shift, sd, chunk.sum_hi, chunk.sum_lo);
                chan_merge(acc, chunk);
                continue;
            }
        }
        p1.reset();
        for_each_row_piece(xc, v, lo, hi, [&](const T* p, std::int64_t len) {
            pass1_segment(p, len, v.sB, p1);
        });
        Moments1 chunk;
        double sum = p1.sum();
        if constexpr (kPass1F32<T>) {
            if (!std::isfinite(sum)) {
                // float32 overflow (of finite data, or of finite values beside
                // an inf: inf + -inf would be NaN), or NaN: sum again in double.
                Pass1Acc wide;
                wide.reset();
                for_each_row_piece(xc, v, lo, hi, [&](const T* p, std::int64_t len) {
                    pass1_segment<T>(p, len, v.sB, wide);
                });
                sum = wide.sum();
            }
        }
        if (chunk_from_pass1(hi - lo, sum, p1.min(), p1.max(), chunk)) {
            chunk.mean -= ref;  // constant (exact), or non-finite (stays so)
        } else {
            const double shift = sum / static_cast<double>(hi - lo);
            p2.reset();
            PrefetchWalk pf;
            start_prefetch(pf, hi);
            for_each_row_piece(xc, v, lo, hi, [&](const T* p, std::int64_t len) {
                pass2_segment(p, len, v.sB, shift, p2, pf);
            });
            chunk_from_pass2(hi - lo, sum, shift, ref, p2.sum_d(), p2.sum_dd(), chunk);
        }
        chan_merge(acc, chunk);
    }
    return acc;
}

// Mean and M2 of one channel's whole A x B slab, by the same calls in the
// same order as moments_rows (its groups merged in index order), so a fused
// kernel that reduces a slab on one thread gets bit-identical statistics.
template <class T>
inline void slab_moments(const T* xc, const View3& v, double& mean, double& m2,
                         const T* next = nullptr) {
    const std::int64_t n = v.A * v.B;
    const std::int64_t groups = group_count(n);
    const double ref = reference_value(xc);
    Moments1 m = row_range_moments(xc, v, part_begin(0, n, groups), part_begin(1, n, groups), ref,
                                   groups == 1 ? next : nullptr);
    for (std::int64_t g = 1; g < groups; ++g)
        chan_merge(m, row_range_moments(xc, v, part_begin(g, n, groups), part_begin(g + 1, n, groups),
                                        ref, g + 1 == groups ? next : nullptr));
    mean = final_mean(ref + m.mean, m);
    m2 = m.m2;
}

template <class T>
void moments_rows(const T* x, const View3& v, double* mean, double* m2,
                  int nthreads) {
    const std::int64_t n = v.A * v.B;
    const std::int64_t groups = group_count(n);
    const std::int64_t items = v.C * groups;
    const int nt = (v.A * v.B * v.C <= kParallelMinElements) ? 1 : nthreads;

    if (groups == 1) {
        // Runs of consecutive slabs per item (see fused_row_norm).
        const std::int64_t per_item = max_i64(1, min_i64(64, v.C / (8 * nt)));
        parallel_for(nt, v.C, per_item, [&](std::int64_t c) {
            slab_moments(x + c * v.sC, v, mean[c], m2[c],
                         c + 1 < v.C ? x + (c + 1) * v.sC : nullptr);
        });
        return;
    }

    Scratch<Moments1, 64> partial_buf(static_cast<std::size_t>(items));
    Moments1* partial = partial_buf.get();
    parallel_for(nt, items, 1, [&](std::int64_t item) {
        const std::int64_t c = item / groups;
        const std::int64_t g = item % groups;
        const std::int64_t begin = part_begin(g, n, groups);
        const std::int64_t end = part_begin(g + 1, n, groups);
        const T* xc = x + c * v.sC;
        partial[item] = row_range_moments(xc, v, begin, end, reference_value(xc));
    });
    for (std::int64_t c = 0; c < v.C; ++c) {
        Moments1 m = partial[c * groups];
        for (std::int64_t g = 1; g < groups; ++g) chan_merge(m, partial[c * groups + g]);
        mean[c] = final_mean(reference_value(x + c * v.sC) + m.mean, m);
        m2[c] = m.m2;
    }
}

// ---------------------------------------------------------------------------
// Channel path: rows r = (a, b) each hold C channels at stride sC (unit for
// NHWC and 2-D (N, C); small B with many channels otherwise). A work item is
// a tile of channels times a range of rows; the inner loops run along the
// channels, so they vectorize when sC == 1, and each channel's arithmetic is
// independent of the vector width. All channels of a tile share one count,
// so the per-chunk epilogue and the Chan merge are vector loops too.

struct TileScratch {
    double* sum;
    double* lo;
    double* hi;
    double* shift;
    double* sum_d;
    double* sum_dd;
    double* sum_dc;  // compensation of sum_d (see Pass2Acc)
    double* mean;  // running moments of the tile (mean relative to ref)
    double* m2;
    double* sum_hi;  // running sums of the tile (absolute; Moments1's sum_hi, sum_lo)
    double* sum_lo;
    float* sum_f32;  // pass 1 of float32 data (see Pass1AccF32)
    float* lo_f32;
    float* hi_f32;
};

template <class T>
inline const T* row_ptr(const T* x, const View3& v, std::int64_t r) {
    // (N, C) data has B == 1: no 64-bit divisions per short row.
    if (v.B == 1) return x + r * v.sA;
    return x + (r / v.B) * v.sA + (r % v.B) * v.sB;
}

// The channel path's pass 2 sums the deviations of kP2Rows rows of a
// channel as a tree before each TwoSum (one compensated addition per 8
// values; see Pass2Acc), and their squares in two FMA chains (even rows
// into the running sum, odd rows into a fresh one added after): one chain
// of 8 FMAs per block waited on their latency.
constexpr int kP2Rows = 8;
template <class V>
inline V tree8(const V* d) {
    return ((d[0] + d[1]) + (d[2] + d[3])) + ((d[4] + d[5]) + (d[6] + d[7]));
}

// Rows per row block of a chunk of a tile (see kRowBlock): the whole chunk.
// Blocks of 8 rows across the tile (accumulators through the scratch between
// blocks) measured slower in cache, 0.114 against 0.106 ms per MB of
// 256x1024 float32 on AVX-512 and 0.168 against 0.123 on AVX2, and with the
// next chunk prefetched into L2 during pass 2 (PrefetchWalk) only a tile's
// first chunk walks its column strips from memory.
inline std::int64_t row_block(std::int64_t chunk_rows) { return max_i64(chunk_rows, kRowBlock); }

// Pass 1 of rows [rb, re) of a unit-stride channel tile in register blocks
// of kRegBlock vectors of channels, continuing the running sum/min/max in
// the scratch arrays (V: f32v for Pass1AccF32's precision, f64v for double).
// Returns the first channel left to the scalar loop.
template <class V, class T, class S, class Load>
inline std::int64_t pass1_blocks(const T* x, const View3& v, std::int64_t c0, std::int64_t tw,
                                 std::int64_t rb, std::int64_t re, S* __restrict sum,
                                 S* __restrict lo, S* __restrict hi, Load load) {
    constexpr std::int64_t L = sizeof(V) / sizeof(S), W = kRegBlock * L;
    std::int64_t cb = 0;
    for (; cb + W <= tw; cb += W) {
        V a_s[kRegBlock], a_lo[kRegBlock], a_hi[kRegBlock];
        for (int k = 0; k < kRegBlock; ++k) {
            a_s[k] = load_vec<V>(sum + cb + k * L);
            a_lo[k] = load_vec<V>(lo + cb + k * L);
            a_hi[k] = load_vec<V>(hi + cb + k * L);
        }
        for (std::int64_t r = rb; r < re; ++r) {
            const T* p = row_ptr(x, v, r) + c0 + cb;
            for (int k = 0; k < kRegBlock; ++k) {
                const V val = load(p + k * L);
                a_s[k] += val;
                a_lo[k] = vmin(val, a_lo[k]);
                a_hi[k] = vmax(val, a_hi[k]);
            }
        }
        for (int k = 0; k < kRegBlock; ++k) {
            store_vec(sum + cb + k * L, a_s[k]);
            store_vec(lo + cb + k * L, a_lo[k]);
            store_vec(hi + cb + k * L, a_hi[k]);
        }
    }
    return cb;
}

template <bool kUnitC, class T>
void tile_moments(const T* x, const View3& v, std::int64_t c0, std::int64_t tw,
                  std::int64_t r_begin, std::int64_t r_end, std::int64_t chunk_rows,
                  const double* __restrict ref, TileScratch& s) {
    const std::int64_t sc = kUnitC ? 1 : v.sC;
    const std::int64_t rblock = row_block(chunk_rows);
    std::int64_t acc_n = 0;
    for (std::int64_t c = 0; c < tw; ++c) s.mean[c] = s.m2[c] = s.sum_hi[c] = s.sum_lo[c] = 0.0;
    for (std::int64_t r0 = r_begin; r0 < r_end; r0 += chunk_rows) {
        const std::int64_t r1 = min_i64(r0 + chunk_rows, r_end);
        const std::int64_t n = r1 - r0;
        const double dn = static_cast<double>(n);
        double* __restrict sum = s.sum;
        double* __restrict lo = s.lo;
        double* __restrict hi = s.hi;
        double* __restrict shift = s.shift;
        double* __restrict sd = s.sum_d;
        double* __restrict sdd = s.sum_dd;
        double* __restrict sdc = s.sum_dc;
        auto pass2 = [&]() {
            // Pass 2: deviations from the shift (the chunk is cached), summed
            // as Pass2Acc does per value of the row path, here per channel over
            // blocks of kP2Vec rows: a tree of the block's deviations, added by
            // TwoSum into (sd, sdc); squares by FMA. The same operations per
            // channel in the register blocks and the scalar loop.
            for (std::int64_t c = 0; c < tw; ++c) sd[c] = sdd[c] = sdc[c] = 0.0;
            PrefetchWalk pf;
            if (kUnitC && r1 < r_end)
                pf.start_tile(x, v, static_cast<std::int64_t>(sizeof(T)), c0, tw, r1,
                              min_i64(r1 + chunk_rows, r_end));
            for (std::int64_t rb = r0; rb < r1; rb += rblock) {
                const std::int64_t re = min_i64(rb + rblock, r1);
                std::int64_t cb2 = 0;
                // Bytes of the next chunk prefetched so far in this block: a
                // line per 64 bytes consumed, spread through the register
                // strips' rows (in one burst after the block, the chunk's
                // compute and the next chunk's fetch did not overlap), the
                // rest after the block.
                std::int64_t fetched = 0;
                if constexpr (kUnitC) {  // register blocks, see kRegBlock
                    constexpr std::int64_t L = kLanesF64, W = kRegBlock2 * kLanesF64;
                    constexpr std::int64_t kStepBytes = kP2Rows * W * std::int64_t(sizeof(T));
                    for (; cb2 + W <= tw; cb2 += W) {
                        f64v sh[kRegBlock2], a_s[kRegBlock2], a_c[kRegBlock2], a_q[kRegBlock2];
                        for (int k = 0; k < kRegBlock2; ++k) {
                            sh[k] = load_vec<f64v>(shift + cb2 + k * L);
                            a_s[k] = load_vec<f64v>(sd + cb2 + k * L);
                            a_c[k] = load_vec<f64v>(sdc + cb2 + k * L);
                            a_q[k] = load_vec<f64v>(sdd + cb2 + k * L);
                        }
                        std::int64_t r = rb;
                        for (; r + kP2Rows <= re; r += kP2Rows) {
                            const T* p[kP2Rows];
                            for (int j = 0; j < kP2Rows; ++j) p[j] = row_ptr(x, v, r + j) + c0 + cb2;
                            for (int k = 0; k < kRegBlock2; ++k) {
                                f64v d[kP2Rows];
                                for (int j = 0; j < kP2Rows; ++j) d[j] = load_as_f64(p[j] + k * L) - sh[k];
                                two_sum_into(a_s[k], a_c[k], tree8(d));
                                a_q[k] = fma_v(d[0], d[0], a_q[k]);
                                f64v odd = d[1] * d[1];
                                for (int j = 2; j < kP2Rows; j += 2) {
                                    a_q[k] = fma_v(d[j], d[j], a_q[k]);
                                    odd = fma_v(d[j + 1], d[j + 1], odd);
                                }
                                a_q[k] += odd;
                            }
                            pf.step(kStepBytes);
                            fetched += kStepBytes;
                        }
                        for (; r < re; ++r) {
                            const T* p = row_ptr(x, v, r) + c0 + cb2;
                            for (int k = 0; k < kRegBlock2; ++k) {
                                const f64v d = load_as_f64(p + k * L) - sh[k];
                                two_sum_into(a_s[k], a_c[k], d);
                                a_q[k] = fma_v(d, d, a_q[k]);
                            }
                        }
                        for (int k = 0; k < kRegBlock2; ++k) {
                            store_vec(sd + cb2 + k * L, a_s[k]);
                            store_vec(sdc + cb2 + k * L, a_c[k]);
                            store_vec(sdd + cb2 + k * L, a_q[k]);
                        }
                    }
                }
                if (cb2 < tw) {
                    std::int64_t r = rb;
                    for (; r + kP2Rows <= re; r += kP2Rows) {
                        const T* p[kP2Rows];
                        for (int j = 0; j < kP2Rows; ++j) p[j] = row_ptr(x, v, r + j) + c0 * sc;
                        for (std::int64_t c = cb2; c < tw; ++c) {
                            double d[kP2Rows];
                            for (int j = 0; j < kP2Rows; ++j) d[j] = as_f64(p[j][c * sc]) - shift[c];
                            two_sum_into(sd[c], sdc[c], tree8(d));
                            double q = fma_s(d[0], d[0], sdd[c]);
                            double odd = d[1] * d[1];
                            for (int j = 2; j < kP2Rows; j += 2) {
                                q = fma_s(d[j], d[j], q);
                                odd = fma_s(d[j + 1], d[j + 1], odd);
                            }
                            sdd[c] = q + odd;
                        }
                    }
                    for (; r < re; ++r) {
                        const T* row = row_ptr(x, v, r) + c0 * sc;
                        for (std::int64_t c = cb2; c < tw; ++c) {
                            const double d = as_f64(row[c * sc]) - shift[c];
                            two_sum_into(sd[c], sdc[c], d);
                            sdd[c] = fma_s(d, d, sdd[c]);
                        }
                    }
                }
                pf.step((re - rb) * tw * static_cast<std::int64_t>(sizeof(T)) - fetched);
            }
            for (std::int64_t c = 0; c < tw; ++c) sd[c] += sdc[c];
        };
        // One pass (unit channel stride, after the tile's first chunk): the
        // deviations from the running mean of the tile, summed as pass 2
        // does. Kept where the cancellation bound says the result is as good
        // as the two-pass one (see kOnePassFactor); otherwise the chunk is
        // redone with pass 1 and pass 2 (it is in cache).
        if (kUnitC && acc_n > 0) {
            // In vectors: a scalar loop with its finiteness test took 3% of
            // the pass on tiles of 512 channels.
            constexpr std::int64_t L = kLanesF64;
            const std::int64_t cv = tw - tw % L;
            auto finite_v = f64v{} == f64v{};
            for (std::int64_t c = 0; c < cv; c += L) {
                const f64v m = load_vec<f64v>(s.mean + c);
                finite_v &= (m - m) == f64v{};
                store_vec(shift + c, load_vec<f64v>(ref + c) + m);
            }
            bool shifts_finite = true;
            for (int i = 0; i < L; ++i) shifts_finite &= finite_v[i] != 0;
            for (std::int64_t c = cv; c < tw; ++c) {
                const double m = s.mean[c];
                shifts_finite &= m - m == 0.0;
                shift[c] = ref[c] + m;
            }
            if (shifts_finite) {
                pass2();
                // sdd finite means every d and d * d was. In vectors, as
                // the merge below: per channel and chunk they were ~40
                // scalar operations and three divisions, as much time as
                // the chunk's pass on wide tiles of short chunks.
                const f64v dn_v = splat<f64v>(dn);
                auto holds = f64v{} == f64v{};
                for (std::int64_t c = 0; c < cv; c += L)
                    holds &= one_pass_holds(dn_v, load_vec<f64v>(sd + c), load_vec<f64v>(sdd + c));
                bool accept = true;
                for (int i = 0; i < L; ++i) accept &= holds[i] != 0;
                for (std::int64_t c = cv; c < tw; ++c) accept &= one_pass_holds(dn, sd[c], sdd[c]);
                if (accept) {
                    double* __restrict mean = s.mean;
                    double* __restrict m2 = s.m2;
                    double* __restrict sum_hi = s.sum_hi;
                    double* __restrict sum_lo = s.sum_lo;
                    const double na = static_cast<double>(acc_n);
                    const double b_frac = dn / static_cast<double>(acc_n + n);
                    // One channel's merge, lane-wise for vectors (V); the
                    // same operations for the scalar tail.
                    const auto merge = [&](auto dn_, auto shift_, auto ref_, auto sd_, auto sdd_,
                                           auto& mean_, auto& m2_, auto& sum_hi_, auto& sum_lo_,
                                           auto na_, auto b_frac_, auto p_lo) {
                        using V = decltype(dn_);
                        const V mean_b = shifted_mean(dn_, shift_, ref_, sd_);
                        const V m2_b = shifted_m2(dn_, sd_, sdd_);  // >= 0: accepted
                        V h, l;
                        shifted_sum_from(dn_ * shift_, p_lo, sd_, h, l);
                        dd_add(sum_hi_, sum_lo_, h, l);
                        // Chan merge of finite moments, as below (a delta
                        // of exactly 0 where the means are equal).
                        const V delta = mean_b - mean_;
                        const V d = mean_b == mean_ ? V{} : delta;
                        mean_ = mean_ + d * b_frac_;
                        m2_ = m2_ + (m2_b + d * d * na_ * b_frac_);
                    };
                    const f64v na_v = splat<f64v>(na), bf_v = splat<f64v>(b_frac);
                    for (std::int64_t c = 0; c < cv; c += L) {
                        const f64v sh = load_vec<f64v>(shift + c);
                        f64v mv = load_vec<f64v>(mean + c), qv = load_vec<f64v>(m2 + c);
                        f64v hv = load_vec<f64v>(sum_hi + c), lv = load_vec<f64v>(sum_lo + c);
                        merge(dn_v, sh, load_vec<f64v>(ref + c), load_vec<f64v>(sd + c),
                              load_vec<f64v>(sdd + c), mv, qv, hv, lv, na_v, bf_v,
                              product_error(dn_v, sh));
                        store_vec(mean + c, mv);
                        store_vec(m2 + c, qv);
                        store_vec(sum_hi + c, hv);
                        store_vec(sum_lo + c, lv);
                    }
                    for (std::int64_t c = cv; c < tw; ++c) {
                        double p_hi, p_lo;
                        constant_sum(dn, shift[c], p_hi, p_lo);
                        merge(dn, shift[c], ref[c], sd[c], sdd[c], mean[c], m2[c], sum_hi[c],
                              sum_lo[c], na, b_frac, p_lo);
                    }
                    acc_n += n;
                    continue;
                }
            }
        }
        for (std::int64_t c = 0; c < tw; ++c) {
            sum[c] = 0.0;
            lo[c] = kInf;
            hi[c] = -kInf;
            sd[c] = 0.0;
            sdd[c] = 0.0;
        }
        if constexpr (kPass1F32<T>) {  // pass 1 in float32, as Pass1AccF32
            float* __restrict fsum = s.sum_f32;
            float* __restrict flo = s.lo_f32;
            float* __restrict fhi = s.hi_f32;
            for (std::int64_t c = 0; c < tw; ++c) {
                fsum[c] = 0.0f;
                flo[c] = std::numeric_limits<float>::infinity();
                fhi[c] = -std::numeric_limits<float>::infinity();
            }
            for (std::int64_t rb = r0; rb < r1; rb += rblock) {
                const std::int64_t re = min_i64(rb + rblock, r1);
                std::int64_t cb = 0;
                if constexpr (kUnitC) {
                    cb = pass1_blocks<f32v>(x, v, c0, tw, rb, re, fsum, flo, fhi,
                                            [](const T* p) { return load_f32v(p); });
                }
                for (std::int64_t r = rb; r < re; ++r) {
                    const T* row = row_ptr(x, v, r) + c0 * sc;
                    for (std::int64_t c = cb; c < tw; ++c) {
                        const float val = to_compute(row[c * sc]);
                        fsum[c] += val;
                        flo[c] = val < flo[c] ? val : flo[c];
                        fhi[c] = val > fhi[c] ? val : fhi[c];
                    }
                }
            }
            for (std::int64_t c = 0; c < tw; ++c) {
                sum[c] = fsum[c];
                lo[c] = flo[c];
                hi[c] = fhi[c];
            }
            for (std::int64_t c = 0; c < tw; ++c) {
                if (sum[c] - sum[c] != 0.0) {
                    // float32 overflow (see row_range_moments), or NaN: sum again in double.
                    double total = 0.0;
                    for (std::int64_t r = r0; r < r1; ++r)
                        total += as_f64(row_ptr(x, v, r)[(c0 + c) * sc]);
                    sum[c] = total;
                }
            }
        } else {
            for (std::int64_t rb = r0; rb < r1; rb += rblock) {
                const std::int64_t re = min_i64(rb + rblock, r1);
                std::int64_t cb = 0;
                if constexpr (kUnitC) {
                    cb = pass1_blocks<f64v>(x, v, c0, tw, rb, re, sum, lo, hi,
                                            [](const T* p) { return load_as_f64(p); });
                }
                for (std::int64_t r = rb; r < re; ++r) {  // pass 1: sum, min, max
                    const T* row = row_ptr(x, v, r) + c0 * sc;
                    for (std::int64_t c = cb; c < tw; ++c) {
                        const double val = as_f64(row[c * sc]);
                        sum[c] += val;
                        lo[c] = val < lo[c] ? val : lo[c];
                        hi[c] = val > hi[c] ? val : hi[c];
                    }
                }
            }
        }
        for (std::int64_t c = 0; c < tw; ++c) shift[c] = sum[c] / dn;
        pass2();
        // Chunk moments (same special cases as chunk_from_pass1/2, as selects)
        // merged into the tile's running moments.
        double* __restrict mean = s.mean;
        double* __restrict m2 = s.m2;
        double* __restrict sum_hi = s.sum_hi;
        double* __restrict sum_lo = s.sum_lo;
        const double na = static_cast<double>(acc_n);
        const double b_frac = dn / static_cast<double>(acc_n + n);
        const bool first = acc_n == 0;
        for (std::int64_t c = 0; c < tw; ++c) {
            const double total = sum[c];
            const bool finite = total - total == 0.0;  // false for NaN and inf
            double m2_chunk = shifted_m2(dn, sd[c], sdd[c]);
            m2_chunk = m2_chunk < 0.0 ? 0.0 : m2_chunk;
            const bool constant = finite && lo[c] == hi[c];
            // Means relative to ref (see reference_value for why).
            const double mean_b =
                !finite ? total
                        : (constant ? lo[c] - ref[c] : shifted_mean(dn, shift[c], ref[c], sd[c]));
            const double m2_b = !finite ? total - total : (constant ? 0.0 : m2_chunk);
            // The chunk's sum as chunk_from_pass1/2 give it (as selects),
            // added to the tile's.
            double const_hi, const_lo, var_hi, var_lo;
            constant_sum(dn, lo[c], const_hi, const_lo);
            chunk_sum(dn, total, shift[c], sd[c], var_hi, var_lo);
            const double chunk_hi = constant ? const_hi : total;
            const double chunk_lo = constant ? const_lo : (finite ? var_lo : 0.0);
            dd_add(sum_hi[c], sum_lo[c], chunk_hi, chunk_lo);
            // Chan merge as in chan_merge(), written as selects.
            const bool both_finite = mean[c] - mean[c] == 0.0 && mean_b - mean_b == 0.0;
            const double delta = mean_b == mean[c] ? 0.0 : mean_b - mean[c];
            const double merged_mean = both_finite ? mean[c] + delta * b_frac : mean[c] + mean_b;
            const double merged_m2 = both_finite ? m2[c] + (m2_b + delta * delta * na * b_frac)
                                                 : m2[c] + m2_b + (merged_mean - merged_mean);
            mean[c] = first ? mean_b : merged_mean;
            m2[c] = first ? m2_b : merged_m2;
        }
        acc_n += n;
    }
}

template <class T>
void moments_channels(const T* x, const View3& v, double* mean, double* m2,
                      int nthreads) {
    const std::int64_t rows = v.A * v.B;
    const std::int64_t tile = min_i64(v.C, kTileChannels);
    const std::int64_t tiles = (v.C + tile - 1) / tile;
    // Rows per chunk: about kChannelChunkScale * kChunk elements of the tile
    // (half as many of float64: see kChannelChunkScale), at least one row.
    const std::int64_t chunk_values =
        kChannelChunkScale * kChunk / (sizeof(T) > sizeof(float) ? 2 : 1);
    const std::int64_t chunk_rows = max_i64(1, chunk_values / tile);
    // Split rows into groups only where each group still holds whole chunks,
    // and where a group keeps kMinGroupChunks of them while there are at
    // least 8 items: a group's first chunk takes two passes (no running
    // mean yet), and each group adds a merge per channel. Wide data (4096
    // channels: 8 tiles of 4 chunks per group) spent a quarter of its chunks
    // in two passes. Shape-only, as everything that decides the arithmetic.
    const std::int64_t groups = max_i64(
        1, min_i64(min_i64(group_count(rows * v.C), rows / chunk_rows),
                   max_i64(rows / (kMinGroupChunks * chunk_rows), (8 + tiles - 1) / tiles)));
    const std::int64_t items = tiles * groups;
    const int nt = (rows * v.C <= kParallelMinElements) ? 1 : nthreads;

    // Per-channel references: the channel's value in row 0.
    Scratch<double> ref_buf(static_cast<std::size_t>(v.C));
    double* ref = ref_buf.get();
    {
        const T* row0 = row_ptr(x, v, 0);
        for (std::int64_t c = 0; c < v.C; ++c) ref[c] = reference_value(row0 + c * v.sC);
    }
    Scratch<Moments1, 64> partial_buf(groups > 1 ? static_cast<std::size_t>(groups * v.C) : 0);
    Moments1* partial = partial_buf.get();
    // Scratch for every thread, allocated here: an exception must not leave
    // a parallel region.
    const std::size_t t = static_cast<std::size_t>(tile);
    // Per-thread regions padded by two cache lines: the accumulators are
    // written on every row, and a line shared by two threads' regions would
    // bounce between cores.
    const std::size_t stride = 11 * t + 16, stride_f32 = 3 * t + 32;
    Scratch<double> scratch_buf(stride * static_cast<std::size_t>(nt));
    Scratch<float> scratch_f32_buf(  // pass 1 of float32 data only
        kPass1F32<T> ? stride_f32 * static_cast<std::size_t>(nt) : 0);
    double* scratch = scratch_buf.get();
    float* scratch_f32 = kPass1F32<T> ? scratch_f32_buf.get() : nullptr;
    parallel_blocks(nt, items, 1, [&](std::int64_t begin, std::int64_t end, int slot) {
        double* buf = scratch + stride * static_cast<std::size_t>(slot);
        float* fbuf = scratch_f32 == nullptr
                          ? nullptr
                          : scratch_f32 + stride_f32 * static_cast<std::size_t>(slot);
        TileScratch s{buf,
                      buf + t,
                      buf + 2 * t,
                      buf + 3 * t,
                      buf + 4 * t,
                      buf + 5 * t,
                      buf + 10 * t,
                      buf + 6 * t,
                      buf + 7 * t,
                      buf + 8 * t,
                      buf + 9 * t,
                      fbuf,
                      fbuf ? fbuf + t : nullptr,
                      fbuf ? fbuf + 2 * t : nullptr};
        for (std::int64_t item = begin; item < end; ++item) {
            const std::int64_t g = item / tiles;
            const std::int64_t c0 = (item % tiles) * tile;
            const std::int64_t tw = min_i64(tile, v.C - c0);
            const std::int64_t r_begin = part_begin(g, rows, groups);
            const std::int64_t r_end = part_begin(g + 1, rows, groups);
            if (v.sC == 1) {
                tile_moments<true>(x, v, c0, tw, r_begin, r_end, chunk_rows, ref + c0, s);
            } else {
                tile_moments<false>(x, v, c0, tw, r_begin, r_end, chunk_rows, ref + c0, s);
            }
            if (groups == 1) {
                for (std::int64_t c = 0; c < tw; ++c) {
                    const Moments1 m{r_end - r_begin, s.mean[c], s.m2[c], s.sum_hi[c],
                                     s.sum_lo[c]};
                    mean[c0 + c] = final_mean(ref[c0 + c] + m.mean, m);
                    m2[c0 + c] = s.m2[c];
                }
            } else {
                for (std::int64_t c = 0; c < tw; ++c)
                    partial[g * v.C + c0 + c] = Moments1{r_end - r_begin, s.mean[c], s.m2[c],
                                                         s.sum_hi[c], s.sum_lo[c]};
            }
        }
    });
    if (groups > 1) {
        for (std::int64_t c = 0; c < v.C; ++c) {
            Moments1 m = partial[c];
            for (std::int64_t g = 1; g < groups; ++g) chan_merge(m, partial[g * v.C + c]);
            mean[c] = final_mean(ref[c] + m.mean, m);
            m2[c] = m.m2;
        }
    }
}

template <class T>
void moments_impl(const T* x, const View3& view, double* mean, double* m2,
                  int nthreads) {
    View3 v = view;
    if (v.C == 0) return;
    if (v.A == 0 || v.B == 0) {  // empty slab: undefined (callers reject it)
        for (std::int64_t c = 0; c < v.C; ++c)
            mean[c] = m2[c] = std::numeric_limits<double>::quiet_NaN();
        return;
    }
    if (nthreads < 1) nthreads = 1;
    if (v.sB == 1 && v.B >= kMinRowLength) {
        moments_rows(x, v, mean, m2, nthreads);
    } else if (v.C > 1 && (v.sC == 1 || v.B > 1)) {
        moments_channels(x, v, mean, m2, nthreads);
    } else {
        if (v.B == 1) {  // (A, C, 1): treat A as the row so a unit sA is contiguous
            v.B = v.A;
            v.sB = v.sA;
            v.A = 1;
            v.sA = 0;
        }
        moments_rows(x, v, mean, m2, nthreads);
    }
}

}  // namespace bnfast::kernels::BNFAST_ISA
