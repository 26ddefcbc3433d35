// The batch-norm training forward (batch_norm_train_fn): batch statistics
// and normalization in one call.
//
// Where the channel slabs are rows along B (NCHW), each channel is reduced
// and then normalized by the same thread right away, while its slab is
// still in cache: the data crosses the memory bus about once each way, as
// in a copy. The statistics are computed by exactly the same calls, in the
// same order, as the moments kernel's, so they are bit-identical to it (and
// to any thread count). Other layouts run the moments kernel and then the
// affine kernel.
#include "batch_norm.hpp"

#include <cstdint>

#include "affine.hpp"
#include "affine_runs.hpp"
#include "bnfast/cpu_features.hpp"
#include "bnfast/formulas.hpp"
#include "moments_impl.hpp"

namespace bnfast::kernels::BNFAST_ISA {
namespace {

// Channel slabs above this are too large for one thread to reduce and
// normalize within its L2: about half of a core's L2 on current x86 server
// cores (1-2 MB).
constexpr std::int64_t kSharedSlabBytes = std::int64_t(1) << 20;

// Whether the threads share each channel slab (fused_rows_shared) rather
// than take whole channels (fused_rows): for slabs above kSharedSlabBytes
// whose share per thread fits in a core's L2, where it is normalized right
// after it is reduced. Where a share does not fit (a 3.2 MB slab of
// 64x64x112x112 float32 is 1.6 MB per thread against 512 KB of L2 on a
// Zen 3, 1 MB on a Zen 4), the second read comes from L3 either way, and
// whole channels per thread spare the two barriers per channel, which also
// kept the threads reading together and then writing together (Zen 3, two
// threads: 1.6-2.1x -> 1.4-1.7x the read + write floor). Larger slabs than
// kMaxFusedSlabBytes are shared anyway: a whole one would delay an
// interrupt check too long, and no cache holds it. An unknown L2 (0)
// shares every slab above kSharedSlabBytes.
inline bool share_slabs(std::int64_t slab_bytes, int nt) {
    if (slab_bytes <= kSharedSlabBytes) return false;
    const std::int64_t l2 = l2_cache_bytes();
    return l2 <= 0 || slab_bytes > kMaxFusedSlabBytes || slab_bytes <= l2 * nt;
}

// The channel's T parameters of y = ((x - hi) - lo) * scale + shift.
template <class T>
struct ChannelMap {
    T hi, lo, scale, shift;
};

template <class T>
ChannelMap<T> channel_map(double mean, double m2, double count, const double* weight,
                          const double* bias, std::int64_t c, double eps) {
    const auto f = formulas::train_fold(m2, count, eps, weight != nullptr ? weight[c] : 1.0,
                                        bias != nullptr ? bias[c] : 0.0);
    ChannelMap<T> out;
    formulas::split_center(mean, out.hi, out.lo);
    out.scale = static_cast<T>(f.scale);
    out.shift = static_cast<T>(f.shift);
    return out;
}

template <bool kStream, class T>
void fused_rows(const T* x, const View3& v, T* y, const View3& yv, const double* weight,
                const double* bias, double eps, double* mean, double* m2, int nt) {
    const double count = static_cast<double>(v.A * v.B);
    parallel_for(nt, v.C, 1, [&](std::int64_t c) {
        const T* xc = x + c * v.sC;
        slab_moments(xc, v, mean[c], m2[c]);
        const auto p = channel_map<compute_t<T>>(mean[c], m2[c], count, weight, bias, c, eps);
        T* yc = y + c * yv.sC;
        for (std::int64_t a = 0; a < v.A; ++a)
            affine_run_bcast<true, kStream>(xc + a * v.sA, yc + a * yv.sA, v.B, p.hi, p.lo,
                                            p.scale, p.shift);
    });
}

// Channel slabs larger than a core's L2: the threads share each channel,
// its groups reduced in one parallel run and normalized in a second (the
// merge between them is the barrier). The pool gives each thread the same
// share of the groups in both runs when the same threads take part, so a
// thread normalizes what it reduced while that is still in its own L2
// (with a whole slab per thread, the second read came from memory again).
// The groups' moments merge in index order, as slab_moments does: the
// same bits.
template <bool kStream, class T>
void fused_rows_shared(const T* x, const View3& v, T* y, const View3& yv, const double* weight,
                       const double* bias, double eps, double* mean, double* m2, int nt) {
    const std::int64_t n = v.A * v.B;
    const double count = static_cast<double>(n);
    const std::int64_t groups = group_count(n);
    Scratch<Moments1, 64> partial_buf(static_cast<std::size_t>(groups));
    Moments1* part = partial_buf.get();
    for (std::int64_t c = 0; c < v.C; ++c) {
        const T* xc = x + c * v.sC;
        const double ref = reference_value(xc);
        parallel_for(nt, groups, 1, [&](std::int64_t g) {
            part[g] = row_range_moments(xc, v, part_begin(g, n, groups),
                                        part_begin(g + 1, n, groups), ref);
        });
        Moments1 m = part[0];
        for (std::int64_t g = 1; g < groups; ++g) chan_merge(m, part[g]);
        mean[c] = final_mean(ref + m.mean, m);
        m2[c] = m.m2;
        const auto p = channel_map<compute_t<T>>(mean[c], m.m2, count, weight, bias, c, eps);
        T* yc = y + c * yv.sC;
        parallel_for(nt, groups, 1, [&](std::int64_t g) {
            for_each_row_span(v.B, part_begin(g, n, groups), part_begin(g + 1, n, groups),
                              [&](std::int64_t a, std::int64_t b, std::int64_t len) {
                                  affine_run_bcast<true, kStream>(xc + a * v.sA + b,
                                                                  yc + a * yv.sA + b, len, p.hi,
                                                                  p.lo, p.scale, p.shift);  // sB == 1
                              });
        });
    }
}

template <class T>
void batch_norm_train(const T* x, const View3& xv, T* y, const View3& yv, const double* weight,
                      const double* bias, double eps, double* mean, double* m2, int nthreads) {
    if (xv.C == 0) return;
    if (nthreads < 1) nthreads = 1;
    // The fused loop runs one channel per thread; with few channels the
    // two-kernel path (parallel inside a channel) is faster. Both give
    // bit-identical results, so the choice may depend on nthreads.
    const bool rows = xv.sB == 1 && yv.sB == 1 && xv.B >= kMinRowLength && xv.A * xv.B > 0 &&
                      xv.C >= 4 * static_cast<std::int64_t>(nthreads);
    if (rows) {
        const std::int64_t total = xv.A * xv.B * xv.C;
        const int nt = (total <= kParallelMinElements) ? 1 : nthreads;
        const std::int64_t slab_bytes = xv.A * xv.B * static_cast<std::int64_t>(sizeof(T));
        // Slabs to share are shared on one thread too: the same passes over
        // the data as fused_rows (one channel after another), in blocks of
        // a group, so an interruptible call checks for Ctrl-C between them.
        if (share_slabs(slab_bytes, nt) &&
            group_count(xv.A * xv.B) >= static_cast<std::int64_t>(nt)) {
            if (total * static_cast<std::int64_t>(sizeof(T)) >= kStreamMinBytes)
                fused_rows_shared<true>(x, xv, y, yv, weight, bias, eps, mean, m2, nt);
            else
                fused_rows_shared<false>(x, xv, y, yv, weight, bias, eps, mean, m2, nt);
            return;
        }
        if (total * static_cast<std::int64_t>(sizeof(T)) >= kStreamMinBytes)
            fused_rows<true>(x, xv, y, yv, weight, bias, eps, mean, m2, nt);
        else
            fused_rows<false>(x, xv, y, yv, weight, bias, eps, mean, m2, nt);
        return;
    }
    moments_impl(x, xv, mean, m2, nthreads);
    const std::int64_t count_i = xv.A * xv.B;
    const double count = static_cast<double>(count_i);
    using P = compute_t<T>;  // the affine kernel's parameter type
    Scratch<P> params_buf(4 * static_cast<std::size_t>(xv.C));
    P* params = params_buf.get();
    P* hi = params;
    P* lo = params + xv.C;
    P* scale_t = params + 2 * xv.C;
    P* shift_t = params + 3 * xv.C;
    for (std::int64_t c = 0; c < xv.C; ++c) {
        const auto p = channel_map<P>(mean[c], m2[c], count, weight, bias, c, eps);
        hi[c] = p.hi;
        lo[c] = p.lo;
        scale_t[c] = p.scale;
        shift_t[c] = p.shift;
    }
    if (count_i > 0)
        affine_kernels<T>().affine(x, xv, y, yv, hi, lo, scale_t, shift_t, 0, nthreads);
}

}  // namespace

template <class T>
BatchNormKernels<T> batch_norm_kernels() {
    BatchNormKernels<T> k{};
    k.train = &batch_norm_train<T>;
    add_batch_norm_backward_kernels(k);
    return k;
}

template BatchNormKernels<float> batch_norm_kernels<float>();
template BatchNormKernels<double> batch_norm_kernels<double>();
template BatchNormKernels<f16_t> batch_norm_kernels<f16_t>();
template BatchNormKernels<bf16_t> batch_norm_kernels<bf16_t>();

}  // namespace bnfast::kernels::BNFAST_ISA
