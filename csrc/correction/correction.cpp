#include "correction/correction.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace posert {

namespace {

const double kNaN = std::nan("");

// Scratch of one row (J joints), allocated once per call.
struct Row {
  explicit Row(int64_t J)
      : ux(J), uy(J), Q(J * 3), ray(J * 3), t(J), Lpool(J > 0 ? J - 1 : 0), D(J * 2), a2(J), on(J), front(J) {}
  std::vector<double> ux, uy, Q, ray, t, Lpool, D, a2;
  std::vector<char> on, front;
};

// The least-squares position R of a root-relative pose Q (J × 3) on the rays (ux, uy) of its visible
// joints (c > 0), with the validity checks of step 2. Returns false (R = 0) when the row gets no
// correction.
bool solve_position(const double* Q, const double* ux, const double* uy, const double* c, int64_t J, double* R) {
  double sw = 0, a = 0, b = 0, cc = 0, bp = 0, bq = 0, bu = 0;
  int visible = 0;
  for (int64_t j = 0; j < J; ++j) {
    if (!(c[j] > 0)) continue;
    const double w = c[j], x = ux[j], y = uy[j], X = Q[j * 3], Y = Q[j * 3 + 1], Z = Q[j * 3 + 2];
    const double b1 = x * Z - X, b2 = y * Z - Y;  // R_x − u_x R_z = b1,  R_y − u_y R_z = b2
    sw += w;
    a += w * x;
    b += w * y;
    cc += w * (x * x + y * y);
    bp += w * b1;
    bq += w * b2;
    bu -= w * (x * b1 + y * b2);
    ++visible;
  }
  R[0] = R[1] = R[2] = 0;
  // normal equations [[sw, 0, −a], [0, sw, −b], [−a, −b, cc]] R = [bp, bq, bu]
  const double D = sw * cc - a * a - b * b;  // det = sw · D
  if (!(visible >= 2 && D > 1e-12 * sw * sw)) return false;
  const double Rz = (sw * bu + a * bp + b * bq) / D;
  if (!(Rz > 0)) return false;
  for (int64_t j = 0; j < J; ++j)
    if (c[j] > 0 && !(Q[j * 3 + 2] + Rz > 0.01 * Rz)) return false;
  R[0] = (bp + a * Rz) / sw;
  R[1] = (bq + b * Rz) / sw;
  R[2] = Rz;
  return true;
}

// Step 1: the undistorted rays of the visible joints of slot s (0 for hidden ones); Q ← P.
void rays(Row& w, const float* P, const CorrectionState& st, const CorrectionParams& p, int64_t s) {
  const int64_t J = st.J;
  const double* k = st.K + s * 9;
  const double* d = st.dist + s * 5;
  const double* c = st.conf + s * J;
  const double fx = k[0], skew = k[1], cx = k[2], fy = k[4], cy = k[5];
  const double k1 = d[0], k2 = d[1], p1 = d[2], p2 = d[3], k3 = d[4];
  const int64_t iters = (k1 == 0 && k2 == 0 && p1 == 0 && p2 == 0 && k3 == 0) ? 0 : p.iterations;  // pinhole: exact
  for (int64_t j = 0; j < J; ++j) {
    w.ux[j] = w.uy[j] = 0;
    for (int e = 0; e < 3; ++e) w.Q[j * 3 + e] = P[j * 3 + e];
    if (!(c[j] > 0)) continue;
    const double yd = (st.px[(s * J + j) * 2 + 1] - cy) / fy;
    const double xd = (st.px[(s * J + j) * 2] - cx - skew * yd) / fx;
    double x = xd, y = yd;
    for (int64_t it = 0; it < iters; ++it) {
      const double r2 = x * x + y * y;
      const double radial = 1 + r2 * (k1 + r2 * (k2 + r2 * k3));
      const double nx = (xd - (2 * p1 * x * y + p2 * (r2 + 2 * x * x))) / radial;
      const double ny = (yd - (p1 * (r2 + 2 * y * y) + 2 * p2 * x * y)) / radial;
      x = nx;
      y = ny;
    }
    w.ux[j] = x;
    w.uy[j] = y;
  }
}

// NoiseState's running σ² from this frame's n squared differences a2 (white noise of variance σ² per
// axis: |a|² ~ k σ² χ²₂, median k σ² · 2 ln 2): with ≥ min_joints of them, s² = median / (2 k ln 2) and
// var ← s² (first time) or var + max(tau, 1 / seen) (s² − var). a2 is reordered.
void update_noise(std::vector<double>& a2, int64_t n, double k, const CorrectionParams& p, double& var,
                  double& seen) {
  if (!(n >= p.noise_min_joints && n > 0)) return;
  std::sort(a2.begin(), a2.begin() + n);
  const double med = n % 2 ? a2[n / 2] : 0.5 * (a2[n / 2 - 1] + a2[n / 2]);
  const double s2 = med / (k * 2.0 * std::log(2.0));
  seen = std::isnan(var) ? 1.0 : seen + 1.0;
  var = std::isnan(var) ? s2 : var + std::max(p.noise_tau, 1.0 / seen) * (s2 - var);
}

// NoiseState: this frame's gain K(q / σ̂²) of slot s from the innovations D (and the keypoints).
double noise_gain(Row& w, const CorrectionState& st, const CorrectionParams& p, int64_t s, const double* Rp) {
  const int64_t J = st.J;
  const double fx = st.K[s * 9];
  const double* c = st.conf + s * J;
  double* h = st.noise_hist + s * 2 * J * 2;  // [frame before last, last][joint][x, y] px
  double& var = st.noise_var[s * 2];
  double& seen = st.noise_var[s * 2 + 1];  // frames that updated var
  int64_t n = 0;
  for (int64_t j = 0; j < J; ++j) {
    const double z = w.Q[j * 3 + 2] + Rp[2];
    const double u[2] = {w.on[j] ? w.D[j * 2] * fx / z : kNaN, w.on[j] ? w.D[j * 2 + 1] * fx / z : kNaN};
    double* h0 = h + j * 2;
    double* h1 = h + (J + j) * 2;
    if (w.on[j] && std::isfinite(h0[0]) && std::isfinite(h1[0])) {
      const double ax = u[0] - 2 * h1[0] + h0[0], ay = u[1] - 2 * h1[1] + h0[1];
      w.a2[n++] = ax * ax + ay * ay;
    }
    h0[0] = h1[0];
    h0[1] = h1[1];
    h1[0] = u[0];
    h1[1] = u[1];
  }
  update_noise(w.a2, n, 6.0, p, var, seen);
  double v = var;
  if (p.pixel_noise) {  // the keypoints' own third differences
    double* hr = st.pixel_hist + s * 3 * J * 2;  // [3 frames ago, 2 ago, last][joint][x, y] px
    double& rvar = st.pixel_var[s * 2];
    double& rseen = st.pixel_var[s * 2 + 1];
    int64_t m = 0;
    for (int64_t j = 0; j < J; ++j) {
      const double* px = st.px + (s * J + j) * 2;
      double* h0 = hr + j * 2;
      double* h1 = hr + (J + j) * 2;
      double* h2 = hr + (2 * J + j) * 2;
      const bool vis = c[j] > 0;
      if (vis && std::isfinite(h0[0]) && std::isfinite(h1[0]) && std::isfinite(h2[0])) {
        const double bx = px[0] - 3 * h2[0] + 3 * h1[0] - h0[0], by = px[1] - 3 * h2[1] + 3 * h1[1] - h0[1];
        w.a2[m++] = bx * bx + by * by;
      }
      for (int e = 0; e < 2; ++e) {
        h0[e] = h1[e];
        h1[e] = h2[e];
        h2[e] = vis ? px[e] : kNaN;
      }
    }
    update_noise(w.a2, m, 20.0, p, rvar, rseen);
    if (std::isnan(v) || rvar < v) v = rvar;
  }
  return std::isnan(v) ? p.noise_fallback : steady_state_gain(p.noise_q / std::max(v, 1e-300));
}

// One update of DistanceState's tracker for stream state st (x, v, n) with the measurement z.
void track_distance(double* st, double z, double alpha, double beta) {
  const double n = st[2];
  if (!(n >= 1)) {
    st[0] = z;
    st[1] = 0;
    st[2] = 1;
    return;
  }
  const double pred = st[0] + st[1], e = z - pred;
  st[0] = pred + alpha * e;
  st[1] += beta * e;
  st[2] = n + 1;
}

// Step 2: Δ of the row, the stream's Δ̄ (and its noise and distance trackers), Q ← Q + Δ̄, re-rooted.
void lateral_step(Row& w, const CorrectionState& st, const CorrectionParams& p, int64_t s, double first) {
  const int64_t J = st.J;
  const double* c = st.conf + s * J;
  double Rp[3];
  const bool ok = solve_position(w.Q.data(), w.ux.data(), w.uy.data(), c, J, Rp);
  for (int64_t j = 0; j < J; ++j) {
    w.on[j] = ok && c[j] > 0;
    const double z = w.Q[j * 3 + 2] + Rp[2];
    w.D[j * 2] = w.on[j] ? w.ux[j] * z - Rp[0] - w.Q[j * 3] : 0.0;
    w.D[j * 2 + 1] = w.on[j] ? w.uy[j] * z - Rp[1] - w.Q[j * 3 + 1] : 0.0;
  }
  double beta = std::max(p.lateral_beta, first);
  if (p.adaptive) beta = std::max(beta, noise_gain(w, st, p, s, Rp));
  if (ok && p.distance) {  // step 4's tracker, and the distance the EMA below leaves the pose at
    double* ds = st.distance + s * 4;
    const bool fresh = !(ds[2] >= 1);
    track_distance(ds, Rp[2], p.distance_alpha, p.distance_beta);
    ds[3] = fresh ? Rp[2] : ds[3] + beta * (Rp[2] - ds[3]);
  }
  double* db = st.lateral + s * J * 3;
  for (int64_t j = 0; j < J; ++j) {
    const double delta[3] = {w.D[j * 2], w.D[j * 2 + 1], 0.0};
    const double wj = ok && c[j] > 0 ? beta * c[j] : 0.0;
    for (int e = 0; e < 3; ++e) db[j * 3 + e] += wj * (delta[e] - db[j * 3 + e]);
  }
  double root[3];
  for (int e = 0; e < 3; ++e) root[e] = w.Q[e] + db[e];
  for (int64_t j = 0; j < J; ++j)
    for (int e = 0; e < 3; ++e) w.Q[j * 3 + e] = w.Q[j * 3 + e] + db[j * 3 + e] - root[e];
}

// Step 3: the bone depth of slot s (nothing where step 2's system of the corrected pose is not valid).
void bone_depth_step(Row& w, const CorrectionState& st, const CorrectionParams& p, int64_t s, double first) {
  const int64_t J = st.J;
  const double* c = st.conf + s * J;
  double Rp[3];
  if (!solve_position(w.Q.data(), w.ux.data(), w.uy.data(), c, J, Rp)) return;
  double* len = st.bone_length + s * (J - 1) * 2;  // [bone][0: view-weighted, 1: plain]
  double* cnt = st.bone_count + s * (J - 1) * 2;
  double* bd = st.bone_delta + s * (J - 1);
  // each joint's line of sight ray_j = A_j / A_jz
  for (int64_t j = 0; j < J; ++j) {
    const double z = w.Q[j * 3 + 2] + Rp[2];
    w.front[j] = z > 0.01 * Rp[2];
    for (int e = 0; e < 3; ++e) w.ray[j * 3 + e] = w.front[j] ? (w.Q[j * 3 + e] + Rp[e]) / z : 0.0;
    w.t[j] = 0;
  }
  // running mean of each bone's length where both ends are seen, weighted by how much of it the 2D sees
  for (int64_t j = 1; j < J; ++j) {
    const int64_t par = st.parents[j];
    if (!(c[par] > 0 && c[j] > 0) || !w.front[j]) continue;
    const double* rj = &w.ray[j * 3];
    double v[3];
    for (int e = 0; e < 3; ++e) v[e] = w.Q[j * 3 + e] - w.Q[par * 3 + e];
    const double vv = v[0] * v[0] + v[1] * v[1] + v[2] * v[2];
    if (!(vv > 0)) continue;
    const double vr = v[0] * rj[0] + v[1] * rj[1] + v[2] * rj[2];
    const double rr = rj[0] * rj[0] + rj[1] * rj[1] + rj[2] * rj[2];
    const double seen2d = std::sqrt(std::max(vv - vr * vr / rr, 0.0));  // the extent across the line of sight
    double* lw = &len[2 * (j - 1)];
    double* nw = &cnt[2 * (j - 1)];
    const double L0 = std::min(lw[0], p.bone_view_cap * lw[1]);  // the weight's reference
    const double wt = p.bone_view_power == 0 || !(nw[0] > 0 && nw[1] > 0 && lw[0] > 0 && lw[1] > 0)
                          ? 1.0
                          : std::pow(std::min(1.0, seen2d / L0), p.bone_view_power);
    const double vlen = std::sqrt(vv);
    nw[1] += 1.0;  // the plain mean, every frame alike
    lw[1] += (vlen - lw[1]) / std::min(nw[1], p.bone_horizon);
    if (!(wt > 0)) continue;
    nw[0] += wt;
    lw[0] += wt * (vlen - lw[0]) / std::min(nw[0], p.bone_horizon);
  }
  // the length used: pooled with the mirrored bone
  for (int64_t j = 1; j < J; ++j) {
    const int64_t m = p.bone_symmetry ? st.mirror[j] - 1 : j - 1;
    const double cb = cnt[2 * (j - 1)], lb = len[2 * (j - 1)], cm = cnt[2 * m], lm = len[2 * m];
    const double n = cb + (m != j - 1 ? cm : 0.0);
    w.Lpool[j - 1] = m == j - 1 ? lb : (n > 0 ? (cb * lb + cm * lm) / n : 0.0);
  }
  // each joint moves by t_j mm of depth along its own line of sight, parents first
  const double eps = std::max(p.bone_ema, first);
  for (int64_t j = 1; j < J; ++j) {
    const int64_t par = st.parents[j];
    if (!w.front[j]) continue;  // a joint that is not in front of the camera stays put (t_j = 0)
    const double* rj = &w.ray[j * 3];
    const double tp = w.t[par];
    double v[3];
    for (int e = 0; e < 3; ++e)
      v[e] = (w.Q[j * 3 + e] + Rp[e] + tp * rj[e]) - (w.Q[par * 3 + e] + Rp[e] + tp * w.ray[par * 3 + e]);
    const double rr = rj[0] * rj[0] + rj[1] * rj[1] + rj[2] * rj[2];
    const double vr = v[0] * rj[0] + v[1] * rj[1] + v[2] * rj[2];
    const double L = w.Lpool[j - 1];
    double target = 0;
    if (L > 0) {
      const double perp2 = v[0] * v[0] + v[1] * v[1] + v[2] * v[2] - vr * vr / rr;
      const double h = std::sqrt(std::max(L * L - perp2, 0.0) / rr);
      const double sgn = vr > 0 ? 1.0 : (vr < 0 ? -1.0 : 0.0);
      const double g = std::min(1.0, std::fabs(vr) / std::sqrt(rr) / (p.bone_gate * L));
      target = g * (-vr / rr + sgn * h);
    }
    if (c[par] > 0 && c[j] > 0) bd[j - 1] += eps * std::min(c[par], c[j]) * (target - bd[j - 1]);
    w.t[j] = tp + bd[j - 1];
  }
  for (int64_t j = 1; j < J; ++j)
    for (int e = 0; e < 3; ++e) w.Q[j * 3 + e] += w.t[j] * w.ray[j * 3 + e];
}

// Step 4: the whole pose along its lines of sight by the tracked distance's lead over the EMA'd one.
void distance_step(Row& w, const CorrectionState& st, int64_t s) {
  const int64_t J = st.J;
  const double* ds = st.distance + s * 4;
  double Rp[3];
  if (!(ds[2] >= 1) || !solve_position(w.Q.data(), w.ux.data(), w.uy.data(), st.conf + s * J, J, Rp)) return;
  const double x = Rp[2] + ds[0] - ds[3];
  bool valid = x > 0;
  for (int64_t j = 0; j < J && valid; ++j) {
    const double z = w.Q[j * 3 + 2] + Rp[2];
    valid = z > 0.01 * Rp[2] && w.Q[j * 3 + 2] + x > 0.01 * x;
  }
  if (!valid) return;
  double A[3];
  for (int64_t j = J - 1; j >= 0; --j) {  // root last: it is the reference
    const double k = (w.Q[j * 3 + 2] + x) / (w.Q[j * 3 + 2] + Rp[2]);
    for (int e = 0; e < 3; ++e) {
      const double a = (w.Q[j * 3 + e] + Rp[e]) * k;
      if (j == 0) A[e] = a;
      w.Q[j * 3 + e] = a;
    }
  }
  for (int64_t j = 0; j < J; ++j)
    for (int e = 0; e < 3; ++e) w.Q[j * 3 + e] -= A[e];
}

// Whether slot s's state left finite values or human and camera bounds (step 5).
bool diverged(const CorrectionState& st, int64_t s) {
  const int64_t J = st.J;
  auto bad = [](double v, double bound) { return !(std::fabs(v) <= bound); };  // NaN is bad too
  for (int64_t i = 0; i < J * 3; ++i)
    if (bad(st.lateral[s * J * 3 + i], kMaxOffsetMm)) return true;
  for (int64_t i = 0; i < (J - 1) * 2; ++i)
    if (bad(st.bone_length[s * (J - 1) * 2 + i], kMaxOffsetMm) || !std::isfinite(st.bone_count[s * (J - 1) * 2 + i]))
      return true;
  for (int64_t i = 0; i < J - 1; ++i)
    if (bad(st.bone_delta[s * (J - 1) + i], kMaxOffsetMm)) return true;
  const double* d = st.distance + s * 4;
  if (!std::isfinite(d[1]) || !std::isfinite(d[2])) return true;
  if (d[2] >= 1 && (!(d[0] > 0 && d[0] <= kMaxDistanceMm) || !(d[3] > 0 && d[3] <= kMaxDistanceMm))) return true;
  for (int64_t i = 0; i < 2; ++i)  // the noise estimates: NaN (none yet) or finite and ≥ 0
    if (std::isinf(st.noise_var[s * 2 + i]) || std::isinf(st.pixel_var[s * 2 + i]) ||
        st.noise_var[s * 2] < 0 || st.pixel_var[s * 2] < 0)
      return true;
  return false;
}

}  // namespace

void reset_correction_slot(const CorrectionState& st, int64_t s) {
  const int64_t J = st.J;
  std::fill(st.lateral + s * J * 3, st.lateral + (s + 1) * J * 3, 0.0);
  std::fill(st.bone_length + s * (J - 1) * 2, st.bone_length + (s + 1) * (J - 1) * 2, 0.0);
  std::fill(st.bone_count + s * (J - 1) * 2, st.bone_count + (s + 1) * (J - 1) * 2, 0.0);
  std::fill(st.bone_delta + s * (J - 1), st.bone_delta + (s + 1) * (J - 1), 0.0);
  std::fill(st.noise_hist + s * 2 * J * 2, st.noise_hist + (s + 1) * 2 * J * 2, kNaN);
  std::fill(st.noise_var + s * 2, st.noise_var + (s + 1) * 2, kNaN);
  std::fill(st.pixel_hist + s * 3 * J * 2, st.pixel_hist + (s + 1) * 3 * J * 2, kNaN);
  std::fill(st.pixel_var + s * 2, st.pixel_var + (s + 1) * 2, kNaN);
  std::fill(st.distance + s * 4, st.distance + (s + 1) * 4, 0.0);
}

void alpha_beta_gains(double lambda, double* alpha, double* beta) {
  if (!(lambda > 0)) {
    *alpha = *beta = 0;
    return;
  }
  const double r = (4 + lambda - std::sqrt(8 * lambda + lambda * lambda)) / 4;
  *alpha = 1 - r * r;
  *beta = 2 * (2 - *alpha) - 4 * std::sqrt(std::max(1 - *alpha, 0.0));
}

double steady_state_gain(double lambda) {
  if (!(lambda > 0)) return 0.0;
  if (lambda > 1e12) return 1.0;  // K = 1 − O(1/λ); also keeps λ² finite
  const double root = std::sqrt(lambda * lambda + 4 * lambda);
  return (lambda + root) / (2 + lambda + root);
}

void correct_cpu(float* pose, const int64_t* rows, const int64_t* slots, const int64_t* count, int64_t R,
                 const CorrectionState& st, const CorrectionParams& p, uint8_t* reset) {
  const int64_t J = st.J;
  Row w(J);
  for (int64_t r = 0; r < R; ++r) {
    const int64_t s = slots[r];
    const double first = 1.0 / ((double)count[r] + 1.0);  // running means over a stream's first frames
    float* P = pose + rows[r] * J * 3;
    rays(w, P, st, p, s);
    lateral_step(w, st, p, s, first);
    if (p.bone_depth) bone_depth_step(w, st, p, s, first);
    if (p.distance) distance_step(w, st, s);
    bool ok = true;
    for (int64_t j = 0; j < J * 3 && ok; ++j) ok = std::fabs(w.Q[j]) <= kMaxOffsetMm * 4;  // finite, and a body
    reset[r] = !ok || diverged(st, s);
    if (reset[r]) {
      reset_correction_slot(st, s);  // P keeps the refiner's pose
      continue;
    }
    for (int64_t j = 0; j < J; ++j)
      for (int e = 0; e < 3; ++e) P[j * 3 + e] = (float)w.Q[j * 3 + e];
  }
}

}  // namespace posert
