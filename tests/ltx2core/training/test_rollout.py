"""Scheduled sampling (rollout): off, it changes nothing, bit for bit; on, the training input is the current model's
own Euler steps from a higher noise level, computed here directly step by step."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch

from ltx2core.config.train import TrainConfig
from ltx2core.keys import rollout as rollout_of
from ltx2core.training.data import collate
from ltx2core.training.rollout import ONE_TIMESTEP, Rollout, draw_steps
from ltx2core.training.step import model_inputs
from tests.ltx2core.training.helpers import make_examples, randomised, train_steps


def test_a_run_whose_chance_is_zero_trains_the_lora_of_a_run_without_rollout(
    lora_transformer: Callable[..., Any], connectors: Any, text_max_length: int, tmp_path
) -> None:
    plain = train_steps(lora_transformer(with_audio=True), connectors, text_max_length, tmp_path / "plain")
    off = train_steps(lora_transformer(with_audio=True), connectors, text_max_length, tmp_path / "off",
                      rollout=Rollout(max_step_offset=4, probability=0.0))
    assert plain.keys() == off.keys() and all(torch.equal(plain[k], off[k]) for k in plain)
    on = train_steps(lora_transformer(with_audio=True), connectors, text_max_length, tmp_path / "on",
                     rollout=Rollout(max_step_offset=4, probability=1.0))
    assert not all(torch.equal(plain[k], on[k]) for k in plain)  # control: a rollout does change what is learned


@pytest.mark.parametrize("first_frame_p", [0.0, 1.0])
def test_the_rolled_out_input_is_the_model_s_own_euler_steps_down_to_the_training_sigma(
    lora_transformer: Callable[..., Any], connectors: Any, text_max_length: int, first_frame_p: float
) -> None:
    transformer = randomised(lora_transformer(with_audio=True))
    batch = collate(list(make_examples(1).values()), connectors=connectors, text_max_length=text_max_length,
                    device="cpu", dtype=torch.float32)
    rollout = Rollout(max_step_offset=6, probability=1.0)
    with torch.no_grad():
        for seed in range(50):  # the first seed whose draw rolls out several steps (sigma can be near 1)
            rolled = model_inputs(transformer, batch, generator=torch.Generator().manual_seed(seed),
                                  first_frame_p=first_frame_p, rollout=rollout)
            if (steps := int(rolled.rollout_steps[0])) >= 2:
                break
        plain = model_inputs(transformer, batch, generator=torch.Generator().manual_seed(seed),
                             first_frame_p=first_frame_p)
    assert steps >= 2

    # Everything but the video input is the plain run's: same sigma, noise, target, timestep, mask.
    assert torch.equal(plain.sigma, rolled.sigma) and torch.equal(plain.video_target, rolled.video_target)
    assert torch.equal(plain.kwargs["timestep"], rolled.kwargs["timestep"])
    assert torch.equal(plain.loss_mask, rolled.loss_mask)

    # Directly: noise the clean latents at sigma + k/1000 with the clip's noise, then k Euler steps of 1/1000.
    size, channels, frames, height, width = batch.latents.shape
    x0 = batch.latents.permute(0, 2, 3, 4, 1).reshape(size, frames * height * width, channels)
    noise = plain.video_target + x0
    clean = plain.loss_mask[0] == 0  # the I2V first frame's tokens
    level = float(plain.sigma[0]) + steps * ONE_TIMESTEP
    x = (1 - level) * x0 + level * noise
    x[:, clean] = x0[:, clean]
    with torch.no_grad():
        for j in range(steps):
            t = torch.tensor([(level - j * ONE_TIMESTEP) * 1000], dtype=torch.float32)
            timestep = t[:, None] * plain.loss_mask if clean.any() else t
            velocity = transformer(**(plain.kwargs | {"hidden_states": x, "timestep": timestep, "sigma": t}))[0]
            x = x - ONE_TIMESTEP * velocity
            x[:, clean] = x0[:, clean]
    assert torch.allclose(rolled.kwargs["hidden_states"], x, atol=1e-6, rtol=0)
    assert not torch.allclose(rolled.kwargs["hidden_states"], plain.kwargs["hidden_states"], atol=1e-4)
    assert torch.equal(rolled.kwargs["hidden_states"][:, clean], x0[:, clean])


def test_steps_never_start_above_sigma_1_and_nothing_is_drawn_while_the_chance_is_0() -> None:
    sigma = torch.tensor([0.9995, 0.997, 0.2, 0.5])
    generator = torch.Generator().manual_seed(0)
    steps = draw_steps(Rollout(max_step_offset=50, probability=1.0), 1, sigma, generator)
    assert steps[0] == 0 and steps[1] <= 3 and (sigma + steps * ONE_TIMESTEP <= 1 + 1e-6).all()

    ramp = Rollout(max_step_offset=5, ramp_steps=100, prob_start=0.0, prob_end=0.5)
    assert [ramp.probability_at(s) for s in (0, 50, 100, 400)] == [0.0, 0.25, 0.5, 0.5]
    before = generator.get_state()
    assert not draw_steps(ramp, 0, sigma, generator).any() and torch.equal(generator.get_state(), before)


def test_simpletuner_s_keys_map_to_the_rollout_and_what_cannot_work_is_refused() -> None:
    def config(**keys):
        return TrainConfig.model_validate({"output_dir": "out"} | keys)

    assert rollout_of(config()) is None
    assert rollout_of(config(scheduled_sampling_max_step_offset=8)) is None  # a chance of 0 throughout: off
    assert rollout_of(config(scheduled_sampling_max_step_offset=8, scheduled_sampling_probability=0.3)) == Rollout(
        max_step_offset=8, probability=0.3)
    ramped = rollout_of(config(scheduled_sampling_max_step_offset=8, scheduled_sampling_ramp_steps=200))
    assert ramped.ramp_steps == 200
    with pytest.raises(ValueError, match="scheduled_sampling_reflexflow is not implemented here"):
        config(scheduled_sampling_max_step_offset=8, scheduled_sampling_probability=1,
               scheduled_sampling_reflexflow=True)
    with pytest.raises(ValueError, match="scheduled sampling with fsdp_enable is not supported"):
        config(scheduled_sampling_max_step_offset=8, scheduled_sampling_probability=1, fsdp_enable=True,
               num_processes=2)


def test_a_simpletuner_config_is_told_that_reflexflow_is_not_added(tmp_path) -> None:
    from ltx2core.config.load import load_train_config

    path = tmp_path / "config.json"
    path.write_text('{"output_dir": "out", "scheduled_sampling_max_step_offset": 10, '
                    '"scheduled_sampling_probability": 1.0, "scheduled_sampling_sampler": "unipc"}')
    assert any("ReflexFlow's loss terms" in w for w in load_train_config(path).warnings)
    path.write_text('{"output_dir": "out", "scheduled_sampling_max_step_offset": 10, '
                    '"scheduled_sampling_probability": 1.0, "scheduled_sampling_reflexflow": false}')
    assert load_train_config(path).warnings == []
