"""Contact sheets: a PNG grid of evenly spaced frames, first and last included, left to right."""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image

from ltx2core.validation.contact_sheet import GAP, contact_sheet, frame_indices

FRAMES, HEIGHT, WIDTH = 17, 32, 48
STEP = 12  # grey level per frame index: frame i is a flat grey of 12 * i


def _numbered_frames() -> torch.Tensor:
    levels = torch.arange(FRAMES, dtype=torch.uint8) * STEP
    return levels[:, None, None, None].expand(FRAMES, HEIGHT, WIDTH, 3).contiguous()  # uint8 [F, H, W, 3]


def test_sheet_shows_evenly_spaced_frames_in_rows() -> None:
    picked = frame_indices(FRAMES, 8)
    assert picked == [0, 2, 5, 7, 9, 11, 14, 16]

    sheet = np.array(Image.open(io.BytesIO(contact_sheet(_numbered_frames(), columns=4, count=8))).convert("RGB"))
    assert sheet.shape == (2 * HEIGHT + GAP, 4 * WIDTH + 3 * GAP, 3)
    for n, index in enumerate(picked):
        row, column = divmod(n, 4)
        centre = sheet[row * (HEIGHT + GAP) + HEIGHT // 2, column * (WIDTH + GAP) + WIDTH // 2]
        assert tuple(centre) == (STEP * index,) * 3


def test_float_frames_scaled_tiles_and_short_videos() -> None:
    frames = _numbered_frames().permute(0, 3, 1, 2).float() / 255  # float [F, 3, H, W]
    sheet = Image.open(io.BytesIO(contact_sheet(frames[:3], columns=4, count=8, tile_width=24)))
    assert sheet.format == "PNG"
    assert sheet.size == (3 * 24 + 2 * GAP, 16)  # three frames only, one row, 48x32 scaled to 24x16
