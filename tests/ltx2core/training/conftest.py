"""Fixtures for the training tests: the tiny model's connectors and fresh LoRA transformers, in float32.

The tiny model itself comes from tests/ltx2core/conftest.py (`tiny`, built once per session).
Run: .venv/bin/pytest tests/ltx2core/training
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch

from ltx2core.models import loading
from ltx2core.models.source import ModelSource
from ltx2core.training.lora import LoraSpec, add_lora, target_modules

LORA_RANK = 4
LORA_SEED = 1


@pytest.fixture(scope="session")
def connectors(tiny: ModelSource) -> Any:
    return loading.load_connectors(tiny, dtype=torch.float32)


@pytest.fixture(scope="session")
def text_max_length(tiny: ModelSource) -> int:
    return tiny.text_max_length


@pytest.fixture
def lora_transformer(tiny: ModelSource) -> Callable[..., Any]:
    """A factory: a freshly loaded tiny transformer with a LoRA (video attentions by default)."""

    def make(*, with_audio: bool = False, alpha: float = LORA_RANK, dropout: float = 0.0, seed: int = LORA_SEED) -> Any:
        transformer = loading.load_transformer(tiny, dtype=torch.float32)
        spec = LoraSpec(LORA_RANK, alpha, dropout, tuple(target_modules(None, with_audio=with_audio)))
        add_lora(transformer, spec, seed=seed)
        return transformer

    return make
