"""Clip decoding and audio extraction on real files written by `synth`.  Run: .venv/bin/pytest tests/ltx2core/media"""

from __future__ import annotations

from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch

from ltx2core.media import synth
from ltx2core.media.decode import ClipPlan, decode_clip, extract_audio

# A white square over a blue gradient: the easiest pair to find by colour after lossy encoding.
SEED = next(s for s in range(200) if synth.look(s).square == "white" and synth.look(s).gradient == "blue")
WIDTH, HEIGHT = 256, 128  # the square is 16 px and moves 6 px per source frame
TARGET_FPS = 25


def _plan(start_frame: int = 0, num_frames: int = 9, **sizes: int) -> ClipPlan:
    width, height = sizes.get("width", WIDTH), sizes.get("height", HEIGHT)
    return ClipPlan(
        start_frame=start_frame,
        num_frames=num_frames,
        frame_rate=TARGET_FPS,
        resize_width=sizes.get("resize_width", width),
        resize_height=sizes.get("resize_height", height),
        crop_left=sizes.get("crop_left", 0),
        crop_top=sizes.get("crop_top", 0),
        width=width,
        height=height,
    )


def _square_centres(clip: torch.Tensor) -> list[tuple[float, float]]:
    """(x, y) centre of the white square in each frame of a (3, F, H, W) clip."""
    pixels = (clip.permute(1, 2, 3, 0).numpy() + 1) * 127.5  # [F, H, W, 3]
    centres = []
    for picture in pixels:
        ys, xs = np.nonzero(np.abs(picture - np.array(synth.look(SEED).square_rgb)).max(axis=-1) < 60)
        centres.append((float(xs.mean()), float(ys.mean())) if xs.size else (np.nan, np.nan))  # cropped away
    return centres


def _expected_centre(
    index: int, width: int = WIDTH, height: int = HEIGHT, scale: float = 1.0, crop: tuple[int, int] = (0, 0)
) -> tuple[float, float]:
    left, top, side = synth.square_origin(index, width, height, SEED)
    return ((left + side / 2) * scale - 0.5 - crop[0], (top + side / 2) * scale - 0.5 - crop[1])


@pytest.mark.parametrize("suffix", [".mp4", ".webm"])
@pytest.mark.parametrize("start_frame", [0, 30])  # 30 starts 1.2 s in, past synth's first key frame: a real seek
@pytest.mark.parametrize(
    ("source_fps", "source_index"),
    [
        (50, lambda i: 2 * i),  # every other frame
        (30, lambda i: round(i * 30 / 25)),  # nearest of 1.2 source frames per target frame
        (12, lambda i: round(i * 12 / 25)),  # each source frame shown about twice
    ],
)
def test_decode_takes_the_nearest_source_frame_for_each_target_time(
    tmp_path: Path, suffix: str, start_frame: int, source_fps: int, source_index: Callable[[int], int]
) -> None:
    path = synth.write_clip(
        tmp_path / f"src{suffix}", width=WIDTH, height=HEIGHT, num_frames=2 * source_fps, fps=source_fps, seed=SEED
    )

    clip = decode_clip(path, _plan(start_frame=start_frame))

    wanted = [_expected_centre(source_index(start_frame + i)) for i in range(9)]
    np.testing.assert_allclose(_square_centres(clip), wanted, atol=1.5)  # one source frame away is 6 px


def test_decode_finds_the_right_frames_after_seeking_into_an_open_gop(tmp_path: Path) -> None:
    # open GOP: B-frames decoded after a key frame are shown before it, so a seek can land too late
    path = synth.write_clip(
        tmp_path / "camera.mp4", width=WIDTH, height=HEIGHT, num_frames=60, fps=50, seed=SEED, open_gop=True
    )

    for start_frame in range(1, 13):
        clip = decode_clip(path, _plan(start_frame=start_frame))

        wanted = [_expected_centre(2 * (start_frame + i)) for i in range(9)]
        np.testing.assert_allclose(_square_centres(clip), wanted, atol=1.5, err_msg=f"start_frame={start_frame}")


def test_decode_returns_the_planned_shape_in_range(tmp_path: Path) -> None:
    path = synth.write_clip(tmp_path / "a.mkv", width=WIDTH, height=HEIGHT, num_frames=30, fps=25, seed=SEED)

    clip = decode_clip(path, _plan(num_frames=17))

    assert clip.shape == (3, 17, HEIGHT, WIDTH) and clip.dtype == torch.float32 and clip.is_contiguous()
    assert clip.min() >= -1.0 and clip.max() <= 1.0
    assert clip.min() < -0.9 and clip.max() > 0.9  # black corner and white square: the full range is used


@pytest.mark.parametrize(
    ("source", "resize", "crop"),
    [
        ((320, 192), (160, 96), (16, 0)),  # shrink by half, then cut 16 px off the left
        ((128, 64), (256, 128), (16, 32)),  # double, then cut a window from the middle rows
    ],
)
def test_decode_resizes_then_crops(
    tmp_path: Path, source: tuple[int, int], resize: tuple[int, int], crop: tuple[int, int]
) -> None:
    path = synth.write_clip(tmp_path / "a.mp4", width=source[0], height=source[1], num_frames=12, fps=25, seed=SEED)
    plan = _plan(
        resize_width=resize[0], resize_height=resize[1], crop_left=crop[0], crop_top=crop[1], width=128, height=64
    )

    clip = decode_clip(path, plan)

    assert clip.shape == (3, 9, 64, 128)
    scale = resize[0] / source[0]
    wanted = [_expected_centre(i, source[0], source[1], scale, crop) for i in range(9)]
    visible = [
        i for i, (x, y) in enumerate(wanted) if 8 * scale < x < 128 - 8 * scale and 8 * scale < y < 64 - 8 * scale
    ]
    assert len(visible) >= 3
    np.testing.assert_allclose(np.array(_square_centres(clip))[visible], np.array(wanted)[visible], atol=1.5)


@pytest.mark.parametrize("rotation", [90, 180, 270])
def test_decode_turns_frames_to_display_orientation(tmp_path: Path, rotation: int) -> None:
    path = synth.write_clip(
        tmp_path / "phone.mov", width=128, height=64, num_frames=9, fps=25, rotation=rotation, seed=SEED
    )
    width, height = (64, 128) if rotation in (90, 270) else (128, 64)

    clip = decode_clip(path, _plan(width=width, height=height))

    assert clip.shape == (3, 9, height, width)
    first = (clip[:, 0].permute(1, 2, 0).numpy() + 1) * 127.5
    errors = {
        turns * 90: float(np.abs(first - np.rot90(synth.render_frame(0, 128, 64, SEED), turns)).mean())
        for turns in range(4)
        if np.rot90(np.zeros((64, 128)), turns).shape == (height, width)
    }
    assert min(errors, key=errors.get) == rotation, errors  # the same turn ffmpeg's own autorotate applies


def test_decode_uses_the_last_frame_while_it_is_still_on_screen(tmp_path: Path) -> None:
    # 30 frames at 30 fps last 1.0 s; 25 frames at 25 fps end at 0.96 s, inside the last frame's 1/30 s
    path = synth.write_clip(tmp_path / "a.mp4", width=WIDTH, height=HEIGHT, num_frames=30, fps=30, seed=SEED)

    clip = decode_clip(path, _plan(num_frames=25))

    assert _square_centres(clip)[-1] == pytest.approx(_expected_centre(29), abs=1.5)


def test_decode_refuses_a_clip_longer_than_the_video(tmp_path: Path) -> None:
    path = synth.write_clip(tmp_path / "short.mp4", width=WIDTH, height=HEIGHT, num_frames=30, fps=30, seed=SEED)

    with pytest.raises(
        ValueError,
        match=r"short\.mp4: the clip needs 17 frames at 25 fps from frame 10 .* nothing at 1\.000 s \(frame 25\)",
    ):
        decode_clip(path, _plan(start_frame=10, num_frames=17))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"num_frames": 10}, "num_frames 10 is not 8k\\+1: use 9 or 17"),
        ({"width": 100, "resize_width": 100}, "width 100 is not a multiple of 32: use 96 or 128"),
        ({"crop_left": 200}, "crop_left 200 \\+ 256 does not fit in the resized 256 pixels"),
        ({"start_frame": -1}, "start_frame -1 must be 0 or more"),
    ],
)
def test_clip_plan_rejects_impossible_values(change: dict[str, int], message: str) -> None:
    fields = {
        "start_frame": 0,
        "num_frames": 9,
        "frame_rate": 25,
        "resize_width": 256,
        "resize_height": 128,
        "crop_left": 0,
        "crop_top": 0,
        "width": 256,
        "height": 128,
    } | change

    with pytest.raises(ValueError, match=message):
        ClipPlan(**fields)


def test_clip_plan_accepts_a_float_or_fractional_rate() -> None:
    assert _plan().rate == 25
    assert ClipPlan(0, 9, 29.97, 64, 64, 0, 0, 64, 64).rate == Fraction(2997, 100)
    assert ClipPlan(0, 9, Fraction(30000, 1001), 64, 64, 0, 0, 64, 64).rate == Fraction(30000, 1001)


def _tone_correlation(samples: np.ndarray, start_s: float, sample_rate: int, hz: float) -> float:
    t = start_s + np.arange(samples.shape[-1]) / sample_rate
    return float(np.corrcoef(samples, np.sin(2 * np.pi * hz * t))[0, 1])


@pytest.mark.parametrize("start_s", [0.0, 0.06, 0.5, 0.77])  # 0.06 is read without seeking
def test_extract_audio_resamples_and_keeps_channels_and_timing(tmp_path: Path, start_s: float) -> None:
    path = synth.write_clip(tmp_path / "a.mp4", width=64, height=64, num_frames=40, fps=25, audio_rate=44100)

    audio = extract_audio(path, start_s=start_s, duration_s=0.25, sample_rate=16000)

    assert audio.shape == (2, 4000) and audio.dtype == torch.float32
    # the file's tone: 440 Hz left, 660 Hz right, in phase with the file's clock
    assert _tone_correlation(audio[0].numpy(), start_s, 16000, 440) > 0.95
    assert _tone_correlation(audio[1].numpy(), start_s, 16000, 660) > 0.95


def test_extract_audio_duplicates_mono_and_pads_past_the_end(tmp_path: Path) -> None:
    path = synth.write_tone(tmp_path / "mono.mp4", duration_s=1.0, sample_rate=22050, channels=1)

    audio = extract_audio(path, start_s=0.5, duration_s=1.0, sample_rate=16000)

    assert audio.shape == (2, 16000)
    torch.testing.assert_close(audio[0], audio[1])
    assert _tone_correlation(audio[0, :7000].numpy(), 0.5, 16000, 440) > 0.95
    assert audio[:, 8500:].abs().max() == 0  # the file ends at 1.0 s: the rest is zeros


def test_extract_audio_gives_one_channel_when_asked(tmp_path: Path) -> None:
    path = synth.write_clip(tmp_path / "a.webm", width=64, height=64, num_frames=25, fps=25, audio_rate=48000)

    audio = extract_audio(path, start_s=0.0, duration_s=0.5, sample_rate=24000, channels=1)

    assert audio.shape == (1, 12000)
    assert audio.abs().max() > 0.1


def test_extract_audio_is_none_without_audio(tmp_path: Path) -> None:
    path = synth.write_clip(tmp_path / "silent.mkv", width=64, height=64, num_frames=9, fps=25)

    assert extract_audio(path, start_s=0.0, duration_s=0.2, sample_rate=16000) is None
