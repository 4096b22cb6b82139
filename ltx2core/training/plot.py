"""The loss curve as a PNG: matplotlib when it is installed, else a small built-in raster writer.

The built-in writer draws the raw loss (light) and its moving average (dark) in a framed plot area, with
no text (no font to draw with); it exists so that a run without matplotlib still gets a picture.
"""

from __future__ import annotations

import importlib.util
import struct
import zlib
from collections.abc import Sequence
from pathlib import Path

WIDTH, HEIGHT, MARGIN = 640, 360, 24
SMOOTHING = 0.9  # exponential moving average weight of the dark line
_BACKGROUND, _FRAME = (255, 255, 255), (160, 160, 160)
_RAW, _SMOOTH = (170, 200, 235), (20, 70, 160)


def write_loss_curve(
    steps: Sequence[int], losses: Sequence[float], path: Path, *, title: str = "training loss",
    parts: dict[str, Sequence[tuple[int, float]]] | None = None,
) -> Path:
    """Draw loss against step into `path` (PNG). Non-finite losses are skipped. `parts`: the per-modality losses
    ("video loss", "audio loss": (step, value) points), drawn beside the total where matplotlib draws."""
    points = [(s, v) for s, v in zip(steps, losses, strict=True) if _finite(v)]
    if not points:
        raise ValueError("no finite loss values to draw")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if importlib.util.find_spec("matplotlib") is not None:
        _matplotlib(points, path, title, {k: [p for p in v if _finite(p[1])] for k, v in (parts or {}).items()})
    else:
        path.write_bytes(_raster_png(points))
    return path


def _finite(value: float) -> bool:
    return value == value and abs(value) != float("inf")


def _matplotlib(points: list[tuple[int, float]], path: Path, title: str,
                parts: dict[str, list[tuple[int, float]]]) -> None:
    # Figure + Agg canvas directly: pyplot would set a process-wide backend and keep figures alive.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(WIDTH / 100, HEIGHT / 100), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    steps, losses = zip(*points, strict=True)
    axes.plot(steps, losses, color="#aac8eb", linewidth=1, label="loss")
    axes.plot(steps, _smoothed(list(losses)), color="#1446a0", linewidth=2, label="moving average")
    for (name, part), color in zip(parts.items(), ("#2a9d4b", "#d4651c"), strict=False):
        if part:
            axes.plot(*zip(*part, strict=True), color=color, linewidth=1, label=name)
    axes.set_xlabel("step")
    axes.set_ylabel("loss")
    axes.set_title(title)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path)


def _raster_png(points: list[tuple[int, float]]) -> bytes:
    pixels = bytearray(bytes(_BACKGROUND) * (WIDTH * HEIGHT))
    left, top, right, bottom = MARGIN, MARGIN, WIDTH - MARGIN, HEIGHT - MARGIN
    for a, b in (((left, top), (right, top)), ((right, top), (right, bottom)),
                 ((right, bottom), (left, bottom)), ((left, bottom), (left, top))):
        _line(pixels, a, b, _FRAME)
    steps = [s for s, _ in points]
    losses = [v for _, v in points]
    low, high = min(losses), max(losses)
    first, last = steps[0], steps[-1]

    def place(step: int, value: float) -> tuple[int, int]:
        x = left + (step - first) * (right - left) // max(1, last - first)
        y = bottom - int((value - low) / ((high - low) or 1.0) * (bottom - top))
        return x, y

    for series, colour in ((losses, _RAW), (_smoothed(losses), _SMOOTH)):
        xy = [place(s, v) for s, v in zip(steps, series, strict=True)]
        for a, b in zip(xy, xy[1:] or xy, strict=False):
            _line(pixels, a, b, colour)
    rows = b"".join(b"\x00" + bytes(pixels[y * WIDTH * 3 : (y + 1) * WIDTH * 3]) for y in range(HEIGHT))
    header = struct.pack(">IIBBBBB", WIDTH, HEIGHT, 8, 2, 0, 0, 0)  # 8-bit RGB, no interlace
    signature = b"\x89PNG\r\n\x1a\n"
    return signature + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(rows, 9)) + _chunk(b"IEND", b"")


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _line(pixels: bytearray, a: tuple[int, int], b: tuple[int, int], colour: tuple[int, int, int]) -> None:
    """Bresenham's line from a to b, both ends included."""
    (x0, y0), (x1, y1) = a, b
    dx, dy = abs(x1 - x0), -abs(y1 - y0)
    sx, sy = (1 if x0 < x1 else -1), (1 if y0 < y1 else -1)
    error = dx + dy
    while True:
        if 0 <= x0 < WIDTH and 0 <= y0 < HEIGHT:
            offset = (y0 * WIDTH + x0) * 3
            pixels[offset : offset + 3] = bytes(colour)
        if x0 == x1 and y0 == y1:
            return
        doubled = 2 * error
        if doubled >= dy:
            error += dy
            x0 += sx
        if doubled <= dx:
            error += dx
            y0 += sy


def _smoothed(values: list[float]) -> list[float]:
    smoothed, average = [], values[0]
    for value in values:
        average = SMOOTHING * average + (1 - SMOOTHING) * value
        smoothed.append(average)
    return smoothed
