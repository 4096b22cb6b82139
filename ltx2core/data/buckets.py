"""Bucketing: the size and length every clip is trained at, and how to cut it from the source.

Both strategies scale a clip (keeping its aspect) to the dataset's `resolution` and round width and height
to the VAE's spatial multiple, so clips of one aspect land in one W x H. They differ in length:
`aspect_ratio` trains every clip at `num_frames`; `resolution_frames` keeps each clip as long as it is
(capped at `max_frames`), floored to the `frame_interval` grid, which holds only valid (8k+1) counts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from ltx2core.data.fingerprint import fingerprint
from ltx2core.models.scale import LTX2, ScaleFactors

BUCKET_VERSION = 1  # bump when the plan below changes: every sample is re-bucketed

BucketStrategy = Literal["aspect_ratio", "resolution_frames"]
ResolutionType = Literal["pixel", "pixel_area", "area"]


@dataclass(frozen=True)
class BucketSpec:
    strategy: BucketStrategy
    resolution: float  # pixels (edge or sqrt of area) or megapixels for "area"
    resolution_type: ResolutionType
    num_frames: int
    max_frames: int | None
    frame_interval: int  # a multiple of the temporal factor
    frame_rate: float

    @property
    def fingerprint(self) -> str:
        return fingerprint("bucket", BUCKET_VERSION, self.strategy, self.resolution, self.resolution_type,
                           self.num_frames, self.max_frames, self.frame_interval, self.frame_rate)


@dataclass(frozen=True)
class BucketPlan:
    bucket: str  # "WxH@F"
    width: int
    height: int
    num_frames: int
    start_frame: int  # at the dataset frame rate
    frame_rate: float
    resize_width: int  # aspect-preserving resize that covers width x height ...
    resize_height: int
    crop_left: int  # ... then a centred crop
    crop_top: int


def target_size(width: int, height: int, spec: BucketSpec, scale: ScaleFactors = LTX2) -> tuple[int, int]:
    """The training width and height for a clip of (oriented) `width` x `height`."""
    if spec.resolution_type == "pixel":
        s = spec.resolution / min(width, height)  # the short edge becomes `resolution`
    else:
        area = spec.resolution * 1e6 if spec.resolution_type == "area" else spec.resolution**2
        s = math.sqrt(area / (width * height))
    return scale.round_size(width * s), scale.round_size(height * s)


def clip_frames(frames_at_rate: int, spec: BucketSpec) -> int:
    if spec.strategy == "aspect_ratio":
        return spec.num_frames
    cap = frames_at_rate if spec.max_frames is None else min(frames_at_rate, spec.max_frames)
    return (cap - 1) // spec.frame_interval * spec.frame_interval + 1


def plan_bucket(width: int, height: int, frames_at_rate: int, spec: BucketSpec,
                scale: ScaleFactors = LTX2) -> BucketPlan:
    w, h = target_size(width, height, spec, scale)
    f = clip_frames(frames_at_rate, spec)
    rw, rh, left, top = cover(width, height, w, h)
    return BucketPlan(
        bucket=f"{w}x{h}@{f}", width=w, height=h, num_frames=f, start_frame=0, frame_rate=spec.frame_rate,
        resize_width=rw, resize_height=rh, crop_left=left, crop_top=top,
    )


def cover(width: int, height: int, out_width: int, out_height: int) -> tuple[int, int, int, int]:
    """(resize width, resize height, crop left, crop top): scale `width` x `height` to cover the output keeping its
    aspect, then crop the centre."""
    s = max(out_width / width, out_height / height)
    rw, rh = max(out_width, math.ceil(width * s - 1e-9)), max(out_height, math.ceil(height * s - 1e-9))
    return rw, rh, (rw - out_width) // 2, (rh - out_height) // 2


def same_aspect(width: int, height: int, other_width: int, other_height: int) -> bool:
    """Whether two frames share an aspect, within a pixel of rounding and 1% (1920x1080 against 1920x1088)."""
    aspect, other = width / height, other_width / other_height
    return abs(aspect - other) <= 0.01 * other + 1 / min(height, other_height)
