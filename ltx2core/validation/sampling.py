"""Validation videos from diffusers' LTX2Pipeline (text-to-video) and LTX2ImageToVideoPipeline, fed cached
prompt features, with or without a LoRA.

How prompts reach the model without Gemma. The pipelines take `prompt_embeds` = the RAW stacked Gemma
states [B, L, hidden x layers] and run their `connectors` (per-layer norm, text_proj_in, the video and audio
connector transformers) themselves. The text cache holds the text_proj_in output of each caption's real
tokens (ltx2core.models.text), so here `expand_for_transformer` runs the connector transformers, the same
code training conditions the model with, and the pipelines get a stand-in `connectors` that hands those
outputs through: prompt_embeds = [video | audio] connector outputs side by side on the channel axis, split
back by the stand-in. The pipelines never see a text encoder; the video and audio equal those of
LTX2Pipeline's own prompt path (bit-identical on the tiny model in float32, tests/ltx2core/validation).

Guidance and the schedule are the flavour's recipe (ltx2core/models/flavours.py, through ValidationSettings):
2.0 plain classifier-free guidance on video and audio (SimpleTuner's 5.0); 2.3/2.5 full models Lightricks'
CFG 3 video / 7 audio with STG at block 28, modality guidance 3 and rescale 0.7 (two more transformer passes
per step); distilled models unguided on their fixed 8 sigmas. STG blocks beyond a smaller model's depth (the
tiny one's) are clamped to its last block, so the path runs there too. use_cross_timestep is the flavour's
(False for 2.0; the pipelines default to 2.3's True), and so is the H.264 CRF of the I2V frame (33; 2.5: 18).

Memory: the text encoder is never loaded by the sampler (`encode_prompts`, for prompts missing from the
cache, loads and frees it before). The VAE, audio VAE and vocoder (~2.7 GB in bf16 for LTX-2.0) live on the
device; the transformer too, or with `MemoryOptions.group_offload` stays on the CPU and is streamed to the
device block by block. The connectors come to the device only while expanding prompts. Videos are
decoded by `ltx2core.models.vae.decode_video`, so VAE tiling and the other decode options apply.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image, ImageOps

from ltx2core.models import loading
from ltx2core.models.flavours import Flavour
from ltx2core.models.placement import on_device
from ltx2core.models.source import ModelSource
from ltx2core.models.text import CaptionEmbedding, encode_captions, expand_for_transformer, projection_widths
from ltx2core.models.vae import decode_video
from ltx2core.models.vae_options import VaeOptions
from ltx2core.training.lora import COMFY_FILE, DIFFUSERS_FILE, lora_flavour
from ltx2core.validation.settings import MemoryOptions, ValidationSettings
from ltx2core.validation.video_io import h264_roundtrip

log = logging.getLogger(__name__)

Mode = Literal["t2v", "i2v", "ic", "audio", "v2a", "a2v"]
STILL_SIZE = 64  # the black still frame an audio-only sample's mp4 shows, in pixels
LORA_ADAPTER = "validation"


@dataclass(frozen=True)
class ValidationPrompt:
    text: str  # for labels only: the model reads `features`
    features: torch.Tensor | CaptionEmbedding  # [num_tokens, C] compact features, as in the text_embeds table


@dataclass(frozen=True)
class Sample:
    frames: torch.Tensor  # [F, H, W, 3] uint8 RGB, on the CPU (a quarter of float32: 143 MB at 121x768x512)
    audio: torch.Tensor  # [channels, samples] float32 waveform from the vocoder, on the CPU
    sample_rate: int  # of `audio`
    frame_rate: float
    prompt: str
    resolution: tuple[int, int]  # (width, height)
    seed: int
    mode: Mode
    lora: Path | None  # the LoRA file applied; None for the base model


@dataclass(frozen=True)
class Sampler:
    """The two pipelines over one set of components, loaded once for every sample and LoRA of a run."""

    t2v: Any  # LTX2Pipeline without a text encoder, with the pass-through connectors
    i2v: Any  # LTX2ImageToVideoPipeline sharing t2v's components
    ic: Any  # LTX2InContextPipeline (IC-LoRA reference videos) sharing them too
    connectors: Any  # the real LTX2TextConnectors, on the CPU between calls
    text_max_length: int  # prompts are padded to this many tokens, as in training
    flavour: Flavour
    device: torch.device
    dtype: torch.dtype
    vae_options: VaeOptions


class _ConnectorOutputs(torch.nn.Module):
    """Stands in for LTX2TextConnectors: its `prompt_embeds` already are [video | audio] connector outputs (2.3+:
    of different widths, 4096 and 2048)."""

    def __init__(self, device: torch.device, dtype: torch.dtype, video_width: int) -> None:
        super().__init__()
        # The pipeline asks every component for .device / .dtype to decide where to compute.
        self.device, self.dtype, self.video_width = device, dtype, video_width

    def forward(
        self, prompt_embeds: torch.Tensor, attention_mask: torch.Tensor, padding_side: str = "left"
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        video, audio = prompt_embeds[..., : self.video_width], prompt_embeds[..., self.video_width :]
        return video, audio, attention_mask


def load_sampler(
    source: ModelSource, *, device: torch.device | str, dtype: torch.dtype, memory: MemoryOptions = MemoryOptions(),
    transformer: Any = None,
) -> Sampler:
    """Load the transformer, VAEs, vocoder, scheduler and connectors of `source` (no text encoder).

    `transformer`: use this one (the one being trained, its LoRA active) instead of loading a second copy.
    """
    from diffusers import LTX2ImageToVideoPipeline, LTX2Pipeline
    from diffusers.pipelines.ltx2.pipeline_ltx2_ic_lora import LTX2InContextPipeline

    device = torch.device(device)
    if memory.use_stream and device.type != "cuda":
        raise ValueError(f"group_offload_use_stream needs a CUDA device, not {device}: set it false")
    if source.untrained:
        log.warning("validation samples from %s: random weights, the videos are noise", source.label)
    if transformer is not None and memory.group_offload:
        raise ValueError("validating during training uses the training transformer as it is: no group offload")
    if transformer is None:
        transformer = loading.load_transformer(source, dtype=dtype, device="cpu" if memory.group_offload else device)
    if memory.group_offload:
        transformer.enable_group_offload(
            onload_device=device, offload_device=torch.device("cpu"), offload_type=memory.offload_type,
            num_blocks_per_group=memory.blocks_per_group if memory.offload_type == "block_level" else None,
            use_stream=memory.use_stream,
        )
    connectors = loading.load_connectors(source, dtype=dtype, device="cpu")
    components = dict(
        transformer=transformer,
        vae=loading.load_vae(source, dtype=dtype, device=device),
        audio_vae=loading.load_audio_vae(source, dtype=dtype, device=device),
        vocoder=loading.load_vocoder(source, dtype=dtype, device=device),
        scheduler=loading.load_scheduler(source),
        connectors=_ConnectorOutputs(device, dtype, video_width=projection_widths(connectors)[0]),
        text_encoder=None,
        tokenizer=None,
    )
    t2v, i2v, ic = (cls(**components) for cls in (LTX2Pipeline, LTX2ImageToVideoPipeline, LTX2InContextPipeline))
    for pipe in (t2v, i2v, ic):
        pipe.set_progress_bar_config(disable=True)  # library code: progress goes to the log, per sample
    return Sampler(
        t2v=t2v, i2v=i2v, ic=ic, connectors=connectors,
        text_max_length=source.text_max_length, flavour=source.flavour, device=device, dtype=dtype,
        vae_options=memory.vae,
    )


def encode_prompts(
    source: ModelSource, texts: Sequence[str], *, device: torch.device | str, dtype: torch.dtype
) -> list[ValidationPrompt]:
    """Prompts missing from the text cache, through Gemma, which is freed before this returns.

    Call it before `load_sampler`, so the text encoder and the transformer are never loaded together.
    """
    text_encoder = loading.load_text_encoder(source, dtype=dtype, device=device)
    try:
        features = encode_captions(
            texts, tokenizer=loading.load_tokenizer(source), text_encoder=text_encoder,
            connectors=loading.load_connectors(source, dtype=dtype, device=device),
            max_length=source.text_max_length, device=device, dtype=dtype,
        )
    finally:
        del text_encoder
        if torch.device(device).type == "cuda":
            torch.cuda.empty_cache()
    return [ValidationPrompt(text, f) for text, f in zip(texts, features, strict=True)]


def sample_t2v(
    sampler: Sampler,
    prompts: Sequence[ValidationPrompt],
    negative: ValidationPrompt | None,
    settings: ValidationSettings,
    *,
    lora: str | Path | None = None,
) -> list[Sample]:
    """One text-to-video sample per prompt and resolution, in that order. `negative` is needed when
    guidance > 1 (the pipeline's own default negative prompt is the empty string)."""
    return _sample(sampler, prompts, [("t2v", lambda width, height: {})] * len(prompts), negative, settings, lora)


def sample_i2v(
    sampler: Sampler,
    prompts: Sequence[ValidationPrompt],
    images: Sequence[Image.Image | torch.Tensor],
    negative: ValidationPrompt | None,
    settings: ValidationSettings,
    *,
    lora: str | Path | None = None,
) -> list[Sample]:
    """Image-to-video: `images[i]` (PIL, or uint8 [H, W, 3]) is the first frame of the videos of `prompts[i]`.

    Each image is scaled and centre-cropped to each resolution (no stretching) and re-compressed as H.264 (the
    flavour's CRF, what it was trained against; `h264_roundtrip`); the pipeline encodes it and keeps its latent
    frame clean while denoising the rest.
    """
    if len(images) != len(prompts):
        raise ValueError(f"sample_i2v: {len(images)} images for {len(prompts)} prompts: give one first frame each")

    def first_frame(image: Image.Image) -> Callable[[int, int], dict[str, Any]]:
        # re-compressed here, deterministically (video_io)
        return lambda width, height: {"image": h264_roundtrip(ImageOps.fit(image, (width, height), Image.LANCZOS),
                                                              sampler.flavour.image_crf), "image_crf": 0}

    return _sample(sampler, prompts, [("i2v", first_frame(_as_image(image))) for image in images], negative,
                   settings, lora)


def sample_ic(
    sampler: Sampler,
    prompts: Sequence[ValidationPrompt],
    references: Sequence[torch.Tensor],
    negative: ValidationPrompt | None,
    settings: ValidationSettings,
    *,
    downscale: int = 1,
    lora: str | Path | None = None,
) -> list[Sample]:
    """IC-LoRA: `references[i]` (uint8 frames [F, H, W, 3]) conditions the videos of `prompts[i]` through diffusers'
    LTX2InContextPipeline, at each resolution / `downscale` (ltx2_reference_spatial_scale_factor), strength 1."""
    from diffusers.pipelines.ltx2.pipeline_ltx2_ic_lora import LTX2ReferenceCondition

    if len(references) != len(prompts):
        raise ValueError(f"sample_ic: {len(references)} references for {len(prompts)} prompts: give one each")

    def conditioned_on(frames: torch.Tensor) -> Callable[[int, int], dict[str, Any]]:
        condition = LTX2ReferenceCondition(frames=list(frames.numpy()), strength=1.0)
        return lambda width, height: {"reference_conditions": [condition], "reference_downscale_factor": downscale}

    return _sample(sampler, prompts, [("ic", conditioned_on(r)) for r in references], negative, settings, lora)


def _sample(
    sampler: Sampler,
    prompts: Sequence[ValidationPrompt],
    requests: Sequence[tuple[Mode, Callable[[int, int], dict[str, Any]]]],
    negative: ValidationPrompt | None,
    settings: ValidationSettings,
    lora: str | Path | None,
) -> list[Sample]:
    """Per prompt, its (mode, the pipeline's extra arguments at a width and height), at every resolution."""
    if settings.guided and negative is None:
        raise ValueError(
            f"validation_guidance {settings.guidance} / audio {settings.audio_guidance} > 1 needs the negative "
            "prompt's features (the empty string's when validation_negative_prompt is unset)"
        )
    recipe = _recipe(sampler, settings)
    embeds, masks = _connector_outputs(sampler, [*prompts, *([negative] if negative is not None else [])])
    lora_file = _lora_file(Path(lora)) if lora is not None else None
    samples = []
    with _lora_applied(sampler, lora_file), _eval_mode(sampler.t2v.transformer):
        for index, (prompt, (mode, extra_at)) in enumerate(zip(prompts, requests, strict=True)):
            for width, height in settings.resolutions:
                log.info("validation %s sample %d/%d at %dx%d%s: %.60s", mode, index + 1, len(prompts), width,
                         height, f" with {lora_file}" if lora_file else "", prompt.text)
                pipe = {"t2v": sampler.t2v, "i2v": sampler.i2v, "ic": sampler.ic}[mode]
                extra = extra_at(width, height)
                with _global_rng(settings.seed, sampler.device):
                    video_latents, audio_latents = pipe(
                        prompt_embeds=embeds[index : index + 1], prompt_attention_mask=masks[index : index + 1],
                        negative_prompt_embeds=embeds[-1:] if negative is not None else None,
                        negative_prompt_attention_mask=masks[-1:] if negative is not None else None,
                        width=width, height=height, num_frames=settings.num_frames, frame_rate=settings.frame_rate,
                        **recipe,
                        generator=torch.Generator("cpu").manual_seed(settings.seed),  # same noise on any device
                        output_type="latent", return_dict=False, **extra,
                    )
                    frames, audio = _decode_frames(sampler, video_latents), _decode_audio(pipe, audio_latents)
                samples.append(Sample(
                    frames=frames, audio=audio,
                    sample_rate=int(pipe.vocoder.config.output_sampling_rate), frame_rate=settings.frame_rate,
                    prompt=prompt.text, resolution=(width, height), seed=settings.seed, mode=mode, lora=lora_file,
                ))
    return samples


def sample_audio(
    sampler: Sampler,
    prompts: Sequence[ValidationPrompt],
    negative: ValidationPrompt | None,
    settings: ValidationSettings,
    *,
    lora: str | Path | None = None,
    videos: Sequence[tuple[torch.Tensor, torch.Tensor, float]] | None = None,
) -> list[Sample]:
    """Audio samples, the audio stream denoised with the flavour's schedule and classifier-free guidance at
    `audio_guidance` (`_denoise_stream`).

    Without `videos` (an audio-only LoRA, trained with the modalities isolated): beside one zero video token it
    never attends to, as audio_only training runs it, the schedule shifted for the audio's tokens; the frames are a
    black still frame for the audio's duration. With `videos` (a video_to_audio LoRA): per prompt (clean normalised
    latents [C, F, H, W], the clip's uint8 frames, fps), the video is the clean condition at timestep 0 that the
    audio attends to, the schedule shifted for the video's tokens, as that training draws it; the frames are the
    clip's, the sound the generated one (mode "v2a")."""
    if videos is not None and len(videos) != len(prompts):
        raise ValueError(f"sample_audio: {len(videos)} videos for {len(prompts)} prompts: give one each")
    pipe, audio_vae = sampler.t2v, sampler.t2v.audio_vae
    mel_bins = audio_vae.config.mel_bins // pipe.audio_vae_mel_compression_ratio
    samples = []
    for prompt, text, mask, lora_file in _single_stream_prompts(sampler, prompts, negative, settings.audio_guidance,
                                                                 "audio guidance", lora, "audio"):
        index = len(samples)
        if videos is None:  # one zero token, never attended to
            video = torch.zeros(1, 1, pipe.transformer.config.in_channels)
            grid, fps, frames = (1, 1, 1), settings.frame_rate, None
        else:
            clean, frames, fps = videos[index]
            grid = tuple(clean.shape[1:])
            video = pipe._pack_latents(clean[None])
        pixel_frames = settings.num_frames if frames is None else frames.shape[0]
        length = round(pixel_frames / fps * pipe.audio_sampling_rate / pipe.audio_hop_length
                       / pipe.audio_vae_temporal_compression_ratio)
        with _global_rng(settings.seed, sampler.device):
            noise = pipe.prepare_audio_latents(
                1, num_channels_latents=audio_vae.config.latent_channels, audio_latent_length=length,
                num_mel_bins=audio_vae.config.mel_bins, dtype=torch.float32, device=sampler.device,
                generator=torch.Generator("cpu").manual_seed(settings.seed))
            latents = _denoise_stream(sampler, settings, "audio", noise, video, text, mask, grid, fps,
                                      shift_tokens=length if videos is None else math.prod(grid),
                                      isolate=videos is None)
            latents = pipe._denormalize_audio_latents(latents, audio_vae.latents_mean, audio_vae.latents_std)
            waveform = _decode_audio(pipe, pipe._unpack_audio_latents(latents, length, num_mel_bins=mel_bins))
        if frames is None:
            frames = torch.zeros(settings.num_frames, STILL_SIZE, STILL_SIZE, 3, dtype=torch.uint8)
        samples.append(Sample(
            frames=frames, audio=waveform, sample_rate=int(pipe.vocoder.config.output_sampling_rate),
            frame_rate=fps, prompt=prompt.text, resolution=(frames.shape[2], frames.shape[1]), seed=settings.seed,
            mode="audio" if videos is None else "v2a", lora=lora_file,
        ))
    return samples


def sample_video_from_audio(
    sampler: Sampler,
    prompts: Sequence[ValidationPrompt],
    conditions: Sequence[tuple[torch.Tensor, tuple[int, int, int], float]],
    negative: ValidationPrompt | None,
    settings: ValidationSettings,
    *,
    lora: str | Path | None = None,
) -> list[Sample]:
    """An audio_to_video LoRA's samples: per prompt (clean packed normalised audio latents [T, C], the video's latent
    grid (F, H, W), fps), the video denoised beside the clean audio at timestep 0, as that training runs it (the
    flavour's schedule shifted by the video's tokens, classifier-free guidance at `guidance`); the sound is the
    condition's (mode "a2v")."""
    if len(conditions) != len(prompts):
        raise ValueError(f"sample_video_from_audio: {len(conditions)} sounds for {len(prompts)} prompts")
    pipe = sampler.t2v
    vae, audio_vae = pipe.vae, pipe.audio_vae
    mel_bins = audio_vae.config.mel_bins // pipe.audio_vae_mel_compression_ratio
    samples = []
    for prompt, text, mask, lora_file in _single_stream_prompts(sampler, prompts, negative, settings.guidance,
                                                                 "guidance", lora, "a2v"):
        audio, grid, fps = conditions[len(samples)]
        with _global_rng(settings.seed, sampler.device):
            noise = torch.randn(1, math.prod(grid), pipe.transformer.config.in_channels,
                                generator=torch.Generator("cpu").manual_seed(settings.seed)).to(sampler.device)
            latents = _denoise_stream(sampler, settings, "video", noise, audio[None], text, mask, grid, fps,
                                      shift_tokens=math.prod(grid), isolate=False)
            frames = _decode_frames(sampler, pipe._denormalize_latents(
                pipe._unpack_latents(latents, *grid), vae.latents_mean, vae.latents_std, vae.config.scaling_factor))
            clean = pipe._denormalize_audio_latents(audio[None].to(sampler.device, torch.float32),
                                                    audio_vae.latents_mean, audio_vae.latents_std)
            waveform = _decode_audio(pipe, pipe._unpack_audio_latents(clean, audio.shape[0], num_mel_bins=mel_bins))
        samples.append(Sample(
            frames=frames, audio=waveform, sample_rate=int(pipe.vocoder.config.output_sampling_rate),
            frame_rate=fps, prompt=prompt.text, resolution=(frames.shape[2], frames.shape[1]), seed=settings.seed,
            mode="a2v", lora=lora_file,
        ))
    return samples


def _single_stream_prompts(
    sampler: Sampler, prompts: Sequence[ValidationPrompt], negative: ValidationPrompt | None, guidance: float,
    guidance_name: str, lora: str | Path | None, label: str,
) -> Iterator[tuple[ValidationPrompt, torch.Tensor, torch.Tensor, Path | None]]:
    """Per prompt, with the LoRA applied and the transformer in eval mode without gradient: (prompt, its connector
    outputs [rows, L, 2C] and mask [rows, L]) -- two rows, the prompt's and the negative's, when `guidance` > 1."""
    if guidance > 1 and negative is None:
        raise ValueError(f"{guidance_name} {guidance} > 1 needs the negative prompt's features")
    embeds, masks = _connector_outputs(sampler, [*prompts, *([negative] if negative is not None else [])])
    lora_file = _lora_file(Path(lora)) if lora is not None else None
    with _lora_applied(sampler, lora_file), _eval_mode(sampler.t2v.transformer), torch.no_grad():
        for index, prompt in enumerate(prompts):
            log.info("validation %s sample %d/%d%s: %.60s", label, index + 1, len(prompts),
                     f" with {lora_file}" if lora_file else "", prompt.text)
            rows = [index, len(embeds) - 1] if guidance > 1 else [index]
            yield prompt, embeds[rows], masks[rows], lora_file


def _denoise_stream(
    sampler: Sampler, settings: ValidationSettings, stream: Literal["video", "audio"], latents: torch.Tensor,
    other: torch.Tensor, text: torch.Tensor, mask: torch.Tensor, grid: tuple[int, int, int], fps: float, *,
    shift_tokens: int, isolate: bool,
) -> torch.Tensor:
    """`latents` ([1, N, C] packed noise) of `stream` denoised beside `other` (the other stream's packed input, clean
    at timestep 0), as the conditioned training modes run the transformer: the flavour's schedule shifted for
    `shift_tokens`, classifier-free guidance when `text` has a negative row (the stream's guidance); the video's
    latent `grid` and `fps` place its tokens. `isolate`: cross-modal attention off (audio-only)."""
    pipe, device, dtype = sampler.t2v, sampler.device, sampler.dtype
    transformer, video_width = pipe.transformer, pipe.connectors.video_width
    rows = text.shape[0]
    guidance = settings.guidance if stream == "video" else settings.audio_guidance
    scheduler, timesteps = _schedule(pipe, settings, shift_tokens, device)
    other = other.expand(rows, -1, -1).to(device, dtype)
    coords = transformer.rope.prepare_video_coords(rows, *grid, device, fps=fps)
    for t in timesteps:
        level, zero = t.expand(rows).to(device), torch.zeros(rows, device=device)
        noisy = latents.expand(rows, -1, -1).to(dtype)
        video, audio = (noisy, other) if stream == "video" else (other, noisy)
        video_t, audio_t = (level, zero) if stream == "video" else (zero, level)
        predicted = transformer(
            hidden_states=video, audio_hidden_states=audio, encoder_hidden_states=text[..., :video_width],
            audio_encoder_hidden_states=text[..., video_width:], encoder_attention_mask=mask,
            audio_encoder_attention_mask=mask, timestep=video_t, audio_timestep=audio_t, sigma=video_t,
            audio_sigma=audio_t, num_frames=grid[0], height=grid[1], width=grid[2], audio_num_frames=audio.shape[1],
            video_coords=coords, isolate_modalities=isolate, use_cross_timestep=sampler.flavour.use_cross_timestep,
            return_dict=False)[0 if stream == "video" else 1].float()
        if rows > 1:  # row 0 the prompt, row 1 the negative
            predicted = predicted[1:] + guidance * (predicted[:1] - predicted[1:])
        latents = scheduler.step(predicted, t, latents, return_dict=False)[0]
    return latents


def _schedule(pipe: Any, settings: ValidationSettings, tokens: int, device: torch.device) -> tuple[Any, torch.Tensor]:
    """(a copy of the pipeline's scheduler, its timesteps): the settings' steps or fixed sigmas, with the dynamic
    shift for `tokens`, as LTX2Pipeline sets them for its video."""
    from diffusers.pipelines.ltx2.pipeline_ltx2 import calculate_shift, retrieve_timesteps

    scheduler = copy.deepcopy(pipe.scheduler)
    mu = calculate_shift(tokens, scheduler.config.get("base_image_seq_len", 1024),
                         scheduler.config.get("max_image_seq_len", 4096),
                         scheduler.config.get("base_shift", 0.95), scheduler.config.get("max_shift", 2.05))
    sigmas = list(settings.sigmas) if settings.sigmas else list(np.linspace(1.0, 1 / settings.steps, settings.steps))
    timesteps, _ = retrieve_timesteps(scheduler, len(sigmas), device, sigmas=sigmas, mu=mu)
    return scheduler, timesteps


def _recipe(sampler: Sampler, settings: ValidationSettings) -> dict[str, Any]:
    """The pipeline's schedule and guidance arguments for the settings (module docstring)."""
    last_block = len(sampler.t2v.transformer.transformer_blocks) - 1
    stg_blocks = sorted({min(block, last_block) for block in settings.stg_blocks}) or None
    return dict(
        num_inference_steps=settings.steps, sigmas=list(settings.sigmas) if settings.sigmas else None,
        guidance_scale=settings.guidance, audio_guidance_scale=settings.audio_guidance,
        stg_scale=settings.stg_scale, audio_stg_scale=settings.stg_scale, spatio_temporal_guidance_blocks=stg_blocks,
        modality_scale=settings.modality_scale, audio_modality_scale=settings.modality_scale,
        guidance_rescale=settings.guidance_rescale, audio_guidance_rescale=settings.guidance_rescale,
        use_cross_timestep=sampler.flavour.use_cross_timestep,
    )


@contextmanager
def _eval_mode(module: torch.nn.Module) -> Iterator[None]:
    """Sample in eval mode (no LoRA dropout: a trained transformer is in training mode, and diffusers leaves the
    dropout of a loaded LoRA in it), and hand the module back in the mode it came in."""
    training = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(training)


@contextmanager
def _global_rng(seed: int, device: torch.device) -> Iterator[None]:
    """Seed the global random streams too, and give them back after: some pipeline and VAE steps draw from
    them rather than from the generator, and validation must neither depend on nor disturb training's."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


@torch.no_grad()
def _connector_outputs(sampler: Sampler, prompts: Sequence[ValidationPrompt]) -> tuple[torch.Tensor, torch.Tensor]:
    """([N, L, 2C] video | audio connector outputs, [N, L] mask) on the sampler's device and dtype."""
    with on_device(sampler.connectors, sampler.device) as connectors:
        video, audio, mask = expand_for_transformer(
            [p.features for p in prompts], max_length=sampler.text_max_length, connectors=connectors,
            device=sampler.device, dtype=sampler.dtype,
        )
    return torch.cat([video, audio], dim=-1), mask


@torch.no_grad()
def _decode_frames(sampler: Sampler, latents: torch.Tensor) -> torch.Tensor:
    vae = sampler.t2v.vae
    # output_type="latent" hands back raw VAE latents; decode_video takes normalised ones (and undoes it).
    mean = vae.latents_mean.view(1, -1, 1, 1, 1).to(latents)
    std = vae.latents_std.view(1, -1, 1, 1, 1).to(latents)
    video = decode_video(vae, (latents - mean) * vae.config.scaling_factor / std, options=sampler.vae_options)
    pixels = (video[0].float() * 0.5 + 0.5).clamp(0, 1)  # [3, F, H, W]: the pipeline's own [-1, 1] -> [0, 1]
    return pixels.mul(255).round().to(torch.uint8).permute(1, 2, 3, 0).cpu()  # [F, H, W, 3]


@torch.no_grad()
def _decode_audio(pipe: Any, latents: torch.Tensor) -> torch.Tensor:
    """What the pipeline does after denoising: audio VAE -> mel spectrogram -> vocoder -> waveform."""
    mel = pipe.audio_vae.decode(latents.to(pipe.audio_vae.device, pipe.audio_vae.dtype), return_dict=False)[0]
    return pipe.vocoder(mel.to(pipe.vocoder.dtype))[0].float().cpu()


def _lora_file(path: Path) -> Path:
    """A LoRA file: `path` itself, or a folder's diffusers-format file (what `save_lora` writes)."""
    file = path / DIFFUSERS_FILE if path.is_dir() else path
    if not file.is_file():
        raise FileNotFoundError(
            f"LoRA {file} not found: give a .safetensors file ({DIFFUSERS_FILE} or {COMFY_FILE}) or the folder "
            "holding them (a checkpoint's lora folder)"
        )
    return file


@contextmanager
def _lora_applied(sampler: Sampler, file: Path | None) -> Iterator[None]:
    """The LoRA in the shared transformer for the block (both pipelines see it), removed afterwards."""
    if file is None:
        yield
        return
    trained_on = lora_flavour(file)
    if trained_on is not None and trained_on != sampler.flavour.name:
        raise ValueError(f"LoRA {file} was trained on LTX-{trained_on}; this sampler runs LTX-{sampler.flavour.name}: "
                         f"sample it with model_flavour {trained_on!r} (a LoRA fits only the model it was trained on)")
    state = sampler.t2v.lora_state_dict(str(file))
    if any(key.startswith("connectors.") for key in state):
        raise ValueError(
            f"LoRA {file} also adapts the text connectors; validation runs the base connectors on cached text "
            "features, so it supports transformer LoRAs only"
        )
    sampler.t2v.load_lora_weights(str(file.parent), weight_name=file.name, adapter_name=LORA_ADAPTER)
    try:
        yield
    finally:
        sampler.t2v.unload_lora_weights()


def _as_image(image: Image.Image | torch.Tensor) -> Image.Image:
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    if image.dtype != torch.uint8 or image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(
            f"an I2V first frame must be a PIL image or a uint8 [H, W, 3] tensor, got {image.dtype} "
            f"{tuple(image.shape)}"
        )
    return Image.fromarray(image.cpu().numpy())
