import pytest

from ltx2core.data.frames import FilterVerdict, FrameLimits, frames_at_rate, judge

LIMITS = FrameLimits(num_frames=121, min_frames=121, max_frames=241, frame_rate=25.0)


@pytest.mark.parametrize(
    ("num_frames", "fps", "expected"),
    [(100, 50.0, 50), (250, 50.0, 125), (118, 25.0, 118), (120, 30.0, 100), (12, 12.0, 25), (121, 24.0, 126)],
)
def test_frames_at_rate_resamples_to_the_dataset_rate(num_frames, fps, expected):
    assert frames_at_rate(num_frames, fps, 25.0) == expected


def test_a_50fps_clip_has_half_its_frames_at_25fps_and_is_judged_on_that():
    verdict = judge(num_frames=200, fps=50.0, error=None, limits=LIMITS)
    assert not verdict.kept
    assert verdict.reason == "100 frames at 25 fps < min_frames 121"
    assert judge(num_frames=250, fps=50.0, error=None, limits=LIMITS).kept


def test_reason_for_too_short_and_too_long_says_the_numbers():
    assert judge(num_frames=118, fps=25.0, error=None, limits=LIMITS).reason == "118 frames at 25 fps < min_frames 121"
    long = judge(num_frames=600, fps=25.0, error=None, limits=LIMITS)
    assert (long.kept, long.reason) == (False, "600 frames at 25 fps > max_frames 241")


def test_probe_errors_and_unknown_rates_are_rejected_with_a_reason():
    assert judge(num_frames=None, fps=None, error="empty file (0 bytes)", limits=LIMITS).reason == (
        "unusable file: empty file (0 bytes)")
    assert judge(num_frames=300, fps=0.0, error=None, limits=LIMITS).reason == "unknown frame rate or frame count"


def test_fingerprint_changes_with_each_limit():
    fps = {FrameLimits(121, m, None, 25.0).fingerprint for m in (121, 129)}
    fps |= {FrameLimits(121, 121, 241, r).fingerprint for r in (24.0, 25.0)}
    assert len(fps) == 4


def test_a_sound_file_is_as_many_frames_as_its_seconds_hold_in_an_audio_only_dataset_and_rejected_elsewhere():
    sounds = FrameLimits(num_frames=121, min_frames=121, max_frames=241, frame_rate=25.0, sound_files=True)
    assert judge(num_frames=None, fps=None, error=None, limits=sounds, duration_s=6.0) == FilterVerdict(True, 150, None)
    assert judge(num_frames=None, fps=None, error=None, limits=sounds, duration_s=4.0).reason == (
        "100 frames at 25 fps < min_frames 121")
    elsewhere = judge(num_frames=None, fps=None, error=None, limits=LIMITS, duration_s=6.0)
    assert not elsewhere.kept and elsewhere.reason.startswith("a sound file with no picture: only an audio-only")
    assert sounds.fingerprint != LIMITS.fingerprint  # switching audio_only re-judges the dataset
