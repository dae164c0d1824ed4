"""``posert demo``: real motion through the default runtime, with numbers and a picture."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from posert.skeleton import BONES, LEFT  # noqa: E402


def _draw(ax, pose_mm: np.ndarray, title: str, color: str) -> None:
    # camera frame (x right, y down, z forward) → plot axes (x, z, −y) so up is up
    p = pose_mm[:, [0, 2, 1]] * [1, 1, -1]
    for a, b in BONES:
        c = "tab:blue" if b in LEFT else color
        ax.plot(*p[[a, b]].T, color=c, lw=2)
    ax.scatter(*p.T, s=6, color="k")
    r = 900
    ax.set_xlim(-r, r)
    ax.set_ylim(-r, r)
    ax.set_zlim(-r, r)
    ax.set_title(title, fontsize=8)
    ax.view_init(elev=10, azim=-80)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_zticks([])


def skeleton_figure(gt: np.ndarray, lifted: np.ndarray, refined: np.ndarray, frames: list[int], path: Path,
                    title: str) -> Path:
    """PNG of ground truth, lifter and refined skeletons (rows) at ``frames`` (columns).

    gt, lifted, refined: (T, 17, 3) mm, camera frame, root-relative.
    """
    fig = plt.figure(figsize=(2.4 * len(frames), 7.2))
    for col, f in enumerate(frames):
        err_l = np.linalg.norm(lifted[f] - gt[f], axis=-1).mean()
        err_r = np.linalg.norm(refined[f] - gt[f], axis=-1).mean()
        for row, (pose, name, color) in enumerate(((gt[f], f"ground truth, frame {f}", "tab:green"),
                                                   (lifted[f], f"lifter {err_l:.0f} mm", "tab:red"),
                                                   (refined[f], f"refined {err_r:.0f} mm", "tab:orange"))):
            _draw(fig.add_subplot(3, len(frames), row * len(frames) + col + 1, projection="3d"), pose, name, color)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
