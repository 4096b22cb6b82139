"""The model a training run trains, from typed settings: transformer and connectors loaded, LoRA added, base weights
in their precision, placed (block swap, or one device; FSDP2 shards over the ranks). The train stage calls it;
ltx2core/keys.py builds its settings from the config.

Loaded on the host first, so that what the GPU never needs (the parked audio stream, swapped blocks, the bf16
copies of fp8/int8 weights) never lands there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch

from ltx2core.models.loading import load_connectors, load_transformer
from ltx2core.models.source import ModelSource
from ltx2core.training.audio_stream import ParkedAudio, park_audio_stream
from ltx2core.training.lora import LoraSpec, add_lora
from ltx2core.training.offload import SwapPlan


@dataclass(frozen=True)
class ModelSettings:
    lora: LoraSpec
    seed: int  # the LoRA's initial weights
    base_precision: Literal["no_change", "fp8-e4m3fn", "int8-torchao"] = "no_change"
    swap: SwapPlan | None = None  # block swap: these blocks' frozen weights stay on the host
    with_audio: bool = False  # False: the audio stream is parked on the host (exact for video-only data)
    fsdp: bool = False  # shard the frozen base over the ranks (FSDP2)
    reshard_after_forward: bool = True


@dataclass
class TrainingModel:
    transformer: Any
    connectors: Any
    parked: ParkedAudio | None  # the audio stream on the host, restorable for sampling
    base_bytes_saved: int  # by fp8 or int8 base weights


def assemble_training_model(source: ModelSource, settings: ModelSettings, *, device: torch.device,
                            dtype: torch.dtype) -> TrainingModel:
    # an FP8 checkpoint's block weights stay fp8 on the way: no bf16 copy of them in host memory
    transformer = load_transformer(source, dtype=dtype, device="cpu",
                                   keep_fp8=settings.base_precision == "fp8-e4m3fn")
    connectors = load_connectors(source, dtype=dtype, device=device)
    parked = None if settings.with_audio else park_audio_stream(transformer)
    add_lora(transformer, settings.lora, seed=settings.seed)
    saved = 0
    if settings.base_precision == "fp8-e4m3fn":  # after add_lora: PEFT must see plain Linear layers
        from ltx2core.training.fp8 import apply_fp8_base

        saved = apply_fp8_base(transformer, device=None if settings.swap else device)
    elif settings.base_precision == "int8-torchao":  # after add_lora, like fp8
        from ltx2core.training.int8 import apply_int8_base

        saved = apply_int8_base(transformer, device=device)
    if settings.swap:
        settings.swap.attach(transformer, device)
    else:
        transformer.to(device)
    if settings.fsdp:
        from ltx2core.training.distributed import shard_base

        shard_base(transformer, reshard_after_forward=settings.reshard_after_forward)
    return TrainingModel(transformer, connectors, parked, saved)
