"""How much the audio loss counts, and the two ways an audio-video LoRA fails to learn its sound, said aloud.

The step's loss is video + w * audio. `audio_loss_weight` fixes w; "auto" sets it every step to the ratio of the
two losses' running means (exponential, decay 0.99, bias-corrected), so each modality contributes a term of the
same size whatever its raw scale. Why: LTX-2's audio loss is a mean over ~120 audio tokens of a 768x512x121 clip
against ~6,100 video tokens, on latents of another scale, and with a plain sum the voice of an audio-video LoRA is
often not learned (the most reported complaint about peer trainers: ../shared/research/anchors-2026-12.md).
Normalising by the running scale rather than the step's own loss keeps each loss's per-step variation, the signal.

`audio_warnings` looks at a finished run: an audio loss that fell far less than the video loss, and an epoch in
which few samples carry audio (the audio stream learns from those alone).
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

AUTO = "auto"
DECAY = 0.99
STALL_STEPS = 20  # steps with an audio loss needed before a stall can be told from noise
# Relative falls from the first third of the run to the last: the video's at least VIDEO_FELL, the audio's under
# LAGGING of the video's (per-step losses are noisy: the sampled sigma moves them more than training does).
VIDEO_FELL, LAGGING = 0.10, 1 / 2
FEW_WITH_AUDIO = 0.5


@dataclass
class AudioBalance:
    """The audio term's weight: fixed, or (auto) the running video/audio loss ratio, kept in each checkpoint."""

    fixed: float | None  # None = auto
    video_mean: float = 0.0  # running means, not yet bias-corrected
    audio_mean: float = 0.0
    updates: int = 0

    @classmethod
    def of(cls, weight: float | str) -> AudioBalance:
        return cls(None if weight == AUTO else float(weight))

    def weight(self) -> float:
        if self.fixed is not None:
            return self.fixed
        if not self.updates or self.audio_mean <= 0:
            return 1.0  # nothing seen yet: the plain sum
        return self.video_mean / self.audio_mean  # the bias corrections are the same factor and cancel

    def update(self, video_loss: float, audio_loss: float) -> None:
        """After a step whose clips carried audio: its mean video and audio losses (over every rank)."""
        if self.fixed is not None:
            return
        self.video_mean = DECAY * self.video_mean + (1 - DECAY) * video_loss
        self.audio_mean = DECAY * self.audio_mean + (1 - DECAY) * audio_loss
        self.updates += 1

    def state_dict(self) -> dict[str, Any]:
        return {"video_mean": self.video_mean, "audio_mean": self.audio_mean, "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.video_mean, self.audio_mean, self.updates = state["video_mean"], state["audio_mean"], state["updates"]


def audio_warnings(history: Sequence[dict[str, float]], audio_share: float) -> list[str]:
    """What the user should know about the audio of a run: `history` the loop's per-step metrics, `audio_share` the
    share of the epoch's samples that carry audio (0 for a video-only run: nothing to say)."""
    if audio_share <= 0:
        return []
    warnings = []
    if audio_share < FEW_WITH_AUDIO:
        warnings.append(f"only {audio_share:.0%} of the samples carry audio: the audio stream learns from those "
                        "alone, and the video-only ones dilute what it sees; give the audio clips repeats, or train "
                        "them as a dataset of their own")
    rows = [r for r in history if "audio_loss" in r and "video_loss" in r]
    if len(rows) >= STALL_STEPS:
        third = len(rows) // 3
        video = _fall(rows[:third], rows[-third:], "video_loss")
        audio = _fall(rows[:third], rows[-third:], "audio_loss")
        if video >= VIDEO_FELL and audio < LAGGING * video:
            warnings.append(f"the audio loss fell {audio:.0%} from the first to the last third of the run while the "
                            f"video loss fell {video:.0%}: the sound is hardly being learned; try audio_loss_weight "
                            "\"auto\" (or a weight above 1), more audio clips, or more steps")
    return warnings


def _fall(first: list[dict[str, float]], last: list[dict[str, float]], key: str) -> float:
    before = statistics.fmean(r[key] for r in first)
    after = statistics.fmean(r[key] for r in last)
    return (before - after) / before if before > 0 else 0.0
