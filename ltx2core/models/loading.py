"""One loader per LTX-2 component, each reading only its own subfolder, in the dtype and on the device asked.

Stages load what they need and nothing else: the text-embeds stage never reads the 38 GB transformer, the
latents stage never reads Gemma. Hub ids go through diffusers / transformers `from_pretrained`, so the HF
cache and HF_HUB_OFFLINE behave as they do there. Loaded models are frozen (`requires_grad_(False)`) and in
eval mode: they are the fixed base of a LoRA run; PEFT marks its own adapter weights trainable.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, TypeVar

import torch
from huggingface_hub import constants as hf_constants

from ltx2core.models import random_weights
from ltx2core.models.flavours import release_of
from ltx2core.models.scale import LTX2, ScaleFactors
from ltx2core.models.source import ModelSource, check_release, component_config

log = logging.getLogger(__name__)

Device = torch.device | str
ModelT = TypeVar("ModelT", bound=torch.nn.Module)


def load_transformer(source: ModelSource, *, dtype: torch.dtype, device: Device = "cpu", keep_fp8: bool = False) -> Any:
    """`LTX2VideoTransformer3DModel` of the flavour (2.5: `transformer_full/` for the full model), refused when its
    config is another release's (a hub id is first checked here). `keep_fp8`: an FP8 checkpoint file's block weights
    stay fp8 for training.fp8 (single_file.load_component)."""
    from diffusers import LTX2VideoTransformer3DModel

    check_release(source, release_of(component_config(source, "transformer")))
    return _load_model(LTX2VideoTransformer3DModel, source, "transformer", dtype, device, keep_fp8=keep_fp8)


def load_vae(source: ModelSource, *, dtype: torch.dtype, device: Device = "cpu") -> Any:
    """`AutoencoderKLLTX2Video`, checked against the project's shape rules (scale.py)."""
    from diffusers import AutoencoderKLLTX2Video

    vae = _load_model(AutoencoderKLLTX2Video, source, "vae", dtype, device)
    found = ScaleFactors(spatial=vae.spatial_compression_ratio, temporal=vae.temporal_compression_ratio)
    if found != LTX2:
        raise ValueError(
            f"{source.name_or_path}/vae/config.json compresses {found.spatial}x in space and {found.temporal}x in "
            f"time; this project is built for {LTX2.spatial}x/{LTX2.temporal}x: set spatial_compression_ratio and "
            "temporal_compression_ratio there (the constructor's own guess is wrong for LTX-2)"
        )
    return vae


def load_vae_config(source: ModelSource) -> dict[str, Any]:
    """vae/config.json alone (no weights): enough for `VaeOptions.cache_key` and the shape rules."""
    return component_config(source, "vae")


def load_audio_vae(source: ModelSource, *, dtype: torch.dtype, device: Device = "cpu") -> Any:
    """`AutoencoderKLLTX2Audio`."""
    from diffusers import AutoencoderKLLTX2Audio

    return _load_model(AutoencoderKLLTX2Audio, source, "audio_vae", dtype, device)


def load_connectors(source: ModelSource, *, dtype: torch.dtype, device: Device = "cpu") -> Any:
    """`LTX2TextConnectors` (text_proj_in + the video and audio connector transformers)."""
    from diffusers.pipelines.ltx2 import LTX2TextConnectors

    return _load_model(LTX2TextConnectors, source, "connectors", dtype, device)


def load_vocoder(source: ModelSource, *, dtype: torch.dtype, device: Device = "cpu") -> Any:
    """`LTX2Vocoder` (mel spectrogram -> waveform; 2.0, 24 kHz) or `LTX2VocoderWithBWE` (2.3+: a bandwidth
    extension to 48 kHz), as vocoder/config.json names it."""
    from diffusers.pipelines.ltx2 import LTX2Vocoder, LTX2VocoderWithBWE

    name = component_config(source, "vocoder").get("_class_name")
    return _load_model(LTX2VocoderWithBWE if name == "LTX2VocoderWithBWE" else LTX2Vocoder, source, "vocoder", dtype,
                       device)


def load_text_encoder(source: ModelSource, *, dtype: torch.dtype, device: Device = "cpu") -> Any:
    """Gemma-3-12B (`Gemma3ForConditionalGeneration`, 2.0 and 2.3) or LTX-2.5's Gemma-4 fine-tune
    (`Gemma4UnifiedForConditionalGeneration`)."""
    from transformers import Gemma3ForConditionalGeneration, Gemma4UnifiedForConditionalGeneration

    cls = Gemma4UnifiedForConditionalGeneration if source.flavour.text_encoder == "gemma4" else (
        Gemma3ForConditionalGeneration)
    if source.random_weights:
        config = cls.config_class.from_pretrained(Path(source.name_or_path) / "text_encoder")
        return _frozen(random_weights.draw(cls, config, dtype=dtype, device=device), source, "text_encoder", device)
    model = cls.from_pretrained(
        source.name_or_path, subfolder="text_encoder", dtype=dtype, device_map={"": torch.device(device)},
        **_hub_kwargs(source),
    )
    return _frozen(model, source, "text_encoder", device)


def load_tokenizer(source: ModelSource) -> Any:
    """The Gemma tokenizer, set to pad on the left as LTX-2's prompt encoding requires."""
    from transformers import GemmaTokenizer

    # Not AutoTokenizer: it also asks for a tokenizer/config.json, which an offline hub cache cannot answer.
    tokenizer = GemmaTokenizer.from_pretrained(source.name_or_path, subfolder="tokenizer", **_hub_kwargs(source))
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:  # what LTX2Pipeline does for tokenizers without one
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_scheduler(source: ModelSource) -> Any:
    """`FlowMatchEulerDiscreteScheduler` with the checkpoint's shift settings, corrected where the flavour's model
    is sampled otherwise than its repo's scheduler says (LTX-2.5-Diffusers ships the distilled one)."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    scheduler = FlowMatchEulerDiscreteScheduler.from_pretrained(
        source.name_or_path, subfolder="scheduler", **_hub_kwargs(source)
    )
    overrides = dict(source.flavour.scheduler_overrides)
    return FlowMatchEulerDiscreteScheduler.from_config(scheduler.config, **overrides) if overrides else scheduler


def _load_model(cls: type[ModelT], source: ModelSource, subfolder: str, dtype: torch.dtype, device: Device,
                keep_fp8: bool = False) -> ModelT:
    if source.random_weights:
        model = random_weights.draw(cls, component_config(source, subfolder), dtype=dtype, device=device)
        return _frozen(model, source, subfolder, device)
    if file := source.file_of(subfolder):  # the weights from a checkpoint file, the config from the model
        from ltx2core.models.single_file import load_component

        model = load_component(file, subfolder, cls, component_config(source, subfolder), dtype=dtype, device=device,
                               keep_fp8=keep_fp8)
        return _frozen(model, source, subfolder, device)
    # device_map puts the weights straight on the device: no full copy in host memory first.
    try:
        model = cls.from_pretrained(
            source.name_or_path, subfolder=source.folder(subfolder), torch_dtype=dtype,
            device_map={"": torch.device(device)}, **_hub_kwargs(source),
        )
    except OSError as error:  # diffusers names the parent folder and a file it guessed, not the fix
        raise ModelLoadError(source, subfolder, error) from None
    return _frozen(model, source, subfolder, device)


class ModelLoadError(OSError):
    """A component's files are missing or unreadable; says which and how to get them."""

    def __init__(self, source: ModelSource, component: str, cause: OSError) -> None:
        subfolder = source.folder(component)
        if source.untrained:
            fix = f"{source.name_or_path}/{subfolder} is incomplete: rebuild the tiny model with `ltx2 make-tiny-model DIR`"
        elif source.is_local:
            fix = (f"{source.name_or_path}/{subfolder} is incomplete: copy it from a complete snapshot (e.g. "
                   f"`huggingface-cli download {source.flavour.repo} --include '{subfolder}/*' --local-dir "
                   f"{source.name_or_path}`) or point pretrained_model_name_or_path at a complete model")
        else:
            fix = ("the hub snapshot is not in the local cache: download it on a machine with network access, or "
                   "unset HF_HUB_OFFLINE")
        super().__init__(f"cannot load the {component} of {source.label}: {cause}; {fix}")


def _frozen(model: ModelT, source: ModelSource, subfolder: str, device: Device) -> ModelT:
    model.eval().requires_grad_(False)
    log.info("loaded %s from %s on %s", subfolder, source.label, device)
    return model


def _hub_kwargs(source: ModelSource) -> dict[str, Any]:
    if source.is_local:
        return {}
    # Mirror HF_HUB_OFFLINE (as huggingface_hub parsed it) so an offline run fails at once on a cache miss.
    return {"cache_dir": source.cache_dir, "local_files_only": bool(hf_constants.HF_HUB_OFFLINE)}
