"""Record posert's 3D poses to an MCAP file in Foxglove's schemas (``foxglove-sdk``), which
Foxglove and ROS 2 tooling open.

Each tick's poses become one ``foxglove.SceneUpdate`` per stream on topic ``/posert/<stream>``:
an entity (id = the stream) in frame ``world`` (z up; the stream's world-frame pose, metres, as
Foxglove expects) with a sphere per joint (grey for a joint the frame did not show: a guess,
``TickResult.seen``) and the bones as a line list; the entity's metadata carries the
stream's health code and ``seen`` (17 characters, ``1`` for a joint shown, H36M-17 order). Log
times are the tick's wall clock (ns).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from posert.errors import MissingDependency
from posert.skeleton import BONES

#: Joint sphere diameter and bone thickness, m.
JOINT_M, BONE_M = 0.04, 0.015


def _foxglove():
    try:
        import foxglove
        import foxglove.channels
        import foxglove.messages
    except ImportError:  # pragma: no cover - the extra is missing
        raise MissingDependency("MCAP recording needs foxglove-sdk: pip install 'posert[serve]'") from None
    return foxglove


class McapRecorder:
    """Write poses to ``path`` (an ``.mcap`` file, overwritten). Use :meth:`tick` as a
    :class:`~posert.serve.PoseServer`'s ``on_tick``, or call :meth:`pose` per stream; then
    :meth:`close`. Raises MissingDependency without ``foxglove-sdk``."""

    def __init__(self, path: str | Path):
        fg = _foxglove()
        self._fg = fg
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.path = Path(path)
        self._ctx = fg.Context()
        self._writer = fg.open_mcap(str(path), allow_overwrite=True, context=self._ctx)
        self._channels: dict[str, object] = {}
        self.messages = 0

    def pose(self, stream, world_mm: np.ndarray, health: int = 0, log_time_ns: int | None = None,
             seen: np.ndarray | None = None) -> None:
        """One stream's pose: world_mm (17, 3) mm, world frame (z up), root-relative; seen (17,)
        bool, the joints the frame showed (default: all)."""
        m = self._fg.messages
        name = str(stream)
        ch = self._channels.get(name)
        if ch is None:
            ch = self._channels[name] = self._fg.channels.SceneUpdateChannel(f"/posert/{name}", context=self._ctx)
        t = time.time_ns() if log_time_ns is None else int(log_time_ns)
        stamp = m.Timestamp(sec=t // 1_000_000_000, nsec=t % 1_000_000_000)
        p = np.asarray(world_mm, np.float64) / 1000.0
        white = m.Color(r=0.26, g=0.65, b=0.96, a=1.0)
        grey = m.Color(r=0.62, g=0.62, b=0.62, a=1.0)
        seen = np.ones(len(p), bool) if seen is None else np.asarray(seen, bool).reshape(len(p))
        spheres = [m.SpherePrimitive(pose=m.Pose(position=m.Vector3(x=x, y=y, z=z),
                                                 orientation=m.Quaternion(x=0, y=0, z=0, w=1)),
                                     size=m.Vector3(x=JOINT_M, y=JOINT_M, z=JOINT_M), color=white if ok else grey)
                   for (x, y, z), ok in zip(p, seen)]
        points = [m.Point3(x=float(p[j, 0]), y=float(p[j, 1]), z=float(p[j, 2])) for bone in BONES for j in bone]
        lines = [m.LinePrimitive(type=m.LinePrimitiveLineType.LineList, thickness=BONE_M, scale_invariant=False,
                                 points=points, color=white,
                                 pose=m.Pose(position=m.Vector3(x=0, y=0, z=0),
                                             orientation=m.Quaternion(x=0, y=0, z=0, w=1)))]
        entity = m.SceneEntity(timestamp=stamp, frame_id="world", id=name, spheres=spheres, lines=lines,
                               metadata=[m.KeyValuePair(key="health", value=str(int(health))),
                                         m.KeyValuePair(key="seen", value="".join("1" if v else "0" for v in seen))])
        ch.log(m.SceneUpdate(entities=[entity]), log_time=t)
        self.messages += 1

    def tick(self, res) -> None:
        """Every stream of a :class:`~posert.runtime.pipeline.TickResult` (its world-frame poses)."""
        t = time.time_ns()
        for i, sid in enumerate(res.stream_ids):
            self.pose(sid, res.world[i], int(res.health[i]), t, res.seen[i])

    def close(self) -> None:
        """Finish the file."""
        self._writer.close()
