"""A hypothesis state machine over the public streaming API (add_stream, push, push_many, tick,
remove_stream) with good, degenerate and bad input on several streams at once.

Two pipelines run side by side: the one under test gets every call; a control pipeline gets only
the calls of the healthy streams. Healthy streams must come out of both bit for bit the same
whatever the others do (a bad call raises before writing anything; a degenerate stream, out of
view, teleporting, at the edge of the input contract, touches no other stream; a slot's next
stream starts clean), and every pose the pipeline under test reports is finite and possible.
``benchmarks/fuzz.py`` runs the same machine longer and counts the calls.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from posert.camera import ring_rig
from posert.data.dataset import center_on_floor, render
from posert.runtime import Pipeline
from posert.runtime.guard import impossible
from tests.conftest import DATA

#: Stream ids: any hashable, None included.
IDS = (None, 0, "a", ("cam", 1), 2.5, b"x")
SLOTS = 4
#: Calls made and how they ended, by rule: ``benchmarks/fuzz.py`` reports them.
CALLS: Counter = Counter()


def _views() -> np.ndarray:
    with np.load(DATA / "cmu_01_01.npz") as z:
        world = center_on_floor(z["cmu_01_01"][:400])
    return np.stack([render(world, c)[0] for c in ring_rig()]).astype(np.float64)  # (4, 400, 17, 2) px


def _degenerate(kind: str, kp: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A frame the input contract accepts that no healthy stream sends."""
    conf = np.ones(17)
    kp = kp.copy()
    if kind == "nobody":
        conf[:] = 0.0
        kp[:] = np.nan
    elif kind == "few":
        conf[rng.permutation(17)[:14]] = 0.0
    elif kind == "far":
        kp[rng.integers(17, size=3)] = rng.choice([-1e30, 1e30, 3e5], size=(3, 2))
    elif kind == "edge":
        kp[:] = rng.uniform(-1e6, 1e6, size=(17, 2))
    elif kind == "teleport":
        kp += rng.uniform(-800, 800, size=2)
    elif kind == "collapsed":
        kp[:] = kp[0]
    return kp, conf


def _bad(kind: str, kp: np.ndarray) -> tuple[object, object, type[Exception]]:
    """(kp2d, conf, the exception push must raise) for input the contract refuses."""
    kp = kp.copy()
    if kind == "nan":
        kp[4, 1] = np.nan
        return kp, None, ValueError
    if kind == "beyond_float32":
        kp[2, 0] = 1e300
        return kp, None, ValueError
    if kind == "int":
        return kp.astype(np.int32), None, TypeError
    if kind == "complex":
        return kp.astype(np.complex128), None, TypeError
    if kind == "shape":
        return kp[:16], None, ValueError
    if kind == "conf":
        return kp, np.full(17, 1.5), ValueError
    return kp, np.full(17, np.nan), ValueError  # "conf_nan"


class PipelineMachine(RuleBasedStateMachine):
    backend = "native"
    pipes: dict = {}
    views: np.ndarray | None = None

    def __init__(self):
        super().__init__()
        cls = type(self)
        if cls.views is None:
            cls.views = _views()
        if cls.backend not in cls.pipes:
            cls.pipes[cls.backend] = tuple(Pipeline(backend=cls.backend, max_streams=SLOTS, threads=1, workers=1)
                                           for _ in range(2))
        self.sut, self.ctl = cls.pipes[cls.backend]
        for p in (self.sut, self.ctl):
            p.adopt()
            if p.streams:
                p.tick()  # a failed example's frames
                for s in list(p.streams):
                    p.remove_stream(s)
        self.streams = {}  # id → [camera, next frame, healthy, last timestamp or None]
        self.pending = set()
        self.clock = 0
        self.rng = np.random.default_rng(0)

    def _frame(self, sid):
        cam, f, *_ = self.streams[sid]
        return self.views[cam, f % self.views.shape[1]]

    @precondition(lambda self: len(self.streams) < SLOTS)
    @rule(data=st.data(), cam=st.integers(0, 3), healthy=st.booleans())
    def add(self, data, cam, healthy):
        sid = data.draw(st.sampled_from([s for s in IDS if s not in self.streams]))
        self.sut.add_stream(sid, 1000, 1000)
        if healthy:
            self.ctl.add_stream(sid, 1000, 1000)
        self.streams[sid] = [cam, int(self.rng.integers(300)), healthy, None]
        CALLS["add"] += 1

    @precondition(lambda self: self.streams)
    @rule(data=st.data())
    def remove(self, data):
        sid = data.draw(st.sampled_from(list(self.streams)))
        self.sut.remove_stream(sid)
        if self.streams.pop(sid)[2]:
            self.ctl.remove_stream(sid)
        self.pending.discard(sid)
        CALLS["remove"] += 1

    def _push(self, sid, kp, conf):
        t = self.clock / 50
        self.sut.push(sid, kp, conf, t)
        if self.streams[sid][2]:
            self.ctl.push(sid, kp, conf, t)
        self.streams[sid][1] += 1
        self.streams[sid][3] = t
        self.pending.add(sid)

    @precondition(lambda self: any(s not in self.pending for s in self.streams))
    @rule(data=st.data())
    def push_good(self, data):
        sid = data.draw(st.sampled_from([s for s in self.streams if s not in self.pending]))
        self._push(sid, self._frame(sid), None)
        CALLS["push: good"] += 1

    @precondition(lambda self: any(s not in self.pending for s in self.streams))
    @rule()
    def push_many_good(self):
        """Every stream that waits gets its next real frame in one push_many, as a camera loop does."""
        ids = [s for s in self.streams if s not in self.pending]
        kp = np.stack([self._frame(s) for s in ids])
        t = self.clock / 50
        self.sut.push_many(ids, kp, None, [t] * len(ids))
        mine = [k for k, s in enumerate(ids) if self.streams[s][2]]
        if mine:
            self.ctl.push_many([ids[k] for k in mine], kp[mine], None, [t] * len(mine))
        for s in ids:
            self.streams[s][1] += 1
            self.streams[s][3] = t
            self.pending.add(s)
        CALLS["push_many: good"] += 1

    @precondition(lambda self: any(not v[2] and s not in self.pending for s, v in self.streams.items()))
    @rule(data=st.data(), kind=st.sampled_from(["nobody", "few", "far", "edge", "teleport", "collapsed"]))
    def push_degenerate(self, data, kind):
        sid = data.draw(st.sampled_from([s for s, v in self.streams.items() if not v[2] and s not in self.pending]))
        self._push(sid, *_degenerate(kind, self._frame(sid), self.rng))
        CALLS[f"push: degenerate {kind}"] += 1

    @rule(sid=st.sampled_from(IDS))
    def unknown_or_refused(self, sid):
        with pytest.raises(KeyError):
            self.sut.push(("nobody", sid), self.views[0, 0])
        with pytest.raises(KeyError):
            self.sut.remove_stream(("nobody", sid))
        if sid in self.streams or len(self.streams) == SLOTS:
            with pytest.raises(ValueError):  # the id exists, or no slot is free
                self.sut.add_stream(sid, 1000, 1000)
        CALLS["unknown stream or refused add"] += 1

    @precondition(lambda self: self.streams)
    @rule(data=st.data(), kind=st.sampled_from(["nan", "beyond_float32", "int", "complex", "shape", "conf",
                                                "conf_nan", "again"]))
    def push_bad(self, data, kind):
        sid = data.draw(st.sampled_from(list(self.streams)))
        if kind == "again":  # a second frame before the tick, or a timestamp that does not increase
            last = self.streams[sid][3]
            if sid not in self.pending and last is None:
                return
            t = self.clock / 50 if sid in self.pending else last
            with pytest.raises(ValueError):
                self.sut.push(sid, self._frame(sid), None, t)
        else:
            kp, conf, err = _bad(kind, self._frame(sid))
            with pytest.raises((err, ValueError) if sid in self.pending else err):  # or: already has a frame
                self.sut.push(sid, kp, conf, self.clock / 50)
        CALLS[f"push: bad {kind}"] += 1

    @precondition(lambda self: sum(s not in self.pending for s in self.streams) >= 2)
    @rule(data=st.data(), kind=st.sampled_from(["nan", "beyond_float32", "conf"]))
    def push_many_with_one_bad_frame(self, data, kind):
        free = [s for s in self.streams if s not in self.pending]
        ids = data.draw(st.permutations(free))[:2]
        kp, conf, _ = _bad(kind, self._frame(ids[1]))
        good = self._frame(ids[0])
        c = np.ones((2, 17)) if conf is None else np.stack([np.ones(17), conf])
        with pytest.raises(ValueError):
            self.sut.push_many(ids, np.stack([good, kp]), c, [self.clock / 50] * 2)
        CALLS["push_many: one bad frame"] += 1

    @rule()
    def tick(self):
        got, want = self.sut.tick(), self.ctl.tick()
        self.clock += 1
        assert sorted(map(repr, got.stream_ids)) == sorted(repr(s) for s in self.pending)
        assert np.isfinite(got.refined).all() and np.isfinite(got.lifted).all()
        assert not impossible(got.refined).any()
        for i, sid in enumerate(want.stream_ids):
            j = got.stream_ids.index(sid)
            assert got.refined[j].tobytes() == want.refined[i].tobytes(), sid
            assert got.lifted[j].tobytes() == want.lifted[i].tobytes(), sid
            assert got.health[j] == want.health[i]
        self.pending.clear()
        CALLS["tick"] += 1

    @invariant()
    def streams_are_known(self):
        assert sorted(map(repr, self.sut.streams)) == sorted(map(repr, self.streams))


def machine(backend: str, examples: int, steps: int):
    """The machine on ``backend`` as a unittest TestCase class, ``examples`` runs of ``steps`` calls."""
    cls = type(f"PipelineMachine_{backend}", (PipelineMachine,), {"backend": backend})
    cls.TestCase.settings = settings(max_examples=examples, stateful_step_count=steps, deadline=None,
                                     suppress_health_check=list(HealthCheck))
    return cls.TestCase


TestNative = machine("native", 60, 50)
TestOnnxRuntime = machine("onnxruntime", 8, 40)
