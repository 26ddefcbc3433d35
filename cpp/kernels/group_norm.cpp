// The group-norm family's kernels (group_norm.hpp): the batched forms of the
// moments kernel and of the batch-norm backward reduce/apply for data whose
// batch and channel axes do not collapse (channels last).
#include "group_norm.hpp"

#include <cstdint>

#include "batch_norm.hpp"
#include "bnfast/welford.hpp"
#include "moments_impl.hpp"
#include "simd.hpp"

namespace bnfast::kernels::BNFAST_ISA {
namespace {

// Samples of at least this many elements, fewer than kSamplesPerThread per
// thread, run one after another with the threads inside each sample; all
// others run in parallel over samples, one thread each. Below it a sample
// is one work item of the per-sample kernels anyway (one group of
// kGroupTarget elements per channel tile), so threads inside it would idle.
constexpr std::int64_t kInnerMinElements = kGroupTarget;
constexpr std::int64_t kSamplesPerThread = 4;

// The threads of a batched call: {threads over samples, threads per sample}.
struct SampleThreads {
    int outer, inner;
};

inline SampleThreads sample_threads(std::int64_t n, std::int64_t per_sample, int nthreads) {
    if (nthreads < 1) nthreads = 1;
    if (n * per_sample <= kParallelMinElements || nthreads == 1) return {1, 1};
    if (n == 1 || (per_sample >= kInnerMinElements &&
                   n < kSamplesPerThread * static_cast<std::int64_t>(nthreads)))
        return {1, nthreads};
    return {nthreads, 1};
}

// f(n, inner_threads, slot) for every sample, threads as sample_threads
// says; slot < the returned outer thread count indexes per-thread scratch.
template <class F>
inline void for_each_sample(const SampleThreads& t, std::int64_t n, F&& f) {
    if (t.outer == 1) {
        for (std::int64_t i = 0; i < n; ++i) f(i, t.inner, 0);
        return;
    }
    parallel_blocks(t.outer, n, 1, [&](std::int64_t begin, std::int64_t end, int slot) {
        for (std::int64_t i = begin; i < end; ++i) f(i, 1, slot);
    });
}

template <class F>
inline void for_each_sample(std::int64_t n, std::int64_t per_sample, int nthreads, F&& f) {
    for_each_sample(sample_threads(n, per_sample, nthreads), n,
                    [&](std::int64_t i, int inner, int) { f(i, inner); });
}

inline std::int64_t elements(const View3& v) { return v.A * v.C * v.B; }

// ---------------------------------------------------------------------------
// Statistics

// Merges the moments of `per` channels of `count` values each (mean[j],
// m2[j], in channel order) into one group's mean and M2. Means relative to
// the first channel's (when finite), as moments_impl keeps them relative to
// a data value: merging absolute means of offset data would round each
// delta to ulp(mean). Each channel's exact sum count*mean (constant_sum)
// feeds the double-double sum final_mean corrects the merged mean with.
inline void merge_channels(const double* mean, const double* m2, std::int64_t per,
                           std::int64_t count, double& group_mean, double& group_m2) {
    const double ref = mean[0] - mean[0] == 0.0 ? mean[0] : 0.0;
    Moments1 acc;
    for (std::int64_t j = 0; j < per; ++j) {
        Moments1 m;
        m.n = count;
        m.mean = mean[j] - ref;
        m.m2 = m2[j];
        constant_sum(static_cast<double>(count), mean[j], m.sum_hi, m.sum_lo);
        chan_merge(acc, m);
    }
    group_mean = final_mean(ref + acc.mean, acc);
    group_m2 = acc.m2;
}

template <class T>
void group_norm_moments(const T* x, const BatchView3& xv, std::int64_t groups, double* mean,
                        double* m2, int nthreads) {
    const View3& v = xv.v;
    const std::int64_t n = xv.N, C = v.C;
    if (n == 0 || C == 0 || groups <= 0) return;
    const std::int64_t per = C / groups;
    const std::int64_t count = v.A * v.B;
    const SampleThreads t = sample_threads(n, elements(v), nthreads);
    // The channel moments of the sample a thread is on: 2*C doubles per
    // thread (not per sample: a batch of many small samples would need
    // scratch the size of its data).
    Scratch<double> channel_buf(2 * static_cast<std::size_t>(C) *
                                static_cast<std::size_t>(t.outer));
    for_each_sample(t, n, [&](std::int64_t i, int inner, int slot) {
        double* ch_mean = channel_buf.get() + 2 * C * slot;
        double* ch_m2 = ch_mean + C;
        moments_impl<T>(x + i * xv.sN, v, ch_mean, ch_m2, inner);
        for (std::int64_t g = 0; g < groups; ++g)
            merge_channels(ch_mean + g * per, ch_m2 + g * per, per, count,
                           mean[i * groups + g], m2[i * groups + g]);
    });
}

// ---------------------------------------------------------------------------
// Backward

template <class T>
void group_norm_backward_reduce(const T* x, const BatchView3& xv, const T* dy,
                                const BatchView3& dyv, const double* center, double* sum_d,
                                double* sum_dy, double* sum_dy_d, int nthreads) {
    const std::int64_t C = xv.v.C;
    if (xv.N == 0 || C == 0) return;
    const auto reduce = batch_norm_kernels<T>().backward_reduce;
    for_each_sample(xv.N, elements(xv.v), nthreads, [&](std::int64_t i, int inner) {
        reduce(x + i * xv.sN, xv.v, dy + i * dyv.sN, dyv.v, center + i * C, sum_d + i * C,
               sum_dy + i * C, sum_dy_d + i * C, inner);
    });
}

template <class V>
inline V apply_vec(V x, V dy, V hi, V lo, V s, V p, V q, V r) {
    return dy * p + ((((x - hi) - lo) * s) * q + r) * s;  // as batch_norm_backward_apply
}

// Rows of unit-stride channels (NHWC): each row (n, a, b) holds C values,
// its parameters the C values of sample n. One pass over the whole batch,
// so streaming stores are chosen by the batch's size (per sample, a 3 MB
// sample of a 100 MB batch would be written through the cache).
template <bool kStream, class S>
void apply_channel_rows(const S* x, const BatchView3& xv, const S* dy, const BatchView3& dyv,
                        S* dx, const BatchView3& dxv, const compute_t<S>* hi,
                        const compute_t<S>* lo, const compute_t<S>* s, const compute_t<S>* p,
                        const compute_t<S>* q, const compute_t<S>* r, int nt) {
    using T = compute_t<S>;
    using V = typename NativeVec<S>::type;
    const std::int64_t A = xv.v.A, B = xv.v.B, C = xv.v.C;
    const std::int64_t rows_per_sample = A * B;
    parallel_rows(nt, xv.N * rows_per_sample, C,
                  [&](std::int64_t row, std::int64_t j0, std::int64_t len) {
                      const std::int64_t n = row / rows_per_sample;
                      const std::int64_t rr = row % rows_per_sample;
                      const std::int64_t a = B == 1 ? rr : rr / B, b = B == 1 ? 0 : rr % B;
                      const S* xr = x + n * xv.sN + a * xv.v.sA + b * xv.v.sB + j0;
                      const S* dr = dy + n * dyv.sN + a * dyv.v.sA + b * dyv.v.sB + j0;
                      S* out = dx + n * dxv.sN + a * dxv.v.sA + b * dxv.v.sB + j0;
                      const std::int64_t k = n * C + j0;
                      const T *h = hi + k, *l = lo + k, *ss = s + k, *pp = p + k, *qq = q + k,
                              *rp = r + k;
                      write_run<kStream>(
                          out, len,
                          [&](std::int64_t i) {
                              return apply_vec(load_cv(xr + i), load_cv(dr + i),
                                               load_vec<V>(h + i), load_vec<V>(l + i),
                                               load_vec<V>(ss + i), load_vec<V>(pp + i),
                                               load_vec<V>(qq + i), load_vec<V>(rp + i));
                          },
                          [&](std::int64_t i) {
                              return apply_vec(to_compute(xr[i]), to_compute(dr[i]), h[i], l[i],
                                               ss[i], pp[i], qq[i], rp[i]);
                          });
                  });
}

// Rows this long or longer take apply_channel_rows; shorter ones go to the
// per-sample kernel, whose periodic path runs whole short rows as one run.
constexpr std::int64_t kMinChannelRow = 64;

template <class S>
void group_norm_backward_apply(const S* x, const BatchView3& xv, const S* dy,
                               const BatchView3& dyv, S* dx, const BatchView3& dxv,
                               const compute_t<S>* hi, const compute_t<S>* lo,
                               const compute_t<S>* s, const compute_t<S>* p,
                               const compute_t<S>* q, const compute_t<S>* r, int nthreads) {
    const std::int64_t C = xv.v.C;
    const std::int64_t total = xv.N * elements(xv.v);
    if (total == 0) return;
    if (nthreads < 1) nthreads = 1;
    if (C >= kMinChannelRow && xv.v.sC == 1 && dyv.v.sC == 1 && dxv.v.sC == 1) {
        const int nt = total <= kParallelMinElements ? 1 : nthreads;
        if (total * static_cast<std::int64_t>(sizeof(S)) >= kStreamMinBytes)
            apply_channel_rows<true>(x, xv, dy, dyv, dx, dxv, hi, lo, s, p, q, r, nt);
        else
            apply_channel_rows<false>(x, xv, dy, dyv, dx, dxv, hi, lo, s, p, q, r, nt);
        return;
    }
    const auto apply = batch_norm_kernels<S>().backward_apply;
    for_each_sample(xv.N, elements(xv.v), nthreads, [&](std::int64_t i, int inner) {
        const std::int64_t k = i * C;
        apply(x + i * xv.sN, xv.v, dy + i * dyv.sN, dyv.v, dx + i * dxv.sN, dxv.v, hi + k,
              lo + k, s + k, p + k, q + k, r + k, inner);
    });
}

}  // namespace

template <class T>
GroupNormKernels<T> group_norm_kernels() {
    return {&group_norm_moments<T>, &group_norm_backward_reduce<T>,
            &group_norm_backward_apply<T>};
}

template GroupNormKernels<float> group_norm_kernels<float>();
template GroupNormKernels<double> group_norm_kernels<double>();
template GroupNormKernels<f16_t> group_norm_kernels<f16_t>();
template GroupNormKernels<bf16_t> group_norm_kernels<bf16_t>();

}  // namespace bnfast::kernels::BNFAST_ISA
