"""mp4 files written by write_mp4, read back with PyAV: codec, pixel format, size, frame count, rate, audio."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from ltx2core.validation.video_io import h264_roundtrip, write_mp4

FRAMES, HEIGHT, WIDTH = 9, 64, 96
SAMPLE_RATE = 16000
AAC_FRAME = 1024  # samples per AAC frame: the encoder pads the end and primes the start by about this much
RED, BLUE = (1.0, 0.05, 0.05), (0.05, 0.05, 1.0)


def _red_left_blue_right(count: int = FRAMES) -> torch.Tensor:
    """float [F, 3, H, W]: red left half, blue right half, brightening over time."""
    frames = torch.empty(count, 3, HEIGHT, WIDTH)
    frames[..., : WIDTH // 2] = torch.tensor(RED)[:, None, None]
    frames[..., WIDTH // 2 :] = torch.tensor(BLUE)[:, None, None]
    return frames * torch.linspace(0.6, 1.0, count)[:, None, None, None]


def _tone(seconds: float) -> torch.Tensor:
    t = torch.arange(round(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return torch.stack([0.5 * torch.sin(2 * torch.pi * 440 * t), 0.5 * torch.sin(2 * torch.pi * 660 * t)])


def test_float_frames_with_audio_give_h264_yuv420p_at_the_rate_with_an_aac_track(tmp_path: Path) -> None:
    audio = _tone(FRAMES / 25)
    path = write_mp4(tmp_path / "out" / "sample.mp4", _red_left_blue_right(), fps=25, audio=audio,
                     sample_rate=SAMPLE_RATE)

    assert sorted(p.name for p in path.parent.iterdir()) == ["sample.mp4"]  # no temporary left behind
    with av.open(str(path)) as container:
        video = container.streams.video[0]
        assert (video.codec_context.name, video.codec_context.pix_fmt) == ("h264", "yuv420p")
        assert (video.width, video.height, video.average_rate) == (WIDTH, HEIGHT, 25)
        pictures = [frame.to_ndarray(format="rgb24") for frame in container.decode(video)]
    assert len(pictures) == FRAMES
    last = pictures[-1].astype(int)
    assert last[:, : WIDTH // 2 - 4, 0].mean() > 200 and last[:, : WIDTH // 2 - 4, 2].mean() < 40  # RGB, not BGR
    assert last[:, WIDTH // 2 + 4 :, 2].mean() > 200 and last[:, WIDTH // 2 + 4 :, 0].mean() < 40
    assert pictures[0].mean() < pictures[-1].mean()  # in order

    with av.open(str(path)) as container:
        sound = container.streams.audio[0]
        assert (sound.codec_context.name, sound.rate, sound.layout.nb_channels) == ("aac", SAMPLE_RATE, 2)
        decoded = np.concatenate([frame.to_ndarray() for frame in container.decode(sound)], axis=1)
    assert audio.shape[1] <= decoded.shape[1] <= audio.shape[1] + 2 * AAC_FRAME
    assert np.abs(decoded).max() > 0.3  # the tone, not silence


def test_uint8_frames_without_audio_at_a_fractional_rate(tmp_path: Path) -> None:
    frames = (_red_left_blue_right(17).permute(0, 2, 3, 1) * 255).round().to(torch.uint8)  # [F, H, W, 3]
    path = write_mp4(tmp_path / "silent.mp4", frames, fps=23.976)
    with av.open(str(path)) as container:
        assert not container.streams.audio
        video = container.streams.video[0]
        assert video.average_rate == Fraction(2997, 125)
        assert sum(1 for _ in container.decode(video)) == 17


def test_mpeg4_fallback_writes_a_playable_file(tmp_path: Path) -> None:
    path = write_mp4(tmp_path / "fallback.mp4", _red_left_blue_right(), fps=25, codec="mpeg4")
    with av.open(str(path)) as container:
        video = container.streams.video[0]
        assert video.codec_context.name == "mpeg4"
        assert sum(1 for _ in container.decode(video)) == FRAMES


@pytest.mark.parametrize(
    ("frames", "audio", "rate", "message"),
    [
        (torch.zeros(FRAMES, HEIGHT, WIDTH, 3), None, None, "frames must be uint8"),  # float in uint8's layout
        (torch.zeros(FRAMES, 3, HEIGHT, WIDTH - 1), None, None, "even width and height"),
        (torch.zeros(FRAMES, 3, HEIGHT, WIDTH), torch.zeros(2, 100), None, "needs its sample_rate"),
        (torch.zeros(FRAMES, 3, HEIGHT, WIDTH), torch.zeros(100), SAMPLE_RATE, "audio must be"),
    ],
)
def test_unwritable_input_is_refused(
    tmp_path: Path, frames: torch.Tensor, audio: torch.Tensor | None, rate: int | None, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        write_mp4(tmp_path / "bad.mp4", frames, fps=25, audio=audio, sample_rate=rate)
    assert not (tmp_path / "bad.mp4").exists()



ENCODES = 20  # of one input; x264's AVX-512 code gave 2-8 different files in 20 for these frames


def _grainy(seed: int, count: int = FRAMES) -> np.ndarray:
    """uint8 [F, H, W, 3]: a still noise picture with fresh grain each frame, like an untrained model's sample
    (the kind of frames that x264's AVX-512 code encoded differently from one run to the next)."""
    rng = np.random.default_rng(seed)
    still = rng.normal(125, 35, (1, HEIGHT, WIDTH, 3))
    return np.clip(still + rng.normal(0, 20, (count, HEIGHT, WIDTH, 3)), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("seed", range(8))
def test_the_same_frames_always_give_the_same_file(tmp_path: Path, seed: int) -> None:
    frames = _grainy(seed)
    files = {write_mp4(tmp_path / "sample.mp4", frames, fps=25.0, audio=_tone(0.4), sample_rate=SAMPLE_RATE)
             .read_bytes() for _ in range(ENCODES)}
    assert len(files) == 1


def test_the_conditioning_image_roundtrip_is_deterministic_and_what_diffusers_computes() -> None:
    from diffusers.pipelines.ltx2.utils import DEFAULT_IMAGE_CRF, apply_image_conditioning_crf
    from PIL import Image

    for seed in range(4):
        picture = _grainy(seed, count=1)[0]
        ours = {h264_roundtrip(Image.fromarray(picture), DEFAULT_IMAGE_CRF).tobytes() for _ in range(ENCODES)}
        assert len(ours) == 1
        # diffusers' roundtrip (same codec, preset and CRF), on the runs where it agrees with itself, is ours
        theirs = {apply_image_conditioning_crf(picture, DEFAULT_IMAGE_CRF).tobytes() for _ in range(ENCODES)}
        assert ours <= theirs
