"""The audio term's weight (fixed or auto), and the warnings of a run whose sound is not being learned, on the tiny
model's real training loop."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch

from ltx2core.training.audio_balance import AudioBalance, _fall, audio_warnings
from ltx2core.training.checkpoint import latest_checkpoint, load_checkpoint
from ltx2core.training.data import BucketBatches
from ltx2core.training.loop import TrainSettings, train
from tests.ltx2core.training.helpers import BUCKET, MemorySource, make_examples


def test_auto_weighs_the_audio_term_by_the_running_loss_ratio():
    assert AudioBalance.of(0.5).weight() == 0.5 and AudioBalance.of("auto").weight() == 1.0  # nothing seen yet
    balance = AudioBalance.of("auto")
    for _ in range(50):
        balance.update(video_loss=2.0, audio_loss=0.5)
    assert balance.weight() == pytest.approx(4.0)  # the audio term as large as the video's
    copy = AudioBalance.of("auto")
    copy.load_state_dict(balance.state_dict())
    assert copy == balance


def _history(video: list[float], audio: list[float]) -> list[dict[str, float]]:
    return [{"step": i + 1, "video_loss": v, "audio_loss": a} for i, (v, a) in enumerate(zip(video, audio))]


def test_the_warnings_name_a_lagging_audio_loss_and_few_samples_with_audio():
    falling = [2.0 - 0.03 * i for i in range(30)]
    assert audio_warnings(_history(falling, falling), audio_share=1.0) == []
    flat = [1.5 + 0.01 * (i % 2) for i in range(30)]
    (lagging,) = audio_warnings(_history(falling, flat), audio_share=1.0)
    assert lagging.startswith("the audio loss fell 0% from the first to the last third of the run while the video "
                              "loss fell 32%")
    (few,) = audio_warnings(_history(falling, falling), audio_share=0.25)
    assert few.startswith("only 25% of the samples carry audio")
    assert audio_warnings(_history(falling, flat)[:10], audio_share=1.0) == []  # too few steps to tell
    assert audio_warnings([{"step": 1, "video_loss": 1.0}], audio_share=0.0) == []  # video-only: nothing to say


def _train(transformer: Any, connectors: Any, text_max_length: int, folder: Path, examples: dict, weight: float | str,
           steps: int = 40):
    settings = TrainSettings(output_dir=folder, max_steps=steps, text_max_length=text_max_length, model="tiny",
                             learning_rate=3e-2, seed=5, mixed_precision="no", checkpointing_steps=steps // 2,
                             audio_loss_weight=weight)
    batches = BucketBatches({BUCKET: [(key, 0) for key in examples]}, batch_size=1, seed=8)
    return train(transformer, MemorySource(examples), batches, connectors=connectors, settings=settings)


def test_balanced_the_audio_loss_falls_and_a_sound_that_cannot_be_learned_is_warned_about(
    lora_transformer: Callable[..., Any], connectors: Any, text_max_length: int, tmp_path: Path
) -> None:
    learnable = make_examples(1, audio=True)  # one clip: its sound can be learned
    balanced = _train(lora_transformer(with_audio=True), connectors, text_max_length, tmp_path / "auto", learnable,
                      "auto")
    history = list(balanced.history)
    third = len(history) // 3
    assert _fall(history[:third], history[-third:], "audio_loss") > 0.15  # measured 0.21
    assert audio_warnings(history, audio_share=1.0) == []
    assert history[0]["audio_weight"] == 1.0 and history[-1]["audio_weight"] != 1.0  # the ratio, once it is known
    state = load_checkpoint(latest_checkpoint(tmp_path / "auto")).extra_state["audio_balance"]
    assert state["updates"] == 40  # the running means travel with the checkpoint, for an exact resume

    # Eight clips of one video and one caption, each with its own random sound: nothing in the inputs tells the
    # sounds apart, so beyond denoising in general there is nothing to learn; the video is learned, and the run
    # says the sound is not.
    generator = torch.Generator().manual_seed(1)
    clip = learnable["clip0"]
    unlearnable = {f"clip{i}": replace(clip, key=f"clip{i}", audio_latents=torch.randn(
        clip.audio_latents.shape, generator=generator)) for i in range(8)}
    run = _train(lora_transformer(with_audio=True), connectors, text_max_length, tmp_path / "noise", unlearnable,
                 "auto")
    (warning,) = audio_warnings(list(run.history), audio_share=1.0)
    assert "the sound is hardly being learned" in warning
