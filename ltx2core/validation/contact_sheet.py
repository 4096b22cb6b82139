"""A PNG of evenly spaced frames of a video, for a glance at a validation sample without playing it."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from ltx2core.validation.video_io import Frames, to_uint8_frames

GAP = 4  # pixels of dark grey between tiles
_BACKGROUND = 32


def frame_indices(num_frames: int, count: int) -> list[int]:
    """`count` indices spread evenly over `num_frames`, first and last included (fewer for short videos)."""
    return sorted({int(i) for i in np.linspace(0, num_frames - 1, min(count, num_frames)).round()})


def contact_sheet(frames: Frames, *, columns: int = 4, count: int = 8, tile_width: int | None = None) -> bytes:
    """PNG bytes: `count` evenly spaced frames (see `frame_indices`) in rows of `columns`, left to right.

    `tile_width` scales each frame to that width (keeping its aspect); None keeps the frames' size.
    """
    if columns < 1 or count < 1:
        raise ValueError(f"contact_sheet needs columns and count of at least 1, got {columns} and {count}")
    pictures = to_uint8_frames(frames)
    tiles = [Image.fromarray(pictures[i]) for i in frame_indices(len(pictures), count)]
    if tile_width is not None:
        height = max(1, round(tiles[0].height * tile_width / tiles[0].width))
        tiles = [tile.resize((tile_width, height), Image.LANCZOS) for tile in tiles]
    width, height = tiles[0].size
    columns = min(columns, len(tiles))
    rows = -(-len(tiles) // columns)
    sheet = Image.new(
        "RGB", (columns * width + (columns - 1) * GAP, rows * height + (rows - 1) * GAP), (_BACKGROUND,) * 3
    )
    for n, tile in enumerate(tiles):
        row, column = divmod(n, columns)
        sheet.paste(tile, (column * (width + GAP), row * (height + GAP)))
    buffer = io.BytesIO()
    sheet.save(buffer, format="PNG")
    return buffer.getvalue()
