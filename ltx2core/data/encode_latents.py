"""Clips -> latents for the latents stage: CPU threads decode the next clips while the VAE encodes this one.

Per job: decode the planned clip (`decode_clip`: start frame, resampling to the dataset frame rate, resize and
crop to the bucket, F = 8k+1 frames, values in [-1, 1]) -> `encode_video` (the posterior mean normalised with
the VAE's latents_mean / latents_std, and the one-channel log-variance) -> CPU tensors in the storage dtype.
The image-to-video first-frame latent is latent frame 0 of the same encode (the encoder is causal), so nothing
else is stored. A job with an audio request also encodes the soundtrack of the same span (models/audio.py);
video-only jobs never open the audio stream.

Why threads and not processes: PyAV decodes and resizes with the GIL released, and so does torch's uint8 ->
float conversion (measured on this 2-core box, 768x512x121 clips: 2 decode threads gave 1.6x one thread, as
fast as 2 processes, and a Python loop on the main thread kept its full speed while a decode thread ran).
Processes would also have to pickle every decoded clip back to the parent. Workers hand over uint8 frames
(pinned when the VAE is on a GPU): a quarter of the bytes of a float clip, and the conversion to [-1, 1],
which was half of the CPU's decoding time, runs on the device with the rounding `decode_clip` + cast gives.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import av
import torch

from ltx2core.media.decode import ClipPlan, decode_frames, extract_audio, to_pixels
from ltx2core.models.audio import encode_audio
from ltx2core.models.scale import LTX2
from ltx2core.models.vae import VaeOptions, encode_video

log = logging.getLogger(__name__)

# What a file that cannot be decoded raises: FFmpeg's errors, unreadable paths, and decode_clip's own
# ValueErrors (no video stream, too few frames for the plan). Anything else is a bug and propagates.
DECODE_ERRORS = (av.FFmpegError, OSError, ValueError)


@dataclass(frozen=True)
class AudioSpec:
    """A dataset's audio request: the soundtrack is read at `sample_rate` with `channels` channels."""

    sample_rate: int  # must be the audio VAE's sample rate (16000 for LTX-2)
    channels: int = 2  # 1 mixes the soundtrack down to mono, which the VAE then hears on both channels
    allow_silence: bool = False  # a file without an audio stream is encoded as silence instead of failing


@dataclass(frozen=True)
class LatentJob:
    key: str
    path: str
    plan: ClipPlan
    audio: AudioSpec | None = None
    # An audio-only dataset's clip: no frame is decoded or encoded; zeros of this many channels, one latent cell
    # per latent frame, stand in for the video (the audio-only step never reads them).
    placeholder_channels: int | None = None
    reference: tuple[str, ClipPlan] | None = None  # IC-LoRA: the reference file and how to cut it (same frames)
    reference_error: str | None = None  # why the clip has no usable reference (then nothing is encoded)


@dataclass
class LatentResult:
    key: str
    latents: torch.Tensor | None = None  # [C, F', H', W'] normalised posterior mean, CPU, storage dtype
    logvar: torch.Tensor | None = None  # [1, F', H', W'] posterior log-variance (shared by all channels)
    audio_latents: torch.Tensor | None = None  # [T, C * M] packed and normalised; None without an audio request
    reference_latents: torch.Tensor | None = None  # [C, F', H'/s, W'/s] like `latents`; None without a reference
    error: str | None = None  # why the clip could not be decoded, naming the file; the tensors are then None


@dataclass(frozen=True)
class _Decoded:
    pixels: torch.Tensor | None  # [F, H, W, 3] uint8 frames
    waveform: torch.Tensor | None  # [channels, samples] at the audio VAE's sample rate
    error: str | None
    reference: torch.Tensor | None = None  # [F, H/s, W/s, 3] uint8 frames of the IC-LoRA reference


def encode_latent_jobs(
    jobs: Iterable[LatentJob],
    *,
    vae: Any,
    audio_vae: Any = None,
    options: VaeOptions,
    device: torch.device | str,
    dtype: torch.dtype,
    store_dtype: torch.dtype = torch.bfloat16,
    decode_workers: int = 2,
    prefetch: int = 4,
) -> Iterator[LatentResult]:
    """Encode each job's clip, yielding results in job order.

    `vae` must already be on `device` in `dtype` (None when every job is audio-only). Up to `prefetch` clips are
    decoded ahead by `decode_workers` threads while the VAE runs on the caller's thread (under
    torch.inference_mode); with `decode_workers` 0 the caller's thread decodes each clip before encoding it (a
    process given one core). `jobs` is read lazily, so memory stays bounded whatever its length. A clip that cannot
    be decoded (or has no usable reference) gives a result with `error` set and the loop carries on; an audio
    request without a matching `audio_vae` is a configuration error and raises.
    """
    if decode_workers < 0 or prefetch < 1:
        raise ValueError(f"decode_workers ({decode_workers}) must be at least 0 and prefetch ({prefetch}) at least 1")
    if vae is not None and vae.dtype != dtype:
        raise ValueError(f"the VAE is in {vae.dtype} but dtype is {dtype}: load the VAE in the dtype it runs in")
    pin = torch.device(device).type == "cuda"
    if decode_workers == 0:
        for job in jobs:
            _check_audio_request(job, audio_vae)
            yield _encode(job, _decode(job, dtype, pin), vae, audio_vae, options, device, store_dtype)
        return
    pending = iter(jobs)
    in_flight: deque[tuple[LatentJob, Future[_Decoded]]] = deque()
    pool = ThreadPoolExecutor(max_workers=decode_workers, thread_name_prefix="clip-decode")

    def fill() -> None:
        while len(in_flight) < prefetch and (job := next(pending, None)) is not None:
            _check_audio_request(job, audio_vae)
            in_flight.append((job, pool.submit(_decode, job, dtype, pin)))

    try:
        fill()
        while in_flight:
            job, decoding = in_flight.popleft()
            fill()  # the workers decode the next clips while this one is encoded
            yield _encode(job, decoding.result(), vae, audio_vae, options, device, store_dtype)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _check_audio_request(job: LatentJob, audio_vae: Any) -> None:
    if job.audio is None:
        return
    if audio_vae is None:
        raise ValueError(
            f"job {job.key} ({job.path}) asks for audio but no audio VAE was given: load it (load_audio_vae) "
            "for datasets with an audio block"
        )
    wanted = audio_vae.config.sample_rate
    if job.audio.sample_rate != wanted:
        raise ValueError(
            f"the dataset's audio sample_rate is {job.audio.sample_rate} Hz but the audio VAE takes {wanted} Hz: "
            f"set audio.sample_rate: {wanted}"
        )


def _decode(job: LatentJob, dtype: torch.dtype, pin: bool) -> _Decoded:
    """Runs on a worker thread: the clip's pixels (and soundtrack), or why they cannot be read."""
    if job.reference_error is not None:
        log.warning("latents: skipping %s: %s", job.key, job.reference_error)
        return _Decoded(None, None, job.reference_error)
    path, reference = job.path, None
    try:
        # uint8: converted to the VAE dtype on the device
        pixels = decode_frames(job.path, job.plan) if job.placeholder_channels is None else None
        waveform = _soundtrack(job, job.audio) if job.audio is not None else None
        if job.reference is not None:
            path = job.reference[0]
            reference = decode_frames(*job.reference)
    except DECODE_ERRORS as exc:
        text = str(exc)
        error = text if path in text else f"{path}: {text}"
        log.warning("latents: skipping %s: %s", job.key, error)
        return _Decoded(None, None, error)
    pixels, reference = (t.pin_memory() if pin and t is not None else t for t in (pixels, reference))
    return _Decoded(pixels, waveform, None, reference)


def _soundtrack(job: LatentJob, spec: AudioSpec) -> torch.Tensor:
    """The samples under the clip's frames: from start_frame / fps for num_frames / fps seconds."""
    start_s = float(job.plan.start_frame / job.plan.rate)
    duration_s = float(job.plan.num_frames / job.plan.rate)
    samples = extract_audio(
        job.path, start_s=start_s, duration_s=duration_s, sample_rate=spec.sample_rate, channels=spec.channels
    )
    if samples is not None:
        return samples
    if not spec.allow_silence:
        raise ValueError(
            f"{job.path} has no audio stream but the dataset trains audio: set audio.allow_zero_audio: true to "
            f"train it with silence, or move the file to a video-only dataset"
        )
    return torch.zeros(spec.channels, round(duration_s * spec.sample_rate))


def _encode(
    job: LatentJob, decoded: _Decoded, vae: Any, audio_vae: Any, options: VaeOptions, device: torch.device | str,
    store_dtype: torch.dtype,
) -> LatentResult:
    if decoded.error is not None:
        return LatentResult(job.key, error=decoded.error)
    with torch.inference_mode():
        if job.placeholder_channels is not None:
            frames = (job.plan.num_frames - 1) // LTX2.temporal + 1
            latents, logvar = torch.zeros(job.placeholder_channels, frames, 1, 1), torch.zeros(1, frames, 1, 1)
        else:
            video = _encode_frames(decoded.pixels, vae, options, device)
            latents, logvar = video.latents[0], video.logvar[0]
        reference = None
        if decoded.reference is not None:
            reference = _encode_frames(decoded.reference, vae, options, device).latents[0]
        audio = encode_audio(audio_vae, decoded.waveform) if decoded.waveform is not None else None
        return LatentResult(
            job.key,
            latents=_stored(latents, store_dtype),
            logvar=_stored(logvar, store_dtype),
            audio_latents=_stored(audio, store_dtype) if audio is not None else None,
            reference_latents=_stored(reference, store_dtype) if reference is not None else None,
        )


def _encode_frames(frames: torch.Tensor, vae: Any, options: VaeOptions, device: torch.device | str) -> Any:
    pixels = frames.to(device, non_blocking=True)  # pinned: the copy overlaps the launch
    pixels = to_pixels(pixels, torch.float32).to(vae.dtype)[None]  # the rounding decode_clip + cast gives
    return encode_video(vae, pixels, options=options)


def _stored(t: torch.Tensor, store_dtype: torch.dtype) -> torch.Tensor:
    return t.to(store_dtype).to("cpu")  # cast on the device first: half the bytes to copy back
