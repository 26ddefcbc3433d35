// The per-channel (or per-row) float64 formulas, in one place.
//
// Defined in cpp/formulas.cpp, compiled once (not per ISA) with
// -ffp-contract=off, so every caller -- the kernels of each ISA, the fast
// path and, through the bindings, the Python general path -- gets the same
// bits, and the same bits as the NumPy twin (python/bnfast/_twin/formulas.py),
// which does the same operations in the same order. Call them per channel or
// per row, never per element: they are not inlined.
#pragma once
#include <cmath>

#include "bnfast/isa_namespace.hpp"

namespace bnfast::formulas {

// 1 / sqrt(m2 / count + eps): inf where the sum is 0; NaN propagates.
// count = 1 gives 1 / sqrt(var + eps) for a variance (the eval path).
double invstd(double m2, double count, double eps);

struct ScaleShift {
    double scale, shift;
};

// The eval fold of batch norm, y = x * scale + shift:
// scale = invstd * weight, shift = bias - mean * scale. An absent weight is
// 1.0 and an absent bias 0.0 (the same bits as leaving them out).
ScaleShift eval_fold(double mean, double invstd, double weight, double bias);

// The training map y = (x - mean) * scale + shift of batch norm:
// scale = invstd(m2, count, eps) * weight, shift = bias (absent: 1.0, 0.0).
ScaleShift train_fold(double m2, double count, double eps, double weight, double bias);

// The unbiased variance m2 / (count - 1) that the running variance tracks.
double unbiased_variance(double m2, double count);

// A running-statistics update, rounded to the running array's type once:
// T((1 - momentum) * running + momentum * value).
float running_update(float running, double value, double momentum);
double running_update(double running, double value, double momentum);

// The centre (a float64 mean) split into hi + lo parts of the data type, so
// (x - hi) - lo centres float32 data on the float64 mean.
void split_center(double mean, float& hi, float& lo);
void split_center(double mean, double& hi, double& lo);

// Batch-norm training backward, per channel, from the sums about the
// stored mean (sum_d = sum(x - mean), sum_dy, sum_dy_d = sum(dy * (x - mean)))
// over n values: delta = sum_d / n moves the centre to the exact mean
// (mean + delta), sum_dy_xc = sum_dy_d - delta * sum_dy, and
// dx = dy * p + (((x - center) * s) * q + r) * s with s = invstd,
// p = invstd * weight, q = -(sum_dy_xc * invstd / n) * weight,
// r = -(sum_dy / n) * weight: every factor stays near the data's scale
// (invstd * invstd would leave float32's range for data near 1e21).
struct BackwardParams {
    double sum_dy_xc;  // sum(dy * (x - exact mean)), for dweight
    double center;     // the exact mean, to split with split_center
    double s, p, q, r;
};
BackwardParams batch_norm_backward_params(double sum_d, double sum_dy, double sum_dy_d, double n,
                                          double mean, double invstd, double weight);

// Group-norm training backward, per (sample, group) of `per` channels and
// count values in all, from each channel's sums about the stored group mean
// (sum_d, sum_dy, sum_dy_d, in channel order): delta = sum(sum_d) / count
// moves the centre to the exact mean, sum_dy_xc[j] = sum_dy_d[j] - delta *
// sum_dy[j] (written, for dweight), and dx = dy * p[j] + (((x - center) * s)
// * q + r) * s with s = rstd, p[j] = rstd * weight[j] (the caller's),
// q = -(rstd * sum(w * sum_dy_xc)) / count, r = -sum(w * sum_dy) / count.
// Every sum runs over the channels in order from 0.0; weight may be null
// (all ones: the same bits).
struct GroupBackwardParams {
    double center;  // the exact group mean, to split with split_center
    double s, q, r;
};
GroupBackwardParams group_norm_backward_params(const double* sum_d, const double* sum_dy,
                                               const double* sum_dy_d, const double* weight,
                                               long long per, double count, double mean,
                                               double rstd, double* sum_dy_xc);

// rstd of one row of count values with moments (mean, m2): layer norm
// 1 / sqrt(m2 / count + eps), RMS norm 1 / sqrt(m2 / count + mean * mean + eps).
// Without the inf-row rule; use row_rstd below.
double row_rstd_raw(double mean, double m2, double count, double eps, bool rms);

// RMS norm of a row holding +-inf but no NaN gets rstd 0 (as PyTorch:
// mean(x^2) is inf), where the moments gave NaN.
double rms_inf_row_rstd(double rstd, bool row_has_nan);

}  // namespace bnfast::formulas

namespace bnfast::formulas {
inline namespace BNFAST_ISA_NS {

// row_rstd_raw with the inf-row rule; row_has_nan() rescans the row and runs
// only for an RMS row whose rstd came out NaN.
template <class RowHasNan>
inline double row_rstd(double mean, double m2, double count, double eps, bool rms,
                       RowHasNan&& row_has_nan) {
    const double rstd = row_rstd_raw(mean, m2, count, eps, rms);
    if (!rms || !std::isnan(rstd)) return rstd;
    return rms_inf_row_rstd(rstd, row_has_nan());
}

}  // namespace BNFAST_ISA_NS
}  // namespace bnfast::formulas
