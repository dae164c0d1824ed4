#include "reprojection.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace posert {

namespace {

// The least-squares position R of a root-relative pose Q (J × 3, double) on the rays (ux, uy) of its
// visible joints (c > 0), with the validity checks of reprojection.h step 2. Returns false (R = 0)
// when the row gets no correction.
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

// One update of DistanceFilter's tracker for stream state st (x, v, n) with the measurement z; returns x.
double track_distance(double* st, double z, double alpha, double beta) {
  const double n = st[2];
  if (!(n >= 1)) {
    st[0] = z;
    st[1] = 0;
    st[2] = 1;
    return z;
  }
  const double pred = st[0] + st[1], e = z - pred;
  st[0] = pred + alpha * e;
  st[1] += beta * e;
  st[2] = n + 1;
  return st[0];
}

// LateralNoise's running σ² from this frame's n squared differences a2 (white noise of variance σ²
// per axis: |a|² ~ k σ² χ²₂, median k σ² · 2 ln 2): with ≥ min_joints of them, s² = median / (2 k ln 2)
// and var ← s² (first time) or var + max(tau, 1 / seen) (s² − var). a2 is reordered.
void update_noise(std::vector<double>& a2, int64_t n, double k, const LateralNoise& noise, double& var,
                  double& seen) {
  if (!(n >= noise.min_joints && n > 0)) return;
  std::sort(a2.begin(), a2.begin() + n);
  const double med = n % 2 ? a2[n / 2] : 0.5 * (a2[n / 2 - 1] + a2[n / 2]);
  const double s2 = med / (k * 2.0 * std::log(2.0));
  seen = std::isnan(var) ? 1.0 : seen + 1.0;
  var = std::isnan(var) ? s2 : var + std::max(noise.tau, 1.0 / seen) * (s2 - var);
}

}  // namespace

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

void reproject_cpu(float* pose, int64_t J, const int64_t* rows, const int64_t* slots, int64_t R,
                   const double* px, const double* conf, const double* K, const double* dist, double* dbar,
                   const double* weight, int iterations, const BoneDepth* bones, const LateralNoise* noise,
                   const DistanceFilter* distance) {
  std::vector<double> ux(J), uy(J), Q(J * 3), ray(J * 3), t(J), Lpool(J > 0 ? J - 1 : 0), D(J * 2), a2(J);
  std::vector<char> on(J);
  const double nan = std::nan("");
  std::vector<char> front(J);
  for (int64_t r = 0; r < R; ++r) {
    const int64_t s = slots[r];
    float* P = pose + rows[r] * J * 3;
    const double* k = K + s * 9;
    const double* d = dist + s * 5;
    const double* c = conf + s * J;
    const double fx = k[0], skew = k[1], cx = k[2], fy = k[4], cy = k[5];
    const double k1 = d[0], k2 = d[1], p1 = d[2], p2 = d[3], k3 = d[4];
    const int iters = (k1 == 0 && k2 == 0 && p1 == 0 && p2 == 0 && k3 == 0) ? 0 : iterations;  // pinhole: exact
    for (int64_t j = 0; j < J; ++j) {
      ux[j] = uy[j] = 0;
      for (int e = 0; e < 3; ++e) Q[j * 3 + e] = P[j * 3 + e];
      if (!(c[j] > 0)) continue;
      const double yd = (px[(s * J + j) * 2 + 1] - cy) / fy;
      const double xd = (px[(s * J + j) * 2] - cx - skew * yd) / fx;
      double x = xd, y = yd;
      for (int it = 0; it < iters; ++it) {
        const double r2 = x * x + y * y;
        const double radial = 1 + r2 * (k1 + r2 * (k2 + r2 * k3));
        const double nx = (xd - (2 * p1 * x * y + p2 * (r2 + 2 * x * x))) / radial;
        const double ny = (yd - (p1 * (r2 + 2 * y * y) + 2 * p2 * x * y)) / radial;
        x = nx;
        y = ny;
      }
      ux[j] = x;
      uy[j] = y;
    }
    double Rp[3];
    const bool ok = solve_position(Q.data(), ux.data(), uy.data(), c, J, Rp);
    double* db = dbar + s * J * 3;
    for (int64_t j = 0; j < J; ++j) {
      on[j] = ok && c[j] > 0;
      const double z = Q[j * 3 + 2] + Rp[2];
      D[j * 2] = on[j] ? ux[j] * z - Rp[0] - Q[j * 3] : 0.0;
      D[j * 2 + 1] = on[j] ? uy[j] * z - Rp[1] - Q[j * 3 + 1] : 0.0;
    }
    double beta = weight[r];
    if (noise != nullptr) {  // the 2D's noise from this stream's innovations (LateralNoise)
      double* h = noise->hist + s * 2 * J * 2;  // [frame before last, last][joint][x, y] px
      double& var = noise->var[s * 2];
      double& seen = noise->var[s * 2 + 1];  // frames that updated var
      int64_t n = 0;
      for (int64_t j = 0; j < J; ++j) {
        const double z = Q[j * 3 + 2] + Rp[2];
        const double u[2] = {on[j] ? D[j * 2] * fx / z : nan, on[j] ? D[j * 2 + 1] * fx / z : nan};
        double* h0 = h + j * 2;
        double* h1 = h + (J + j) * 2;
        if (on[j] && std::isfinite(h0[0]) && std::isfinite(h1[0])) {
          const double ax = u[0] - 2 * h1[0] + h0[0], ay = u[1] - 2 * h1[1] + h0[1];
          a2[n++] = ax * ax + ay * ay;
        }
        h0[0] = h1[0];
        h0[1] = h1[1];
        h1[0] = u[0];
        h1[1] = u[1];
      }
      update_noise(a2, n, 6.0, *noise, var, seen);
      double v = var;
      if (noise->raw != nullptr) {  // the keypoints' own third differences
        double* hr = noise->raw + s * 3 * J * 2;  // [3 frames ago, 2 ago, last][joint][x, y] px
        double& rvar = noise->raw_var[s * 2];
        double& rseen = noise->raw_var[s * 2 + 1];
        int64_t m = 0;
        for (int64_t j = 0; j < J; ++j) {
          const double* p = px + (s * J + j) * 2;
          double* h0 = hr + j * 2;
          double* h1 = hr + (J + j) * 2;
          double* h2 = hr + (2 * J + j) * 2;
          const bool vis = c[j] > 0;
          if (vis && std::isfinite(h0[0]) && std::isfinite(h1[0]) && std::isfinite(h2[0])) {
            const double bx = p[0] - 3 * h2[0] + 3 * h1[0] - h0[0], by = p[1] - 3 * h2[1] + 3 * h1[1] - h0[1];
            a2[m++] = bx * bx + by * by;
          }
          for (int e = 0; e < 2; ++e) {
            h0[e] = h1[e];
            h1[e] = h2[e];
            h2[e] = vis ? p[e] : nan;
          }
        }
        update_noise(a2, m, 20.0, *noise, rvar, rseen);
        if (std::isnan(v) || rvar < v) v = rvar;
      }
      const double gain = std::isnan(v) ? noise->fallback : steady_state_gain(noise->q / std::max(v, 1e-300));
      beta = std::max(beta, gain);
    }
    if (ok && distance != nullptr) {  // step 6's tracker, and the distance the EMA below leaves the pose at
      double* st = distance->state + s * 4;
      const bool fresh = !(st[2] >= 1);
      track_distance(st, Rp[2], distance->alpha, distance->beta);
      st[3] = fresh ? Rp[2] : st[3] + beta * (Rp[2] - st[3]);
    }
    for (int64_t j = 0; j < J; ++j) {
      const double delta[3] = {D[j * 2], D[j * 2 + 1], 0.0};
      const double w = ok && c[j] > 0 ? beta * c[j] : 0.0;
      for (int e = 0; e < 3; ++e) db[j * 3 + e] += w * (delta[e] - db[j * 3 + e]);
    }
    double root[3];
    for (int e = 0; e < 3; ++e) root[e] = Q[e] + db[e];
    for (int64_t j = 0; j < J; ++j)
      for (int e = 0; e < 3; ++e) Q[j * 3 + e] = Q[j * 3 + e] + db[j * 3 + e] - root[e];
    if (bones != nullptr && solve_position(Q.data(), ux.data(), uy.data(), c, J, Rp)) {
      double* len = bones->length + s * (J - 1) * 2;  // [bone][0: view-weighted, 1: plain]
      double* cnt = bones->count + s * (J - 1) * 2;
      double* bd = bones->delta + s * (J - 1);
      // each joint's line of sight ray_j = A_j / A_jz
      for (int64_t j = 0; j < J; ++j) {
        const double z = Q[j * 3 + 2] + Rp[2];
        front[j] = z > 0.01 * Rp[2];
        for (int e = 0; e < 3; ++e) ray[j * 3 + e] = front[j] ? (Q[j * 3 + e] + Rp[e]) / z : 0.0;
        t[j] = 0;
      }
      // running mean of each bone's length where both ends are seen, weighted by how much of it the 2D sees
      for (int64_t j = 1; j < J; ++j) {
        const int64_t p = bones->parents[j];
        if (!(c[p] > 0 && c[j] > 0) || !front[j]) continue;
        const double* rj = &ray[j * 3];
        double v[3];
        for (int e = 0; e < 3; ++e) v[e] = Q[j * 3 + e] - Q[p * 3 + e];
        const double vv = v[0] * v[0] + v[1] * v[1] + v[2] * v[2];
        if (!(vv > 0)) continue;
        const double vr = v[0] * rj[0] + v[1] * rj[1] + v[2] * rj[2];
        const double rr = rj[0] * rj[0] + rj[1] * rj[1] + rj[2] * rj[2];
        const double seen2d = std::sqrt(std::max(vv - vr * vr / rr, 0.0));  // the extent across the line of sight
        double* lw = &len[2 * (j - 1)];
        double* nw = &cnt[2 * (j - 1)];
        const double L0 = std::min(lw[0], bones->view_cap * lw[1]);  // the weight's reference
        const double w = bones->view_power == 0 || !(nw[0] > 0 && nw[1] > 0 && lw[0] > 0 && lw[1] > 0)
                             ? 1.0
                             : std::pow(std::min(1.0, seen2d / L0), bones->view_power);
        const double vlen = std::sqrt(vv);
        nw[1] += 1.0;  // the plain mean, every frame alike
        lw[1] += (vlen - lw[1]) / std::min(nw[1], bones->horizon);
        if (!(w > 0)) continue;
        nw[0] += w;
        lw[0] += w * (vlen - lw[0]) / std::min(nw[0], bones->horizon);
      }
      // the length used: pooled with the mirrored bone
      for (int64_t j = 1; j < J; ++j) {
        const int64_t m = bones->mirror != nullptr ? bones->mirror[j] - 1 : j - 1;
        const double cb = cnt[2 * (j - 1)], lb = len[2 * (j - 1)], cm = cnt[2 * m], lm = len[2 * m];
        const double n = cb + (m != j - 1 ? cm : 0.0);
        Lpool[j - 1] = m == j - 1 ? lb : (n > 0 ? (cb * lb + cm * lm) / n : 0.0);
      }
      // each joint moves by t_j mm of depth along its own line of sight, parents first
      for (int64_t j = 1; j < J; ++j) {
        const int64_t p = bones->parents[j];
        if (!front[j]) continue;  // a joint that is not in front of the camera stays put (t_j = 0)
        const double* rj = &ray[j * 3];
        const double tp = t[p];
        double v[3];
        for (int e = 0; e < 3; ++e)
          v[e] = (Q[j * 3 + e] + Rp[e] + tp * rj[e]) - (Q[p * 3 + e] + Rp[e] + tp * ray[p * 3 + e]);
        const double rr = rj[0] * rj[0] + rj[1] * rj[1] + rj[2] * rj[2];
        const double vr = v[0] * rj[0] + v[1] * rj[1] + v[2] * rj[2];
        const double L = Lpool[j - 1];
        double target = 0;
        if (L > 0) {
          const double perp2 = v[0] * v[0] + v[1] * v[1] + v[2] * v[2] - vr * vr / rr;
          const double h = std::sqrt(std::max(L * L - perp2, 0.0) / rr);
          const double sgn = vr > 0 ? 1.0 : (vr < 0 ? -1.0 : 0.0);
          const double g = std::min(1.0, std::fabs(vr) / std::sqrt(rr) / (bones->gate * L));
          target = g * (-vr / rr + sgn * h);
        }
        const double eps = bones->ema != nullptr ? bones->ema[r] : weight[r];
        if (c[p] > 0 && c[j] > 0) bd[j - 1] += eps * std::min(c[p], c[j]) * (target - bd[j - 1]);
        t[j] = tp + bd[j - 1];
      }
      for (int64_t j = 1; j < J; ++j)
        for (int e = 0; e < 3; ++e) Q[j * 3 + e] += t[j] * ray[j * 3 + e];
    }
    if (distance != nullptr && distance->state[s * 4 + 2] >= 1 && solve_position(Q.data(), ux.data(), uy.data(), c, J, Rp)) {
      // step 6: the whole pose along the depth axis by the tracked distance's lead over the EMA'd one
      const double x = Rp[2] + distance->state[s * 4] - distance->state[s * 4 + 3];
      bool valid = x > 0;
      for (int64_t j = 0; j < J && valid; ++j) {
        const double z = Q[j * 3 + 2] + Rp[2];
        valid = z > 0.01 * Rp[2] && Q[j * 3 + 2] + x > 0.01 * x;
      }
      if (valid) {
        double A[3];
        for (int64_t j = J - 1; j >= 0; --j) {  // root last: it is the reference
          const double k = (Q[j * 3 + 2] + x) / (Q[j * 3 + 2] + Rp[2]);
          for (int e = 0; e < 3; ++e) {
            const double a = (Q[j * 3 + e] + Rp[e]) * k;
            if (j == 0) A[e] = a;
            Q[j * 3 + e] = a;
          }
        }
        for (int64_t j = 0; j < J; ++j)
          for (int e = 0; e < 3; ++e) Q[j * 3 + e] -= A[e];
      }
    }
    for (int64_t j = 0; j < J; ++j)
      for (int e = 0; e < 3; ++e) P[j * 3 + e] = (float)Q[j * 3 + e];
  }
}

}  // namespace posert
