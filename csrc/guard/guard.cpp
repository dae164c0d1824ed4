#include "guard/guard.h"

#include <cmath>
#include <vector>

namespace posert {

namespace {

// Is every coordinate of P finite and every joint within reach of the origin (the pelvis of a
// root-relative pose: a pose whose pelvis is not at the origin is out of reach too)?
bool within_reach(const float* P, int64_t J, double max_reach_mm) {
  const double r2 = max_reach_mm * max_reach_mm;
  for (int64_t j = 0; j < J; ++j) {
    double d2 = 0;
    for (int e = 0; e < 3; ++e) {
      if (!std::isfinite(P[j * 3 + e])) return false;
      const double d = P[j * 3 + e];
      d2 += d * d;
    }
    if (!(d2 <= r2)) return false;
  }
  return true;
}

// Shorten P's impossible bones in place (guard.h), then: is P finite and within reach? `orig` and
// `moved` are scratch of J · 3 and J entries.
bool repair(float* P, const GuardState& st, const GuardParams& p, int64_t s, double* orig, char* moved) {
  const int64_t J = st.J;
  for (int64_t i = 0; i < J * 3; ++i) orig[i] = P[i];
  moved[0] = 0;
  for (int64_t j = 1; j < J; ++j) {  // parents first: P[q] is already the repaired parent
    const int64_t q = st.parents[j];
    double v[3], b2 = 0;
    for (int e = 0; e < 3; ++e) {
      v[e] = orig[j * 3 + e] - orig[q * 3 + e];
      b2 += v[e] * v[e];
    }
    if (!std::isfinite(b2)) return false;
    const double bound = p.max_bone_ratio * std::fmin(st.bone_ref[s * (J - 1) + j - 1], st.rest_bone[j - 1]);
    const bool shorten = b2 > bound * bound;
    moved[j] = moved[q] || shorten;
    if (!moved[j]) continue;  // untouched joints keep their exact values
    const double k = shorten ? bound / std::sqrt(b2) : 1.0;
    for (int e = 0; e < 3; ++e) P[j * 3 + e] = (float)((double)P[q * 3 + e] + v[e] * k);
  }
  return within_reach(P, J, p.max_reach_mm);
}

}  // namespace

void guard_cpu(float* refined, float* lifted, const float* conf, const int64_t* slots, int64_t R,
               const GuardState& st, const GuardParams& p, uint8_t* health, uint8_t* refit) {
  const int64_t J = st.J, n3 = J * 3;
  std::vector<double> orig(n3);
  std::vector<char> moved(J);
  for (int64_t r = 0; r < R; ++r) {
    const int64_t s = slots[r];
    float* P = refined + r * n3;
    float* L = lifted + r * n3;
    const float* c = conf + r * J;
    refit[r] = 0;
    const bool lifted_ok = within_reach(L, J, p.max_reach_mm);  // the lifter's own pose: not repaired
    if (!repair(P, st, p, s, orig.data(), moved.data())) {
      bool ok = false;
      if (lifted_ok) {
        for (int64_t i = 0; i < n3; ++i) P[i] = L[i];
        ok = repair(P, st, p, s, orig.data(), moved.data());
      }
      if (ok) {
        refit[r] = 1;
        if (health[r] != kCoasting) health[r] = kReset;
      } else {
        const float* src = st.has_last[s] ? st.last + s * n3 : st.rest;
        for (int64_t i = 0; i < n3; ++i) P[i] = src[i];
        health[r] = kNoPose;
      }
    }
    if (!lifted_ok)
      for (int64_t i = 0; i < n3; ++i) L[i] = P[i];
    if (health[r] == kOk || health[r] == kReset) {
      for (int64_t j = 1; j < J; ++j) {
        const int64_t q = st.parents[j];
        if (!(c[j] > 0 && c[q] > 0)) continue;
        double b2 = 0;
        for (int e = 0; e < 3; ++e) {
          const double d = (double)P[j * 3 + e] - (double)P[q * 3 + e];
          b2 += d * d;
        }
        double& n = st.bone_n[s * (J - 1) + j - 1];
        double& ref = st.bone_ref[s * (J - 1) + j - 1];
        ref += (n < 100 ? 1.0 / (n + 1.0) : 0.01) * (std::sqrt(b2) - ref);
        n += 1;
      }
      for (int64_t i = 0; i < n3; ++i) st.last[s * n3 + i] = P[i];
      st.has_last[s] = 1;
    }
  }
}

}  // namespace posert
