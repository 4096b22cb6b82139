"""What a video (or sound) file holds, read from its headers, and what its bytes hash to.

`probe_video` never raises for a bad file: the probe stage records every file, and a row whose `error`
says why ("empty file", "not a video", "no video stream", "truncated or corrupt", "unreadable") lets a
person fix the data set instead of rerunning to find the next crash. Only programming errors raise.

It opens each file once and decodes one frame: PyAV reads the display matrix (rotation) only from
decoded frames, and a first frame that decodes is the cheapest proof the codec data is sound.

A sound file (an audio stream and no picture: .wav, .flac, .mp3, an audio-only .m4a or .mp4) probes cleanly
with its picture fields None: audio-only datasets train on it, the filter stage rejects it for any other.
"""

from __future__ import annotations

import bisect
import hashlib
import stat
from dataclasses import dataclass, fields
from fractions import Fraction
from pathlib import Path

import av

# Containers whose files begin with a recognisable signature, so a failed open means damage, not a non-video.
_SIGNATURES = (
    (4, b"ftyp", "MP4/MOV", "its index (the moov atom) is missing or damaged, as when a copy or recording stops early"),
    (0, b"\x1a\x45\xdf\xa3", "Matroska/WebM", "its header is damaged"),
)
# How far a demuxed stream may fall short of the declared duration (plus two frames) before we call it cut:
# the container's duration covers audio too, which often runs a little longer than the video.
_TRUNCATION_SLACK = 0.02


@dataclass(frozen=True)
class VideoProbe:
    """One file's metadata; on a bad file every media field is None and `error` says why; a sound file has
    no picture (width, fps, num_frames... None) and no error."""

    width: int | None  # as displayed: coded size turned by `rotation`
    height: int | None
    coded_width: int | None  # as stored in the stream
    coded_height: int | None
    fps_num: int | None  # average frame rate, exactly
    fps_den: int | None
    fps: float | None
    num_frames: int | None
    duration_s: float | None
    rotation: int | None  # 0/90/180/270, counter-clockwise as ffprobe reports; phones held upright often give 270
    has_audio: bool | None
    audio_sample_rate: int | None
    audio_channels: int | None
    codec: str | None  # video codec name, e.g. "h264"
    size_bytes: int | None
    error: str | None  # None when the file probed cleanly; otherwise why, for a person

    @property
    def frame_rate(self) -> Fraction | None:
        return None if self.fps_num is None or self.fps_den is None else Fraction(self.fps_num, self.fps_den)


def _failed(error: str, size_bytes: int | None = None) -> VideoProbe:
    unknown = dict.fromkeys(field.name for field in fields(VideoProbe))
    return VideoProbe(**{**unknown, "size_bytes": size_bytes, "error": error})


def file_signature(path: str | Path) -> tuple[int, int]:
    """(size, mtime_ns) from one stat: a cheap key for 'has this file changed since it was hashed'."""
    st = Path(path).stat()
    return st.st_size, st.st_mtime_ns


def content_hash(path: str | Path) -> str:
    """Hex sha256 of the file's bytes, streamed."""
    with Path(path).open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def probe_video(path: str | Path) -> VideoProbe:
    """Metadata of the first video stream, without decoding more than one frame."""
    path = Path(path)
    size_bytes, problem = _file_problem(path)
    if problem is not None:
        return _failed(problem, size_bytes)
    try:
        container = av.open(str(path), metadata_errors="replace")
    except PermissionError:
        return _failed(f"unreadable: permission denied for {path}", size_bytes)
    except (av.FFmpegError, OSError) as exc:
        return _failed(_unopenable(path, exc), size_bytes)
    with container:
        try:
            return _probe_open(container, size_bytes)
        except (av.FFmpegError, OSError) as exc:
            return _failed(f"truncated or corrupt: reading {path.name} failed: {exc}", size_bytes)


def _file_problem(path: Path) -> tuple[int | None, str | None]:
    """(size, why FFmpeg should not be asked to open it) from one stat; the reason is None for a usable file."""
    try:
        st = path.stat()
    except FileNotFoundError:
        if path.is_symlink():
            return None, f"unreadable: {path} is a broken symbolic link (its target {path.readlink()} does not exist)"
        return None, f"unreadable: {path} does not exist"
    except OSError as exc:
        return None, f"unreadable: {path}: {exc.strerror or exc}"
    if stat.S_ISDIR(st.st_mode):
        return None, f"unreadable: {path} is a directory, not a video file"
    if not stat.S_ISREG(st.st_mode):  # a FIFO or device would block or never end
        return st.st_size, f"unreadable: {path} is not a regular file"
    return st.st_size, "empty file (0 bytes)" if st.st_size == 0 else None


def _unopenable(path: Path, exc: Exception) -> str:
    """Why FFmpeg refused the file: damage when it starts like a video container, otherwise not a video."""
    try:
        with path.open("rb") as f:
            head = f.read(12)
    except OSError as read_exc:
        return f"unreadable: {path}: {read_exc.strerror or read_exc}"
    for offset, magic, kind, damage in _SIGNATURES:
        if head[offset : offset + len(magic)] == magic:
            return f"truncated or corrupt: {path.name} starts as {kind} but {damage} ({exc})"
    return f"not a video: FFmpeg recognises no container format in {path.name} (it starts with {head[:8]!r})"


def _probe_open(container: av.container.InputContainer, size_bytes: int) -> VideoProbe:
    if not container.streams.video:
        if container.streams.audio:
            return _probe_sound(container, container.streams.audio[0], size_bytes)
        kinds = ", ".join(f"{s.type} ({s.codec_context.name})" if s.codec_context else s.type
                          for s in container.streams) or "no streams at all"
        return _failed(f"no video stream: the file holds {kinds}", size_bytes)
    stream = container.streams.video[0]
    if container.format.name == "image2" or container.format.name.endswith("_pipe"):
        # FFmpeg reads a picture as a one-frame video at an invented 25 fps: say what it is instead
        return _failed(f"not a video: the file is a still image ({stream.codec_context.name})", size_bytes)
    rate = stream.average_rate or stream.guessed_rate
    if not rate:
        return _failed("truncated or corrupt: the video stream has no frame rate", size_bytes)
    stream.codec_context.thread_count = 1  # one frame: decoder threads cost more to start than they save

    if stream.frames > 0:  # the container's index counts frames (MP4, MOV, AVI)
        num_frames = stream.frames
        duration_s = _declared_duration(container, stream) or num_frames / float(rate)
        error = _index_truncation(stream, size_bytes)
        rotation = _first_frame_rotation(container, stream) if error is None else None
    else:  # Matroska/WebM and streams without a count: demux every packet, decode only the first
        num_frames, duration_s, rotation = _demux_count(container, stream)
        declared = _tag_seconds(stream.metadata.get("DURATION")) or _declared_duration(container, stream)
        error = None
        if declared is not None and duration_s < declared * (1 - _TRUNCATION_SLACK) - 2 / rate:
            error = (
                f"truncated or corrupt: the container says {declared:.2f} s "
                f"but the video stops at {duration_s:.2f} s ({num_frames} frames)"
            )
    if error is None and num_frames == 0:
        error = "truncated or corrupt: the video stream holds no frames"
    if error is None and rotation is None:
        error = f"truncated or corrupt: none of the {num_frames} frames decodes"
    if error is None and rotation % 90:
        error = f"unsupported rotation: the display matrix turns the picture {rotation} degrees, not a quarter turn"
    if error is not None:
        return _failed(error, size_bytes)

    audio = container.streams.audio[0] if container.streams.audio else None
    turned = rotation in (90, 270)
    return VideoProbe(
        width=stream.height if turned else stream.width,
        height=stream.width if turned else stream.height,
        coded_width=stream.width,
        coded_height=stream.height,
        fps_num=rate.numerator,
        fps_den=rate.denominator,
        fps=float(rate),
        num_frames=num_frames,
        duration_s=duration_s,
        rotation=rotation,
        has_audio=audio is not None,
        audio_sample_rate=audio.codec_context.sample_rate if audio else None,
        audio_channels=audio.codec_context.layout.nb_channels if audio else None,
        codec=stream.codec_context.name,
        size_bytes=size_bytes,
        error=None,
    )


def _probe_sound(container: av.container.InputContainer, stream: av.AudioStream, size_bytes: int) -> VideoProbe:
    """A file of sound alone: its length from its packets' timestamps (a VBR MP3 declares a guess), proved sound
    by decoding its first frame."""
    stream.codec_context.thread_count = 1
    first, end, decoded = None, None, False
    for packet in container.demux(stream):
        if packet.size == 0:
            continue
        if packet.pts is not None:
            first = packet.pts if first is None else min(first, packet.pts)
            end = max(end or 0, packet.pts + (packet.duration or 0))
        decoded = decoded or bool(stream.decode(packet))
    decoded = decoded or any(True for _ in stream.decode(None))  # frames a decoder holds back until the end
    if first is not None and end > first:
        duration_s = float((end - first) * stream.time_base)
    else:
        duration_s = _declared_duration(container, stream)
    if not decoded:
        return _failed("truncated or corrupt: none of the audio frames decodes", size_bytes)
    if not duration_s:
        return _failed("truncated or corrupt: the audio stream has no length", size_bytes)
    unknown = dict.fromkeys(field.name for field in fields(VideoProbe))
    return VideoProbe(**unknown | {
        "duration_s": duration_s, "has_audio": True, "audio_sample_rate": stream.codec_context.sample_rate,
        "audio_channels": stream.codec_context.layout.nb_channels, "codec": stream.codec_context.name,
        "size_bytes": size_bytes})


def _declared_duration(container: av.container.InputContainer, stream: av.stream.Stream) -> float | None:
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    if container.duration:
        return container.duration / av.time_base
    return None


def _tag_seconds(value: str | None) -> float | None:
    """Seconds from a Matroska statistics tag such as DURATION=00:01:02.500000000 (None when absent or odd)."""
    try:
        hours, minutes, seconds = (value or "").split(":")
        return int(hours) * 3600 + int(minutes) * 60 + float(seconds)
    except ValueError:
        return None


def _index_truncation(stream: av.VideoStream, size_bytes: int) -> str | None:
    """Frames the index promises beyond the end of the file: the check for a cut-short MP4 whose index came first."""
    entries = stream.index_entries
    if len(entries) != stream.frames or not entries:
        return None

    def end_of(index: int) -> int:  # a bisect key over the index, so no list of 100k entries is built
        return entries[index].pos + entries[index].size

    if end_of(len(entries) - 1) <= size_bytes:
        return None
    intact = bisect.bisect_right(range(len(entries)), size_bytes, key=end_of)
    return (
        f"truncated or corrupt: the index declares {stream.frames} frames but the file ends "
        f"after frame {intact} ({size_bytes} bytes, frame data runs to {end_of(len(entries) - 1)})"
    )


def _rotation(frame: av.VideoFrame) -> int:
    return frame.rotation % 360


def _first_frame_rotation(container: av.container.InputContainer, stream: av.VideoStream) -> int | None:
    for packet in container.demux(stream):
        for frame in stream.decode(packet):
            return _rotation(frame)
    return None


def _demux_count(container: av.container.InputContainer, stream: av.VideoStream) -> tuple[int, float, int | None]:
    """(frames, seconds, rotation) by reading every packet of the stream; only the first frame is decoded."""
    rate = stream.average_rate or stream.guessed_rate
    frame_ticks = max(1, round(1 / (rate * stream.time_base)))  # for packets that carry no duration
    count, first, end, rotation = 0, None, None, None
    for packet in container.demux(stream):
        if packet.size == 0:  # the flush packet at the end
            continue
        count += 1
        pts = packet.pts if packet.pts is not None else packet.dts
        if pts is not None:
            first = pts if first is None else min(first, pts)
            stop = pts + (packet.duration or frame_ticks)
            end = stop if end is None else max(end, stop)
        if rotation is None:
            frames = stream.decode(packet)
            rotation = _rotation(frames[0]) if frames else None
    if rotation is None and count:
        rotation = next((_rotation(f) for f in stream.decode(None)), None)  # frames held back by B-frame delay
    duration_s = count / float(rate) if first is None else float((end - first) * stream.time_base)
    return count, duration_s, rotation
