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
#include "bnfast/formulas.hpp"
#include "moments_impl.hpp"

namespace bnfast::kernels::BNFAST_ISA {
namespace {

// Channel slabs above this are shared by the threads (fused_rows_shared):
// about half of a core's L2 on current x86 server cores (1-2 MB).
constexpr std::int64_t kSharedSlabBytes = std::int64_t(1) << 20;

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
    parallel_region(nt, [&] {
#pragma omp for schedule(dynamic, 1) nowait
        for (std::int64_t c = 0; c < v.C; ++c) {
            const T* xc = x + c * v.sC;
            slab_moments(xc, v, mean[c], m2[c]);
            const auto p = channel_map<T>(mean[c], m2[c], count, weight, bias, c, eps);
            T* yc = y + c * yv.sC;
            for (std::int64_t a = 0; a < v.A; ++a)
                affine_run_bcast<true, kStream>(xc + a * v.sA, yc + a * yv.sA, v.B, p.hi, p.lo,
                                                p.scale, p.shift);
        }
        if constexpr (kStream) stream_fence();
    });
}

// Channel slabs larger than a core's L2: the threads share each channel,
// one contiguous range of its groups per thread, so the range a thread
// reduced is still in its own L2 when it normalizes it (with a whole slab
// per thread, the second read came from memory again). Every thread merges
// the groups' moments in index order, as slab_moments does: the same bits.
template <bool kStream, class T>
void fused_rows_shared(const T* x, const View3& v, T* y, const View3& yv, const double* weight,
                       const double* bias, double eps, double* mean, double* m2, int nt) {
    const std::int64_t n = v.A * v.B;
    const double count = static_cast<double>(n);
    const std::int64_t groups = group_count(n);
    Scratch<Moments1, 64> partial_buf(static_cast<std::size_t>(2 * groups));
    Moments1* partial = partial_buf.get();
    parallel_region(nt, [&] {
        const std::int64_t t = thread_index(), nteam = team_size();
        const std::int64_t g0 = part_begin(t, groups, nteam), g1 = part_begin(t + 1, groups, nteam);
        for (std::int64_t c = 0; c < v.C; ++c) {
            // Two slots per group, alternating by channel: a fast thread may
            // write channel c + 1's partials while another still reads c's.
            Moments1* part = partial + (c % 2) * groups;
            const T* xc = x + c * v.sC;
            const double ref = reference_value(xc);
            for (std::int64_t g = g0; g < g1; ++g)
                part[g] = row_range_moments(xc, v, part_begin(g, n, groups),
                                            part_begin(g + 1, n, groups), ref);
#pragma omp barrier
            Moments1 m = part[0];
            for (std::int64_t g = 1; g < groups; ++g) chan_merge(m, part[g]);
            const double mean_c = ref + m.mean;
            if (t == 0) {
                mean[c] = mean_c;
                m2[c] = m.m2;
            }
            const auto p = channel_map<T>(mean_c, m.m2, count, weight, bias, c, eps);
            T* yc = y + c * yv.sC;
            const std::int64_t begin = part_begin(g0, n, groups), end = part_begin(g1, n, groups);
            for_each_row_span(v.B, begin, end, [&](std::int64_t a, std::int64_t b, std::int64_t len) {
                affine_run_bcast<true, kStream>(xc + a * v.sA + b, yc + a * yv.sA + b, len, p.hi,
                                                p.lo, p.scale, p.shift);  // sB == 1
            });
        }
        if constexpr (kStream) stream_fence();
    });
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
        if (nt > 1 && slab_bytes > kSharedSlabBytes &&
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
    Scratch<T> params_buf(4 * static_cast<std::size_t>(xv.C));
    T* params = params_buf.get();
    T* hi = params;
    T* lo = params + xv.C;
    T* scale_t = params + 2 * xv.C;
    T* shift_t = params + 3 * xv.C;
    for (std::int64_t c = 0; c < xv.C; ++c) {
        const auto p = channel_map<T>(mean[c], m2[c], count, weight, bias, c, eps);
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

}  // namespace bnfast::kernels::BNFAST_ISA
