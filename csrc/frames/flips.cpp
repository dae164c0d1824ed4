#include "frames/flips.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

namespace posert {

void unflip_frames_cpu(float* frames, const int64_t* slots, const double* t, int64_t R, const FlipState& st,
                       const FlipParams& params, uint8_t* flipped) {
  const int64_t H = st.H, P = st.P, J = st.J;
  const double nan = std::numeric_limits<double>::quiet_NaN();
  std::vector<double> v(P * 2);
  std::vector<uint8_t> ok(P);
  std::vector<float> tmp(J * 3);
  for (int64_t r = 0; r < R; ++r) {
    const int64_t s = slots[r];
    const double tr = t[r];
    float* F = frames + r * J * 3;
    double* vec = st.vec + s * H * P * 2;
    uint8_t* hok = st.ok + s * H * P;
    const double* at = st.at + s * H;
    double* scale = st.scale + s * P;
    int votes = 0, against = 0;
    for (int64_t p = 0; p < P; ++p) {
      const float* a = F + st.left[p] * 3;
      const float* b = F + st.right[p] * 3;
      ok[p] = a[2] > 0.0f && b[2] > 0.0f;
      v[p * 2] = ok[p] ? (double)a[0] - (double)b[0] : 0.0;
      v[p * 2 + 1] = ok[p] ? (double)a[1] - (double)b[1] : 0.0;
      double rx = 0.0, ry = 0.0;
      int n = 0;
      for (int64_t h = 0; h < H; ++h) {
        if (hok[h * P + p] && tr - at[h] <= params.max_flip_s) {
          rx += vec[(h * P + p) * 2];
          ry += vec[(h * P + p) * 2 + 1];
          ++n;
        }
      }
      rx /= std::max(n, 1);
      ry /= std::max(n, 1);
      const double len = std::sqrt(rx * rx + ry * ry);
      const bool vote = ok[p] && n > 0 && len > params.separation * scale[p];  // false for a NaN scale
      if (vote) {
        ++votes;
        if (v[p * 2] * rx + v[p * 2 + 1] * ry < 0.0) ++against;
      }
    }
    bool flip = votes >= 2 && 2 * against > votes;
    if (flip && tr - st.since[s] > params.max_flip_s) {  // held too long: the detector's labels from now
      flip = false;
      std::fill(st.at + s * H, st.at + (s + 1) * H, -std::numeric_limits<double>::infinity());
    }
    if (flip) {
      std::copy(F, F + J * 3, tmp.begin());
      for (int64_t j = 0; j < J; ++j)
        for (int e = 0; e < 3; ++e) F[j * 3 + e] = tmp[st.perm[j] * 3 + e];
      for (int64_t i = 0; i < P * 2; ++i) v[i] = -v[i];
      if (std::isnan(st.since[s])) st.since[s] = tr;
    } else {
      st.since[s] = nan;
    }
    flipped[r] = flip;
    const int64_t h = st.head[s];
    const double* last = vec + ((h + H - 1) % H) * P * 2;  // the previous frame: the newest entry
    const uint8_t* last_ok = hok + ((h + H - 1) % H) * P;
    for (int64_t p = 0; p < P; ++p) {
      if (ok[p] && last_ok[p]) {
        const double dx = v[p * 2] - last[p * 2], dy = v[p * 2 + 1] - last[p * 2 + 1];
        const double d = std::sqrt(dx * dx + dy * dy);
        scale[p] = std::isnan(scale[p]) ? d : scale[p] + params.rate * (std::min(d, 3.0 * scale[p]) - scale[p]);
      }
    }
    for (int64_t p = 0; p < P; ++p) {
      vec[(h * P + p) * 2] = v[p * 2];
      vec[(h * P + p) * 2 + 1] = v[p * 2 + 1];
      hok[h * P + p] = ok[p];
    }
    st.at[s * H + h] = tr;
    st.head[s] = (h + 1) % H;
  }
}

}  // namespace posert
