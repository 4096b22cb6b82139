"""Validation settings: LTX-2's shape rules with the config key and the fix, the guidance warning, the config keys."""

from __future__ import annotations

import logging
import re

import pytest

from ltx2core import keys
from ltx2core.config.train import TrainConfig
from ltx2core.validation.settings import ValidationSettings


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"num_frames": 61}, "validation_num_video_frames 61 is not 8k+1: use 57 or 65"),
        ({"num_frames": 120}, "validation_num_video_frames 120 is not 8k+1: use 113 or 121"),
        (
            {"resolutions": ((100, 64),)},
            "validation_resolution 100x64 width 100 is not a multiple of 32: use 96 or 128",
        ),
        ({"resolutions": ()}, "validation_resolution is empty"),
        ({"steps": 0}, "validation_num_inference_steps 0 must be at least 1"),
    ],
)
def test_settings_the_model_cannot_sample_are_refused_with_the_fix(fields: dict, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        ValidationSettings(**fields)


@pytest.mark.parametrize(("guidance", "warned"), [(1.5, True), (2.0, False), (5.0, False), (6.0, False), (7.5, True)])
def test_guidance_outside_two_to_six_warns(guidance: float, warned: bool, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="ltx2core.validation.settings"):
        ValidationSettings(guidance=guidance)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert bool(warnings) == warned
    assert all(f"validation_guidance {guidance:g} is outside 2-6" in w and "black or noisy" in w for w in warnings)


def test_config_keys_map_to_settings_and_an_unset_validation_seed_is_the_seed() -> None:
    config = TrainConfig(validation_resolution="64x64,96x64", validation_num_video_frames=9, seed=7,
                         validation_guidance=4.0, validation_num_inference_steps=3, frame_rate=24)
    assert keys.validation_settings(config) == ValidationSettings(
        guidance=4.0, audio_guidance=4.0, steps=3, seed=7, resolutions=((64, 64), (96, 64)), num_frames=9,
        frame_rate=24.0
    )
    assert keys.validation_settings(config.model_copy(update={"validation_seed": 5})).seed == 5


def test_each_flavour_validates_with_its_documented_recipe_unless_the_config_says_otherwise() -> None:
    from ltx2core.models.flavours import DISTILLED_SIGMAS

    def settings(**keys_: object) -> ValidationSettings:
        return keys.validation_settings(TrainConfig(validation_num_video_frames=9, **keys_))

    plain = settings()  # 2.0: SimpleTuner's plain CFG 5 on both, 30 steps
    assert (plain.guidance, plain.audio_guidance, plain.steps, plain.stg_scale, plain.sigmas) == (5.0, 5.0, 30, 0, None)
    dev = settings(model_flavour="2.3")  # Lightricks: CFG 3 video / 7 audio, STG at block 28, modality 3
    assert (dev.guidance, dev.audio_guidance, dev.steps, dev.stg_scale, dev.stg_blocks) == (3.0, 7.0, 30, 1.0, (28,))
    assert (dev.modality_scale, dev.guidance_rescale) == (3.0, 0.7)
    assert settings(model_flavour="2.5") == dev
    distilled = settings(model_flavour="2.5-distilled")
    assert (distilled.guidance, distilled.audio_guidance, distilled.steps) == (1.0, 1.0, 8)
    assert distilled.sigmas == DISTILLED_SIGMAS and not distilled.guided
    mine = settings(model_flavour="2.3", validation_guidance=4.0, ltx2_validation_audio_guidance=6.0,
                    validation_num_inference_steps=12)
    assert (mine.guidance, mine.audio_guidance, mine.steps) == (4.0, 6.0, 12)
