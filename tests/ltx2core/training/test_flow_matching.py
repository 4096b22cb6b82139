"""Training sigmas follow the validation sampler's dynamic shift (the tiny model's LTX-2.0 scheduler)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler
from diffusers.pipelines.ltx2.pipeline_ltx2 import calculate_shift

from ltx2core.models import loading
from ltx2core.models.source import ModelSource
from ltx2core.training.flow_matching import DynamicShift, noisy_and_target

TOKEN_COUNTS = (8, 1024, 1792, 4096, 6144, 14080)  # tiny clip, the shift's anchors, real clip sizes
SAMPLES = 100_000
MEDIAN_TOLERANCE = 0.005  # sampling error of a median of 1e5 draws is ~0.002 at worst here
INFERENCE_STEPS = 30


@pytest.fixture(scope="module")
def scheduler(tiny: ModelSource) -> FlowMatchEulerDiscreteScheduler:
    return loading.load_scheduler(tiny)


def _pipeline_mu(scheduler: FlowMatchEulerDiscreteScheduler, num_tokens: int) -> float:
    """What LTX2Pipeline.__call__ computes for a clip of `num_tokens` video tokens."""
    config = scheduler.config
    return calculate_shift(
        num_tokens, config.base_image_seq_len, config.max_image_seq_len, config.base_shift, config.max_shift
    )


def _medians(shift: DynamicShift) -> list[float]:
    generator = torch.Generator().manual_seed(0)
    return [shift.sample(SAMPLES, n, generator).median().item() for n in TOKEN_COUNTS]


def test_median_training_sigma_is_the_schedulers_image_of_one_half(scheduler: FlowMatchEulerDiscreteScheduler) -> None:
    shift = DynamicShift.from_scheduler_config(scheduler.config)
    expected = [float(scheduler.time_shift(_pipeline_mu(scheduler, n), 1.0, np.array([0.5]))[0]) for n in TOKEN_COUNTS]
    for n, median, want in zip(TOKEN_COUNTS, _medians(shift), expected, strict=True):
        assert abs(median - want) < MEDIAN_TOLERANCE, f"{n} tokens: median {median:.4f}, scheduler {want:.4f}"


def test_shift_grows_with_the_number_of_tokens(scheduler: FlowMatchEulerDiscreteScheduler) -> None:
    shift = DynamicShift.from_scheduler_config(scheduler.config)
    medians = _medians(shift)
    assert medians == sorted(medians) and len(set(medians)) == len(medians)
    assert shift.mu(1024) == pytest.approx(0.95) and shift.mu(4096) == pytest.approx(2.05)


def test_shift_is_the_schedulers_sigma_map_before_its_terminal_stretch(
    scheduler: FlowMatchEulerDiscreteScheduler,
) -> None:
    shift = DynamicShift.from_scheduler_config(scheduler.config)
    grid = np.linspace(1.0, 1 / INFERENCE_STEPS, INFERENCE_STEPS)  # LTX2Pipeline's default sigmas
    unstretched = FlowMatchEulerDiscreteScheduler.from_config(scheduler.config, shift_terminal=None)
    for n in TOKEN_COUNTS:
        unstretched.set_timesteps(sigmas=grid, mu=_pipeline_mu(scheduler, n))
        ours = shift.apply(torch.tensor(grid, dtype=torch.float32), n)
        torch.testing.assert_close(ours, unstretched.sigmas[:-1], rtol=1e-6, atol=1e-6)
    # The pipeline's own schedule ends at shift_terminal (0.1), which training deliberately ignores.
    scheduler.set_timesteps(sigmas=grid, mu=_pipeline_mu(scheduler, 6144))
    assert scheduler.sigmas[-2].item() == pytest.approx(scheduler.config.shift_terminal, abs=1e-6)


def test_distilled_scheduler_is_refused(scheduler: FlowMatchEulerDiscreteScheduler) -> None:
    with pytest.raises(ValueError, match="use_dynamic_shifting"):
        DynamicShift.from_scheduler_config({**scheduler.config, "use_dynamic_shifting": False})


def test_noisy_and_target_is_the_rectified_flow_the_sampler_inverts() -> None:
    generator = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(3, 5, 4, generator=generator), torch.randn(3, 5, 4, generator=generator)
    sigma = torch.tensor([0.0, 0.3, 1.0])
    noisy, target = noisy_and_target(x0, noise, sigma)
    assert torch.equal(noisy[0], x0[0]) and torch.equal(noisy[2], noise[2])
    torch.testing.assert_close(target, noise - x0)
    # LTX2Pipeline.convert_velocity_to_x0: x0 = x_t - sigma * v
    torch.testing.assert_close(noisy - sigma[:, None, None] * target, x0)


def test_a_distilled_flavour_trains_at_the_sigmas_its_sampler_visits_each_as_often() -> None:
    from ltx2core.models.flavours import DISTILLED_SIGMAS
    from ltx2core.training.flow_matching import DistilledSigmas, sigma_sampler

    sigmas = DistilledSigmas().sample(8000, 6144, torch.Generator().manual_seed(0))
    values, counts = torch.unique(sigmas, return_counts=True)
    assert sorted(values.tolist()) == sorted(torch.tensor(DISTILLED_SIGMAS).tolist())  # whatever the clip size
    assert counts.min() > 0.8 * 8000 / len(DISTILLED_SIGMAS)
    assert isinstance(sigma_sampler(True, {"use_dynamic_shifting": False}), DistilledSigmas)
    with pytest.raises(ValueError, match="2.3-distilled"):  # a distilled scheduler without a distilled flavour
        sigma_sampler(False, {"use_dynamic_shifting": False})
