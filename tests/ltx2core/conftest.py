"""Tiny LTX-2 components for the library tests (the `tiny` model source itself is in tests/conftest.py).

Shared by the tests under tests/ltx2core (models, data, training). Run: .venv/bin/pytest tests/ltx2core/models
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from ltx2core.models import loading
from ltx2core.models.source import ModelSource


@pytest.fixture(scope="session")
def tiny_vae(tiny: ModelSource) -> Any:
    return loading.load_vae(tiny, dtype=torch.float32)


@pytest.fixture(scope="session")
def tiny_text(tiny: ModelSource) -> dict[str, Any]:
    """Tokenizer, text encoder and connectors in float32 (the dtype of the stated tolerances)."""
    return dict(
        tokenizer=loading.load_tokenizer(tiny),
        text_encoder=loading.load_text_encoder(tiny, dtype=torch.float32),
        connectors=loading.load_connectors(tiny, dtype=torch.float32),
    )


@pytest.fixture(scope="session")
def tiny_audio_vae() -> Any:
    """A float32 LTX-2 audio VAE small enough for a CPU, with the real 4x downsampling in time and mel bins.

    Like the tiny model's audio VAE, but with non-trivial latent statistics so normalisation is exercised.
    """
    from diffusers import AutoencoderKLLTX2Audio

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        vae = AutoencoderKLLTX2Audio(
            base_channels=4, ch_mult=(1, 2, 4), num_res_blocks=1, latent_channels=2, mel_bins=8, resolution=32
        )
        # Non-trivial statistics, so that normalisation is exercised; 4 = 2 channels x 8 / 4 mel bins per token.
        vae.latents_mean.copy_(torch.randn(4) * 0.1)
        vae.latents_std.copy_(torch.rand(4) + 0.5)
    return vae.eval().requires_grad_(False)
