"""IC-LoRA's reference tokens in the training step, packed as diffusers' LTX2InContextPipeline packs them: its own
encoding of a half-resolution reference is the oracle for the tokens' order and their RoPE positions."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
import torch

from ltx2core.models.source import ModelSource
from ltx2core.training.data import collate
from ltx2core.training.step import model_inputs, training_step
from tests.ltx2core.training.helpers import make_examples

TARGET = (64, 64, 9)  # width, height, frames: latents [8, 2, 2, 2] (the helpers' clips)


def _pipeline_reference(tiny: ModelSource, factor: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(packed reference tokens [1, N_r, C], their coordinates [1, 3, N_r, 2]) from LTX2InContextPipeline."""
    from diffusers.pipelines.ltx2.pipeline_ltx2_ic_lora import LTX2InContextPipeline, LTX2ReferenceCondition

    pipe = LTX2InContextPipeline.from_pretrained(tiny.name_or_path, dtype=torch.float32)
    frames = np.random.default_rng(0).integers(0, 256, (TARGET[2], TARGET[1], TARGET[0], 3), dtype=np.uint8)
    with torch.no_grad():
        tokens, coords, _, _ = pipe._encode_reference_conditions(
            reference_conditions=[LTX2ReferenceCondition(frames=list(frames), strength=1.0)], height=TARGET[1],
            width=TARGET[0], num_frames=TARGET[2], reference_downscale_factor=factor, frame_rate=25.0,
            dtype=torch.float32, device=torch.device("cpu"))
    return tokens, coords


@pytest.mark.parametrize("factor", [1, 2])
def test_reference_tokens_follow_the_clip_s_clean_at_timestep_0_where_the_in_context_pipeline_puts_them(
    tiny: ModelSource, lora_transformer: Callable[..., Any], connectors: Any, text_max_length: int, factor: int
) -> None:
    tokens, coords = _pipeline_reference(tiny, factor)
    frames, height, width = 2, 2 // factor, 2 // factor
    reference = tokens.reshape(1, frames, height, width, -1).permute(0, 4, 1, 2, 3)  # unpacked: [1, C, F, H, W]
    transformer = lora_transformer()
    plain = collate(list(make_examples(1).values()), connectors=connectors, text_max_length=text_max_length,
                    device="cpu", dtype=torch.float32)
    batch = replace(plain, reference_latents=reference)
    alone = model_inputs(transformer, plain, generator=torch.Generator().manual_seed(4))
    inputs = model_inputs(transformer, batch, generator=torch.Generator().manual_seed(4))
    n = alone.kwargs["hidden_states"].shape[1]

    assert torch.equal(inputs.kwargs["hidden_states"][:, :n], alone.kwargs["hidden_states"])  # the clip: unchanged
    assert torch.equal(inputs.kwargs["hidden_states"][:, n:], tokens)  # then the reference, clean, in its order
    assert torch.equal(inputs.kwargs["video_coords"][:, :, :n], alone.kwargs["video_coords"])
    assert torch.allclose(inputs.kwargs["video_coords"][:, :, n:], coords)  # positions scaled by the factor
    assert not inputs.kwargs["timestep"][:, n:].any() and (inputs.kwargs["timestep"][:, :n] > 0).all()
    assert not inputs.loss_mask[:, n:].any() and inputs.loss_mask[:, :n].all()

    output = training_step(transformer, batch, generator=torch.Generator().manual_seed(4))
    assert torch.isfinite(output.loss)


def test_a_reference_of_another_shape_is_refused(
    lora_transformer: Callable[..., Any], connectors: Any, text_max_length: int
) -> None:
    batch = collate(list(make_examples(1).values()), connectors=connectors, text_max_length=text_max_length,
                    device="cpu", dtype=torch.float32)
    odd = replace(batch, reference_latents=torch.zeros(1, 8, 1, 2, 2))  # one latent frame for the clip's two
    with pytest.raises(ValueError, match="IC-LoRA reference latents .* do not fit the clip's"):
        model_inputs(lora_transformer(), odd, generator=torch.Generator())


def test_scheduled_sampling_with_an_ic_lora_dataset_is_refused_at_load(tmp_path) -> None:
    import json

    from ltx2core.config.load import ConfigError, load_project

    (tmp_path / "config.json").write_text(json.dumps({"output_dir": "o", "scheduled_sampling_max_step_offset": 4,
                                                      "scheduled_sampling_probability": 1.0}))
    (tmp_path / "backend.json").write_text(json.dumps([
        {"id": "clips", "dataset_type": "video", "resolution": 64, "instance_data_dir": str(tmp_path),
         "conditioning_data": "refs", "video": {"num_frames": 9}},
        {"id": "refs", "dataset_type": "conditioning", "instance_data_dir": str(tmp_path)}]))
    with pytest.raises(ConfigError, match="scheduled sampling with the IC-LoRA dataset.s. clips of .* not supported"):
        load_project(tmp_path / "config.json", tmp_path / "backend.json")
