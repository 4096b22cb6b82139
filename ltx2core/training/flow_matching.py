"""Flow matching as LTX-2 is trained, with the noise levels the validation sampler will visit.

Interpolation and target (rectified flow, as Lightricks' trainer and LTX2Pipeline's Euler sampler use):
    x_t = (1 - sigma) * x0 + sigma * noise        target = noise - x0        timestep = sigma * 1000
(the pipeline turns the predicted velocity back into x0 as x_t - sigma * v).

Which sigmas. LTX2Pipeline samples with FlowMatchEulerDiscreteScheduler and *dynamic shifting*: for a clip
of N video tokens it computes mu = calculate_shift(N) (a line through (1024, 0.95) and (4096, 2.05),
extended beyond both ends, no cap) and maps every sigma of its grid through the exponential time shift
    sigma' = exp(mu) / (exp(mu) + (1 / sigma - 1))        (diffusers `_time_shift_exponential`, power 1)
Training draws sigma from a logit-normal(0, 1) and applies the same map with the same mu. Because
time_shift(mu, sigmoid(z)) = sigmoid(z + mu), this IS the shifted logit-normal of Lightricks' trainer
(mean mu, std 1), with the shift taken from the scheduler config rather than a second copy of the numbers.
The median training sigma at N tokens equals the scheduler's image of 0.5 (tested): for 6,144 tokens
(768x512x121) mu = 2.78 and the median is 0.94; for 1,792 tokens (512x512x49) mu = 1.23, median 0.77.

Two differences from the pipeline and from Lightricks, on purpose:
- shift_terminal (0.1 for LTX-2.0) is NOT applied. In the scheduler it rescales the finished N-step grid
  so that its last step lands on 0.1; it depends on the number of inference steps, and it is a statement
  about where sampling stops, not about which noise levels exist. The map above already covers (0, 1).
- No cap on the token count (Lightricks caps mu at 4,096 tokens to keep its percentile stretch finite;
  diffusers does not cap). Consequence worth knowing: at 14,080 tokens (1280x704x121) mu = 5.6 and the
  median sigma is 0.996, so long, large clips train mostly at high noise, as the pipeline's schedule spends
  most of its steps there before the terminal stretch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from ltx2core.models.flavours import DISTILLED_SIGMAS

TIMESTEP_SCALE = 1000  # LTX2VideoTransformer3DModel.config.timestep_scale_multiplier for LTX-2.0


@dataclass(frozen=True)
class DynamicShift:
    """The scheduler's resolution-dependent shift: mu is a line in the number of video tokens."""

    base_shift: float = 0.95
    max_shift: float = 2.05
    base_seq_len: int = 1024
    max_seq_len: int = 4096

    @classmethod
    def from_scheduler_config(cls, config: Any) -> DynamicShift:
        """Read the numbers from a `FlowMatchEulerDiscreteScheduler` config (or dict), so training and
        validation cannot disagree; refuse a scheduler whose sigmas do not follow this map."""
        get = config.get if isinstance(config, dict) else lambda k, d=None: getattr(config, k, d)
        if not get("use_dynamic_shifting", False):
            raise ValueError(
                "scheduler/scheduler_config.json has use_dynamic_shifting false (a distilled checkpoint?): set "
                "model_flavour to the release's distilled flavour (e.g. 2.3-distilled) to train the distilled model"
            )
        if get("time_shift_type", "exponential") != "exponential":
            raise ValueError(
                f"scheduler/scheduler_config.json has time_shift_type {get('time_shift_type')!r}; LTX-2 uses "
                "'exponential', the only shift implemented here"
            )
        return cls(
            base_shift=float(get("base_shift", cls.base_shift)),
            max_shift=float(get("max_shift", cls.max_shift)),
            base_seq_len=int(get("base_image_seq_len", cls.base_seq_len)),
            max_seq_len=int(get("max_image_seq_len", cls.max_seq_len)),
        )

    def mu(self, num_tokens: int) -> float:
        """diffusers' `calculate_shift(num_tokens, base_seq_len, max_seq_len, base_shift, max_shift)`."""
        slope = (self.max_shift - self.base_shift) / (self.max_seq_len - self.base_seq_len)
        return self.base_shift + slope * (num_tokens - self.base_seq_len)

    def apply(self, sigmas: torch.Tensor, num_tokens: int) -> torch.Tensor:
        """sigma' = exp(mu) / (exp(mu) + (1/sigma - 1)): the scheduler's map before its terminal stretch."""
        exp_mu = math.exp(self.mu(num_tokens))
        return exp_mu / (exp_mu + (1 / sigmas - 1))


    def sample(self, batch_size: int, num_tokens: int, generator: torch.Generator) -> torch.Tensor:
        """[batch_size] sigmas in (0, 1]: logit-normal(0, 1), shifted for `num_tokens` video tokens; drawn on the
        generator's device, in float32."""
        z = torch.randn(batch_size, generator=generator, device=generator.device, dtype=torch.float32)
        return self.apply(torch.sigmoid(z), num_tokens)


@dataclass(frozen=True)
class DistilledSigmas:
    """A distilled model's noise levels: it is only ever sampled at the fixed sigmas of its schedule (8 for LTX-2.3
    and 2.5 distilled), so its LoRA trains at those, each as often, whatever the clip size."""

    sigmas: tuple[float, ...] = DISTILLED_SIGMAS

    def sample(self, batch_size: int, num_tokens: int, generator: torch.Generator) -> torch.Tensor:
        index = torch.randint(len(self.sigmas), (batch_size,), generator=generator, device=generator.device)
        return torch.tensor(self.sigmas, dtype=torch.float32, device=generator.device)[index]


SigmaSampler = DynamicShift | DistilledSigmas
LTX2_SHIFT = DynamicShift()  # the non-distilled scheduler of every release


def sigma_sampler(distilled: bool, scheduler_config: Any) -> SigmaSampler:
    """The training noise levels of a flavour: its sampler's fixed sigmas when distilled, else the dynamic shift
    of its (corrected: loading.load_scheduler) scheduler config."""
    return DistilledSigmas() if distilled else DynamicShift.from_scheduler_config(scheduler_config)


def noisy_and_target(
    x0: torch.Tensor, noise: torch.Tensor, sigma: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(x_t, velocity target) for clean `x0` [B, ...] and `sigma` [B] (or broadcastable to x0)."""
    sigma = sigma.reshape(sigma.shape + (1,) * (x0.ndim - sigma.ndim))
    # x_t = (1 - sigma) * x0 + sigma * noise
    noisy = (1 - sigma) * x0 + sigma * noise
    # d x_t / d sigma = noise - x0
    return noisy, noise - x0
