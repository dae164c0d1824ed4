// Left/right flips undone (posert/runtime/flips.py, which holds the module's explanation and
// flips_reference, this kernel's NumPy definition): a detector that takes a person's front for
// their back mirrors every left joint with its right twin for a few frames. CPU only, once per push.
//
// For each row r of a batch, slot s = slots[r], time t[r] (s), frame F (J, 3) float32 (x, y in
// any equal-unit image coordinates, confidence; 0 = missing, its x, y not read), and each of the P
// pairs p (left[p], right[p]):
//   ok_p = both joints shown; v_p = F[left[p]].xy − F[right[p]].xy (float64; 0 unless ok_p);
//   ref_p = mean of vec[s, h, p] over the H history entries h with ok[s, h, p] and
//           t − at[s, h] ≤ max_flip_s, n_p of them;
//   vote_p = ok_p ∧ n_p > 0 ∧ scale[s, p] is set ∧ |ref_p| > separation · scale[s, p];
//   against_p = vote_p ∧ v_p · ref_p < 0.
// The frame is flipped back when Σ vote ≥ 2 and 2 Σ against > Σ vote, unless the slot has been
// flipping since `since[s]` and t − since[s] > max_flip_s: then it is not, every history entry's
// time becomes −∞ (no longer a reference: the detector's labels become it) and since[s] = NaN.
// Flipped back: every joint j takes joint perm[j]'s three values, v_p = −v_p, since[s] = t if it
// was NaN. Not flipped: since[s] = NaN. Then for every pair shown now and in the slot's previous
// frame (the newest history entry, head[s] − 1 mod H, whatever its time), with d = |v_p − its
// vector|: scale = d if unset (NaN), else scale + rate · (min(d, 3 · scale) − scale); and the
// history entry head[s] takes (v, ok, t), head[s] = (head[s] + 1) mod H.
#pragma once
#include <cstdint>

namespace posert {

struct FlipParams {
  double max_flip_s;  // a flip is undone at most this long, and a history entry is no older
  double separation;  // a pair votes when its reference is longer than this × its scale
  double rate;        // weight of each new change in a pair's running scale
};

struct FlipState {
  int64_t S, H, P, J;
  const int64_t* left;   // (P,) the pairs' left joints
  const int64_t* right;  // (P,) their right twins
  const int64_t* perm;   // (J,) every joint's mirror
  double* vec;           // (S, H, P, 2) each pair's vector in the last H frames
  uint8_t* ok;           // (S, H, P) whether both its joints were shown
  double* at;            // (S, H) those frames' times, s
  int64_t* head;         // (S,) the next history entry
  double* scale;         // (S, P) running scale of the pair's frame-to-frame change; NaN: unset
  double* since;         // (S,) when the flip being undone began; NaN: none
};

// frames (R, J, 3) float32 in place; slots (R,) distinct, in [0, S); t (R,) s; flipped (R,) out.
void unflip_frames_cpu(float* frames, const int64_t* slots, const double* t, int64_t R, const FlipState& st,
                       const FlipParams& params, uint8_t* flipped);

}  // namespace posert
