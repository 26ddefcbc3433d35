// The group-norm family's kernels (group_norm.hpp): the forward and the
// training backward of a batch of samples in one call, every layout.
#include "group_norm.hpp"

#include <cstdint>

#include <cmath>
#include <limits>

#include "affine_runs.hpp"
#include "backward_sums.hpp"
#include "batch_norm.hpp"
#include "bnfast/formulas.hpp"
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

// The fused training backward (train_rows, train_channels_last) takes one
// (sample, group) or one channels-last sample per work item when there are
// at least this many per thread, and, channels first, when a block's x and
// dy fit in L2 with room to spare for the apply to read them back.
constexpr std::int64_t kFusedBlocksPerThread = 2;
constexpr std::int64_t kFusedBlockBytes = std::int64_t(1) << 20;
// Channels per tile of the channels-last reduce (24 KB of accumulators).
constexpr std::int64_t kTrainTileChannels = 1024;

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

// ---------------------------------------------------------------------------
// Training backward in one call (group_norm_backward_train_fn)

// Consecutive blocks per work item of the fused loops (runs of consecutive
// memory per thread): a few, so the threads still share the work out
// evenly. (Fetching the next block into L2 in software while one is
// written made group norm 10-40% slower here: the hardware prefetcher
// follows these runs.)
inline std::int64_t fused_grain(std::int64_t blocks, int nt) {
    return max_i64(1, min_i64(8, blocks / (8 * static_cast<std::int64_t>(nt))));
}

// The apply's six parameters of one (sample, channel), of the compute type.
template <class P>
struct ApplyParams {
    P hi, lo, s, p, q, r;
};

// dx of one channel (A rows of B values).
template <bool kStream, class S, class P = compute_t<S>>
void apply_channel(const S* xc, const View3& xv, const S* dyc, const View3& dyv, S* dxc,
                   const View3& dxv, std::int64_t a0, std::int64_t a1, const ApplyParams<P>& k) {
    using V = typename NativeVec<S>::type;
    const V hv = splat<V>(k.hi), lv = splat<V>(k.lo), sv = splat<V>(k.s);
    const V pv = splat<V>(k.p), qv = splat<V>(k.q), rv = splat<V>(k.r);
    const std::int64_t B = xv.B;
    const bool contiguous = xv.sB == 1 && dyv.sB == 1 && dxv.sB == 1;
    for (std::int64_t a = a0; a < a1; ++a) {
        const S* xr = xc + a * xv.sA;
        const S* dr = dyc + a * dyv.sA;
        S* out = dxc + a * dxv.sA;
        if (contiguous) {
            write_run<kStream>(
                out, B,
                [&](std::int64_t i) {
                    return backward_dx(load_cv(xr + i), load_cv(dr + i), hv, lv, sv, pv, qv, rv);
                },
                [&](std::int64_t i) {
                    return backward_dx(to_compute(xr[i]), to_compute(dr[i]), k.hi, k.lo, k.s, k.p,
                                       k.q, k.r);
                });
        } else {
            for (std::int64_t i = 0; i < B; ++i)
                out[i * dxv.sB] =
                    to_storage<S>(backward_dx(to_compute(xr[i * xv.sB]),
                                              to_compute(dr[i * dyv.sB]), k.hi, k.lo, k.s, k.p,
                                              k.q, k.r));
        }
    }
}

// The shape of one call, shared by its loops.
struct TrainShape {
    std::int64_t N, C, G, per, rows;  // rows: A*B values per channel and sample
    double count;                      // per * rows: values per (sample, group)
};

// One (sample, group)'s parameters from its channels' sums (sum_d, sum_dy,
// sum_dy_d at index n*C + c): writes sum_dy_xc and the apply parameters of
// its channels (prm[n*C + c]).
template <class P>
void block_params(const TrainShape& sh, std::int64_t n, std::int64_t g, const double* sum_d,
                  const double* sum_dy, const double* sum_dy_d, const double* mean,
                  const double* rstd, const double* weight, double* sum_dy_xc,
                  ApplyParams<P>* prm) {
    const std::int64_t k0 = n * sh.C + g * sh.per;
    const double rs = rstd[n * sh.G + g];
    const double* w = weight != nullptr ? weight + g * sh.per : nullptr;
    const auto gp = formulas::group_norm_backward_params(
        sum_d + k0, sum_dy + k0, sum_dy_d + k0, w, static_cast<long long>(sh.per), sh.count,
        mean[n * sh.G + g], rs, sum_dy_xc + k0);
    P hi, lo;
    formulas::split_center(gp.center, hi, lo);
    for (std::int64_t j = 0; j < sh.per; ++j) {
        ApplyParams<P>& k = prm[k0 + j];
        k.hi = hi;
        k.lo = lo;
        k.s = static_cast<P>(gp.s);
        k.p = static_cast<P>(w != nullptr ? rs * w[j] : rs);
        k.q = static_cast<P>(gp.q);
        k.r = static_cast<P>(gp.r);
    }
}

// Channels-first data (and any layout without unit-stride channels): each
// channel's A x B values, rows of B.
template <bool kStream, class S>
void train_rows(const S* x, const BatchView3& xv, const S* dy, const BatchView3& dyv, S* dx,
                const BatchView3& dxv, const TrainShape& sh, const double* mean,
                const double* rstd, const double* weight, double* sum_dy, double* sum_dy_xc,
                int nt) {
    using P = compute_t<S>;
    const std::int64_t NC = sh.N * sh.C;
    Scratch<double> sums_buf(2 * static_cast<std::size_t>(NC));
    double* sum_d = sums_buf.get();
    double* sum_dy_d = sum_d + NC;
    Scratch<ApplyParams<P>, 16> prm_buf(static_cast<std::size_t>(NC));
    ApplyParams<P>* prm = prm_buf.get();
    const auto x_ch = [&](std::int64_t k) { return x + (k / sh.C) * xv.sN + (k % sh.C) * xv.v.sC; };
    const auto dy_ch = [&](std::int64_t k) {
        return dy + (k / sh.C) * dyv.sN + (k % sh.C) * dyv.v.sC;
    };
    const auto dx_ch = [&](std::int64_t k) {
        return dx + (k / sh.C) * dxv.sN + (k % sh.C) * dxv.v.sC;
    };
    const auto reduce = [&](std::int64_t k) {
        const Sums3 s = row_range_sums(x_ch(k), xv.v, dy_ch(k), dyv.v,
                                       mean[(k / sh.C) * sh.G + (k % sh.C) / sh.per], 0,
                                       sh.rows);
        sum_d[k] = s.d;
        sum_dy[k] = s.dy;
        sum_dy_d[k] = s.dy_d;
    };
    const std::int64_t blocks = sh.N * sh.G;
    const std::int64_t block_bytes =
        2 * sh.per * sh.rows * static_cast<std::int64_t>(sizeof(S));
    if (blocks >= kFusedBlocksPerThread * static_cast<std::int64_t>(nt) &&
        block_bytes <= kFusedBlockBytes) {
        // One (sample, group) per work item: reduced from memory, then
        // applied from cache.
        parallel_blocks(nt, blocks, fused_grain(blocks, nt),
                        [&](std::int64_t begin, std::int64_t end, int) {
            for (std::int64_t blk = begin; blk < end; ++blk) {
                const std::int64_t n = blk / sh.G, g = blk % sh.G;
                const std::int64_t k0 = n * sh.C + g * sh.per;
                for (std::int64_t j = 0; j < sh.per; ++j) reduce(k0 + j);
                block_params(sh, n, g, sum_d, sum_dy, sum_dy_d, mean, rstd, weight, sum_dy_xc,
                             prm);
                for (std::int64_t j = 0; j < sh.per; ++j)
                    apply_channel<kStream>(x_ch(k0 + j), xv.v, dy_ch(k0 + j), dyv.v,
                                           dx_ch(k0 + j), dxv.v, 0, xv.v.A, prm[k0 + j]);
            }
        });
        return;
    }
    // Few or large blocks: the sums of every channel in parallel, the
    // parameters, then the apply in parallel (the same bits).
    parallel_for(nt, NC, 1, reduce);
    for (std::int64_t blk = 0; blk < blocks; ++blk)
        block_params(sh, blk / sh.G, blk % sh.G, sum_d, sum_dy, sum_dy_d, mean, rstd, weight,
                     sum_dy_xc, prm);
    const std::int64_t A = xv.v.A;
    // Rows of B values: (sample, channel, a); spans of one row when B is long.
    parallel_rows(nt, NC * A, xv.v.B, [&](std::int64_t row, std::int64_t j0, std::int64_t len) {
        const std::int64_t k = row / A, a = row % A;
        View3 xs = xv.v, dys = dyv.v, dxs = dxv.v;
        xs.B = dys.B = dxs.B = len;
        apply_channel<kStream>(x_ch(k) + j0 * xv.v.sB, xs, dy_ch(k) + j0 * dyv.v.sB, dys,
                               dx_ch(k) + j0 * dxv.v.sB, dxs, a, a + 1, prm[k]);
    });
}

// Channels-last data (unit-stride channels): rows of C values; per sample,
// the sums of each channel in order over the rows, tiles of channels.
template <class S>
void reduce_sample_tile(const S* xs, const View3& xv, const S* dys, const View3& dyv,
                        const double* center, std::int64_t c0, std::int64_t tw, double* sum_d,
                        double* sum_dy, double* sum_dy_d) {
    double acc[3 * kTrainTileChannels];
    double* __restrict pd = acc;
    double* __restrict pg = acc + kTrainTileChannels;
    double* __restrict pgd = acc + 2 * kTrainTileChannels;
    for (std::int64_t c = 0; c < tw; ++c) pd[c] = pg[c] = pgd[c] = 0.0;
    const double* __restrict ctr = center + c0;
    const std::int64_t rows = xv.A * xv.B;
    const auto row_of = [&](const S* base, const View3& v, std::int64_t r) {
        const std::int64_t a = v.B == 1 ? r : r / v.B, b = v.B == 1 ? 0 : r % v.B;
        return base + a * v.sA + b * v.sB + c0;
    };
    std::int64_t r = 0;
    for (; r + 1 < rows; r += 2)
        add_row_pair(row_of(xs, xv, r), row_of(xs, xv, r + 1), row_of(dys, dyv, r),
                     row_of(dys, dyv, r + 1), ctr, tw, pd, pg, pgd);
    if (r < rows) add_row(row_of(xs, xv, r), 1, row_of(dys, dyv, r), 1, ctr, tw, pd, pg, pgd);
    for (std::int64_t c = 0; c < tw; ++c) {
        sum_d[c0 + c] = pd[c];
        sum_dy[c0 + c] = pg[c];
        sum_dy_d[c0 + c] = pgd[c];
    }
}

// dx of rows [r0, r1) of one channels-last sample, channels [c0, c0 + len);
// prm: the sample's parameters laid out as six arrays of C.
template <bool kStream, class S, class P = compute_t<S>>
void apply_sample_rows(const S* xs, const View3& xv, const S* dys, const View3& dyv, S* dxs,
                       const View3& dxv, std::int64_t r0, std::int64_t r1, std::int64_t c0,
                       std::int64_t len, const P* prm) {
    using V = typename NativeVec<S>::type;
    const std::int64_t C = xv.C;
    const P *h = prm + c0, *l = prm + C + c0, *ss = prm + 2 * C + c0, *pp = prm + 3 * C + c0,
            *qq = prm + 4 * C + c0, *rp = prm + 5 * C + c0;
    for (std::int64_t r = r0; r < r1; ++r) {
        const std::int64_t a = xv.B == 1 ? r : r / xv.B, b = xv.B == 1 ? 0 : r % xv.B;
        const S* xr = xs + a * xv.sA + b * xv.sB + c0;
        const S* dr = dys + a * dyv.sA + b * dyv.sB + c0;
        S* out = dxs + a * dxv.sA + b * dxv.sB + c0;
        write_run<kStream>(
            out, len,
            [&](std::int64_t i) {
                return backward_dx(load_cv(xr + i), load_cv(dr + i), load_vec<V>(h + i),
                                   load_vec<V>(l + i), load_vec<V>(ss + i), load_vec<V>(pp + i),
                                   load_vec<V>(qq + i), load_vec<V>(rp + i));
            },
            [&](std::int64_t i) {
                return backward_dx(to_compute(xr[i]), to_compute(dr[i]), h[i], l[i], ss[i], pp[i],
                                   qq[i], rp[i]);
            });
    }
}

// A sample's per-channel parameters as six arrays of C (hi, lo, s, p, q, r).
template <class P>
void transpose_params(const ApplyParams<P>* prm, std::int64_t C, P* out) {
    for (std::int64_t c = 0; c < C; ++c) {
        out[c] = prm[c].hi;
        out[C + c] = prm[c].lo;
        out[2 * C + c] = prm[c].s;
        out[3 * C + c] = prm[c].p;
        out[4 * C + c] = prm[c].q;
        out[5 * C + c] = prm[c].r;
    }
}

template <bool kStream, class S>
void train_channels_last(const S* x, const BatchView3& xv, const S* dy, const BatchView3& dyv,
                         S* dx, const BatchView3& dxv, const TrainShape& sh, const double* mean,
                         const double* rstd, const double* weight, double* sum_dy,
                         double* sum_dy_xc, int nt) {
    using P = compute_t<S>;
    const std::int64_t C = sh.C, NC = sh.N * C;
    Scratch<double> sums_buf(3 * static_cast<std::size_t>(NC));
    double* sum_d = sums_buf.get();
    double* sum_dy_d = sum_d + NC;
    double* center = sum_d + 2 * NC;  // the stored group mean of each (sample, channel)
    for (std::int64_t k = 0; k < NC; ++k) center[k] = mean[(k / C) * sh.G + (k % C) / sh.per];
    Scratch<ApplyParams<P>, 16> prm_buf(static_cast<std::size_t>(NC));
    ApplyParams<P>* prm = prm_buf.get();
    Scratch<P> flat_buf(6 * static_cast<std::size_t>(NC));
    P* flat = flat_buf.get();
    const std::int64_t tile = min_i64(C, kTrainTileChannels);
    const std::int64_t tiles = (C + tile - 1) / tile;
    const auto reduce_tile = [&](std::int64_t n, std::int64_t t) {
        const std::int64_t c0 = t * tile, o = n * C;
        reduce_sample_tile(x + n * xv.sN, xv.v, dy + n * dyv.sN, dyv.v, center + o, c0,
                           min_i64(tile, C - c0), sum_d + o, sum_dy + o, sum_dy_d + o);
    };
    const auto params = [&](std::int64_t n) {
        for (std::int64_t g = 0; g < sh.G; ++g)
            block_params(sh, n, g, sum_d, sum_dy, sum_dy_d, mean, rstd, weight, sum_dy_xc, prm);
        transpose_params(prm + n * C, C, flat + 6 * n * C);
    };
    if (sh.N >= kFusedBlocksPerThread * static_cast<std::int64_t>(nt)) {
        // One sample per work item: reduced from memory, applied from cache.
        // Its rows applied last to first in blocks: the rows the reduce
        // read last are still in cache.
        const std::int64_t step = max_i64(1, kBlockElements / C);
        parallel_for(nt, sh.N, 1, [&](std::int64_t n) {
            for (std::int64_t t = 0; t < tiles; ++t) reduce_tile(n, t);
            params(n);
            for (std::int64_t r1 = sh.rows; r1 > 0; r1 -= step)
                apply_sample_rows<kStream>(x + n * xv.sN, xv.v, dy + n * dyv.sN, dyv.v,
                                           dx + n * dxv.sN, dxv.v, max_i64(0, r1 - step), r1, 0,
                                           C, flat + 6 * n * C);
        });
        return;
    }
    // Few samples: channel tiles of every sample in parallel (each channel
    // still summed in row order: the same bits), then the apply in parallel.
    parallel_for(nt, sh.N * tiles, 1, [&](std::int64_t it) { reduce_tile(it / tiles, it % tiles); });
    for (std::int64_t n = 0; n < sh.N; ++n) params(n);
    parallel_rows(nt, sh.N * sh.rows, C, [&](std::int64_t row, std::int64_t j0, std::int64_t len) {
        const std::int64_t n = row / sh.rows, r = row % sh.rows;
        apply_sample_rows<kStream>(x + n * xv.sN, xv.v, dy + n * dyv.sN, dyv.v, dx + n * dxv.sN,
                                   dxv.v, r, r + 1, j0, len, flat + 6 * n * C);
    });
}

template <class S>
void group_norm_backward_train(const S* x, const BatchView3& xv, const S* dy,
                               const BatchView3& dyv, S* dx, const BatchView3& dxv,
                               std::int64_t groups, const double* mean, const double* rstd,
                               const double* weight, double* sum_dy, double* sum_dy_xc,
                               int nthreads) {
    const std::int64_t N = xv.N, C = xv.v.C;
    if (N == 0 || C == 0 || groups <= 0) return;
    TrainShape sh;
    sh.N = N;
    sh.C = C;
    sh.G = groups;
    sh.per = C / groups;
    sh.rows = xv.v.A * xv.v.B;
    sh.count = static_cast<double>(sh.per * sh.rows);
    const std::int64_t total = N * C * sh.rows;
    const int nt = (total <= kParallelMinElements || nthreads < 1) ? 1 : nthreads;
    const bool stream = total * static_cast<std::int64_t>(sizeof(S)) >= kStreamMinBytes;
    const bool rows_first = xv.v.sB == 1 && dyv.v.sB == 1 && dxv.v.sB == 1 &&
                            xv.v.B >= kMinRowLength;
    const bool channels_last = xv.v.sC == 1 && dyv.v.sC == 1 && dxv.v.sC == 1 && C > 1;
    if (channels_last && !rows_first && sh.rows > 0) {
        if (stream)
            train_channels_last<true>(x, xv, dy, dyv, dx, dxv, sh, mean, rstd, weight, sum_dy,
                                      sum_dy_xc, nt);
        else
            train_channels_last<false>(x, xv, dy, dyv, dx, dxv, sh, mean, rstd, weight, sum_dy,
                                       sum_dy_xc, nt);
    } else if (stream) {
        train_rows<true>(x, xv, dy, dyv, dx, dxv, sh, mean, rstd, weight, sum_dy, sum_dy_xc, nt);
    } else {
        train_rows<false>(x, xv, dy, dyv, dx, dxv, sh, mean, rstd, weight, sum_dy, sum_dy_xc, nt);
    }
}

// ---------------------------------------------------------------------------
// Forward in one call (group_norm_forward_fn)

// The affine map's four parameters of one (sample, channel), compute type.
template <class P>
struct AffineParams {
    P hi, lo, scale, shift;
};

// Whether a finite scale keeps its digits in P: 0 or a normal number (as
// _validate.normal_in); inf and NaN pass (they propagate as they are).
template <class P>
inline bool normal_scale(double s) {
    if (!std::isfinite(s)) return true;
    const double a = std::fabs(s);
    return a == 0.0 || (a <= static_cast<double>(std::numeric_limits<P>::max()) &&
                        a >= static_cast<double>(std::numeric_limits<P>::min()));
}

struct ForwardShape {
    std::int64_t N, C, G, per, rows;
    double count, eps;
    bool zero_var_rstd;
    const double *weight, *bias;
};

// One (sample, group)'s affine parameters from its moments (prm[n*C + c]);
// returns whether every scale is normal in P (else nothing is to be written).
template <class P>
bool forward_params(const ForwardShape& sh, std::int64_t n, std::int64_t g, double mean,
                    double m2, AffineParams<P>* prm) {
    double rstd = formulas::invstd(m2, sh.count, sh.eps);
    if (sh.zero_var_rstd && sh.eps == 0.0 && m2 == 0.0) rstd = 0.0;
    P hi, lo;
    formulas::split_center(mean, hi, lo);
    bool ok = true;
    for (std::int64_t j = 0; j < sh.per; ++j) {
        const std::int64_t c = g * sh.per + j;
        const double scale = sh.weight != nullptr ? rstd * sh.weight[c] : rstd;
        ok = ok && normal_scale<P>(scale);
        AffineParams<P>& k = prm[n * sh.C + c];
        k.hi = hi;
        k.lo = lo;
        k.scale = static_cast<P>(scale);
        k.shift = static_cast<P>(sh.bias != nullptr ? sh.bias[c] : 0.0);
    }
    return ok;
}

// y of one channel (rows a0..a1 of B values) of one sample.
template <bool kStream, class S, class P = compute_t<S>>
void affine_channel(const S* xc, const View3& xv, S* yc, const View3& yv, std::int64_t a0,
                    std::int64_t a1, const AffineParams<P>& k) {
    const bool contiguous = xv.sB == 1 && yv.sB == 1;
    for (std::int64_t a = a0; a < a1; ++a) {
        const S* xr = xc + a * xv.sA;
        S* out = yc + a * yv.sA;
        if (contiguous) {
            affine_run_bcast<true, kStream>(xr, out, xv.B, k.hi, k.lo, k.scale, k.shift);
        } else {
            for (std::int64_t i = 0; i < xv.B; ++i)
                out[i * yv.sB] = to_storage<S>(
                    affine_one<true>(to_compute(xr[i * xv.sB]), k.hi, k.lo, k.scale, k.shift));
        }
    }
}

// Channels first, each group's channels one contiguous run of per*B values:
// the moments of each run as the moments kernel over the (N*G, per*B) rows.
template <bool kStream, class S>
void forward_group_rows(const S* x, const BatchView3& xv, S* y, const BatchView3& yv,
                        const ForwardShape& sh, double* mean, double* m2, unsigned char* done,
                        int nt) {
    using P = compute_t<S>;
    const std::int64_t NC = sh.N * sh.C, blocks = sh.N * sh.G;
    Scratch<AffineParams<P>, 16> prm_buf(static_cast<std::size_t>(NC));
    AffineParams<P>* prm = prm_buf.get();
    const std::int64_t len = sh.per * xv.v.B;
    const View3 run{1, 1, len, 0, 0, 1};  // one group's values
    const auto x_ch = [&](std::int64_t n, std::int64_t c) { return x + n * xv.sN + c * xv.v.sC; };
    const auto y_ch = [&](std::int64_t n, std::int64_t c) { return y + n * yv.sN + c * yv.v.sC; };
    const std::int64_t block_bytes = len * static_cast<std::int64_t>(sizeof(S));
    if (blocks >= kFusedBlocksPerThread * static_cast<std::int64_t>(nt) &&
        block_bytes <= kFusedBlockBytes) {
        parallel_blocks(nt, blocks, fused_grain(blocks, nt),
                        [&](std::int64_t begin, std::int64_t end, int) {
            for (std::int64_t blk = begin; blk < end; ++blk) {
                const std::int64_t n = blk / sh.G, g = blk % sh.G;
                // (next: its first chunk fetched during the last pass 2, as
                // the moments kernel does for its runs of rows)
                const S* next = blk + 1 < end
                                    ? x_ch((blk + 1) / sh.G, ((blk + 1) % sh.G) * sh.per)
                                    : nullptr;
                slab_moments(x_ch(n, g * sh.per), run, mean[blk], m2[blk], next);
                done[blk] = forward_params(sh, n, g, mean[blk], m2[blk], prm) ? 1 : 0;
                if (done[blk] == 0) continue;
                for (std::int64_t c = g * sh.per; c < (g + 1) * sh.per; ++c)
                    affine_channel<kStream>(x_ch(n, c), xv.v, y_ch(n, c), yv.v, 0, 1,
                                            prm[n * sh.C + c]);
            }
        });
        return;
    }
    // Few or large groups: the moments with the threads inside each sample
    // (the same bits as slab_moments), then the map in parallel.
    for (std::int64_t n = 0; n < sh.N; ++n)
        moments_impl<S>(x_ch(n, 0), View3{1, sh.G, len, 0, sh.per * xv.v.sC, 1}, mean + n * sh.G,
                        m2 + n * sh.G, nt);
    for (std::int64_t blk = 0; blk < blocks; ++blk)
        done[blk] = forward_params(sh, blk / sh.G, blk % sh.G, mean[blk], m2[blk], prm) ? 1 : 0;
    parallel_rows(nt, NC, xv.v.B, [&](std::int64_t k, std::int64_t j0, std::int64_t n_el) {
        const std::int64_t n = k / sh.C, c = k % sh.C;
        if (done[n * sh.G + c / sh.per] == 0) return;
        affine_run_bcast<true, kStream>(x_ch(n, c) + j0, y_ch(n, c) + j0 * yv.v.sB, n_el,
                                        prm[k].hi, prm[k].lo, prm[k].scale, prm[k].shift);
    });
}

// Rows r0..r1 of one sample with unit-stride channels, the sample's
// parameters as four arrays of C (hi, lo, scale, shift); rows of groups not
// done are skipped channel by channel (rare: a scale beyond P's range).
template <bool kStream, class S, class P = compute_t<S>>
void affine_sample_rows(const S* xs, const View3& xv, S* ys, const View3& yv, std::int64_t r0,
                        std::int64_t r1, std::int64_t c0, std::int64_t len, const P* flat) {
    const std::int64_t C = xv.C;
    for (std::int64_t r = r0; r < r1; ++r) {
        const std::int64_t a = xv.B == 1 ? r : r / xv.B, b = xv.B == 1 ? 0 : r % xv.B;
        affine_run_vec<true, kStream>(xs + a * xv.sA + b * xv.sB + c0,
                                      ys + a * yv.sA + b * yv.sB + c0, len, flat + c0,
                                      flat + C + c0, flat + 2 * C + c0, flat + 3 * C + c0);
    }
}

// Any other layout (channels last above all): per sample the moments of
// each channel (moments_impl) merged per group, as group_norm_moments; then
// the map: rows of unit-stride channels, or channel by channel.
template <bool kStream, class S>
void forward_samples(const S* x, const BatchView3& xv, S* y, const BatchView3& yv,
                     const ForwardShape& sh, double* mean, double* m2, unsigned char* done,
                     int nt) {
    using P = compute_t<S>;
    const std::int64_t C = sh.C, NC = sh.N * C;
    const bool unit = xv.v.sC == 1 && yv.v.sC == 1 && C > 1;
    Scratch<AffineParams<P>, 16> prm_buf(static_cast<std::size_t>(NC));
    AffineParams<P>* prm = prm_buf.get();
    Scratch<P> flat_buf(unit ? 4 * static_cast<std::size_t>(NC) : 0);
    P* flat = flat_buf.get();
    const bool fused = sh.N >= kFusedBlocksPerThread * static_cast<std::int64_t>(nt);
    const int slots = fused ? nt : 1;
    Scratch<double> ch_buf(2 * static_cast<std::size_t>(C) * static_cast<std::size_t>(slots));
    // Moments and parameters of sample n (threads inside: `inner`); returns
    // whether every group of it is done.
    const auto stats = [&](std::int64_t n, int inner, int slot) {
        double* ch_mean = ch_buf.get() + 2 * C * slot;
        double* ch_m2 = ch_mean + C;
        moments_impl<S>(x + n * xv.sN, xv.v, ch_mean, ch_m2, inner);
        bool all = true;
        for (std::int64_t g = 0; g < sh.G; ++g) {
            const std::int64_t blk = n * sh.G + g;
            merge_channels(ch_mean + g * sh.per, ch_m2 + g * sh.per, sh.per, sh.rows, mean[blk],
                           m2[blk]);
            done[blk] = forward_params(sh, n, g, mean[blk], m2[blk], prm) ? 1 : 0;
            all = all && done[blk] != 0;
        }
        if (unit) {
            P* f = flat + 4 * n * C;
            for (std::int64_t c = 0; c < C; ++c) {
                const AffineParams<P>& k = prm[n * C + c];
                f[c] = k.hi;
                f[C + c] = k.lo;
                f[2 * C + c] = k.scale;
                f[3 * C + c] = k.shift;
            }
        }
        return all;
    };
    // The map of rows [r0, r1) of sample n, every channel of a done group.
    const auto map_rows = [&](std::int64_t n, std::int64_t r0, std::int64_t r1, bool all) {
        const S* xs = x + n * xv.sN;
        S* ys = y + n * yv.sN;
        if (unit && all) {
            affine_sample_rows<kStream>(xs, xv.v, ys, yv.v, r0, r1, 0, C, flat + 4 * n * C);
            return;
        }
        for (std::int64_t c = 0; c < C; ++c) {
            if (done[n * sh.G + c / sh.per] == 0) continue;
            // rows of the channel: (a, b) over A x B; r counts them a-major
            for (std::int64_t r = r0; r < r1; ++r) {
                const std::int64_t a = r / xv.v.B, b = r % xv.v.B;
                const AffineParams<P>& k = prm[n * C + c];
                ys[a * yv.v.sA + c * yv.v.sC + b * yv.v.sB] = to_storage<S>(affine_one<true>(
                    to_compute(xs[a * xv.v.sA + c * xv.v.sC + b * xv.v.sB]), k.hi, k.lo,
                    k.scale, k.shift));
            }
        }
    };
    if (fused) {
        // One sample per work item; its rows mapped last to first in
        // blocks, so the part the moments read last is still in cache.
        parallel_blocks(nt, sh.N, 1, [&](std::int64_t begin, std::int64_t end, int slot) {
            for (std::int64_t n = begin; n < end; ++n) {
                const bool all = stats(n, 1, slot);
                const std::int64_t step = max_i64(1, kBlockElements / C);
                for (std::int64_t r1 = sh.rows; r1 > 0; r1 -= step)
                    map_rows(n, max_i64(0, r1 - step), r1, all);
            }
        });
        return;
    }
    Scratch<unsigned char> all_buf(static_cast<std::size_t>(sh.N));
    for (std::int64_t n = 0; n < sh.N; ++n) all_buf.get()[n] = stats(n, nt, 0) ? 1 : 0;
    const std::int64_t step = max_i64(1, kBlockElements / C);
    const std::int64_t chunks = (sh.rows + step - 1) / step;
    parallel_for(nt, sh.N * chunks, 1, [&](std::int64_t it) {
        const std::int64_t n = it / chunks, r0 = (it % chunks) * step;
        map_rows(n, r0, min_i64(sh.rows, r0 + step), all_buf.get()[n] != 0);
    });
}

template <class S>
void group_norm_forward(const S* x, const BatchView3& xv, S* y, const BatchView3& yv,
                        std::int64_t groups, const double* weight, const double* bias, double eps,
                        bool zero_var_rstd, double* mean, double* m2, unsigned char* done,
                        int nthreads) {
    const std::int64_t N = xv.N, C = xv.v.C;
    if (N == 0 || C == 0 || groups <= 0) return;
    ForwardShape sh;
    sh.N = N;
    sh.C = C;
    sh.G = groups;
    sh.per = C / groups;
    sh.rows = xv.v.A * xv.v.B;
    sh.count = static_cast<double>(sh.per * sh.rows);
    sh.eps = eps;
    sh.zero_var_rstd = zero_var_rstd;
    sh.weight = weight;
    sh.bias = bias;
    if (sh.rows == 0) {  // no values: undefined statistics, nothing to write
        for (std::int64_t k = 0; k < N * groups; ++k) {
            mean[k] = m2[k] = std::numeric_limits<double>::quiet_NaN();
            done[k] = 1;
        }
        return;
    }
    const std::int64_t total = N * C * sh.rows;
    const int nt = (total <= kParallelMinElements || nthreads < 1) ? 1 : nthreads;
    const bool stream = total * static_cast<std::int64_t>(sizeof(S)) >= kStreamMinBytes;
    // A group's channels one contiguous run, long enough for the row path.
    const bool group_rows = xv.v.A == 1 && xv.v.sB == 1 && xv.v.sC == xv.v.B &&
                            yv.v.sB == 1 && sh.per * xv.v.B >= kMinRowLength;
    if (group_rows) {
        if (stream)
            forward_group_rows<true>(x, xv, y, yv, sh, mean, m2, done, nt);
        else
            forward_group_rows<false>(x, xv, y, yv, sh, mean, m2, done, nt);
    } else if (stream) {
        forward_samples<true>(x, xv, y, yv, sh, mean, m2, done, nt);
    } else {
        forward_samples<false>(x, xv, y, yv, sh, mean, m2, done, nt);
    }
}

}  // namespace

template <class T>
GroupNormKernels<T> group_norm_kernels() {
    return {&group_norm_backward_train<T>, &group_norm_forward<T>};
}

template GroupNormKernels<float> group_norm_kernels<float>();
template GroupNormKernels<double> group_norm_kernels<double>();
template GroupNormKernels<f16_t> group_norm_kernels<f16_t>();
template GroupNormKernels<bf16_t> group_norm_kernels<bf16_t>();

}  // namespace bnfast::kernels::BNFAST_ISA
