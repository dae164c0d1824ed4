"""docs/serve.md's C helpers (posert_wire.h) against posert.serve.wire: the header is compiled from
the page itself, parses a pose record Python wrote and writes a keypoints record Python reads."""

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from posert.serve.wire import Keypoints, Pose

DOC = Path(__file__).parents[2] / "docs" / "serve.md"

HARNESS = r"""
#include <stdio.h>
#include "posert_wire.h"

int main(int argc, char **argv) {
  uint8_t buf[1024], out[512];
  FILE *f = fopen(argv[1], "rb");
  size_t len = fread(buf, 1, sizeof buf, f);
  fclose(f);
  pp3d_t p;
  int rc = pp3d_parse(buf, len, &p);
  printf("%d %u %u %.17g %.17g %.9g %u %u %s %.9g %.9g %.9g\n", rc, p.health, p.valid, p.capture_time,
         p.output_time, p.tick_ms, p.dropped, p.seen, p.stream, p.refined[16][2], p.world[3][1], p.lifted[0][0]);
  buf[4] = 1; /* the version without seen */
  printf("%d ", pp3d_parse(buf, len, &p));
  buf[4] = 2;
  printf("%d\n", pp3d_parse(buf, len - 1, &p)); /* cut short */
  float kp[17][2], conf[17];
  for (int j = 0; j < 17; ++j) {
    kp[j][0] = 10.0f * j + 0.25f;
    kp[j][1] = 720.0f - 0.5f * j;
    conf[j] = (j % 4) ? 0.9f : 0.0f;
  }
  size_t n = pk2d(out, "cam7", 12.5, 1280, 720, kp, conf);
  f = fopen(argv[2], "wb");
  fwrite(out, 1, n, f);
  fclose(f);
  return 0;
}
"""


def test_the_documented_c_records_match_the_python_ones(tmp_path, real_views):
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        pytest.skip("no C compiler")
    blocks = re.findall(r"```c\n(.*?)```", DOC.read_text(), re.S)
    (header,) = [b for b in blocks if b.startswith("/* posert_wire.h")]
    (tmp_path / "posert_wire.h").write_text(header)
    (tmp_path / "harness.c").write_text(HARNESS)
    exe = tmp_path / "harness"
    subprocess.run([cc, "-std=c99", "-Wall", "-Werror", "-o", str(exe), str(tmp_path / "harness.c")], check=True,
                   cwd=tmp_path)
    gt = real_views[1] * 1000.0  # (C, T, 17, 3) mm, a real pose per camera
    seen = np.ones(17, bool)
    seen[[3, 6, 13]] = False
    pose = Pose("head_cam", 1765.25, 1765.5, 0.71, 1, False, 3, gt[0, 40], gt[1, 40], gt[2, 40], seen)
    (tmp_path / "pose.bin").write_bytes(pose.encode())
    run = subprocess.run([str(exe), str(tmp_path / "pose.bin"), str(tmp_path / "kp.bin")], check=True,
                         capture_output=True, text=True)
    first, second = run.stdout.splitlines()
    f = first.split()
    assert f[0] == "0" and (int(f[1]), int(f[2])) == (1, 0) and float(f[3]) == 1765.25 and float(f[4]) == 1765.5
    assert float(f[5]) == pytest.approx(0.71) and int(f[6]) == 3 and f[8] == "head_cam"
    assert int(f[7]) == sum(1 << j for j in range(17) if seen[j])
    np.testing.assert_allclose([float(v) for v in f[9:]], [gt[0, 40, 16, 2], gt[1, 40, 3, 1], gt[2, 40, 0, 0]],
                               rtol=1e-6)
    assert second == "-1 -1"  # a v1 record, and a record cut short, are refused
    k = Keypoints.decode((tmp_path / "kp.bin").read_bytes())
    assert (k.stream, k.capture_time, k.width, k.height, k.camera) == ("cam7", 12.5, 1280, 720, None)
    np.testing.assert_array_equal(k.kp2d[:, 0], 10.0 * np.arange(17) + 0.25)
    np.testing.assert_array_equal(k.conf > 0, np.arange(17) % 4 != 0)
