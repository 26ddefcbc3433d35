// The batch-norm family's backward kernels.
//
// backward_reduce: per channel, with d = x - center[c],
//   sum_d[c] = sum(d), sum_dy[c] = sum(dy), sum_dy_d[c] = sum(dy * d)
// over A x B, accumulated in double. sum_d lets the caller move the centre
// from the stored (rounded) batch mean to the exact one. Deterministic: the
// same shape-only partition into groups as the moments kernel, groups
// added in index order.
//
// backward_apply: dx = dy * p[c] + ((((x - hi[c]) - lo[c]) * s[c]) * q[c] + r[c]) * s[c],
// the training gradient (dy - mean(dy) - xhat * mean(dy * xhat)) * invstd * w
// with everything per channel folded into s, p, q, r by the caller (s = invstd,
// p = invstd * w, q = -w * mean(dy * xhat), r = -w * mean(dy)). xhat is formed
// first and s applied twice, never s * s: for float32 data near 1e21 and
// beyond, invstd**2 leaves float32's range (issue 13).
//
// backward_train: the two in one call, p, q, r from
// formulas::batch_norm_backward_params.
#include <cstdint>

#include "affine_runs.hpp"
#include "backward_sums.hpp"
#include "batch_norm.hpp"
#include "bnfast/formulas.hpp"
#include "moments_impl.hpp"
#include "simd.hpp"

namespace bnfast::kernels::BNFAST_ISA {
namespace {

template <class T>
void reduce_rows(const T* x, const View3& xv, const T* dy, const View3& dyv,
                 const double* center, double* sum_d, double* sum_dy, double* sum_dy_d,
                 int nthreads) {
    const std::int64_t n = xv.A * xv.B;
    const std::int64_t groups = group_count(n);
    const int nt = (n * xv.C <= kParallelMinElements) ? 1 : nthreads;
    Scratch<Sums3, 64> partial_buf(static_cast<std::size_t>(xv.C * groups));
    Sums3* partial = partial_buf.get();
    parallel_for(nt, xv.C * groups, 1, [&](std::int64_t item) {
        const std::int64_t c = item / groups, g = item % groups;
        partial[item] = row_range_sums(x + c * xv.sC, xv, dy + c * dyv.sC, dyv, center[c],
                                       part_begin(g, n, groups), part_begin(g + 1, n, groups));
    });
    for (std::int64_t c = 0; c < xv.C; ++c) {
        Sums3 s = partial[c * groups];
        for (std::int64_t g = 1; g < groups; ++g) s.add(partial[c * groups + g]);
        sum_d[c] = s.d;
        sum_dy[c] = s.dy;
        sum_dy_d[c] = s.dy_d;
    }
}

// Channel path: rows r = (a, b) of C channels; per-channel accumulators.
//
// Tiles of up to 1024 channels (24 KB of accumulators: L1-resident): a
// (N, 1024) float32 row is then one 4 KB page read start to end, where
// 512-channel tiles read half pages with gaps that the hardware prefetcher
// followed badly (the reduce of 65536x1024 took 1.4x the time of
// 1048576x64, the same bytes).
constexpr std::int64_t kReduceTileChannels = 1024;
// Short rows (N, 64) are prefetched kPrefetchBytes ahead in software: the
// loop is busy enough that the hardware prefetcher alone left memory idle
// (reduce of 1048576x64 float32: 23 -> 18 ms at 2 threads). Long rows are
// left to the hardware, which keeps up with them (prefetching whole 4 KB
// rows in software made 65536x1024 slower).
constexpr std::int64_t kPrefetchBytes = 8192;
constexpr std::int64_t kPrefetchMaxRowBytes = 1024;
// The fused training backward's NCHW rows (train_fused_rows) up to this
// size are prefetched a row ahead in software.
constexpr std::int64_t kRowPrefetchMaxBytes = 8192;

template <class T>
void reduce_channels(const T* x, const View3& xv, const T* dy, const View3& dyv,
                     const double* center, double* sum_d, double* sum_dy, double* sum_dy_d,
                     int nthreads) {
    const std::int64_t rows = xv.A * xv.B;
    const std::int64_t C = xv.C;
    const std::int64_t tile = min_i64(C, kReduceTileChannels);
    const std::int64_t tiles = (C + tile - 1) / tile;
    const std::int64_t groups = max_i64(1, min_i64(group_count(rows * C), rows));
    const std::int64_t items = tiles * groups;
    const int nt = (rows * C <= kParallelMinElements) ? 1 : nthreads;
    Scratch<double> partial_buf(3 * static_cast<std::size_t>(groups * C));
    double* partial = partial_buf.get();
    const bool unit = xv.sC == 1 && dyv.sC == 1;
    parallel_for(nt, items, 1, [&](std::int64_t item) {
        const std::int64_t g = item / tiles;
        const std::int64_t c0 = (item % tiles) * tile;
        const std::int64_t tw = min_i64(tile, C - c0);
        // Accumulate on this thread's stack, not in `partial`: the items of
        // neighbouring groups run on other threads, and a cache line shared
        // at a region boundary would bounce between cores on every row.
        double acc[3 * kReduceTileChannels];
        double* __restrict pd = acc;
        double* __restrict pg = acc + kReduceTileChannels;
        double* __restrict pgd = acc + 2 * kReduceTileChannels;
        for (std::int64_t c = 0; c < tw; ++c) pd[c] = pg[c] = pgd[c] = 0.0;
        const double* __restrict ctr = center + c0;
        const std::int64_t r_end = part_begin(g + 1, rows, groups);
        std::int64_t r = part_begin(g, rows, groups);
        const auto x_row = [&](std::int64_t i) { return row_ptr(x, xv, i) + c0 * xv.sC; };
        const auto dy_row = [&](std::int64_t i) { return row_ptr(dy, dyv, i) + c0 * dyv.sC; };
        if (unit) {
            const std::int64_t row_bytes = tw * static_cast<std::int64_t>(sizeof(T));
            const std::int64_t ahead = max_i64(2, (kPrefetchBytes + row_bytes - 1) / row_bytes);
            const bool prefetch = row_bytes < kPrefetchMaxRowBytes;
            for (; r + 1 < r_end; r += 2) {
                if (prefetch && r + ahead + 1 < r_end) {
                    for (int k = 0; k < 2; ++k) {
                        const char* px = reinterpret_cast<const char*>(x_row(r + ahead + k));
                        const char* pg = reinterpret_cast<const char*>(dy_row(r + ahead + k));
                        for (std::int64_t o = 0; o < row_bytes; o += 64) {
                            __builtin_prefetch(px + o);
                            __builtin_prefetch(pg + o);
                        }
                    }
                }
                add_row_pair(x_row(r), x_row(r + 1), dy_row(r), dy_row(r + 1), ctr, tw, pd, pg,
                             pgd);
            }
        }
        for (; r < r_end; ++r) {
            if (unit)
                add_row(x_row(r), 1, dy_row(r), 1, ctr, tw, pd, pg, pgd);
            else
                add_row(x_row(r), xv.sC, dy_row(r), dyv.sC, ctr, tw, pd, pg, pgd);
        }
        double* out = partial + 3 * (g * C) + c0;
        for (std::int64_t c = 0; c < tw; ++c) {
            out[c] = pd[c];
            out[C + c] = pg[c];
            out[2 * C + c] = pgd[c];
        }
    });
    for (std::int64_t c = 0; c < C; ++c) {
        double d = 0.0, gsum = 0.0, gd = 0.0;
        for (std::int64_t g = 0; g < groups; ++g) {
            const double* base = partial + 3 * (g * C);
            d += base[c];
            gsum += base[C + c];
            gd += base[2 * C + c];
        }
        sum_d[c] = d;
        sum_dy[c] = gsum;
        sum_dy_d[c] = gd;
    }
}

template <class T>
void batch_norm_backward_reduce(const T* x, const View3& xv0, const T* dy, const View3& dyv0,
                                const double* center, double* sum_d, double* sum_dy,
                                double* sum_dy_d, int nthreads) {
    View3 xv = xv0, dyv = dyv0;
    if (xv.C == 0) return;
    if (xv.A == 0 || xv.B == 0) {
        for (std::int64_t c = 0; c < xv.C; ++c) sum_d[c] = sum_dy[c] = sum_dy_d[c] = 0.0;
        return;
    }
    if (nthreads < 1) nthreads = 1;
    if (xv.sB == 1 && dyv.sB == 1 && xv.B >= kMinRowLength) {
        reduce_rows(x, xv, dy, dyv, center, sum_d, sum_dy, sum_dy_d, nthreads);
    } else if (xv.C > 1) {
        reduce_channels(x, xv, dy, dyv, center, sum_d, sum_dy, sum_dy_d, nthreads);
    } else {
        if (xv.B == 1) {  // a single channel: make A the row
            xv.B = xv.A;
            xv.sB = xv.sA;
            xv.A = 1;
            xv.sA = 0;
            dyv.B = dyv.A;
            dyv.sB = dyv.sA;
            dyv.A = 1;
            dyv.sA = 0;
        }
        reduce_rows(x, xv, dy, dyv, center, sum_d, sum_dy, sum_dy_d, nthreads);
    }
}

// ---------------------------------------------------------------------------

// The apply over whole (N, C) / NHWC rows back to back (see periodic_run);
// the six parameter arrays repeated to C + lanes entries by fill_periodic.
// x, dy and out of the storage type S, parameters and arithmetic of its
// compute type T (see affine_runs.hpp).
template <bool kStream, class S, class T = compute_t<S>>
inline void apply_run_periodic(const S* x, const S* dy, S* out, std::int64_t n, std::int64_t C,
                               const T* hi, const T* lo, const T* s, const T* p, const T* q,
                               const T* r) {
    using V = typename NativeVec<S>::type;
    periodic_run<kStream>(
        out, n, C,
        [&](std::int64_t i, std::int64_t ph) {
            return backward_dx(load_cv(x + i), load_cv(dy + i), load_vec<V>(hi + ph),
                               load_vec<V>(lo + ph), load_vec<V>(s + ph), load_vec<V>(p + ph),
                               load_vec<V>(q + ph), load_vec<V>(r + ph));
        },
        [&](std::int64_t i, std::int64_t ph) {
            return backward_dx(to_compute(x[i]), to_compute(dy[i]), hi[ph], lo[ph], s[ph], p[ph],
                               q[ph], r[ph]);
        });
}

// One contiguous run of B values of one channel (NCHW rows).
template <bool kStream, class S, class T = compute_t<S>>
inline void apply_row(const S* xr, const S* dr, S* out, std::int64_t B, T hi, T lo, T s, T p,
                      T q, T r) {
    using V = typename NativeVec<S>::type;
    const V hv = splat<V>(hi), lv = splat<V>(lo), sv = splat<V>(s);
    const V pv = splat<V>(p), qv = splat<V>(q), rv = splat<V>(r);
    write_run<kStream>(
        out, B,
        [&](std::int64_t i) {
            return backward_dx(load_cv(xr + i), load_cv(dr + i), hv, lv, sv, pv, qv, rv);
        },
        [&](std::int64_t i) {
            return backward_dx(to_compute(xr[i]), to_compute(dr[i]), hi, lo, s, p, q, r);
        });
}

template <bool kStream, class S, class T = compute_t<S>>
void apply_impl(const S* x, const View3& xv, const S* dy, const View3& dyv, S* dx,
                const View3& dxv, const T* hi, const T* lo, const T* s, const T* p, const T* q,
                const T* r, int nt, const T* periodic) {
    using V = typename NativeVec<S>::type;
    const std::int64_t A = xv.A, C = xv.C, B = xv.B;
    if (periodic != nullptr) {
        const std::int64_t ext = C + NativeVec<T>::lanes;
        parallel_periodic_blocks(nt, A, C, [&](std::int64_t r0, std::int64_t nr) {
            apply_run_periodic<kStream>(x + r0 * C, dy + r0 * C, dx + r0 * C, nr * C, C, periodic,
                                        periodic + ext, periodic + 2 * ext, periodic + 3 * ext,
                                        periodic + 4 * ext, periodic + 5 * ext);
        });
    } else if (xv.sB == 1 && dyv.sB == 1 && dxv.sB == 1 && B > 1) {
        parallel_rows(nt, A * C, B, [&](std::int64_t row, std::int64_t j0, std::int64_t len) {
            const std::int64_t a = row / C, c = row % C;
            apply_row<kStream>(x + a * xv.sA + c * xv.sC + j0, dy + a * dyv.sA + c * dyv.sC + j0,
                               dx + a * dxv.sA + c * dxv.sC + j0, len, hi[c], lo[c], s[c], p[c],
                               q[c], r[c]);
        });
    } else if (xv.sC == 1 && dyv.sC == 1 && dxv.sC == 1 && C > 1) {
        parallel_rows(nt, A * B, C, [&](std::int64_t row, std::int64_t j0, std::int64_t len) {
            const std::int64_t a = B == 1 ? row : row / B, b = B == 1 ? 0 : row % B;
            const S* xr = x + a * xv.sA + b * xv.sB + j0;
            const S* dr = dy + a * dyv.sA + b * dyv.sB + j0;
            S* out = dx + a * dxv.sA + b * dxv.sB + j0;
            const T *h = hi + j0, *l = lo + j0, *ss = s + j0, *pp = p + j0, *qq = q + j0,
                    *rr = r + j0;
            write_run<kStream>(
                out, len,
                [&](std::int64_t i) {
                    return backward_dx(load_cv(xr + i), load_cv(dr + i), load_vec<V>(h + i),
                                       load_vec<V>(l + i), load_vec<V>(ss + i), load_vec<V>(pp + i),
                                       load_vec<V>(qq + i), load_vec<V>(rr + i));
                },
                [&](std::int64_t i) {
                    return backward_dx(to_compute(xr[i]), to_compute(dr[i]), h[i], l[i], ss[i],
                                       pp[i], qq[i], rr[i]);
                });
        });
    } else {
        parallel_rows(nt, A * C, B, [&](std::int64_t row, std::int64_t j0, std::int64_t len) {
            const std::int64_t a = row / C, c = row % C;
            for (std::int64_t b = j0; b < j0 + len; ++b)
                dx[a * dxv.sA + c * dxv.sC + b * dxv.sB] = to_storage<S>(
                    backward_dx(to_compute(x[a * xv.sA + c * xv.sC + b * xv.sB]),
                                to_compute(dy[a * dyv.sA + c * dyv.sC + b * dyv.sB]), hi[c], lo[c],
                                s[c], p[c], q[c], r[c]));
        });
    }
}

constexpr int kApplyParams = 6;  // hi, lo, s, p, q, r

template <class S>
void batch_norm_backward_apply(const S* x, const View3& xv, const S* dy, const View3& dyv, S* dx,
                               const View3& dxv, const compute_t<S>* hi, const compute_t<S>* lo,
                               const compute_t<S>* s, const compute_t<S>* p,
                               const compute_t<S>* q, const compute_t<S>* r, int nthreads) {
    using T = compute_t<S>;
    const std::int64_t total = xv.A * xv.C * xv.B;
    if (total == 0) return;
    const int nt = (total <= kParallelMinElements || nthreads < 1) ? 1 : nthreads;
    const std::int64_t C = xv.C;
    const bool is_periodic = xv.B == 1 && C > 1 && C < 4096 && xv.sC == 1 && dyv.sC == 1 &&
                             dxv.sC == 1 && xv.sA == C && dyv.sA == C && dxv.sA == C;
    const std::int64_t ext = C + NativeVec<T>::lanes;
    Scratch<T> periodic_buf(is_periodic ? kApplyParams * static_cast<std::size_t>(ext) : 0);
    T* periodic = is_periodic ? periodic_buf.get() : nullptr;
    if (is_periodic) {
        const T* params[kApplyParams] = {hi, lo, s, p, q, r};
        for (int k = 0; k < kApplyParams; ++k) fill_periodic(params[k], C, periodic + k * ext);
    }
    if (total * static_cast<std::int64_t>(sizeof(S)) >= kStreamMinBytes)
        apply_impl<true>(x, xv, dy, dyv, dx, dxv, hi, lo, s, p, q, r, nt, periodic);
    else
        apply_impl<false>(x, xv, dy, dyv, dx, dxv, hi, lo, s, p, q, r, nt, periodic);
}

// ---------------------------------------------------------------------------
// Training backward in one call (batch_norm_backward_train_fn).

// The per-channel epilogue, one function for the fused and the two-pass
// loops so both give the same bits: the float64 formula, then hi, lo, s, p,
// q, r rounded to T.
template <class T>
void train_params(const Sums3& s, double n, double mean, double invstd, double w,
                  double& sum_dy, double& sum_dy_xc, T out[kApplyParams]) {
    const auto prm = formulas::batch_norm_backward_params(s.d, s.dy, s.dy_d, n, mean, invstd, w);
    sum_dy = s.dy;
    sum_dy_xc = prm.sum_dy_xc;
    formulas::split_center(prm.center, out[0], out[1]);
    out[2] = static_cast<T>(prm.s);
    out[3] = static_cast<T>(prm.p);
    out[4] = static_cast<T>(prm.q);
    out[5] = static_cast<T>(prm.r);
}

// NCHW-like rows: each channel is reduced (the same groups and order as
// reduce_rows) and its dx written by one thread right away, while the x and
// dy slabs are still in cache: the second read costs little.
template <bool kStream, class T>
void train_fused_rows(const T* x, const View3& xv, const T* dy, const View3& dyv, T* dx,
                      const View3& dxv, const double* mean, const double* invstd,
                      const double* weight, double* sum_dy, double* sum_dy_xc, int nt) {
    const std::int64_t n = xv.A * xv.B;
    const std::int64_t groups = group_count(n);
    // Short rows (28x28 images: 3 KB) are prefetched a row ahead while
    // the sums run: the hardware prefetcher starts over on each row (the next
    // one is a whole channel stride away) and left the sums waiting on
    // memory (256x128x28x28: 1.9x the floor). Long rows it follows itself.
    const bool prefetch_rows =
        xv.B * static_cast<std::int64_t>(sizeof(T)) <= kRowPrefetchMaxBytes;
    parallel_for(nt, xv.C, 1, [&](std::int64_t c) {
        const T* xc = x + c * xv.sC;
        const T* dyc = dy + c * dyv.sC;
        Sums3 s = row_range_sums(xc, xv, dyc, dyv, mean[c], part_begin(0, n, groups),
                                 part_begin(1, n, groups), prefetch_rows);
        for (std::int64_t g = 1; g < groups; ++g)
            s.add(row_range_sums(xc, xv, dyc, dyv, mean[c], part_begin(g, n, groups),
                                 part_begin(g + 1, n, groups), prefetch_rows));
        compute_t<T> prm[kApplyParams];
        train_params(s, static_cast<double>(n), mean[c], invstd[c],
                     weight != nullptr ? weight[c] : 1.0, sum_dy[c], sum_dy_xc[c], prm);
        for (std::int64_t a = 0; a < xv.A; ++a)
            apply_row<kStream>(xc + a * xv.sA, dyc + a * dyv.sA, dx + c * dxv.sC + a * dxv.sA,
                               xv.B, prm[0], prm[1], prm[2], prm[3], prm[4], prm[5]);
    });
}

template <class T>
void batch_norm_backward_train(const T* x, const View3& xv, const T* dy, const View3& dyv, T* dx,
                               const View3& dxv, const double* mean, const double* invstd,
                               const double* weight, double* sum_dy, double* sum_dy_xc,
                               int nthreads) {
    const std::int64_t C = xv.C;
    if (C == 0) return;
    if (nthreads < 1) nthreads = 1;
    const std::int64_t total = xv.A * xv.B * C;
    // One channel per thread in the fused loop: only with enough channels
    // for the threads (the same rule as the fused training forward).
    const bool fused = total > 0 && xv.sB == 1 && dyv.sB == 1 && dxv.sB == 1 &&
                       xv.B >= kMinRowLength && C >= 4 * static_cast<std::int64_t>(nthreads) &&
                       xv.A * xv.B * static_cast<std::int64_t>(sizeof(T)) <= kMaxFusedSlabBytes;
    if (fused) {
        const int nt = (total <= kParallelMinElements) ? 1 : nthreads;
        if (total * static_cast<std::int64_t>(sizeof(T)) >= kStreamMinBytes)
            train_fused_rows<true>(x, xv, dy, dyv, dx, dxv, mean, invstd, weight, sum_dy,
                                   sum_dy_xc, nt);
        else
            train_fused_rows<false>(x, xv, dy, dyv, dx, dxv, mean, invstd, weight, sum_dy,
                                    sum_dy_xc, nt);
        return;
    }
    Scratch<double> sums_buf(3 * static_cast<std::size_t>(C));
    double* sum_d = sums_buf.get();
    double* sums_dy = sum_d + C;
    double* sum_dy_d = sum_d + 2 * C;
    batch_norm_backward_reduce(x, xv, dy, dyv, mean, sum_d, sums_dy, sum_dy_d, nthreads);
    using P = compute_t<T>;  // the apply's parameter type
    Scratch<P> params_buf(kApplyParams * static_cast<std::size_t>(C));
    P* prm = params_buf.get();
    for (std::int64_t c = 0; c < C; ++c) {
        P one[kApplyParams];
        train_params(Sums3{sum_d[c], sums_dy[c], sum_dy_d[c]}, static_cast<double>(xv.A * xv.B),
                     mean[c], invstd[c], weight != nullptr ? weight[c] : 1.0, sum_dy[c],
                     sum_dy_xc[c], one);
        for (int k = 0; k < kApplyParams; ++k) prm[k * C + c] = one[k];
    }
    if (total > 0)
        batch_norm_backward_apply(x, xv, dy, dyv, dx, dxv, prm, prm + C, prm + 2 * C,
                                  prm + 3 * C, prm + 4 * C, prm + 5 * C, nthreads);
}

}  // namespace

template <class T>
void add_batch_norm_backward_kernels(BatchNormKernels<T>& k) {
    k.backward_reduce = &batch_norm_backward_reduce<T>;
    k.backward_apply = &batch_norm_backward_apply<T>;
    k.backward_train = &batch_norm_backward_train<T>;
}

template void add_batch_norm_backward_kernels(BatchNormKernels<float>&);
template void add_batch_norm_backward_kernels(BatchNormKernels<double>&);
template void add_batch_norm_backward_kernels(BatchNormKernels<f16_t>&);
template void add_batch_norm_backward_kernels(BatchNormKernels<bf16_t>&);

}  // namespace bnfast::kernels::BNFAST_ISA
