"""Frames and sound of one training clip, decoded the way the latents stage needs them.

Frames are picked by timestamp, not by counting: the source frame on screen nearest each target time,
so a 50 fps file read at 25 fps gives every other frame and a 12 fps file repeats frames. Everything
per pixel (colour conversion, resize) happens in FFmpeg's C code; Python only picks and crops.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch

from ltx2core.models.scale import LTX2

# Audio decoders (Opus, AAC) need earlier packets to converge after a seek; these samples are decoded and dropped.
_AUDIO_PREROLL_S = 0.1


@dataclass(frozen=True)
class ClipPlan:
    """Which frames of a video to take and how to fit them to a bucket, all in display orientation."""

    start_frame: int  # index of the first frame, counted at `frame_rate`
    num_frames: int  # 8k+1
    frame_rate: Fraction | float  # target frames per second
    resize_width: int  # size after the aspect-preserving resize
    resize_height: int
    crop_left: int  # window cut from the resized picture
    crop_top: int
    width: int  # final size, multiples of the VAE's spatial factor
    height: int

    def __post_init__(self) -> None:
        problems = [
            LTX2.frames_error("num_frames", self.num_frames),
            LTX2.size_error("width", self.width),
            LTX2.size_error("height", self.height),
        ]
        if self.start_frame < 0:
            problems.append(f"start_frame {self.start_frame} must be 0 or more")
        if self.frame_rate <= 0:
            problems.append(f"frame_rate {self.frame_rate} must be positive")
        for axis, offset, size, resized in (
            ("left", self.crop_left, self.width, self.resize_width),
            ("top", self.crop_top, self.height, self.resize_height),
        ):
            if offset < 0 or offset + size > resized:
                problems.append(f"crop_{axis} {offset} + {size} does not fit in the resized {resized} pixels")
        problems = [p for p in problems if p]
        if problems:
            raise ValueError("invalid ClipPlan: " + "; ".join(problems))

    @property
    def rate(self) -> Fraction:
        # exact arithmetic keeps frame picking free of float ties; a float rate like 29.97 becomes 2997/100
        return Fraction(self.frame_rate).limit_denominator(1_000_000)


def _frames_with_times(
    container: av.container.InputContainer, stream: av.VideoStream, path: Path
) -> Iterator[tuple[Fraction, av.VideoFrame]]:
    """Decoded frames with their presentation time in seconds from the stream's start."""
    origin = stream.start_time or 0
    for frame in container.decode(stream):
        pts = frame.pts if frame.pts is not None else frame.dts
        if pts is None:
            raise ValueError(
                f"{path}: frames carry no timestamps, so they cannot be matched to a frame rate; "
                f"remux the file (ffmpeg -i in -c copy out.mp4)"
            )
        yield (pts - origin) * stream.time_base, frame


def _seek_frames(
    container: av.container.InputContainer, stream: av.VideoStream, path: Path, start: Fraction
) -> Iterator[tuple[Fraction, av.VideoFrame]]:
    """Frames from a key frame shown at or before `start`.

    Demuxers seek by decode time, so in an open-GOP file the key frame found can be shown after `start`
    (its leading B-frames come first on screen): step back further, doubling, until it is not.
    """
    origin, back = stream.start_time or 0, Fraction(0)
    while start - back > 0:
        container.seek(origin + int((start - back) / stream.time_base), stream=stream, backward=True)
        frames = _frames_with_times(container, stream, path)
        first = next(frames, None)
        if first is not None and first[0] <= start:
            yield first
            yield from frames
            return
        frames.close()
        back = max(2 * back, Fraction(1, 2))
    container.seek(origin, stream=stream, backward=True)
    yield from _frames_with_times(container, stream, path)


def _to_rgb(frame: av.VideoFrame, plan: ClipPlan) -> np.ndarray:
    """(height, width, 3) uint8: turned to display orientation, resized, cropped."""
    turns = frame.rotation % 360 // 90
    coded_w, coded_h = (plan.resize_height, plan.resize_width) if turns % 2 else (plan.resize_width, plan.resize_height)
    # AREA averages every source pixel when shrinking (no aliasing); BICUBIC is the better upscaler
    shrinking = coded_w <= frame.width and coded_h <= frame.height
    rgb = frame.reformat(
        width=coded_w, height=coded_h, format="rgb24", interpolation="AREA" if shrinking else "BICUBIC"
    )
    # the display matrix turns the picture counter-clockwise; np.rot90 turns the same way
    picture = np.rot90(rgb.to_ndarray(), k=turns)
    return picture[plan.crop_top : plan.crop_top + plan.height, plan.crop_left : plan.crop_left + plan.width]


def _nearest_frames(
    frames: Iterator[tuple[Fraction, av.VideoFrame]], targets: list[Fraction], period: Fraction
) -> Iterator[av.VideoFrame]:
    """For each target time in order, the source frame shown nearest to it (the earlier one on a tie).

    Stops early when the frames run out: the last frame stays on screen for one source `period`.
    """
    done, prev = 0, None
    for time, frame in frames:
        # every target this frame reaches is settled: it takes this frame or the one before, whichever is nearer
        while done < len(targets) and time >= targets[done]:
            yield frame if prev is None or time - targets[done] < targets[done] - prev[0] else prev[1]
            done += 1
        if done == len(targets):
            return
        prev = (time, frame)
    while prev is not None and done < len(targets) and targets[done] < prev[0] + period:
        yield prev[1]
        done += 1


def decode_clip(path: str | Path, plan: ClipPlan) -> torch.Tensor:
    """The planned clip as a (3, F, H, W) float32 tensor in [-1, 1]."""
    return to_pixels(decode_frames(path, plan), torch.float32)


def to_pixels(frames: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """[F, H, W, 3] uint8 -> [3, F, H, W] in [-1, 1]; on a GPU this is cheap, on the CPU it is most of decoding."""
    return frames.to(dtype).permute(3, 0, 1, 2).div_(127.5).sub_(1.0).contiguous()


def decode_frames(path: str | Path, plan: ClipPlan) -> torch.Tensor:
    """The planned clip as (F, H, W, 3) uint8 frames: a quarter of the bytes of the float clip to copy around."""
    path = Path(path)
    targets = [(plan.start_frame + i) / plan.rate for i in range(plan.num_frames)]
    pictures: list[np.ndarray] = []
    with av.open(str(path)) as container:
        if not container.streams.video:
            raise ValueError(f"{path}: no video stream to decode")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        period = 1 / (stream.average_rate or stream.guessed_rate or plan.rate)
        last: tuple[av.VideoFrame, np.ndarray] | None = None  # a repeated frame is converted once
        for frame in _nearest_frames(_seek_frames(container, stream, path, targets[0]), targets, period):
            if last is None or last[0] is not frame:
                last = (frame, _to_rgb(frame, plan))
            pictures.append(last[1])
    if len(pictures) < len(targets):
        missing = plan.start_frame + len(pictures)
        raise ValueError(
            f"{path}: the clip needs {plan.num_frames} frames at {float(plan.rate):g} fps from frame "
            f"{plan.start_frame} but the video shows nothing at {float(missing / plan.rate):.3f} s (frame {missing}); "
            f"plan fewer frames or an earlier start_frame"
        )
    return torch.from_numpy(np.stack(pictures))  # [F, H, W, 3] uint8


def extract_audio(
    path: str | Path, *, start_s: float, duration_s: float, sample_rate: int, channels: int = 2
) -> torch.Tensor | None:
    """(channels, round(duration_s * sample_rate)) float32 samples from `start_s`, zero-padded; None without audio.

    A mono source is duplicated to stereo rather than mixed, so both channels keep its full level.
    """
    path = Path(path)
    if channels not in (1, 2):
        raise ValueError(f"{path}: channels must be 1 or 2, got {channels}")
    want = round(duration_s * sample_rate)
    with av.open(str(path)) as container:
        if not container.streams.audio:
            return None
        stream = container.streams.audio[0]
        mono_source = stream.codec_context.layout.nb_channels == 1
        resampler = av.AudioResampler(
            format="fltp", layout="mono" if channels == 1 or mono_source else "stereo", rate=sample_rate
        )
        origin = stream.start_time or 0
        if start_s > _AUDIO_PREROLL_S:
            seek_s = start_s - _AUDIO_PREROLL_S
            container.seek(origin + int(seek_s / stream.time_base), stream=stream, backward=True)
        chunks, first_time = [], None
        for frame in container.decode(stream):
            if frame.pts is None:
                raise ValueError(
                    f"{path}: audio frames carry no timestamps; remux the file (ffmpeg -i in -c copy out.mp4)"
                )
            time = float((frame.pts - origin) * stream.time_base)
            first_time = time if first_time is None else first_time
            chunks += [out.to_ndarray() for out in resampler.resample(frame)]
            if time > start_s + duration_s:
                break
        chunks += [out.to_ndarray() for out in resampler.resample(None)]
    samples = np.concatenate(chunks, axis=1) if chunks else np.zeros((1, 0), np.float32)
    decoded_from = start_s if first_time is None else first_time
    skip = round((start_s - decoded_from) * sample_rate)  # samples decoded before start_s
    samples = samples[:, skip:] if skip >= 0 else np.pad(samples, ((0, 0), (-skip, 0)))
    samples = np.pad(samples[:, :want], ((0, 0), (0, max(0, want - samples.shape[1]))))
    if samples.shape[0] < channels:
        samples = np.repeat(samples, channels, axis=0)
    return torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32))
