"""on_device: a component is on the accelerator only inside its block (text encoder and VAE never together)."""

from __future__ import annotations

import logging
from typing import Any

import pytest
import torch

from ltx2core.models.placement import on_device
from ltx2core.models.source import ModelSource
from ltx2core.models.text import encode_captions
from ltx2core.models.vae import encode_video


def _moves(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "ltx2core.models.placement"]


def test_moves_in_then_back_out_even_when_the_block_fails(caplog: pytest.LogCaptureFixture) -> None:
    module = torch.nn.Linear(2, 2)
    caplog.set_level(logging.DEBUG, logger="ltx2core.models.placement")
    with pytest.raises(RuntimeError, match="stage failed"), on_device(module, "cpu") as placed:
        assert placed is module
        raise RuntimeError("stage failed")
    assert _moves(caplog) == ["Linear -> cpu", "Linear -> cpu"]


def test_without_offload_the_component_stays(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="ltx2core.models.placement")
    with on_device(torch.nn.Linear(2, 2), "cpu", offload=False):
        pass
    assert _moves(caplog) == ["Linear -> cpu"]


def _device_types(module: torch.nn.Module) -> set[str]:
    return {p.device.type for p in module.parameters()}


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_text_encoder_and_vae_are_never_on_the_gpu_together(
    tiny: ModelSource, tiny_text: dict[str, Any], tiny_vae: Any
) -> None:
    text_encoder, vae = tiny_text["text_encoder"], tiny_vae
    with on_device(text_encoder, "cuda"), on_device(tiny_text["connectors"], "cuda"):
        assert _device_types(text_encoder) == {"cuda"} and _device_types(vae) == {"cpu"}
        cached = encode_captions(
            ["a cat"], max_length=tiny.text_max_length, device="cuda", dtype=torch.float32, **tiny_text
        )
    assert _device_types(text_encoder) == {"cpu"}
    with on_device(vae, "cuda"):
        assert _device_types(vae) == {"cuda"} and _device_types(text_encoder) == {"cpu"}
        latents = encode_video(vae, torch.rand(1, 3, 9, 64, 64) * 2 - 1)
    assert _device_types(vae) == {"cpu"}
    assert cached[0].features.device.type == "cpu" and latents.latents.device.type == "cuda"
