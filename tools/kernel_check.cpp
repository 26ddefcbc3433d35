// A check of the baseline kernels without Python, for cross builds
// (tools/cross_aarch64.sh builds it with -DBNFAST_KERNEL_CHECK=ON and runs it
// under qemu-aarch64): the scalar kernel table (NEON through the vector
// extensions on aarch64, SSE2 on x86-64) against plain long-double
// references, and bit-identical results for every thread count. Exit
// status 0 when every check passes.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <type_traits>
#include <vector>

#include "bnfast/kernel_table.hpp"

namespace {

using bnfast::View3;

int g_failures = 0;

void check(bool ok, const char* what, long long a, long long c, long long b, double err) {
    if (!ok) {
        ++g_failures;
        std::printf("FAIL %s A=%lld C=%lld B=%lld error %.3g\n", what, a, c, b, err);
    }
}

// Reference per-channel mean and M2 of x viewed as (A, C, B), two-pass in
// long double.
template <class T>
void reference_moments(const T* x, const View3& v, std::vector<long double>& mean,
                       std::vector<long double>& m2) {
    mean.assign(v.C, 0.0L);
    m2.assign(v.C, 0.0L);
    const long double n = static_cast<long double>(v.A * v.B);
    for (std::int64_t c = 0; c < v.C; ++c) {
        long double s = 0;
        for (std::int64_t a = 0; a < v.A; ++a)
            for (std::int64_t b = 0; b < v.B; ++b) s += x[a * v.sA + c * v.sC + b * v.sB];
        mean[c] = s / n;
        long double q = 0;
        for (std::int64_t a = 0; a < v.A; ++a)
            for (std::int64_t b = 0; b < v.B; ++b) {
                const long double d = x[a * v.sA + c * v.sC + b * v.sB] - mean[c];
                q += d * d;
            }
        m2[c] = q;
    }
}

template <class T>
void run_case(const bnfast::FamilyKernels<T>& k, std::int64_t A, std::int64_t C, std::int64_t B,
              bool channels_last, std::mt19937_64& rng) {
    // Tolerances: statistics accumulate in double (relative 1e-12 of the
    // data's scale is ~1e4 ulps: summation error for these sizes is far
    // below); the output is rounded to T (float: 1e-5 relative covers
    // rounding of x to float plus the normalization's few roundings).
    const double stat_tol = 1e-12;
    const double y_tol = std::is_same_v<T, float> ? 1e-5 : 1e-12;
    std::normal_distribution<double> normal(3.0, 2.0);
    std::vector<T> x(static_cast<std::size_t>(A * C * B));
    for (auto& v : x) v = static_cast<T>(normal(rng));
    // NCHW-like (A, C, B) or channels-last (A*B, C, 1) strides over the same buffer.
    const View3 xv = channels_last ? View3{A * B, C, 1, C, 1, 0} : View3{A, C, B, C * B, B, 1};
    std::vector<long double> rmean, rm2;
    reference_moments(x.data(), xv, rmean, rm2);
    const std::int64_t n = xv.A * xv.B;

    std::vector<double> mean1(C), m21(C);
    k.moments.moments(x.data(), xv, mean1.data(), m21.data(), 1);
    for (std::int64_t c = 0; c < C; ++c) {
        const double em = std::fabs(static_cast<double>(mean1[c] - rmean[c]));
        const double ev = std::fabs(static_cast<double>(m21[c] - rm2[c])) / static_cast<double>(n);
        check(em <= stat_tol * 5.0 && ev <= stat_tol * 4.0 * 5.0, "moments", A, C, B,
              em > ev ? em : ev);
    }
    // Bit-identical for every thread count (the determinism contract).
    for (int threads : {2, 3, 4}) {
        std::vector<double> mean_t(C), m2_t(C);
        k.moments.moments(x.data(), xv, mean_t.data(), m2_t.data(), threads);
        check(std::memcmp(mean_t.data(), mean1.data(), C * sizeof(double)) == 0 &&
                  std::memcmp(m2_t.data(), m21.data(), C * sizeof(double)) == 0,
              "moments thread-count determinism", A, C, B, 0.0);
    }

    // Training batch norm with weight and bias.
    std::vector<double> weight(C), bias(C);
    for (std::int64_t c = 0; c < C; ++c) {
        weight[c] = 0.5 + 0.1 * c;
        bias[c] = -1.0 + 0.05 * c;
    }
    const double eps = 1e-5;
    std::vector<T> y(x.size()), y4(x.size());
    std::vector<double> bm(C), bm2(C), bm4(C), bm24(C);
    k.batch_norm.train(x.data(), xv, y.data(), xv, weight.data(), bias.data(), eps, bm.data(),
                       bm2.data(), 1);
    k.batch_norm.train(x.data(), xv, y4.data(), xv, weight.data(), bias.data(), eps, bm4.data(),
                       bm24.data(), 4);
    check(std::memcmp(y.data(), y4.data(), y.size() * sizeof(T)) == 0,
          "batch_norm thread-count determinism", A, C, B, 0.0);
    check(std::memcmp(bm.data(), mean1.data(), C * sizeof(double)) == 0,
          "batch_norm statistics == moments", A, C, B, 0.0);
    double worst = 0;
    for (std::int64_t a = 0; a < xv.A; ++a)
        for (std::int64_t c = 0; c < C; ++c)
            for (std::int64_t b = 0; b < xv.B; ++b) {
                const std::int64_t i = a * xv.sA + c * xv.sC + b * xv.sB;
                const long double invstd =
                    1.0L / std::sqrt(rm2[c] / static_cast<long double>(n) + eps);
                const long double ref = (x[i] - rmean[c]) * invstd * weight[c] + bias[c];
                const double err = std::fabs(static_cast<double>(y[i] - ref)) /
                                   (1.0 + std::fabs(static_cast<double>(ref)));
                if (err > worst) worst = err;
            }
    check(worst <= y_tol, std::is_same_v<T, float> ? "batch_norm float32" : "batch_norm float64",
          A, C, B, worst);
}

// Group norm forward and training backward (group_norm_forward,
// group_norm_backward_train) on N samples of (A, C, B), channels first
// (N, 1, C, A*B) or last (N, A*B, C, 1), against long-double references,
// and bit-identical for every thread count. Tolerances as run_case: the
// statistics in double (1e-12 of the data's scale), outputs rounded to T.
template <class T>
void run_group_case(const bnfast::FamilyKernels<T>& k, std::int64_t N, std::int64_t S,
                    std::int64_t C, std::int64_t G, bool channels_last, std::mt19937_64& rng) {
    using bnfast::BatchView3;
    const double y_tol = std::is_same_v<T, float> ? 1e-5 : 1e-12;
    const double dx_tol = std::is_same_v<T, float> ? 1e-4 : 1e-10;
    std::normal_distribution<double> normal(3.0, 2.0);
    const std::size_t total = static_cast<std::size_t>(N * S * C);
    std::vector<T> x(total), dy(total);
    for (auto& v : x) v = static_cast<T>(normal(rng));
    for (auto& v : dy) v = static_cast<T>(normal(rng) - 3.0);
    const BatchView3 v = channels_last ? BatchView3{N, S * C, View3{S, C, 1, C, 1, 0}}
                                       : BatchView3{N, C * S, View3{1, C, S, 0, S, 1}};
    const auto at = [&](std::int64_t n, std::int64_t c, std::int64_t s) {
        return static_cast<std::size_t>(n * v.sN + c * v.v.sC +
                                        (channels_last ? s * v.v.sA : s * v.v.sB));
    };
    const std::int64_t per = C / G;
    const long double count = static_cast<long double>(per * S);
    std::vector<long double> rmean(N * G), rvar(N * G);
    for (std::int64_t n = 0; n < N; ++n)
        for (std::int64_t g = 0; g < G; ++g) {
            long double s1 = 0, s2 = 0;
            for (std::int64_t c = g * per; c < (g + 1) * per; ++c)
                for (std::int64_t i = 0; i < S; ++i) s1 += x[at(n, c, i)];
            const long double m = s1 / count;
            for (std::int64_t c = g * per; c < (g + 1) * per; ++c)
                for (std::int64_t i = 0; i < S; ++i) {
                    const long double d = x[at(n, c, i)] - m;
                    s2 += d * d;
                }
            rmean[n * G + g] = m;
            rvar[n * G + g] = s2 / count;
        }
    std::vector<double> weight(C), bias(C);
    for (std::int64_t c = 0; c < C; ++c) {
        weight[c] = 0.5 + 0.1 * c;
        bias[c] = -1.0 + 0.05 * c;
    }
    const double eps = 1e-5;
    std::vector<T> y1(total), yt(total);
    std::vector<double> mean1(N * G), m21(N * G), meant(N * G), m2t(N * G);
    std::vector<unsigned char> done(N * G), donet(N * G);
    k.group_norm.forward(x.data(), v, y1.data(), v, G, weight.data(), bias.data(), eps, false,
                         mean1.data(), m21.data(), done.data(), 1);
    double worst_stat = 0, worst_y = 0;
    for (std::int64_t j = 0; j < N * G; ++j) {
        const double em = std::fabs(static_cast<double>(mean1[j] - rmean[j]));
        const double ev = std::fabs(static_cast<double>(m21[j] / count - rvar[j]));
        worst_stat = em > worst_stat ? em : worst_stat;
        worst_stat = ev > worst_stat ? ev : worst_stat;
        check(done[j] == 1, "group_norm forward done", N, C, S, 0.0);
    }
    check(worst_stat <= 1e-12 * 5.0 * 20.0, "group_norm forward statistics", N, C, S, worst_stat);
    for (std::int64_t n = 0; n < N; ++n)
        for (std::int64_t c = 0; c < C; ++c)
            for (std::int64_t i = 0; i < S; ++i) {
                const std::int64_t j = n * G + c / per;
                const long double rs = 1.0L / std::sqrt(rvar[j] + eps);
                const long double ref = (x[at(n, c, i)] - rmean[j]) * rs * weight[c] + bias[c];
                const double err = std::fabs(static_cast<double>(y1[at(n, c, i)] - ref)) /
                                   (1.0 + std::fabs(static_cast<double>(ref)));
                worst_y = err > worst_y ? err : worst_y;
            }
    check(worst_y <= y_tol, "group_norm forward output", N, C, S, worst_y);
    // Backward from the forward's statistics (the mean rounded to T, as
    // stored) against dx = rs*w*(dy - mean(dy*w)/w... ) in long double.
    std::vector<double> smean(N * G), rstd(N * G);
    for (std::int64_t j = 0; j < N * G; ++j) {
        smean[j] = static_cast<double>(static_cast<T>(mean1[j]));
        rstd[j] = 1.0 / std::sqrt(m21[j] / static_cast<double>(count) + eps);
    }
    std::vector<T> dx1(total), dxt(total);
    std::vector<double> sdy1(N * C), sxc1(N * C), sdyt(N * C), sxct(N * C);
    k.group_norm.backward_train(x.data(), v, dy.data(), v, dx1.data(), v, G, smean.data(),
                                rstd.data(), weight.data(), sdy1.data(), sxc1.data(), 1);
    double worst_dx = 0, scale = 0;
    std::vector<long double> ref_dx(total);
    for (std::int64_t n = 0; n < N; ++n)
        for (std::int64_t g = 0; g < G; ++g) {
            const std::int64_t j = n * G + g;
            long double mg = 0, mgx = 0;
            for (std::int64_t c = g * per; c < (g + 1) * per; ++c)
                for (std::int64_t i = 0; i < S; ++i) {
                    const long double gw = dy[at(n, c, i)] * static_cast<long double>(weight[c]);
                    mg += gw;
                    mgx += gw * (x[at(n, c, i)] - rmean[j]) * rstd[j];
                }
            mg /= count;
            mgx /= count;
            for (std::int64_t c = g * per; c < (g + 1) * per; ++c)
                for (std::int64_t i = 0; i < S; ++i) {
                    const long double xh = (x[at(n, c, i)] - rmean[j]) * rstd[j];
                    const long double r =
                        rstd[j] * (dy[at(n, c, i)] * static_cast<long double>(weight[c]) - mg -
                                   xh * mgx);
                    ref_dx[at(n, c, i)] = r;
                    const double a = std::fabs(static_cast<double>(r));
                    scale = a > scale ? a : scale;
                }
        }
    for (std::size_t i = 0; i < total; ++i) {
        const double err = std::fabs(static_cast<double>(dx1[i] - ref_dx[i]));
        worst_dx = err > worst_dx ? err : worst_dx;
    }
    check(worst_dx <= dx_tol * (1.0 + scale), "group_norm backward dx", N, C, S, worst_dx);
    for (int threads : {2, 3, 4}) {
        k.group_norm.forward(x.data(), v, yt.data(), v, G, weight.data(), bias.data(), eps, false,
                             meant.data(), m2t.data(), donet.data(), threads);
        k.group_norm.backward_train(x.data(), v, dy.data(), v, dxt.data(), v, G, smean.data(),
                                    rstd.data(), weight.data(), sdyt.data(), sxct.data(),
                                    threads);
        check(std::memcmp(yt.data(), y1.data(), total * sizeof(T)) == 0 &&
                  std::memcmp(meant.data(), mean1.data(), meant.size() * sizeof(double)) == 0 &&
                  std::memcmp(m2t.data(), m21.data(), m2t.size() * sizeof(double)) == 0,
              "group_norm forward thread-count determinism", N, C, S, 0.0);
        check(std::memcmp(dxt.data(), dx1.data(), total * sizeof(T)) == 0 &&
                  std::memcmp(sdyt.data(), sdy1.data(), sdyt.size() * sizeof(double)) == 0 &&
                  std::memcmp(sxct.data(), sxc1.data(), sxct.size() * sizeof(double)) == 0,
              "group_norm backward thread-count determinism", N, C, S, 0.0);
    }
}

}  // namespace

int main() {
    const bnfast::KernelTable& table = bnfast::kernels::scalar::kernel_table();
    std::mt19937_64 rng(20261202);
    int cases = 0;
    // Shapes around the vector width (2 doubles / 4 floats with NEON), tails
    // and sizes large enough for several blocks per thread.
    const std::int64_t shapes[][3] = {{1, 1, 1},   {2, 3, 5},   {7, 4, 9},  {16, 8, 33},
                                      {3, 17, 64}, {64, 3, 100}, {5, 2, 1031}};
    for (const auto& s : shapes) {
        for (bool channels_last : {false, true}) {
            run_case(table.of<double>(), s[0], s[1], s[2], channels_last, rng);
            run_case(table.of<float>(), s[0], s[1], s[2], channels_last, rng);
            cases += 2;
        }
    }
    // Group norm: (N, S, C, G) around the vector widths, the fused and the
    // two-phase work splits (few samples or groups for 4 threads) and a
    // size above the single-thread threshold (32768 elements).
    const std::int64_t group_shapes[][4] = {{2, 5, 4, 2},   {3, 17, 6, 3}, {2, 33, 8, 8},
                                            {1, 9, 16, 1},  {5, 40, 12, 4}, {3, 700, 24, 6},
                                            {9, 400, 10, 5}};
    for (const auto& s : group_shapes) {
        for (bool channels_last : {false, true}) {
            run_group_case(table.of<double>(), s[0], s[1], s[2], s[3], channels_last, rng);
            run_group_case(table.of<float>(), s[0], s[1], s[2], s[3], channels_last, rng);
            cases += 2;
        }
    }
    std::printf("kernel_check: %d cases, %d failures (scalar kernel table)\n", cases,
                g_failures);
    return g_failures == 0 ? 0 : 1;
}
