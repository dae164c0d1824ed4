// Validation and normalisation of the 2D keypoint frames a stream is given (Pipeline.push_many,
// posert/runtime/streams.py), in one pass over the batch.
#pragma once
#include <cstdint>

namespace posert {

// kp (B, J, 2) float64 pixels, conf (B, J) float64 or null (all 1), size (S, 2) float32 (width,
// height) of every stream slot, slots (B,) → out (B, J, 3) float32 = (x / w · 2 − 1, y / w · 2 − h / w,
// conf) (VideoPose3D's normalize_screen, with the same float64 operations as the NumPy form, so the
// result is identical), 0 for the coordinates of joints with confidence 0. Returns the first problem:
// code 0 = every frame is valid; 1 = frame `frame` has a confidence that is not finite or outside
// [0, 1] (checked for every frame first); 2 = frame `frame` has a NaN/inf coordinate on a joint with
// confidence > 0. Nothing is read past the first problem; slots must be in [0, S).
struct FrameProblem {
  int code;
  int64_t frame;
};
FrameProblem prepare_frames_cpu(const double* kp, const double* conf, const float* size, const int64_t* slots, int64_t B,
                           int64_t J, float* out);

}  // namespace posert
