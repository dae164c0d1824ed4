// Validation and normalisation of the 2D keypoint frames a stream is given (Pipeline.push_many,
// posert/runtime/streams.py), in one pass over the batch: the input contract of docs/design.md.
#pragma once
#include <cstdint>

namespace posert {

// The first problem of a batch: code 0 = every frame is valid; 1 = frame `frame` has a confidence
// that is not finite or outside [0, 1] (checked for every frame first); 2 = frame `frame` has a
// NaN/inf coordinate on a joint with confidence > 0; 3 = a coordinate of a joint with confidence > 0
// is finite but not representable in float32 (|v| > 3.4e38).
struct FrameProblem {
  int code;
  int64_t frame;
};

// kp (B, J, 2) float64 pixels, conf (B, J) float64 or null (all 1), size (S, 2) float32 (width,
// height) of every stream slot, slots (B,) → out (B, J, 3) float32 = (x / w · 2 − 1, y / w · 2 − h / w,
// conf) (VideoPose3D's normalize_screen, the same float64 operations as the NumPy form, so the result
// is identical), 0 for the coordinates of joints with confidence 0. A visible joint farther than
// `margin` image widths (x) or heights (y) outside the image is out of view: it becomes a missing
// joint (confidence 0) and dropped[b] counts it. Nothing is written past the first problem; slots
// must be in [0, S).
FrameProblem prepare_frames_cpu(const double* kp, const double* conf, const float* size, const int64_t* slots,
                                int64_t B, int64_t J, double margin, float* out, int32_t* dropped);

// out (n, N) = b (n, K) · A (K, N) + c (N,), float32, each row on its own in a fixed order of
// operations, so a row's result does not depend on the other rows (a batch-invariant matrix product).
void affine_rows_cpu(const float* b, const float* A, const float* c, int64_t n, int64_t K, int64_t N, float* out);

}  // namespace posert
