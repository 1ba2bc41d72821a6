"""What the demo's photos are painted with: the shapes a category's look names (`SHAPES`), the
clutter around them (`distractors`) and the textures laid over them (`TEXTURES`). Every random
draw comes from the generator passed in, in a fixed order (`fbmr.training.data.demo_photos`)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from PIL import ImageDraw

RGB = tuple[int, int, int]
Pixels = np.ndarray[Any, np.dtype[Any]]  # a photo's (height, width, 3) values, as floats
Colours = Sequence[RGB]
Draw = ImageDraw.ImageDraw
Rng = np.random.Generator
# paints a shape's copies on a photo of the given width and height, in the given colours
_Drawer = Callable[[Draw, Rng, int, int, Colours], None]


def _pick(rng: np.random.Generator, colours: Sequence[RGB]) -> RGB:
    return colours[int(rng.integers(len(colours)))]


def _rotated(
    cx: float, cy: float, points: Sequence[tuple[float, float]], angle: float
) -> list[tuple[float, float]]:
    cos, sin = math.cos(angle), math.sin(angle)
    return [(cx + x * cos - y * sin, cy + x * sin + y * cos) for x, y in points]


def _radial(radii: Sequence[float]) -> list[tuple[float, float]]:
    """Evenly spaced vertices at the given distances from the centre."""
    step = 2 * math.pi / len(radii)
    return [(r * math.cos(k * step), r * math.sin(k * step)) for k, r in enumerate(radii)]


def _scattered(
    rng: np.random.Generator,
    width: int,
    height: int,
    count: tuple[int, int],
    scale: tuple[float, float],
) -> list[tuple[float, float, float, float]]:
    """Random (x, y, radius, angle) placements."""
    m = min(width, height)
    return [
        (
            rng.uniform(0, width),
            rng.uniform(0, height),
            m * rng.uniform(*scale),
            rng.uniform(0, 2 * math.pi),
        )
        for _ in range(int(rng.integers(*count)))
    ]


def _polygons(sides: int) -> _Drawer:
    def draw_polygons(draw: Draw, rng: Rng, width: int, height: int, colours: Colours) -> None:
        for x, y, r, angle in _scattered(rng, width, height, (3, 6), (0.1, 0.25)):
            draw.polygon(_rotated(x, y, _radial([r] * sides), angle), fill=_pick(rng, colours))

    return draw_polygons


def _circles(draw: Draw, rng: Rng, width: int, height: int, colours: Colours) -> None:
    for x, y, r, _ in _scattered(rng, width, height, (3, 7), (0.08, 0.22)):
        draw.ellipse((x - r, y - r, x + r, y + r), fill=_pick(rng, colours))


def _rings(draw: Draw, rng: Rng, width: int, height: int, colours: Colours) -> None:
    for x, y, r, _ in _scattered(rng, width, height, (2, 5), (0.15, 0.3)):
        thickness = max(2, round(r * rng.uniform(0.15, 0.3)))
        draw.ellipse((x - r, y - r, x + r, y + r), outline=_pick(rng, colours), width=thickness)


def _crosses(draw: Draw, rng: Rng, width: int, height: int, colours: Colours) -> None:
    for x, y, r, angle in _scattered(rng, width, height, (2, 5), (0.12, 0.25)):
        a = r * 0.3
        arm = [(a, -a), (a, -r), (-a, -r), (-a, -a), (-r, -a), (-r, a),
               (-a, a), (-a, r), (a, r), (a, a), (r, a), (r, -a)]  # fmt: skip
        draw.polygon(_rotated(x, y, arm, angle), fill=_pick(rng, colours))


def _star(draw: Draw, rng: Rng, width: int, height: int, colours: Colours) -> None:
    for x, y, r, angle in _scattered(rng, width, height, (1, 3), (0.22, 0.4)):
        points = _radial([r, r * 0.4] * 5)
        draw.polygon(_rotated(x, y, points, angle), fill=_pick(rng, colours))


def _ellipses(draw: Draw, rng: Rng, width: int, height: int, colours: Colours) -> None:
    for x, y, r, angle in _scattered(rng, width, height, (1, 4), (0.2, 0.4)):
        squash = rng.uniform(0.35, 0.6)
        outline = [(r * math.cos(t), squash * r * math.sin(t)) for t in np.linspace(0, 6.28, 36)]
        draw.polygon(_rotated(x, y, outline, angle), fill=_pick(rng, colours))


def _stripes(
    angles: tuple[float, ...], period: tuple[float, float], fill: tuple[float, float]
) -> _Drawer:
    """Parallel lines at one of `angles` degrees (± jitter), alternating the two colours."""

    def draw_stripes(draw: Draw, rng: Rng, width: int, height: int, colours: Colours) -> None:
        step = min(width, height) * rng.uniform(*period)
        thickness = max(1, round(step * rng.uniform(*fill)))
        tilt = math.radians(rng.choice(angles) + rng.uniform(-12, 12))
        dx, dy = math.cos(tilt), math.sin(tilt)
        reach = math.hypot(width, height)
        offset = rng.uniform(0, step)
        lines = int(reach / step) + 1
        for k in range(-lines, lines + 1):
            cx = width / 2 - dy * (k * step + offset)
            cy = height / 2 + dx * (k * step + offset)
            ends = [(cx - dx * reach, cy - dy * reach), (cx + dx * reach, cy + dy * reach)]
            draw.line(ends, fill=colours[k % 2], width=thickness)

    return draw_stripes


def _checkerboard(draw: Draw, rng: Rng, width: int, height: int, colours: Colours) -> None:
    cell = min(width, height) * rng.uniform(0.08, 0.16)
    x0, y0 = width * rng.uniform(0, 0.3), height * rng.uniform(0, 0.3)
    x1, y1 = width * rng.uniform(0.7, 1), height * rng.uniform(0.7, 1)
    for i in range(int((x1 - x0) / cell) + 1):
        for j in range(int((y1 - y0) / cell) + 1):
            left, top = x0 + i * cell, y0 + j * cell
            draw.rectangle((left, top, left + cell, top + cell), fill=colours[(i + j) % 2])


def _dots(draw: Draw, rng: Rng, width: int, height: int, colours: Colours) -> None:
    spacing = min(width, height) * rng.uniform(0.1, 0.18)
    r = spacing * rng.uniform(0.2, 0.35)
    ox, oy = rng.uniform(0, spacing, 2)
    for j in range(int(height / spacing) + 1):
        for i in range(int(width / spacing) + 1):
            x, y = ox + i * spacing, oy + j * spacing
            draw.ellipse((x - r, y - r, x + r, y + r), fill=colours[j % 2])


def _concentric(draw: Draw, rng: Rng, width: int, height: int, colours: Colours) -> None:
    x, y = width * rng.uniform(0.3, 0.7), height * rng.uniform(0.3, 0.7)
    angle = rng.uniform(-0.3, 0.3)
    step = min(width, height) * rng.uniform(0.06, 0.1)
    rings = int(rng.integers(3, 7))
    for k in range(rings, 0, -1):  # largest first, so each smaller square stays visible
        half = k * step
        square = [(-half, -half), (half, -half), (half, half), (-half, half)]
        draw.polygon(_rotated(x, y, square, angle), fill=colours[k % 2])


SHAPES: dict[str, _Drawer] = {
    "circles": _circles,
    "squares": _polygons(4),
    "triangles": _polygons(3),
    "hstripes": _stripes((0,), (0.15, 0.3), (0.35, 0.6)),
    "vstripes": _stripes((90,), (0.15, 0.3), (0.35, 0.6)),
    "diagonals": _stripes((45, 135), (0.07, 0.12), (0.15, 0.3)),
    "checkerboard": _checkerboard,
    "rings": _rings,
    "crosses": _crosses,
    "dots": _dots,
    "star": _star,
    "ellipse": _ellipses,
    "concentric": _concentric,
}


def distractors(
    draw: ImageDraw.ImageDraw, rng: np.random.Generator, width: int, height: int
) -> None:
    """Small shapes of any colour, as the clutter around a real listed item."""
    for x, y, r, _ in _scattered(rng, width, height, (2, 5), (0.03, 0.09)):
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        if rng.random() < 0.5:
            draw.ellipse((x - r, y - r, x + r, y + r), fill=colour)
        else:
            draw.rectangle((x - r, y - r / 2, x + r, y + r / 2), fill=colour)


def _grain(pixels: Pixels, rng: np.random.Generator) -> Pixels:
    return np.asarray(pixels + 14.0 * rng.standard_normal(pixels.shape, dtype=np.float32))


def _blotchy(pixels: Pixels, rng: np.random.Generator) -> Pixels:
    height, width, _ = pixels.shape
    cells = rng.normal(0.0, 22.0, (6, 6, 1))
    rows, columns = np.arange(height) * 6 // height, np.arange(width) * 6 // width
    return np.asarray(pixels + cells[rows][:, columns])


def _scanlines(pixels: Pixels, rng: np.random.Generator) -> Pixels:
    period = int(rng.integers(2, 5))
    dark = (np.arange(pixels.shape[0]) % period == 0)[:, None, None]
    return np.asarray(pixels * np.where(dark, 0.72, 1.0))


def _vignette(pixels: Pixels, rng: np.random.Generator) -> Pixels:
    height, width, _ = pixels.shape
    yy, xx = np.mgrid[-1 : 1 : height * 1j, -1 : 1 : width * 1j]
    strength = rng.uniform(0.2, 0.35)
    return np.asarray(pixels * (1.0 - strength * (xx**2 + yy**2))[..., None])


def _gradient(pixels: Pixels, rng: np.random.Generator) -> Pixels:
    height, width, _ = pixels.shape
    yy, xx = np.mgrid[0 : 1 : height * 1j, 0 : 1 : width * 1j]
    angle = rng.uniform(0, 2 * math.pi)
    ramp = math.cos(angle) * xx + math.sin(angle) * yy
    ramp = (ramp - ramp.min()) / max(float(np.ptp(ramp)), 1e-6)
    return np.asarray(pixels * (0.75 + 0.4 * ramp)[..., None])


TEXTURES: dict[str, Callable[[Pixels, np.random.Generator], Pixels]] = {
    "grain": _grain,
    "blotchy": _blotchy,
    "scanlines": _scanlines,
    "vignette": _vignette,
    "gradient": _gradient,
}
