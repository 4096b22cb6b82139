"""Clips -> latents on the tiny VAE, from real files written by `synth`: exactness, order, errors, audio, memory.

Run: .venv/bin/pytest tests/ltx2core/data/test_encode_latents.py
"""

from __future__ import annotations

from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
import torch
from diffusers import LTX2Pipeline

from ltx2core.data.encode_latents import AudioSpec, LatentJob, LatentResult, encode_latent_jobs
from ltx2core.media import synth
from ltx2core.media.decode import ClipPlan, decode_clip, extract_audio
from ltx2core.models.audio import log_mel_spectrogram
from ltx2core.models.vae import VaeOptions, encode_video

FPS = 25
SIZE = 64  # one clip is 64x64: latents [8, F', 2, 2] on the tiny VAE
AUDIO_RATE = 16000  # the audio VAE's sample rate


def _plan(num_frames: int = 17, start_frame: int = 0, resize: tuple[int, int] = (SIZE, SIZE), crop_left: int = 0,
          frame_rate: int | Fraction = FPS) -> ClipPlan:
    return ClipPlan(start_frame=start_frame, num_frames=num_frames, frame_rate=frame_rate, resize_width=resize[0],
                    resize_height=resize[1], crop_left=crop_left, crop_top=0, width=SIZE, height=SIZE)


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("clips")
    made = {
        "square": synth.write_clip(folder / "square.mp4", width=64, height=64, num_frames=33, fps=FPS, seed=1,
                                   audio_rate=48000),
        "fast": synth.write_clip(folder / "fast.mp4", width=96, height=64, num_frames=66, fps=50, seed=2),
        "wide": synth.write_clip(folder / "wide.mkv", width=128, height=96, num_frames=20, fps=FPS, seed=3),
        "long": synth.write_clip(folder / "long.mp4", width=320, height=240, num_frames=90, fps=FPS, seed=4),
    }
    made |= {kind: path for kind, path in synth.make_bad_files(folder / "bad").items()}
    return {name: str(path) for name, path in made.items()}


def _run(jobs: list[LatentJob] | Iterator[LatentJob], vae: Any, **kwargs: Any) -> list[LatentResult]:
    kwargs = dict(options=VaeOptions(), device="cpu", dtype=torch.float32, store_dtype=torch.float32) | kwargs
    return list(encode_latent_jobs(jobs, vae=vae, **kwargs))


def test_latents_are_encode_video_of_the_decoded_clip(tiny_vae: Any, clips: dict[str, str]) -> None:
    jobs = [
        LatentJob("plain", clips["square"], _plan(start_frame=8)),
        LatentJob("resampled", clips["fast"], _plan(num_frames=25, resize=(96, 64), crop_left=16)),  # 50 -> 25 fps
        LatentJob("shrunk", clips["wide"], _plan(num_frames=9, resize=(85, 64), crop_left=10)),
    ]
    results = _run(jobs, tiny_vae)
    for job, result in zip(jobs, results, strict=True):
        expected = encode_video(tiny_vae, decode_clip(job.path, job.plan)[None])
        assert result.error is None and result.audio_latents is None
        assert result.latents.shape == (8, (job.plan.num_frames - 1) // 8 + 1, 2, 2)
        assert result.latents.device.type == "cpu"
        assert torch.equal(result.latents, expected.latents[0])  # exact: the same float32 ops on the CPU
        assert torch.equal(result.logvar, expected.logvar[0])


def test_latents_are_stored_in_the_storage_dtype(tiny_vae: Any, clips: dict[str, str]) -> None:
    job = LatentJob("plain", clips["square"], _plan())
    exact, stored = _run([job], tiny_vae)[0], _run([job], tiny_vae, store_dtype=torch.bfloat16)[0]
    assert stored.latents.dtype == stored.logvar.dtype == torch.bfloat16
    assert torch.equal(stored.latents, exact.latents.to(torch.bfloat16))
    assert torch.equal(stored.logvar, exact.logvar.to(torch.bfloat16))


def test_results_come_in_job_order_whichever_clip_decodes_first(tiny_vae: Any, clips: dict[str, str]) -> None:
    # The first clip takes longest to decode (81 frames of 320x240); with 3 workers the small ones finish first.
    jobs = [LatentJob("long", clips["long"], _plan(num_frames=81, resize=(85, 64), crop_left=10))]
    jobs += [LatentJob(f"small-{i}", clips["square"], _plan(start_frame=i)) for i in range(5)]
    in_parallel = _run(jobs, tiny_vae, decode_workers=3, prefetch=6)
    on_the_callers_thread = _run(jobs, tiny_vae, decode_workers=0)
    assert [r.key for r in in_parallel] == [job.key for job in jobs]
    for a, b in zip(in_parallel, on_the_callers_thread, strict=True):
        assert torch.equal(a.latents, b.latents)


def test_a_clip_that_cannot_be_decoded_is_an_error_result_and_the_rest_are_encoded(
    tiny_vae: Any, clips: dict[str, str], tmp_path: Path
) -> None:
    bad = {
        "truncated": clips["truncated"],
        "not_a_video": clips["not_a_video"],
        "no_video_stream": clips["no_video_stream"],
        "unreadable": clips["unreadable"],
        "missing": str(tmp_path / "gone.mp4"),
    }
    jobs = [LatentJob("first", clips["square"], _plan())]
    jobs += [LatentJob(kind, path, _plan()) for kind, path in bad.items()]
    jobs += [LatentJob("past_the_end", clips["square"], _plan(start_frame=24)),  # 24 + 17 > 33 frames
             LatentJob("last", clips["fast"], _plan(resize=(96, 64)))]
    results = _run(jobs, tiny_vae, decode_workers=2, prefetch=3)
    assert [r.key for r in results] == [job.key for job in jobs]
    for job, result in zip(jobs, results, strict=True):
        if job.key in ("first", "last"):
            assert result.error is None and result.latents is not None
        else:
            assert job.path in result.error
            assert result.latents is result.logvar is result.audio_latents is None
    assert "nothing at" in results[-2].error  # decode_clip's own reason, passed on


def test_jobs_are_read_lazily_so_only_prefetch_clips_are_in_flight(tiny_vae: Any, clips: dict[str, str]) -> None:
    pulled = 0

    def jobs() -> Iterator[LatentJob]:
        nonlocal pulled
        for i in range(8):
            pulled += 1
            yield LatentJob(f"clip-{i}", clips["square"], _plan(start_frame=i))

    results = encode_latent_jobs(jobs(), vae=tiny_vae, options=VaeOptions(), device="cpu", dtype=torch.float32,
                                 decode_workers=2, prefetch=2)
    next(results)
    assert pulled == 3  # 2 decoded ahead, plus the one just encoded
    assert len(list(results)) == 7 and pulled == 8


def _expected_audio_latents(audio_vae: Any, path: str, plan: ClipPlan, channels: int = 2) -> torch.Tensor:
    """What LTX2Pipeline would be handed: the VAE's mode of the clip's soundtrack, packed and normalised."""
    waveform = extract_audio(path, start_s=plan.start_frame / FPS, duration_s=plan.num_frames / FPS,
                             sample_rate=AUDIO_RATE, channels=channels).expand(2, -1)
    mel = log_mel_spectrogram(waveform[None], sample_rate=AUDIO_RATE, hop_length=160, mel_bins=8)
    mode = audio_vae.encode(mel).latent_dist.mode()
    packed = LTX2Pipeline._pack_audio_latents(mode)
    return LTX2Pipeline._normalize_audio_latents(packed, audio_vae.latents_mean, audio_vae.latents_std)[0]


@pytest.mark.parametrize("channels", [2, 1])
def test_audio_latents_of_the_clip_span_and_none_for_video_only_jobs(
    tiny_vae: Any, tiny_audio_vae: Any, clips: dict[str, str], channels: int
) -> None:
    plan = _plan(start_frame=8)  # 17 frames from 0.32 s: 0.68 s = 10880 samples -> 69 mel frames -> 18 tokens
    jobs = [LatentJob("with_audio", clips["square"], plan, AudioSpec(AUDIO_RATE, channels)),
            LatentJob("video_only", clips["square"], plan)]
    with_audio, video_only = _run(jobs, tiny_vae, audio_vae=tiny_audio_vae)
    assert with_audio.audio_latents.shape == (18, 4)
    assert torch.equal(with_audio.audio_latents, _expected_audio_latents(tiny_audio_vae, clips["square"], plan,
                                                                         channels))
    assert torch.equal(with_audio.latents, video_only.latents)
    assert video_only.audio_latents is None


def test_a_file_without_sound_fails_unless_silence_is_allowed(
    tiny_vae: Any, tiny_audio_vae: Any, clips: dict[str, str]
) -> None:
    jobs = [LatentJob("strict", clips["wide"], _plan(num_frames=9), AudioSpec(AUDIO_RATE)),
            LatentJob("silent", clips["wide"], _plan(num_frames=9), AudioSpec(AUDIO_RATE, allow_silence=True))]
    strict, silent = _run(jobs, tiny_vae, audio_vae=tiny_audio_vae)
    assert "has no audio stream" in strict.error and "allow_zero_audio" in strict.error
    assert silent.error is None and silent.audio_latents.shape == (10, 4)  # 0.36 s -> 37 mel frames


def test_an_audio_request_the_audio_vae_cannot_serve_raises(
    tiny_vae: Any, tiny_audio_vae: Any, clips: dict[str, str]
) -> None:
    job = LatentJob("a", clips["square"], _plan(), AudioSpec(44100))
    with pytest.raises(ValueError, match="audio sample_rate is 44100 Hz but the audio VAE takes 16000 Hz"):
        _run([job], tiny_vae, audio_vae=tiny_audio_vae)
    with pytest.raises(ValueError, match="asks for audio but no audio VAE was given"):
        _run([job], tiny_vae)
