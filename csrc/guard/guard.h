// The output guard (posert/runtime/guard.py; docs/design.md, "Trust"): no pose a stream reports is
// non-finite or physically impossible. CPU only, once per tick after the correction stage;
// posert/runtime/guard.py holds its NumPy definition.
//
// First every bone (j, parents[j]) of a pose P (J, 3) float32, mm, root-relative, longer than
// bound_j = max_bone_ratio × min(bone_ref[s, j − 1], |rest_j − rest_p|) (the slot's running length,
// capped at the reference adult's, whose pose `rest` is: the running length of a short bone grows
// with the models' noise) is shortened to that length along its direction, parents first,
// its child's subtree moving with it: P'_0 = P_0, P'_j = P'_p + v_j · min(1, bound_j / |v_j|),
// v_j = P_j − P_p (a hidden joint's guess can put a head a metre from its neck). Then P' is plausible
// when every coordinate is finite and every joint lies within max_reach_mm of the origin, the pelvis of
// a root-relative pose ("within reach").
// For each row r, slot s = slots[r]:
//   - refined[r] not plausible: lifted[r], repaired, takes its place if it is plausible (refit[r] = 1:
//     the caller clears the slot's correction state; health RESET unless the row coasts), else the
//     slot's last valid pose (the reference pose `rest` before it has one), health NO_POSE;
//   - lifted[r], the lifter's own pose, is not repaired; not within reach, it becomes the reported
//     refined pose;
//   - a valid row (health OK or RESET) updates the slot: last[s] ← refined[r], and, for every bone
//     whose two ends are visible (conf > 0), the running length bone_ref[s] += w (|v| − bone_ref[s]),
//     w = 1 / (n + 1) for the bone's first 100 such frames, then 0.01 (n = bone_n[s, j − 1] += 1).
#pragma once
#include <cstdint>

namespace posert {

enum GuardHealth : uint8_t { kOk = 0, kCoasting = 1, kReset = 2, kNoPose = 3 };

struct GuardParams {
  double max_reach_mm;
  double max_bone_ratio;
};

struct GuardState {
  int64_t S, J;
  const int64_t* parents;  // (J,), parents[j] < j for j ≥ 1
  const float* rest;       // (J, 3) the reference pose, mm
  const double* rest_bone; // (J − 1) its bone lengths |rest_j − rest_parents[j]|, mm
  double* bone_ref;        // (S, J − 1) running bone lengths of the slot's valid poses, mm
  double* bone_n;          // (S, J − 1) the frames each bone was seen whole
  float* last;             // (S, J, 3) the slot's last valid pose, mm
  uint8_t* has_last;       // (S,)
};

// conf (R, J) the frame's confidences; health (R,) in: OK, COASTING or RESET; out: the row's health.
// refit (R,) out.
void guard_cpu(float* refined, float* lifted, const float* conf, const int64_t* slots, int64_t R,
               const GuardState& state, const GuardParams& params, uint8_t* health, uint8_t* refit);

}  // namespace posert
