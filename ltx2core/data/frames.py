"""The filter rule: how many frames a clip has at the dataset's frame rate, and whether that is enough."""

from __future__ import annotations

from dataclasses import dataclass

from ltx2core.data.fingerprint import fingerprint

FILTER_VERSION = 1  # bump when the rule below changes: every sample is re-evaluated


@dataclass(frozen=True)
class FrameLimits:
    num_frames: int  # frames per training clip (8k+1)
    min_frames: int  # clips shorter than this, at frame_rate, are rejected
    max_frames: int | None  # clips longer than this, at frame_rate, are rejected
    frame_rate: float  # the dataset's frame rate: clips are resampled to it
    sound_files: bool = False  # an audio-only dataset: a sound file counts its length in frames at frame_rate

    @property
    def fingerprint(self) -> str:
        return fingerprint("filter", FILTER_VERSION, self.num_frames, self.min_frames, self.max_frames, self.frame_rate,
                           self.sound_files)


@dataclass(frozen=True)
class FilterVerdict:
    kept: bool
    frames_at_rate: int
    reason: str | None


def frames_at_rate(num_frames: int, fps: float, frame_rate: float) -> int:
    """Frames a clip of `num_frames` at `fps` yields when resampled to `frame_rate`.

    A 50 fps clip resampled to 25 fps has half the frames; the epsilon keeps 100 frames at 50 fps exactly 50.
    """
    return int(num_frames * frame_rate / fps + 1e-6)


UNUSABLE = "unusable file: "  # the reason of a sample whose file the probe could not read: a failure, not a verdict


NO_PICTURE = "a sound file with no picture: "  # the reason of a sound file in a dataset that trains video


def judge(*, num_frames: int | None, fps: float | None, error: str | None, limits: FrameLimits,
          duration_s: float | None = None) -> FilterVerdict:
    """Keep or reject one probed file for a dataset, with a reason a person understands.

    A sound file (probed with no frame rate, no frames and a length) is as many frames long as its seconds
    hold at the dataset's frame rate: the frames an audio-only clip's soundtrack is cut by."""
    if error:
        return FilterVerdict(False, 0, f"{UNUSABLE}{error}")
    if fps is None and num_frames is None and duration_s:
        if not limits.sound_files:
            return FilterVerdict(False, 0, NO_PICTURE + "only an audio-only dataset (audio.audio_only: true) trains "
                                 "on sound files; move it out of this dataset's folder or give it a picture")
        fps, num_frames = limits.frame_rate, int(duration_s * limits.frame_rate + 1e-6)
    if not fps or fps <= 0 or not num_frames:
        return FilterVerdict(False, 0, "unknown frame rate or frame count")
    n = frames_at_rate(num_frames, fps, limits.frame_rate)
    rate = f"{limits.frame_rate:g} fps"
    if n < limits.min_frames:
        return FilterVerdict(False, n, f"{n} frames at {rate} < min_frames {limits.min_frames}")
    if limits.max_frames is not None and n > limits.max_frames:
        return FilterVerdict(False, n, f"{n} frames at {rate} > max_frames {limits.max_frames}")
    return FilterVerdict(True, n, None)
