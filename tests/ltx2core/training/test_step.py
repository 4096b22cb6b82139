"""The training step on the tiny transformer: the video-only fast path, audio, I2V conditioning, packing, fps."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from diffusers import LTX2Pipeline

from ltx2core.training.data import TrainBatch, TrainExample, collate
from ltx2core.training.step import masked_mse, model_inputs, training_step
from tests.ltx2core.training.helpers import AUDIO_CHANNELS, AUDIO_TOKENS, LATENT_SHAPE, make_examples, randomised

TOKENS_PER_FRAME = LATENT_SHAPE[2] * LATENT_SHAPE[3]
DUMMY_AUDIO_TOKENS = 5


def _batch(connectors: Any, text_max_length: int, examples: list[TrainExample]) -> TrainBatch:
    return collate(examples, connectors=connectors, text_max_length=text_max_length, device="cpu", dtype=torch.float32)


def _generator() -> torch.Generator:
    return torch.Generator().manual_seed(3)


@pytest.fixture
def transformer(lora_transformer: Callable[..., Any]) -> Any:
    return randomised(lora_transformer(with_audio=True))


def test_video_only_prediction_ignores_the_audio_stream(
    transformer: Any, connectors: Any, text_max_length: int
) -> None:
    batch = _batch(connectors, text_max_length, list(make_examples(2).values()))
    inputs = model_inputs(transformer, batch, generator=_generator())
    assert inputs.kwargs["isolate_modalities"] and inputs.audio_target is None
    assert inputs.kwargs["audio_hidden_states"].shape[1] == 1 and not inputs.kwargs["audio_hidden_states"].any()

    other_audio = torch.randn(2, DUMMY_AUDIO_TOKENS, AUDIO_CHANNELS, generator=_generator())
    changed = {**inputs.kwargs, "audio_hidden_states": other_audio, "audio_num_frames": DUMMY_AUDIO_TOKENS}
    with torch.no_grad():
        video = transformer(**inputs.kwargs)[0]
        assert torch.equal(transformer(**changed)[0], video)
        # Control: with cross-modal attention on, the same change does reach the video.
        joint = transformer(**{**changed, "isolate_modalities": False})[0]
        assert not torch.allclose(joint, transformer(**{**inputs.kwargs, "isolate_modalities": False})[0])


def test_noised_input_is_the_packed_latents_in_pipeline_order(
    transformer: Any, connectors: Any, text_max_length: int
) -> None:
    batch = _batch(connectors, text_max_length, list(make_examples(3).values()))
    inputs = model_inputs(transformer, batch, generator=_generator())
    sigma = inputs.sigma[:, None, None]
    recovered = inputs.kwargs["hidden_states"] - sigma * inputs.video_target  # x0 = x_t - sigma * v
    packed = LTX2Pipeline._pack_latents(batch.latents, 1, 1)
    torch.testing.assert_close(recovered, packed, rtol=1e-5, atol=1e-5)
    assert torch.equal(inputs.kwargs["timestep"], inputs.sigma * 1000)


def test_first_frame_conditioning_is_clean_at_timestep_zero_and_out_of_the_loss(
    transformer: Any, connectors: Any, text_max_length: int
) -> None:
    batch = _batch(connectors, text_max_length, list(make_examples(2).values()))
    inputs = model_inputs(transformer, batch, generator=_generator(), first_frame_p=1.0)
    first = slice(0, TOKENS_PER_FRAME)
    packed = LTX2Pipeline._pack_latents(batch.latents, 1, 1)
    assert torch.equal(inputs.kwargs["hidden_states"][:, first], packed[:, first])
    timestep = inputs.kwargs["timestep"]  # per token: [B, N]
    assert timestep.shape == packed.shape[:2]
    assert not timestep[:, first].any()
    assert torch.equal(timestep[:, TOKENS_PER_FRAME:], (inputs.sigma * 1000)[:, None].expand(-1, TOKENS_PER_FRAME))
    assert torch.equal(inputs.loss_mask[:, first], torch.zeros(2, TOKENS_PER_FRAME))
    assert inputs.loss_mask[:, TOKENS_PER_FRAME:].all()

    # The loss does not see the conditioned tokens, and does see the others.
    prediction = torch.randn(inputs.video_target.shape, generator=_generator())
    loss = masked_mse(prediction, inputs.video_target, inputs.loss_mask)
    off_first = prediction.clone()
    off_first[:, first] += 100
    off_rest = prediction.clone()
    off_rest[:, TOKENS_PER_FRAME] += 100
    assert masked_mse(off_first, inputs.video_target, inputs.loss_mask) == loss
    assert masked_mse(off_rest, inputs.video_target, inputs.loss_mask) > loss

    # Without conditioning: one timestep per clip, every token counted.
    plain = model_inputs(transformer, batch, generator=_generator(), first_frame_p=0.0)
    assert plain.kwargs["timestep"].shape == (2,) and plain.loss_mask.all()


def test_single_frame_clips_are_never_conditioned(transformer: Any, connectors: Any, text_max_length: int) -> None:
    still = TrainExample("still", torch.randn(8, 1, 2, 2), torch.randn(3, 32), 25.0)
    inputs = model_inputs(transformer, _batch(connectors, text_max_length, [still]), generator=_generator(),
                          first_frame_p=1.0)
    assert inputs.loss_mask.all()


def test_audio_is_noised_at_the_video_sigma_and_its_loss_added(
    transformer: Any, connectors: Any, text_max_length: int
) -> None:
    batch = _batch(connectors, text_max_length, list(make_examples(2, audio=True).values()))
    inputs = model_inputs(transformer, batch, generator=_generator())
    assert not inputs.kwargs["isolate_modalities"]
    assert inputs.kwargs["audio_hidden_states"].shape == (2, AUDIO_TOKENS, AUDIO_CHANNELS)
    recovered = inputs.kwargs["audio_hidden_states"] - inputs.sigma[:, None, None] * inputs.audio_target
    torch.testing.assert_close(recovered, batch.audio_latents, rtol=1e-5, atol=1e-5)

    output = training_step(transformer, batch, generator=_generator())
    assert output.audio_loss is not None and output.audio_loss > 0
    torch.testing.assert_close(output.loss.detach(), output.video_loss + output.audio_loss)
    video_only = training_step(transformer, _batch(connectors, text_max_length, list(make_examples(2).values())),
                               generator=_generator())
    assert video_only.audio_loss is None and torch.equal(video_only.loss.detach(), video_only.video_loss)


def test_each_clip_gets_its_own_frame_rate_in_rope(transformer: Any, connectors: Any, text_max_length: int) -> None:
    slow, fast = make_examples(1, frame_rate=24.0)["clip0"], make_examples(1, frame_rate=50.0)["clip0"]
    inputs = model_inputs(transformer, _batch(connectors, text_max_length, [slow, fast]), generator=_generator())
    coords = inputs.kwargs["video_coords"]
    frames, height, width = LATENT_SHAPE[1:]
    for row, fps in enumerate((24.0, 50.0)):
        expected = transformer.rope.prepare_video_coords(1, frames, height, width, "cpu", fps=fps)
        assert torch.equal(coords[row : row + 1], expected)
    assert not torch.equal(coords[0], coords[1])
