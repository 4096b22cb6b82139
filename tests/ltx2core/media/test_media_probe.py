"""Probe, hashes and sample data on real files written by `synth`.  Run: .venv/bin/pytest tests/ltx2core/media"""

from __future__ import annotations

import hashlib
import os
import shutil
from fractions import Fraction
from pathlib import Path

import av
import pytest

from ltx2core.media import synth
from ltx2core.media.probe import VideoProbe, content_hash, file_signature, probe_video

NTSC = Fraction(30000, 1001)


@pytest.mark.parametrize(
    ("name", "width", "height", "num_frames", "fps", "audio_rate", "codec"),
    [
        ("a.mp4", 96, 64, 25, 25, 48000, "h264"),
        ("b.mp4", 64, 96, 17, NTSC, None, "h264"),
        ("c.mov", 128, 64, 33, 24, 44100, "h264"),
        ("d.mov", 64, 64, 9, 12, None, "mpeg4"),
        ("e.mkv", 96, 64, 41, 50, 48000, "h264"),
        ("f.webm", 64, 96, 21, 30, 48000, "vp9"),
        ("g.webm", 96, 64, 11, 24, None, "vp9"),
    ],
)
def test_probe_reads_each_container(
    tmp_path: Path,
    name: str,
    width: int,
    height: int,
    num_frames: int,
    fps: int | Fraction,
    audio_rate: int | None,
    codec: str,
) -> None:
    path = synth.write_clip(
        tmp_path / name, width=width, height=height, num_frames=num_frames, fps=fps, audio_rate=audio_rate, codec=codec
    )

    probe = probe_video(path)

    assert probe.error is None
    assert (probe.width, probe.height) == (width, height)
    assert (probe.coded_width, probe.coded_height) == (width, height)
    assert Fraction(probe.fps_num, probe.fps_den) == fps
    assert probe.fps == pytest.approx(float(fps))
    assert probe.num_frames == num_frames
    assert probe.duration_s == pytest.approx(num_frames / float(fps), abs=0.002)
    assert probe.rotation == 0
    assert probe.codec == codec
    assert probe.size_bytes == path.stat().st_size
    assert probe.has_audio is (audio_rate is not None)
    assert probe.audio_sample_rate == audio_rate
    assert probe.audio_channels == (2 if audio_rate else None)


@pytest.mark.parametrize("rotation", [90, 180, 270])
@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
def test_probe_reports_rotation_and_display_size(tmp_path: Path, rotation: int, suffix: str) -> None:
    path = synth.write_clip(tmp_path / f"turned{suffix}", width=128, height=64, num_frames=9, fps=25, rotation=rotation)

    probe = probe_video(path)

    assert probe.error is None
    assert probe.rotation == rotation
    assert (probe.coded_width, probe.coded_height) == (128, 64)
    assert (probe.width, probe.height) == ((64, 128) if rotation in (90, 270) else (128, 64))


@pytest.mark.parametrize(
    ("kind", "error_start"),
    [
        ("truncated", "truncated or corrupt: truncated.mp4 starts as MP4/MOV but its index (the moov atom) is missing"),
        ("not_a_video", "not a video:"),
        ("no_video_stream", "no video stream: the file holds data"),
        ("zero_bytes", "empty file (0 bytes)"),
        ("unreadable", "unreadable:"),
    ],
)
def test_probe_names_what_is_wrong_with_a_bad_file(tmp_path: Path, kind: str, error_start: str) -> None:
    path = synth.make_bad_files(tmp_path)[kind]

    probe = probe_video(path)

    assert probe.error is not None and probe.error.startswith(error_start), probe.error
    assert (probe.width, probe.num_frames, probe.fps, probe.has_audio) == (None, None, None, None)


@pytest.mark.parametrize(("name", "rate", "codec"), [("rain.wav", 48000, "pcm_s16le"), ("rain.flac", 44100, "flac"),
                                                ("rain.mp3", 44100, "mp3float"), ("rain.m4a", 48000, "aac"),
                                                ("rain.ogg", 48000, "opus"), ("memo.mp4", 16000, "aac")])
def test_a_sound_file_probes_cleanly_with_its_length_and_no_picture(tmp_path: Path, name: str, rate: int,
                                                                    codec: str) -> None:
    path = synth.write_tone(tmp_path / name, duration_s=2.0, sample_rate=rate)

    probe = probe_video(path)

    assert probe.error is None
    assert (probe.has_audio, probe.audio_sample_rate, probe.audio_channels, probe.codec) == (True, rate, 2, codec)
    assert probe.duration_s == pytest.approx(2.0, abs=2 * 1152 / rate)  # encoder delay and padding: < 2 MP3 frames
    assert (probe.width, probe.fps, probe.num_frames, probe.rotation) == (None, None, None, None)


def test_a_title_that_is_not_utf8_does_not_make_a_file_unreadable(tmp_path: Path) -> None:
    import subprocess

    clip = synth.write_clip(tmp_path / "clip.mp4", width=64, height=64, num_frames=9, fps=25)
    tagged = tmp_path / "tagged.mkv"
    title = "テスト動画".encode("shift_jis")  # as an old camera writes it
    subprocess.run([b"ffmpeg", b"-v", b"error", b"-i", bytes(clip), b"-metadata", b"title=" + title, b"-c", b"copy",
                    bytes(tagged)], check=True)

    probe = probe_video(tagged)

    assert probe.error is None and (probe.width, probe.num_frames) == (64, 9)


def test_a_cut_sound_file_is_corrupt(tmp_path: Path) -> None:
    whole = synth.write_tone(tmp_path / "whole.m4a", duration_s=1.0).read_bytes()
    (tmp_path / "cut.m4a").write_bytes(whole[: len(whole) // 2])  # the index comes last: it is lost

    assert probe_video(tmp_path / "cut.m4a").error.startswith("truncated or corrupt: cut.m4a starts as MP4/MOV")


def test_probe_reports_a_directory_and_a_missing_file_as_unreadable(tmp_path: Path) -> None:
    folder = tmp_path / "x.mp4"
    folder.mkdir()

    assert probe_video(folder).error == f"unreadable: {folder} is a directory, not a video file"
    assert probe_video(tmp_path / "missing.mp4").error == f"unreadable: {tmp_path / 'missing.mp4'} does not exist"


def test_probe_refuses_a_still_image(tmp_path: Path) -> None:
    picture = tmp_path / "photo.mp4"  # misnamed on purpose: FFmpeg goes by content
    av.VideoFrame.from_ndarray(synth.render_frame(0, 64, 64), format="rgb24").save(str(tmp_path / "photo.png"))
    (tmp_path / "photo.png").rename(picture)

    assert probe_video(picture).error == "not a video: the file is a still image (png)"


def _faststart_copy(source: Path, target: Path) -> Path:
    """Remux with the index (moov) before the frames, as web-ready MP4s are stored."""
    with av.open(str(source)) as inp, av.open(str(target), "w", options={"movflags": "faststart"}) as out:
        stream = out.add_stream_from_template(inp.streams.video[0])
        for packet in inp.demux(inp.streams.video[0]):
            if packet.dts is not None:
                packet.stream = stream
                out.mux(packet)
    return target


@pytest.mark.parametrize("suffix", [".mp4", ".mkv", ".webm"])
def test_probe_finds_frames_missing_from_a_cut_file_that_still_opens(tmp_path: Path, suffix: str) -> None:
    whole = synth.write_clip(tmp_path / f"whole{suffix}", width=64, height=64, num_frames=49, fps=25, audio_rate=48000)
    if suffix == ".mp4":
        whole = _faststart_copy(whole, tmp_path / "indexed.mp4")
    assert probe_video(whole).error is None
    data = whole.read_bytes()
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(data[: len(data) * 3 // 4])

    probe = probe_video(cut)

    assert probe.error is not None and probe.error.startswith("truncated or corrupt:"), probe.error


def test_content_hash_follows_bytes_not_names(tmp_path: Path) -> None:
    first = synth.write_clip(tmp_path / "first.mp4", width=64, height=64, num_frames=9, fps=25, seed=1)
    other = synth.write_clip(tmp_path / "other.mp4", width=64, height=64, num_frames=9, fps=25, seed=2)
    copy = tmp_path / "sub" / "copy.mp4"
    copy.parent.mkdir()
    shutil.copyfile(first, copy)
    renamed = first.rename(tmp_path / "renamed.mov")

    assert content_hash(copy) == content_hash(renamed) == hashlib.sha256(copy.read_bytes()).hexdigest()
    assert content_hash(other) != content_hash(copy)


def test_file_signature_changes_when_the_file_is_touched(tmp_path: Path) -> None:
    path = synth.write_clip(tmp_path / "a.mp4", width=64, height=64, num_frames=9, fps=25)
    size, mtime_ns = file_signature(path)
    assert size == path.stat().st_size

    os.utime(path, ns=(mtime_ns + 1_000_000_000, mtime_ns + 1_000_000_000))

    assert file_signature(path) == (size, mtime_ns + 1_000_000_000)


def test_write_clip_is_deterministic_per_seed(tmp_path: Path) -> None:
    again = [
        synth.write_clip(tmp_path / f"{i}.webm", width=64, height=64, num_frames=9, fps=25, audio_rate=48000)
        for i in range(2)
    ]
    reseeded = synth.write_clip(
        tmp_path / "seeded.webm", width=64, height=64, num_frames=9, fps=25, audio_rate=48000, seed=5
    )

    assert content_hash(again[0]) == content_hash(again[1]) != content_hash(reseeded)


def test_caption_describes_motion_as_seen_after_rotation() -> None:
    seed = next(s for s in range(100) if synth.look(s).direction == "right")
    look = synth.look(seed)

    assert f"a {look.square} square moving right over" in look.caption()
    assert "moving up" in look.caption(90)
    assert "moving left" in look.caption(180)
    assert "moving down" in look.caption(270)


def test_sample_dataset_is_varied_captioned_and_clean(tmp_path: Path) -> None:
    paths = synth.make_sample_dataset(tmp_path)

    probes: dict[str, VideoProbe] = {p.name: probe_video(p) for p in paths}

    assert len(paths) >= 12
    assert {name: p.error for name, p in probes.items() if p.error} == {}
    assert {p.suffix for p in paths} == {".mp4", ".mov", ".mkv", ".webm"}
    assert {round(p.fps) for p in probes.values()} >= {12, 24, 25, 30, 50}
    assert any(p.has_audio for p in probes.values()) and not all(p.has_audio for p in probes.values())
    assert any(p.rotation == 90 and p.height > p.width for p in probes.values())
    assert min(p.num_frames for p in probes.values()) <= 9 and max(p.num_frames for p in probes.values()) >= 121
    for path in paths:
        assert " square moving " in path.with_suffix(".txt").read_text()

    # Made again (a second `make demo`): nothing is rewritten, so the probe has nothing to hash.
    stamps = {p: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
    assert synth.make_sample_dataset(tmp_path) == paths
    assert {p: p.stat().st_mtime_ns for p in tmp_path.iterdir()} == stamps


def test_many_clips_are_valid_and_all_different(tmp_path: Path) -> None:
    paths = synth.make_many_clips(tmp_path, 40)

    assert [probe_video(p).error for p in paths] == [None] * 40
    assert len({content_hash(p) for p in paths}) == 40
    assert {probe_video(p).num_frames for p in paths} <= {9, 17, 25, 33}


def test_distinct_clips_count_apart_even_where_their_seeds_look_alike(tmp_path: Path) -> None:
    # seeds 9 and 12 draw the same look: without the trailing box their encodes would be the same bytes
    paths = synth.write_distinct_clips([tmp_path / f"c{i}.mp4" for i in range(13)], encodes=13, width=64, height=64,
                                       num_frames=9, fps=25)
    more = synth.write_distinct_clips([tmp_path / f"d{i}.mp4" for i in range(3)], encodes=1, width=64, height=64,
                                      num_frames=9, fps=25)  # copies of one encode

    assert [probe_video(p).num_frames for p in paths + more] == [9] * 16
    assert len({content_hash(p) for p in paths + more}) == 16
    with pytest.raises(ValueError, match="MP4 or MOV"):
        synth.write_distinct_clips([tmp_path / "e.webm"], width=64, height=64, num_frames=9, fps=25)
