"""Scheduled sampling (SimpleTuner's "rollout"): train some clips on inputs the current model made itself.

For a clip drawn for rollout (chance `probability_at(step)`), k training timesteps are drawn from 0..max_step_offset;
its video is noised at sigma + k/1000 with the clip's own training noise, then the current model takes k Euler steps
of one training timestep (1/1000 in sigma, as the scheduler's 1,000 training timesteps) down to the training sigma,
without gradient -- the flow-matching sampler's own update, x <- x + (sigma_next - sigma) * v. The training pass
then sees that state instead of the exact interpolation, so it learns from the drift the model itself produces
(exposure bias). The target stays noise - x0, as SimpleTuner's rollout without ReflexFlow keeps it.

As SimpleTuner: only the video is rolled out (the audio input stays at the training sigma, and the rollout's
passes see it there); with `ramp_steps` the chance goes linearly from `prob_start` to `prob_end` over that many
steps. A clean I2V first frame stays clean and at timestep 0 through the rollout. Nothing is drawn while the chance
is 0, so such a run trains exactly as one without rollout (tested bit for bit).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ltx2core.training.flow_matching import TIMESTEP_SCALE, noisy_and_target

ONE_TIMESTEP = 1.0 / TIMESTEP_SCALE  # in sigma


@dataclass(frozen=True)
class Rollout:
    max_step_offset: int  # k is drawn from 0..this, per clip
    probability: float = 0.0  # chance per clip, without a ramp
    ramp_steps: int = 0  # > 0: the chance ramps from prob_start to prob_end over these optimizer steps
    prob_start: float = 0.0
    prob_end: float = 0.5

    def probability_at(self, step: int) -> float:
        """The chance at optimizer step `step` (1-based: the step being trained)."""
        if self.ramp_steps:
            done = min(max(step, 0) / self.ramp_steps, 1.0)
            return self.prob_start + (self.prob_end - self.prob_start) * done
        return self.probability


def draw_steps(rollout: Rollout | None, step: int, sigma: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """[B] Euler steps per clip (0 = not rolled out), never past sigma 1. Draws nothing while the chance is 0."""
    none = torch.zeros(sigma.shape[0], dtype=torch.long)
    if rollout is None or rollout.max_step_offset <= 0 or (chance := rollout.probability_at(step)) <= 0:
        return none
    chosen = torch.rand(sigma.shape[0], generator=generator, device=generator.device).cpu() < chance
    steps = torch.randint(0, rollout.max_step_offset + 1, (sigma.shape[0],), generator=generator,
                          device=generator.device).cpu()
    room = torch.floor((1.0 - sigma.double().cpu()) / ONE_TIMESTEP + 1e-6).long()  # steps that fit below sigma 1
    return torch.where(chosen, torch.minimum(steps, room), none)


@torch.no_grad()
def roll_out(transformer: Any, kwargs: dict[str, Any], x0: torch.Tensor, noise: torch.Tensor, sigma: torch.Tensor,
             conditioned: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
    """The video input at `sigma` after each clip's `steps` Euler steps from sigma + steps/1000 ([B, N, C] float32).

    `kwargs`: the training pass's transformer arguments (text, audio at the training sigma, coordinates);
    `conditioned` [B, N]: clean first-frame tokens (they stay x0, at timestep 0)."""
    steps = steps.to(sigma.device)
    source = sigma.double() + steps.double() * ONE_TIMESTEP  # [B]
    x, _ = noisy_and_target(x0, noise, source.to(x0.dtype))
    x = torch.where(conditioned[..., None], x0, x)
    dtype = kwargs["hidden_states"].dtype
    for j in range(int(steps.max())):
        current = source - j * ONE_TIMESTEP  # [B], each clip's own level
        timestep = (current * TIMESTEP_SCALE).float()
        video_timestep = timestep[:, None] * (~conditioned) if conditioned.any() else timestep
        velocity, _ = transformer(**(kwargs | dict(hidden_states=x.to(dtype), timestep=video_timestep,
                                                   sigma=timestep)))
        update = (j < steps)[:, None, None] & ~conditioned[..., None]
        x = torch.where(update, x - ONE_TIMESTEP * velocity.float(), x)
    return x
