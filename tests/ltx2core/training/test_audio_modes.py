"""Audio-conditioned training modes on the tiny transformer: the condition is clean at timestep 0, reaches the other
modality through the cross-modal attention, and only the other modality's loss is trained."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch

from ltx2core.config.train import TrainConfig
from ltx2core.training.data import collate
from ltx2core.training.step import model_inputs, training_step
from tests.ltx2core.training.helpers import make_examples, randomised


def _setup(lora_transformer: Callable[..., Any], connectors: Any, text_max_length: int):
    transformer = randomised(lora_transformer(with_audio=True))
    batch = collate(list(make_examples(2, audio=True).values()), connectors=connectors,
                    text_max_length=text_max_length, device="cpu", dtype=torch.float32)
    return transformer, batch


def _packed(latents: torch.Tensor) -> torch.Tensor:
    size, channels, frames, height, width = latents.shape
    return latents.permute(0, 2, 3, 4, 1).reshape(size, frames * height * width, channels)


def test_video_to_audio_keeps_the_video_clean_at_timestep_0_and_trains_the_audio_alone(
    lora_transformer: Callable[..., Any], connectors: Any, text_max_length: int
) -> None:
    transformer, batch = _setup(lora_transformer, connectors, text_max_length)
    inputs = model_inputs(transformer, batch, generator=torch.Generator().manual_seed(3), mode="video_to_audio")
    kwargs = inputs.kwargs
    assert torch.equal(kwargs["hidden_states"], _packed(batch.latents))  # the clean video
    assert not kwargs["timestep"].any() and not kwargs["sigma"].any() and not inputs.loss_mask.any()
    assert torch.equal(kwargs["audio_timestep"], inputs.sigma * 1000) and torch.equal(kwargs["audio_sigma"],
                                                                                     inputs.sigma * 1000)
    assert not kwargs["isolate_modalities"] and not torch.equal(kwargs["audio_hidden_states"], batch.audio_latents)
    with torch.no_grad():  # the audio hears the video: another clean video, another audio prediction
        audio = transformer(**kwargs)[1]
        other = transformer(**(kwargs | {"hidden_states": kwargs["hidden_states"].flip(1)}))[1]
    assert not torch.allclose(audio, other)
    output = training_step(transformer, batch, generator=torch.Generator().manual_seed(3), mode="video_to_audio")
    assert output.video_loss == 0 and output.audio_loss > 0 and torch.equal(output.loss.detach(), output.audio_loss)


def test_audio_to_video_keeps_the_audio_clean_at_timestep_0_and_trains_the_video_alone(
    lora_transformer: Callable[..., Any], connectors: Any, text_max_length: int
) -> None:
    transformer, batch = _setup(lora_transformer, connectors, text_max_length)
    inputs = model_inputs(transformer, batch, generator=torch.Generator().manual_seed(3), mode="audio_to_video")
    kwargs = inputs.kwargs
    assert torch.equal(kwargs["audio_hidden_states"], batch.audio_latents) and inputs.audio_target is None
    assert not kwargs["audio_timestep"].any() and not kwargs["audio_sigma"].any()
    assert torch.equal(kwargs["timestep"], inputs.sigma * 1000) and inputs.loss_mask.all()
    with torch.no_grad():  # the video sees the audio
        video = transformer(**kwargs)[0]
        other = transformer(**(kwargs | {"audio_hidden_states": kwargs["audio_hidden_states"].flip(1)}))[0]
    assert not torch.allclose(video, other)
    output = training_step(transformer, batch, generator=torch.Generator().manual_seed(3), mode="audio_to_video")
    assert output.audio_loss is None and torch.equal(output.loss.detach(), output.video_loss)


def test_the_modes_need_audio_and_refuse_what_has_no_meaning_there(
    lora_transformer: Callable[..., Any], connectors: Any, text_max_length: int
) -> None:
    transformer = lora_transformer()
    video_only = collate(list(make_examples(1).values()), connectors=connectors, text_max_length=text_max_length,
                         device="cpu", dtype=torch.float32)
    with pytest.raises(ValueError, match="audio_video_mode video_to_audio needs audio latents"):
        model_inputs(transformer, video_only, generator=torch.Generator(), mode="video_to_audio")
    with pytest.raises(ValueError, match="no noised video to roll out"):
        TrainConfig.model_validate({"output_dir": "o", "audio_video_mode": "video_to_audio",
                                    "scheduled_sampling_max_step_offset": 4, "scheduled_sampling_probability": 1})


def test_a_mode_without_an_audio_dataset_is_refused_at_load(tmp_path) -> None:
    import json

    from ltx2core.config.load import ConfigError, load_project

    (tmp_path / "config.json").write_text(json.dumps({"output_dir": "o", "audio_video_mode": "audio_to_video"}))
    clips = {"id": "clips", "dataset_type": "video", "resolution": 64, "instance_data_dir": str(tmp_path),
             "video": {"num_frames": 9}}
    (tmp_path / "backend.json").write_text(json.dumps([clips]))
    with pytest.raises(ConfigError, match="no enabled video dataset in .* has an audio block"):
        load_project(tmp_path / "config.json", tmp_path / "backend.json")


def test_audio_only_trains_the_audio_stream_alone_without_reading_the_video(
    lora_transformer: Callable[..., Any], connectors: Any, text_max_length: int
) -> None:
    transformer, batch = _setup(lora_transformer, connectors, text_max_length)
    inputs = model_inputs(transformer, batch, generator=torch.Generator().manual_seed(3), mode="audio_only")
    kwargs = inputs.kwargs
    assert kwargs["hidden_states"].shape == (2, 1, 8) and not kwargs["hidden_states"].any()  # one zero token
    assert kwargs["isolate_modalities"] and not kwargs["timestep"].any()
    assert torch.equal(kwargs["audio_timestep"], inputs.sigma * 1000)
    other_video = batch.__class__(**{**vars(batch), "latents": torch.randn_like(batch.latents)})
    again = model_inputs(transformer, other_video, generator=torch.Generator().manual_seed(3), mode="audio_only")
    assert torch.equal(again.kwargs["audio_hidden_states"], kwargs["audio_hidden_states"])  # the video is never read
    output = training_step(transformer, batch, generator=torch.Generator().manual_seed(3), mode="audio_only")
    assert output.video_loss == 0 and output.audio_loss > 0


def test_audio_only_lora_targets_are_the_audio_attentions():
    from ltx2core.training.lora import target_modules

    targets = target_modules(None, with_audio=True, audio_only=True)
    assert {t.rsplit(".", 1)[0] for t in targets} == {"audio_attn1", "audio_attn2", "audio_attn1.to_out",
                                                      "audio_attn2.to_out"}
    assert "audio_ff.net.2" in target_modules(None, with_audio=True, audio_only=True, feed_forward=True)
    assert "ff.net.2" not in target_modules(None, with_audio=True, audio_only=True, feed_forward=True)
