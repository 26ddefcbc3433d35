// The float64 formulas of formulas.hpp. This file is compiled once, with
// -ffp-contract=off: no fused multiply-adds, so a * b + c rounds twice, as
// in NumPy, whatever instruction set the caller was built for.
#include "bnfast/formulas.hpp"

#include <cmath>

namespace bnfast::formulas {

double invstd(double m2, double count, double eps) { return 1.0 / std::sqrt(m2 / count + eps); }

ScaleShift eval_fold(double mean, double invstd, double weight, double bias) {
    const double scale = invstd * weight;
    return {scale, bias - mean * scale};
}

ScaleShift train_fold(double m2, double count, double eps, double weight, double bias) {
    return {invstd(m2, count, eps) * weight, bias};
}

double unbiased_variance(double m2, double count) { return m2 / (count - 1.0); }

float running_update(float running, double value, double momentum) {
    return static_cast<float>((1.0 - momentum) * static_cast<double>(running) + momentum * value);
}

double running_update(double running, double value, double momentum) {
    return (1.0 - momentum) * running + momentum * value;
}

void split_center(double mean, float& hi, float& lo) {
    hi = static_cast<float>(mean);
    lo = static_cast<float>(mean - static_cast<double>(hi));
}

void split_center(double mean, double& hi, double& lo) {
    hi = mean;
    lo = mean - hi;
}

BackwardParams batch_norm_backward_params(double sum_d, double sum_dy, double sum_dy_d, double n,
                                          double mean, double invstd, double weight) {
    const double delta = sum_d / n;  // the stored mean's rounding
    BackwardParams out;
    out.sum_dy_xc = sum_dy_d - delta * sum_dy;
    out.center = mean + delta;
    // mean(dy * xhat) with invstd applied once: invstd * invstd underflows
    // float32 (and the product with p its subnormals) for data near 1e21.
    const double k = out.sum_dy_xc * invstd / n;
    out.s = invstd;
    out.p = invstd * weight;
    out.q = -k * weight;
    out.r = -(sum_dy / n) * weight;
    return out;
}

GroupBackwardParams group_norm_backward_params(const double* sum_d, const double* sum_dy,
                                               const double* sum_dy_d, const double* weight,
                                               long long per, double count, double mean,
                                               double rstd, double* sum_dy_xc) {
    double sd = 0.0;
    for (long long j = 0; j < per; ++j) sd += sum_d[j];
    const double delta = sd / count;  // the stored mean's rounding
    double sg = 0.0, sgx = 0.0;
    for (long long j = 0; j < per; ++j) {
        const double t = sum_dy_d[j] - delta * sum_dy[j];
        sum_dy_xc[j] = t;
        const double w = weight != nullptr ? weight[j] : 1.0;
        sg += w * sum_dy[j];
        sgx += w * t;
    }
    GroupBackwardParams out;
    out.center = mean + delta;
    out.s = rstd;
    // rstd applied once here and twice in dx, never squared (issue 13).
    out.q = -((rstd * sgx) / count);
    out.r = -(sg / count);
    return out;
}

double row_rstd_raw(double mean, double m2, double count, double eps, bool rms) {
    const double var = m2 / count;
    return rms ? 1.0 / std::sqrt(var + mean * mean + eps) : 1.0 / std::sqrt(var + eps);
}

double rms_inf_row_rstd(double rstd, bool row_has_nan) { return row_has_nan ? rstd : 0.0; }

}  // namespace bnfast::formulas
