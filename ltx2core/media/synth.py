"""Sample videos the project makes itself, for `make demo`, tests and benchmarks.

Every clip is real encoded video: a diagonal colour gradient with a square sliding across it, drawn
from a seed so a test can redraw any frame with `render_frame` and tell which source frame a decoder
returned. Rotation is written as the container's display matrix, the way phones store it.
"""

from __future__ import annotations

import random
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

# Encoder and options per codec name. Small GOPs make decoders really seek; x264 gets B-frames so frames are
# reordered as in real files; mpeg4 uses a fixed quantiser 3 (global_quality is in lambda units, 118 per step).
_VIDEO_CODECS: dict[str, tuple[str, dict[str, str]]] = {
    "h264": ("libx264", {"preset": "ultrafast", "bf": "2", "g": "12", "crf": "18"}),
    "vp9": ("libvpx-vp9", {"deadline": "realtime", "cpu-used": "8", "g": "12", "crf": "20", "b:v": "0"}),
    "mpeg4": ("mpeg4", {"g": "12", "flags": "+qscale", "global_quality": str(3 * 118)}),
}
_DEFAULT_CODEC = {".mp4": "h264", ".mov": "h264", ".mkv": "h264", ".webm": "vp9"}
_ALLOWED_CODECS = {
    ".mp4": {"h264", "mpeg4"},
    ".mov": {"h264", "mpeg4"},
    ".mkv": {"h264", "mpeg4", "vp9"},
    ".webm": {"vp9"},
}
_OPUS_RATES = (8000, 12000, 16000, 24000, 48000)
_BITEXACT = {"fflags": "+bitexact"}  # no random Matroska segment id or version strings: same seed, same bytes

_SQUARES = {"red": (230, 30, 30), "yellow": (240, 220, 20), "white": (245, 245, 245), "cyan": (20, 220, 230)}
_GRADIENTS = {"blue": (30, 60, 220), "green": (30, 170, 60), "purple": (140, 40, 200), "orange": (240, 130, 20)}
_DIRECTIONS = ("right", "left", "down", "up")
_DIRECTIONS_CCW = ("right", "up", "left", "down")  # each is the one before turned 90 degrees counter-clockwise


@dataclass(frozen=True)
class Look:
    """What a seed draws: words for captions, colours for pixels."""

    square: str
    gradient: str
    direction: str

    @property
    def square_rgb(self) -> tuple[int, int, int]:
        return _SQUARES[self.square]

    def caption(self, rotation: int = 0) -> str:
        """Words for what a viewer sees once the player turns the picture `rotation` degrees counter-clockwise."""
        turns = rotation % 360 // 90
        seen = _DIRECTIONS_CCW[(_DIRECTIONS_CCW.index(self.direction) + turns) % 4]
        article = "an" if self.gradient[0] in "aeiou" else "a"
        return f"a {self.square} square moving {seen} over {article} {self.gradient} gradient"


def look(seed: int) -> Look:
    """The square colour, gradient colour and direction that `seed` draws."""
    rng = random.Random(seed)
    return Look(
        square=rng.choice(list(_SQUARES)), gradient=rng.choice(list(_GRADIENTS)), direction=rng.choice(_DIRECTIONS)
    )


def _background(width: int, height: int, gradient: str) -> np.ndarray:
    # black in the top-left corner to the full colour in the bottom-right
    ramp = (np.linspace(0.0, 0.5, width)[None, :] + np.linspace(0.0, 0.5, height)[:, None])[..., None]
    return (ramp * np.array(_GRADIENTS[gradient], dtype=np.float64)).astype(np.uint8)


def square_origin(index: int, width: int, height: int, seed: int = 0) -> tuple[int, int, int]:
    """(left, top, side) of the square in frame `index`: it moves a fixed step per frame and wraps."""
    side = max(4, min(width, height) // 8)
    direction = look(seed).direction
    horizontal = direction in ("right", "left")
    travel = (width if horizontal else height) - side
    step = max(2, travel // 40)  # about 40 distinct positions before it wraps
    along = (index * step) % travel
    if direction in ("left", "up"):
        along = travel - along
    across = ((height if horizontal else width) - side) // 2
    return (along, across, side) if horizontal else (across, along, side)


def render_frame(
    index: int, width: int, height: int, seed: int = 0, *, background: np.ndarray | None = None
) -> np.ndarray:
    """Frame `index` of a clip as (height, width, 3) uint8 RGB, before encoding and rotation."""
    seen = look(seed)
    frame = (_background(width, height, seen.gradient) if background is None else background).copy()
    left, top, side = square_origin(index, width, height, seed)
    frame[top : top + side, left : left + side] = seen.square_rgb
    return frame


def _tone(num_samples: int, sample_rate: int, channels: int) -> np.ndarray:
    """(channels, samples) float32: 440 Hz on the first channel, 660 Hz on the second."""
    t = np.arange(num_samples, dtype=np.float64) / sample_rate
    return np.stack([0.3 * np.sin(2 * np.pi * (440.0 + 220.0 * c) * t) for c in range(channels)]).astype(np.float32)


# The audio codec a file of each suffix gets (AAC otherwise: .mp4, .mov, .mkv, .m4a).
_AUDIO_CODECS = {".webm": "libopus", ".ogg": "libopus", ".opus": "libopus", ".wav": "pcm_s16le", ".flac": "flac",
                 ".mp3": "libmp3lame"}


def _add_audio(container: av.container.OutputContainer, path: Path, sample_rate: int, channels: int) -> av.AudioStream:
    codec = _AUDIO_CODECS.get(path.suffix.lower(), "aac")
    if codec == "libopus" and sample_rate not in _OPUS_RATES:
        raise ValueError(f"{path}: its audio is Opus, which needs a sample rate in {_OPUS_RATES}, not {sample_rate}")
    layout = "stereo" if channels == 2 else "mono"
    return container.add_stream(codec, rate=sample_rate, layout=layout)


def _encode_audio(container: av.container.OutputContainer, stream: av.AudioStream, samples: np.ndarray) -> None:
    frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout=stream.layout.name)
    frame.sample_rate = stream.rate
    frame.pts = 0
    container.mux(stream.encode(frame))  # PyAV splits it into the encoder's frame size
    container.mux(stream.encode(None))


def write_clip(
    path: str | Path,
    *,
    width: int,
    height: int,
    num_frames: int,
    fps: int | Fraction,
    rotation: int = 0,
    audio_rate: int | None = None,
    codec: str | None = None,
    seed: int = 0,
    open_gop: bool = False,
) -> Path:
    """Encode `num_frames` frames of the seed's moving square; the container is chosen by extension.

    `rotation` (0/90/180/270) is stored as the display matrix, counter-clockwise as ffprobe reports it;
    `audio_rate` adds a stereo tone (AAC, or Opus in WebM) as long as the video. `open_gop` (h264 only)
    lets B-frames after a key frame be shown before it, as many cameras encode, which makes seeking harder.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in _DEFAULT_CODEC:
        raise ValueError(f"{path}: extension must be one of {sorted(_DEFAULT_CODEC)}")
    codec = codec or _DEFAULT_CODEC[suffix]
    if codec not in _ALLOWED_CODECS[suffix]:
        raise ValueError(
            f"{path}: codec {codec!r} does not go in {suffix}; use one of {sorted(_ALLOWED_CODECS[suffix])}"
        )
    if width % 2 or height % 2:
        raise ValueError(f"{path}: width and height must be even for yuv420p, got {width}x{height}")
    if rotation % 90:
        raise ValueError(f"{path}: rotation must be a multiple of 90 degrees, got {rotation}")
    if open_gop and codec != "h264":
        raise ValueError(f"{path}: open_gop is only written for h264, not {codec}")
    rate = Fraction(fps)
    encoder, options = _VIDEO_CODECS[codec]
    options = options | {"x264-params": "open-gop=1", "bf": "3"} if open_gop else options
    background = _background(width, height, look(seed).gradient)
    with av.open(str(path), "w", options=_BITEXACT) as container:
        video = container.add_stream(encoder, rate=rate, options=dict(options))
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        video.codec_context.thread_count = 1  # tiny frames: thread start-up costs more than it saves
        if rotation % 360:
            video.set_display_rotation(rotation % 360)
        audio = _add_audio(container, path, audio_rate, 2) if audio_rate else None
        for index in range(num_frames):
            frame = av.VideoFrame.from_ndarray(
                render_frame(index, width, height, seed, background=background), format="rgb24"
            )
            frame.pts, frame.time_base = index, 1 / rate
            container.mux(video.encode(frame))
        container.mux(video.encode(None))
        if audio is not None:
            _encode_audio(container, audio, _tone(round(num_frames / rate * audio_rate), audio_rate, 2))
    return path


def write_tone(path: str | Path, *, duration_s: float, sample_rate: int = 48000, channels: int = 2) -> Path:
    """A sound file (codec by suffix: PCM .wav, FLAC, MP3, Opus .ogg/.opus/.webm, else AAC): 440 Hz, plus 660 Hz
    on a second channel."""
    path = Path(path)
    with av.open(str(path), "w", options=_BITEXACT) as container:
        stream = _add_audio(container, path, sample_rate, channels)
        _encode_audio(container, stream, _tone(round(duration_s * sample_rate), sample_rate, channels))
    return path


# ---- data sets


@dataclass(frozen=True)
class _Spec:
    name: str
    width: int
    height: int
    num_frames: int
    fps: int | Fraction
    rotation: int = 0
    audio_rate: int | None = None
    codec: str | None = None


_SAMPLES = (
    _Spec("beach.mp4", 640, 360, 121, 25, audio_rate=48000),
    _Spec("square_dance.mp4", 480, 480, 49, 24),
    _Spec("phone_portrait.mp4", 360, 640, 73, 30),
    _Spec("phone_rotated.mov", 640, 360, 57, 30, rotation=90, audio_rate=44100),
    _Spec("wide_clip.mkv", 512, 288, 130, 50),
    _Spec("slow_motion.mkv", 480, 272, 33, 12, codec="mpeg4"),
    _Spec("web_short.webm", 320, 192, 41, 25),
    _Spec("web_talk.webm", 512, 288, 65, 30, audio_rate=48000),
    _Spec("tiny_loop.mov", 256, 256, 9, 25, codec="mpeg4"),
    _Spec("ntsc_clip.mp4", 640, 352, 61, Fraction(30000, 1001)),
    _Spec("fast_pan.mkv", 384, 216, 97, 50, audio_rate=48000),
    _Spec("upside_down.mp4", 448, 256, 25, 24, rotation=180),
)


def make_sample_dataset(folder: str | Path, *, seed: int = 0) -> list[Path]:
    """A dozen short clips of mixed size, length, frame rate and container, each with a .txt caption.

    A clip already there with its caption is left alone (not rewritten: same bytes, same mtime), so making
    the demo again gives the probe nothing to hash.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for offset, spec in enumerate(_SAMPLES):
        clip_seed = seed + offset
        if (folder / spec.name).is_file() and (folder / spec.name).with_suffix(".txt").is_file():
            paths.append(folder / spec.name)
            continue
        path = write_clip(
            folder / spec.name,
            width=spec.width,
            height=spec.height,
            num_frames=spec.num_frames,
            fps=spec.fps,
            rotation=spec.rotation,
            audio_rate=spec.audio_rate,
            codec=spec.codec,
            seed=clip_seed,
        )
        caption = look(clip_seed).caption(spec.rotation)
        if spec.audio_rate:
            caption += ", with a steady humming tone"
        path.with_suffix(".txt").write_text(caption + ".\n")
        paths.append(path)
    return paths


def make_bad_files(folder: str | Path) -> dict[str, Path]:
    """One file of each kind the probe must reject, keyed by kind."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    whole = write_clip(folder / "whole.mp4", width=64, height=64, num_frames=17, fps=25)
    truncated = folder / "truncated.mp4"
    data = whole.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])  # PyAV writes the moov index last, so this loses it
    whole.unlink()
    not_a_video = folder / "notes.mp4"
    not_a_video.write_text("These are meeting notes, not a video.\n" * 20)
    zero = folder / "zero.mp4"
    zero.write_bytes(b"")
    # tests run as root, where chmod 000 still reads: a dangling link is unreadable for everyone
    broken = folder / "gone.mp4"
    broken.symlink_to("does_not_exist.mp4")
    return {
        "truncated": truncated,
        "not_a_video": not_a_video,
        "no_video_stream": _write_data_only(folder / "telemetry.mp4"),
        "zero_bytes": zero,
        "unreadable": broken,
    }


def _write_data_only(path: Path) -> Path:
    """A file that holds neither picture nor sound: an MPEG-TS of one data stream (a drone's telemetry, say)."""
    with av.open(str(path), "w", format="mpegts", options=_BITEXACT) as container:
        stream = container.add_data_stream()
        stream.time_base = Fraction(1, 90000)
        packet = av.Packet(b"GPS 52.37N 4.90E " * 8)
        packet.stream, packet.pts, packet.dts, packet.time_base = stream, 0, 0, stream.time_base
        container.mux(packet)
    return path


def _append_free_box(path: Path, tag: object) -> None:
    # A trailing ISO BMFF `free` box is skipped by every MP4 reader; it makes the bytes (and hash) unique.
    payload = f"ltx2 sample {tag}".encode()
    with path.open("ab") as out:
        out.write((8 + len(payload)).to_bytes(4, "big") + b"free" + payload)


def write_distinct_clips(paths: Sequence[str | Path], *, encodes: int = 16, **clip: Any) -> list[Path]:
    """An MP4 clip like `write_clip(**clip)` at each of `paths`, no two with the same bytes, for at most `encodes`
    encodes: seeds 0, 1, ... are encoded, copied round-robin, and every file ends in a `free` box naming its path.

    A seed draws one of 64 looks (seeds 9 and 12 already look alike) and a pipeline keyed by content counts
    byte-identical files once: clips that must each count (a rehearsal's) need the box, not just other seeds.
    """
    paths = [Path(p) for p in paths]
    odd = [p.name for p in paths if p.suffix.lower() not in (".mp4", ".mov")]
    if odd:
        raise ValueError(f"{odd[:3]}: distinct clips are MP4 or MOV (the trailing box is ISO BMFF)")
    for seed, path in enumerate(paths[:encodes]):
        write_clip(path, seed=seed, **clip)
    for index, path in enumerate(paths[encodes:], start=encodes):
        shutil.copyfile(paths[index % encodes], path)
    for path in paths:
        _append_free_box(path, path.resolve())
    return paths


def make_many_clips(folder: str | Path, n: int, *, seed: int = 0) -> list[Path]:
    """`n` small valid MP4 clips (64x64, 9-33 frames), each with different bytes, for benchmarks.

    Sixteen distinct encodes are copied round-robin and each copy gets a unique trailing `free` box,
    so the set costs sixteen encodes however large `n` is.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    bases = [
        write_clip(
            folder / f"base_{i:02d}.tmp.mp4",
            width=64,
            height=64,
            num_frames=8 * rng.randint(1, 4) + 1,
            fps=rng.choice((24, 25, 30)),
            seed=seed + i,
        )
        for i in range(min(n, 16))
    ]
    paths = []
    for i in range(n):
        path = folder / f"clip_{i:05d}.mp4"
        shutil.copyfile(bases[i % len(bases)], path)
        _append_free_box(path, i)
        paths.append(path)
    for base in bases:
        base.unlink()
    return paths
