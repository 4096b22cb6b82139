"""Video files in and out of validation: the first frame that conditions image-to-video, the mp4 that comes out.

The mp4 is H.264 in yuv420p (what browsers, TensorBoard and W&B play) at the validation frame rate, with
the vocoder's waveform muxed in as AAC. A PyAV whose FFmpeg lacks libx264 writes MPEG-4 part 2 instead and
says so in the log.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import logging
import tempfile
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch
from PIL import Image

from ltx2core.media.decode import ClipPlan, decode_frames
from ltx2core.training.durable import publish

log = logging.getLogger(__name__)

H264 = "libx264"
FALLBACK = "mpeg4"
_OPTIONS = {
    H264: {"crf": "18", "preset": "medium"},  # visually lossless; validation clips are short
    FALLBACK: {"flags": "+qscale", "global_quality": str(2 * 118)},  # quantiser 2 (118 lambda units per step)
}
# x264's AVX-512 assembly is not deterministic: on an AVX-512 CPU, 12 encodes of the same 96x64 frames gave
# up to 8 different streams, pixels up to 50 levels apart (x264 165 in PyAV 18; 64x64 was stable). With the
# AVX2 instruction sets, which every AVX-512 CPU also has, 40 of 40 were the same. A sample must be the
# same file for the same seed, so where the CPU has AVX-512, x264 is told to use the AVX2 sets only.
_X264_AVX2 = "MMX2,SSE,SSE2,SSSE3,SSE4.1,SSE4.2,AVX,FMA3,BMI1,BMI2,LZCNT,AVX2"
_LAYOUTS = {1: "mono", 2: "stereo"}

Frames = torch.Tensor | np.ndarray


def first_frame_of(path: str | Path, plan: ClipPlan) -> Image.Image:
    """Frame 0 of the clip `plan` cuts from `path` (resized and cropped like its training latents)."""
    frames = decode_frames(path, dataclasses.replace(plan, num_frames=1))
    return Image.fromarray(frames[0].numpy())


def to_uint8_frames(frames: Frames) -> np.ndarray:
    """uint8 [F, H, W, 3] as is, or float [F, 3, H, W] in [0, 1] -> uint8 [F, H, W, 3]."""
    array = frames.detach().cpu().numpy() if isinstance(frames, torch.Tensor) else np.asarray(frames)
    if array.dtype == np.uint8 and array.ndim == 4 and array.shape[-1] == 3:
        return np.ascontiguousarray(array)
    if np.issubdtype(array.dtype, np.floating) and array.ndim == 4 and array.shape[1] == 3:
        return np.ascontiguousarray((array.clip(0, 1) * 255).round().astype(np.uint8).transpose(0, 2, 3, 1))
    raise ValueError(
        f"frames must be uint8 [F, H, W, 3] or float [F, 3, H, W] in [0, 1], got {array.dtype} {array.shape}"
    )


def write_mp4(
    path: str | Path,
    frames: Frames,
    *,
    fps: float,
    audio: torch.Tensor | np.ndarray | None = None,
    sample_rate: int | None = None,
    codec: str | None = None,
) -> Path:
    """Write `frames` (see `to_uint8_frames`) at `fps`, with `audio` [channels, samples] in [-1, 1] at
    `sample_rate` as AAC when given. `codec`: libx264 (default when PyAV has it) or mpeg4.

    The file lands whole (written under a temporary name in the same folder, then renamed).
    """
    path = Path(path)
    pictures = to_uint8_frames(frames)
    count, height, width, _ = pictures.shape
    waveform = _waveform(path, audio, sample_rate)
    codec = codec or (H264 if H264 in av.codecs_available else FALLBACK)
    if codec not in _OPTIONS:
        raise ValueError(f"{path}: codec {codec!r} is not one of {sorted(_OPTIONS)}")
    if codec != H264:
        log.warning("%s: writing %s, not H.264 (this PyAV's FFmpeg has no libx264)", path, codec)
    if count < 1 or width % 2 or height % 2:
        raise ValueError(f"{path}: need at least one frame of even width and height (yuv420p), got {pictures.shape}")
    if fps <= 0:
        raise ValueError(f"{path}: fps {fps} must be positive")
    rate = Fraction(fps).limit_denominator(1001)  # 25 -> 25/1, 23.976 -> 2997/125
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".mp4-") as staging:
        partial = Path(staging) / path.name
        # faststart puts the index first, so a browser starts playing before the whole file arrives.
        with av.open(str(partial), "w", format="mp4", options={"movflags": "+faststart"}) as container:
            video = container.add_stream(codec, rate=rate, options=_OPTIONS[codec] | _x264_cpu(codec))
            video.width, video.height, video.pix_fmt = width, height, "yuv420p"
            sound = None
            if waveform is not None:
                sound = container.add_stream("aac", rate=sample_rate, layout=_LAYOUTS[waveform.shape[0]])
            for index, picture in enumerate(pictures):
                frame = av.VideoFrame.from_ndarray(picture, format="rgb24")
                frame.pts, frame.time_base = index, 1 / rate
                container.mux(video.encode(frame))
            container.mux(video.encode(None))
            if sound is not None:
                chunk = av.AudioFrame.from_ndarray(waveform, format="fltp", layout=sound.layout.name)
                chunk.sample_rate, chunk.pts = sample_rate, 0
                container.mux(sound.encode(chunk))  # PyAV cuts it into the encoder's frame size
                container.mux(sound.encode(None))
        return publish(partial, path)


def h264_roundtrip(image: Image.Image, crf: int) -> Image.Image:
    """`image` through one H.264 frame at `crf` and back: what LTX-2's image-to-video conditions on (the image
    then looks like the compressed frames the model was trained on). diffusers' `apply_image_conditioning_crf`
    does the same (codec, preset, CRF), but with x264's AVX-512 code, so not always the same image."""
    picture = np.asarray(image.convert("RGB"))
    height, width = picture.shape[0] // 2 * 2, picture.shape[1] // 2 * 2  # yuv420p needs even sizes
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as container:
        options = {"crf": str(crf), "preset": "veryfast"} | _x264_cpu(H264)
        stream = container.add_stream(H264, rate=1, options=options)
        stream.width, stream.height = width, height
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(picture[:height, :width]), format="rgb24")
        container.mux(stream.encode(frame.reformat(format="yuv420p")))
        container.mux(stream.encode(None))
    buffer.seek(0)
    with av.open(buffer) as container:
        return Image.fromarray(next(container.decode(video=0)).to_ndarray(format="rgb24"))


@functools.cache
def _has_avx512() -> bool:
    try:
        return "avx512f" in Path("/proc/cpuinfo").read_text().split()
    except OSError:  # not Linux: x264 picks its own instruction sets
        return False


def _x264_cpu(codec: str) -> dict[str, str]:
    return {"x264-params": f"asm={_X264_AVX2}"} if codec == H264 and _has_avx512() else {}


def write_wav(path: str | Path, audio: torch.Tensor | np.ndarray, *, sample_rate: int) -> Path:
    """`audio` [channels, samples] in [-1, 1] as 16-bit PCM WAV (lossless, for an audio-only sample), landing
    whole like `write_mp4`."""
    path = Path(path)
    waveform = _waveform(path, audio, sample_rate)
    pcm = (waveform * 32767).round().astype(np.int16)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".wav-") as staging:
        partial = Path(staging) / path.name
        with av.open(str(partial), "w", format="wav") as container:
            sound = container.add_stream("pcm_s16le", rate=sample_rate, layout=_LAYOUTS[pcm.shape[0]])
            chunk = av.AudioFrame.from_ndarray(pcm.T.reshape(1, -1).copy(), format="s16", layout=sound.layout.name)
            chunk.sample_rate, chunk.pts = sample_rate, 0
            container.mux(sound.encode(chunk))
            container.mux(sound.encode(None))
        return publish(partial, path)


def _waveform(path: Path, audio: torch.Tensor | np.ndarray | None, sample_rate: int | None) -> np.ndarray | None:
    if audio is None:
        return None
    samples = audio.detach().float().cpu().numpy() if isinstance(audio, torch.Tensor) else np.asarray(audio)
    if samples.ndim != 2 or samples.shape[0] not in _LAYOUTS or samples.shape[1] == 0:
        raise ValueError(f"{path}: audio must be [channels (1 or 2), samples], got {samples.shape}")
    if sample_rate is None or sample_rate <= 0:
        raise ValueError(f"{path}: audio needs its sample_rate (the vocoder's output_sampling_rate)")
    # The vocoder can overshoot [-1, 1] a little; AAC would wrap, not clip.
    return np.ascontiguousarray(samples.clip(-1, 1), dtype=np.float32)
