#include "reprojection.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace posert {

void reproject_cpu(float* pose, int64_t J, const int64_t* rows, const int64_t* slots, int64_t R,
                   const double* px, const double* conf, const double* K, const double* dist, double* dbar,
                   const double* weight, int iterations) {
  std::vector<double> ux(J), uy(J), delta(J * 3);
  for (int64_t r = 0; r < R; ++r) {
    const int64_t s = slots[r];
    float* P = pose + rows[r] * J * 3;
    const double* k = K + s * 9;
    const double* d = dist + s * 5;
    const double* c = conf + s * J;
    const double fx = k[0], skew = k[1], cx = k[2], fy = k[4], cy = k[5];
    const double k1 = d[0], k2 = d[1], p1 = d[2], p2 = d[3], k3 = d[4];
    const int iters = (k1 == 0 && k2 == 0 && p1 == 0 && p2 == 0 && k3 == 0) ? 0 : iterations;  // pinhole: exact
    double sw = 0, a = 0, b = 0, cc = 0, bp = 0, bq = 0, bu = 0;
    int visible = 0;
    for (int64_t j = 0; j < J; ++j) {
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
      const double w = c[j], X = P[j * 3], Y = P[j * 3 + 1], Z = P[j * 3 + 2];
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
    // normal equations [[sw, 0, −a], [0, sw, −b], [−a, −b, cc]] R = [bp, bq, bu]
    const double D = sw * cc - a * a - b * b;  // det = sw · D
    bool ok = visible >= 2 && D > 1e-12 * sw * sw;
    double Rx = 0, Ry = 0, Rz = 0;
    if (ok) {
      Rz = (sw * bu + a * bp + b * bq) / D;
      Rx = (bp + a * Rz) / sw;
      Ry = (bq + b * Rz) / sw;
      ok = Rz > 0;
    }
    for (int64_t j = 0; ok && j < J; ++j)
      if (c[j] > 0 && !(P[j * 3 + 2] + Rz > 0.01 * Rz)) ok = false;
    for (int64_t j = 0; j < J; ++j) {
      const bool on = ok && c[j] > 0;
      const double z = P[j * 3 + 2] + Rz;
      delta[j * 3] = on ? ux[j] * z - Rx - P[j * 3] : 0.0;
      delta[j * 3 + 1] = on ? uy[j] * z - Ry - P[j * 3 + 1] : 0.0;
      delta[j * 3 + 2] = 0.0;
    }
    double* db = dbar + s * J * 3;
    for (int64_t j = 0; j < J; ++j) {
      const double w = c[j] > 0 ? weight[r] * c[j] : 0.0;
      for (int e = 0; e < 3; ++e) db[j * 3 + e] += w * (delta[j * 3 + e] - db[j * 3 + e]);
    }
    double root[3];
    for (int e = 0; e < 3; ++e) root[e] = (double)P[e] + db[e];
    for (int64_t j = 0; j < J; ++j)
      for (int e = 0; e < 3; ++e) P[j * 3 + e] = (float)((double)P[j * 3 + e] + db[j * 3 + e] - root[e]);
  }
}

}  // namespace posert
