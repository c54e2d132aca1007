"""A tiny numpy rasterizer for the embedded tasks: filled circles and thick lines on an (H, W, 3) uint8 canvas.

Coordinates are pixels as floats ``(x, y)`` with ``x`` to the right and ``y`` down; :class:`Viewport`
maps world coordinates (``y`` up) to them. Shapes are drawn without anti-aliasing: a pixel is painted
when its centre lies inside the shape. Everything outside the canvas is cut off.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

Color = Sequence[int]


def canvas(height: int, width: int, color: Color = (255, 255, 255)) -> np.ndarray:
    """A blank (height, width, 3) uint8 image filled with ``color``."""
    img = np.empty((height, width, 3), dtype=np.uint8)
    img[...] = np.asarray(color, dtype=np.uint8)
    return img


def _window(img: np.ndarray, x_min: float, x_max: float, y_min: float, y_max: float) -> tuple[slice, slice] | None:
    """Pixel rows/columns whose centres may fall in the box, clipped to the image; ``None`` if empty."""
    h, w = img.shape[:2]
    c0, c1 = max(int(np.floor(x_min)), 0), min(int(np.ceil(x_max)) + 1, w)
    r0, r1 = max(int(np.floor(y_min)), 0), min(int(np.ceil(y_max)) + 1, h)
    if c0 >= c1 or r0 >= r1:
        return None
    return slice(r0, r1), slice(c0, c1)


def fill_circle(img: np.ndarray, center: Sequence[float], radius: float, color: Color) -> np.ndarray:
    """Paint the disc of ``radius`` pixels around ``center`` (x, y) in place; return ``img``."""
    cx, cy = float(center[0]), float(center[1])
    win = _window(img, cx - radius, cx + radius, cy - radius, cy + radius)
    if win is None:
        return img
    rows, cols = win
    yy, xx = np.mgrid[rows, cols]
    inside = (xx - cx) ** 2 + (yy - cy) ** 2 <= radius**2
    img[rows, cols][inside] = color  # a basic-sliced view, so the masked write reaches img
    return img


def draw_line(img: np.ndarray, start: Sequence[float], end: Sequence[float], width: float, color: Color) -> np.ndarray:
    """Paint the segment ``start``-``end`` with round caps, ``width`` pixels thick, in place; return ``img``."""
    (x0, y0), (x1, y1) = (float(start[0]), float(start[1])), (float(end[0]), float(end[1]))
    half = max(width / 2.0, 0.5)  # at least one pixel wide
    win = _window(img, min(x0, x1) - half, max(x0, x1) + half, min(y0, y1) - half, max(y0, y1) + half)
    if win is None:
        return img
    rows, cols = win
    yy, xx = np.mgrid[rows, cols]
    dx, dy = x1 - x0, y1 - y0
    length_sq = dx * dx + dy * dy
    # Distance from each pixel centre to the closest point of the segment.
    t = np.zeros_like(xx, dtype=np.float64) if length_sq == 0.0 else ((xx - x0) * dx + (yy - y0) * dy) / length_sq
    t = np.clip(t, 0.0, 1.0)
    inside = (xx - (x0 + t * dx)) ** 2 + (yy - (y0 + t * dy)) ** 2 <= half**2
    img[rows, cols][inside] = color
    return img


class Viewport:
    """
    Maps a world rectangle onto a pixel rectangle of an image, world ``y`` up, with equal scales on both axes.

    :param x_range: World ``(x_min, x_max)`` shown
    :param y_range: World ``(y_min, y_max)`` shown
    :param size: Pixel ``(width, height)`` of the drawing area; the world rectangle is fitted inside it and centred
    :param offset: Pixel ``(x, y)`` of the area's top-left corner in the image
    """

    def __init__(
        self,
        x_range: tuple[float, float],
        y_range: tuple[float, float],
        size: tuple[int, int],
        offset: tuple[int, int] = (0, 0),
    ):
        (x_min, x_max), (y_min, y_max) = x_range, y_range
        self.scale = min(size[0] / (x_max - x_min), size[1] / (y_max - y_min))  # pixels per world unit
        self.x_mid, self.y_mid = (x_min + x_max) / 2.0, (y_min + y_max) / 2.0
        self.px_mid = offset[0] + size[0] / 2.0
        self.py_mid = offset[1] + size[1] / 2.0

    def __call__(self, x: float, y: float) -> tuple[float, float]:
        """Pixel (x, y) of the world point (x, y)."""
        return self.px_mid + (x - self.x_mid) * self.scale, self.py_mid - (y - self.y_mid) * self.scale
