"""The control-loop API: results into preallocated buffers, a callback per tick, the tick's own
cost and the capture→output latency."""

import time

import numpy as np
import pytest

from posert.runtime import Pipeline


def test_tick_into_preallocated_buffers_equals_a_fresh_result(real_views):
    px = real_views[0]
    calls = []
    with Pipeline(backend="native", max_streams=4, threads=1) as a, \
            Pipeline(backend="native", max_streams=4, threads=1) as b:
        for p in (a, b):
            for k in range(3):
                p.add_stream(k, 1000, 1000)
        b.on_tick = calls.append
        buf = b.result_buffers()
        refined_buf = buf.refined.base
        with pytest.raises(ValueError, match="result_buffers"):
            b.tick(out=a.tick())
        for t in range(30):
            ids = [0, 1, 2] if t % 3 else [2, 0]
            now = time.time()
            for p in (a, b):
                p.push_many(ids, px[ids, t], None, [now] * len(ids))
            want, got = a.tick(), b.tick(out=buf)
            assert got is buf and calls[-1] is buf and got.refined.base is refined_buf  # no new result arrays
            assert got.stream_ids == want.stream_ids
            for f in ("refined", "lifted", "world", "timestamps", "health", "valid", "dropped", "seen"):
                np.testing.assert_array_equal(getattr(got, f), getattr(want, f), err_msg=f)
            latency = got.output_time - got.timestamps  # capture → output, s (wall-clock timestamps)
            assert np.all(latency >= 0) and np.all(latency < 1.0)
            assert 0 < got.latency_ms["tick"] < 1e3 * latency.max() + 1e-6
    assert len(calls) == 30
