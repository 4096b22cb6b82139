"""Fixtures for the validation tests: the tiny model's sampler (CPU, float32), prompts through its real
Gemma, and a LoRA with trained-looking (non-zero) weights written in both file formats.

Run: .venv/bin/pytest tests/ltx2core/validation
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ltx2core.models import loading
from ltx2core.models.source import ModelSource
from ltx2core.training.lora import LoraSpec, add_lora, save_lora, target_modules
from ltx2core.validation.sampling import Sampler, ValidationPrompt, encode_prompts, load_sampler
from ltx2core.validation.settings import ValidationSettings

PROMPTS = ("a red square moving right", "two dogs run on a beach")
NEGATIVE = "blurry, jittery"
SIZE = 64
FRAMES = 9
# Small enough for a CPU: 2 steps of 64x64x9 take well under a second per sample.
SETTINGS = ValidationSettings(guidance=4.0, audio_guidance=4.0, steps=2, seed=3, resolutions=((SIZE, SIZE),),
                              num_frames=FRAMES, frame_rate=25.0)
LORA_RANK = 4
LORA_ALPHA = 8.0  # scale 2: the diffusers file carries it in its header, the ComfyUI file folds it into lora_B


@pytest.fixture(scope="session")
def sampler(tiny: ModelSource) -> Sampler:
    return load_sampler(tiny, device="cpu", dtype=torch.float32)


@pytest.fixture(scope="session")
def encoded(tiny: ModelSource) -> list[ValidationPrompt]:
    """PROMPTS then NEGATIVE, through the tiny model's real text encoder."""
    return encode_prompts(tiny, [*PROMPTS, NEGATIVE], device="cpu", dtype=torch.float32)


@pytest.fixture(scope="session")
def prompts(encoded: list[ValidationPrompt]) -> list[ValidationPrompt]:
    return encoded[:-1]


@pytest.fixture(scope="session")
def negative(encoded: list[ValidationPrompt]) -> ValidationPrompt:
    return encoded[-1]


@pytest.fixture(scope="session")
def lora_folder(tiny: ModelSource, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A LoRA on the video attentions whose weights are random (lora_B is zero after init: no effect)."""
    transformer = loading.load_transformer(tiny, dtype=torch.float32)
    spec = LoraSpec(LORA_RANK, LORA_ALPHA, 0.0, tuple(target_modules(None, with_audio=False)))
    generator = torch.Generator().manual_seed(11)
    for param in add_lora(transformer, spec, seed=0):
        param.data = torch.randn(param.shape, generator=generator) * 0.5
    folder = tmp_path_factory.mktemp("lora")
    save_lora(transformer, folder, flavour="2.0")
    return folder
