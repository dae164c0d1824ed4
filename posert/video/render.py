"""Pictures of a run: the input frame with the 2D skeleton beside the refined 3D skeleton seen from
a fixed viewpoint (the lifter's skeleton faint behind it), drawn with Pillow."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from posert.skeleton import BONES, LEFT, RIGHT

_LEFT_RGB, _RIGHT_RGB, _MID_RGB = (40, 110, 230), (230, 60, 50), (40, 40, 40)
_FAINT_RGB = (185, 185, 185)


def _font(px: int):
    try:
        return ImageFont.load_default(size=px)
    except TypeError:  # Pillow < 10.1: fixed-size bitmap font
        return ImageFont.load_default()


def _bone_rgb(child: int) -> tuple[int, int, int]:
    return _LEFT_RGB if child in LEFT else _RIGHT_RGB if child in RIGHT else _MID_RGB


def overlay_2d(frame: np.ndarray, kp2d: np.ndarray | None, conf: np.ndarray | None, height: int,
               width: int | None = None) -> Image.Image:
    """The input frame (H, W, 3) uint8 RGB scaled to ``height`` px (and to ``width`` px when
    given, else keeping its aspect), with the H36M-17 skeleton of ``kp2d`` (17, 2) px drawn on it
    (bones between joints with confidence > 0)."""
    img = Image.fromarray(frame)
    s = height / img.height
    width = width or max(1, round(img.width * s))
    sx = width / img.width
    img = img.resize((width, height), Image.BILINEAR)
    if kp2d is not None:
        d = ImageDraw.Draw(img)
        p = np.asarray(kp2d, np.float64) * [sx, s]
        vis = np.asarray(conf) > 0
        lw = max(2, height // 180)
        for a, b in BONES:
            if vis[a] and vis[b]:
                d.line([tuple(p[a]), tuple(p[b])], fill=_bone_rgb(b), width=lw)
        for j in np.flatnonzero(vis):
            r = lw + 1
            d.ellipse([p[j, 0] - r, p[j, 1] - r, p[j, 0] + r, p[j, 1] + r], fill=(255, 255, 255), outline=(0, 0, 0))
    return img


def _view(pose_mm: np.ndarray, yaw_deg: float, elev_deg: float) -> np.ndarray:
    """Camera-frame pose (x right, y down, z forward; mm) → (17, 2) view-plane coordinates (mm,
    x right, y down) after turning the view by ``yaw`` about the vertical and tilting by ``elev``."""
    a, e = math.radians(yaw_deg), math.radians(elev_deg)
    ry = np.array([[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]])
    rx = np.array([[1, 0, 0], [0, math.cos(e), -math.sin(e)], [0, math.sin(e), math.cos(e)]])
    return (np.asarray(pose_mm, np.float64) @ (rx @ ry).T)[:, :2]


def skeleton_panel(refined_mm: np.ndarray | None, lifted_mm: np.ndarray | None, size: int,
                   yaw_deg: float = 35.0, elev_deg: float = 15.0, span_mm: float = 2200.0,
                   label: str = "") -> Image.Image:
    """A ``size``×``size`` panel: the refined 3D skeleton (17, 3) mm, root-relative camera frame,
    seen from a fixed viewpoint (orthographic, ``span_mm`` across), the lifter's skeleton faint
    behind it, and a floor line at the lower foot."""
    img = Image.new("RGB", (size, size), (250, 250, 247))
    d = ImageDraw.Draw(img)
    scale = size / span_mm
    centre = np.array([size / 2, size * 0.45])
    lw = max(2, size // 150)
    if refined_mm is not None:
        foot = float(np.max(np.asarray(refined_mm)[[3, 6], 1]))
        y = centre[1] + foot * math.cos(math.radians(elev_deg)) * scale
        d.line([(size * 0.15, y), (size * 0.85, y)], fill=(150, 150, 140), width=2)
    for pose, faint in ((lifted_mm, True), (refined_mm, False)):
        if pose is None:
            continue
        p = _view(pose, yaw_deg, elev_deg) * scale + centre
        for a, b in BONES:
            d.line([tuple(p[a]), tuple(p[b])], fill=_FAINT_RGB if faint else _bone_rgb(b),
                   width=lw if faint else lw + 1)
        if not faint:
            for q in p:
                d.ellipse([q[0] - lw, q[1] - lw, q[0] + lw, q[1] + lw], fill=(20, 20, 20))
    font = _font(max(10, size // 30))
    d.text((8, 6), "refined 3D (lifter: grey)", fill=(60, 60, 60), font=font)
    if label:
        d.text((8, 8 + max(10, size // 30)), label, fill=(60, 60, 60), font=font)
    return img


class PersonCrop:
    """A view that follows the person: a box of aspect ``aspect`` (w/h) around the visible 2D
    joints, ``margin`` × their extent, smoothed over frames (exponential, ``alpha``) so it does
    not jitter, and clipped to the image. ``update`` returns the box (x0, y0, x1, y1) px; before
    the first person it is the centre of the image at full height."""

    def __init__(self, aspect: float = 0.8, margin: float = 1.5, alpha: float = 0.15):
        self.aspect, self.margin, self.alpha = aspect, margin, alpha
        self._box: np.ndarray | None = None  # centre x, centre y, height

    def update(self, kp2d: np.ndarray | None, conf: np.ndarray | None, width: int, height: int):
        if kp2d is not None and (np.asarray(conf) > 0).sum() >= 4:
            p = np.asarray(kp2d)[np.asarray(conf) > 0]
            lo, hi = p.min(axis=0), p.max(axis=0)
            h = max((hi[1] - lo[1]) * self.margin, (hi[0] - lo[0]) * self.margin / self.aspect, 0.2 * height)
            box = np.array([(lo[0] + hi[0]) / 2, (lo[1] + hi[1]) / 2, min(h, height)])
            self._box = box if self._box is None else (1 - self.alpha) * self._box + self.alpha * box
        cx, cy, h = self._box if self._box is not None else (width / 2, height / 2, height)
        w = min(h * self.aspect, width)
        x0 = float(np.clip(cx - w / 2, 0, width - w))
        y0 = float(np.clip(cy - h / 2, 0, height - h))
        return (round(x0), round(y0), round(x0 + w), round(y0 + h))


def compose(frame: np.ndarray, kp2d, conf, refined_mm, lifted_mm, height: int = 480, label: str = "",
            crop: tuple[int, int, int, int] | None = None, crop_aspect: float = 0.8) -> np.ndarray:
    """Side by side: 2D overlay and 3D panel, both ``height`` px high → (height, W, 3) uint8 RGB
    (W rounded up to even, as H.264 needs). With ``crop`` (x0, y0, x1, y1) px the overlay shows
    that box of the frame at a fixed ``crop_aspect`` (w/h), so every composed frame has the same
    size."""
    width = None
    if crop is not None:
        x0, y0, x1, y1 = crop
        frame = frame[y0:y1, x0:x1]
        kp2d = None if kp2d is None else np.asarray(kp2d) - [x0, y0]
        width = round(height * crop_aspect)
    left = overlay_2d(frame, kp2d, conf, height, width)
    right = skeleton_panel(refined_mm, lifted_mm, height, label=label)
    w = left.width + right.width
    out = Image.new("RGB", (w + w % 2, height), (255, 255, 255))
    out.paste(left, (0, 0))
    out.paste(right, (left.width, 0))
    return np.asarray(out)


def contact_sheet(images: list[np.ndarray], columns: int = 2, width: int = 1400) -> np.ndarray:
    """Tile (H, W, 3) uint8 images into a grid ``width`` px wide → (H', width, 3) uint8."""
    if not images:
        raise ValueError("contact_sheet: no images")
    tiles = [Image.fromarray(i) for i in images]
    tw = width // columns
    th = round(tiles[0].height * tw / tiles[0].width)
    rows = math.ceil(len(tiles) / columns)
    sheet = Image.new("RGB", (tw * columns, th * rows), (255, 255, 255))
    for k, t in enumerate(tiles):
        sheet.paste(t.resize((tw, th), Image.BILINEAR), ((k % columns) * tw, (k // columns) * th))
    return np.asarray(sheet)
