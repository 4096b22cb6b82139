"""One training step: clean latents -> noise at a sampled sigma -> transformer -> flow-matching loss.

Video-only data takes the fast path: ONE dummy audio token (zeros) and `isolate_modalities=True`, which
switches off the audio<->video cross-attention in every block, so the video prediction does not depend on
the audio stream at all (tested) and the audio stream costs one token. Data with audio latents runs the
joint audio-video model; the audio is noised at the same sigma as its video and its loss is added.

Image-to-video training (`first_frame_p`): with that probability per clip, the tokens of the first
latent frame stay clean, get timestep 0 (the transformer takes a per-token timestep [B, N], as
LTX2ImageToVideoPipeline passes it) and are left out of the loss. The first latent frame of a clip is
its first pixel frame alone (the VAE is causal), exactly what the I2V pipeline conditions on.

Audio-conditioned modes (`audio_video_mode`, audio-video data only): "video_to_audio" (foley) keeps the whole video
clean at timestep 0 and trains on the audio loss alone; "audio_to_video" keeps the audio clean at timestep 0 and
trains on the video loss alone. The clean modality's prompt-AdaLN sigma (2.3+) is 0 too, as a clean input's is.
"audio_only" is the video-only fast path mirrored: ONE zero video token, cross-modal attention off, the audio loss
alone; the batch's video latents (zeros, for an audio-only dataset) are never read.

IC-LoRA (a batch with reference latents): the reference's tokens follow the clip's in one sequence, clean at
timestep 0 and out of the loss, with RoPE positions of the reference's own grid scaled to the target's pixel space
by the downscale factor (target size / reference size, e.g. 2 for a half-resolution reference) -- as diffusers'
LTX2InContextPipeline packs its reference conditions (tested against it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch

from ltx2core.training.data import TrainBatch
from ltx2core.training.flow_matching import LTX2_SHIFT, TIMESTEP_SCALE, SigmaSampler, noisy_and_target
from ltx2core.training.rollout import Rollout, draw_steps, roll_out

AudioVideoMode = Literal["joint", "video_to_audio", "audio_to_video", "audio_only"]


@dataclass(frozen=True)
class StepOutput:
    loss: torch.Tensor  # [] video loss + audio loss, with grad
    video_loss: torch.Tensor  # [] detached
    audio_loss: torch.Tensor | None  # [] detached; None on the video-only path
    sigma: torch.Tensor  # [B] sampled sigma, detached
    rollout_steps: torch.Tensor  # [B] Euler steps each clip's input was rolled out (0: the exact interpolation)


@dataclass(frozen=True)
class ModelInputs:
    kwargs: dict[str, Any]  # what the transformer is called with
    video_target: torch.Tensor  # [B, N, C] velocity target, float32
    audio_target: torch.Tensor | None  # [B, T_a, C_a] float32; None on the video-only path
    loss_mask: torch.Tensor  # [B, N] 1 = token counts in the loss, 0 = clean conditioning token
    sigma: torch.Tensor  # [B]
    rollout_steps: torch.Tensor  # [B] long


def training_step(
    transformer: Any,
    batch: TrainBatch,
    *,
    generator: torch.Generator,
    first_frame_p: float = 0.0,
    sigmas: SigmaSampler = LTX2_SHIFT,
    cross_timestep: bool = False,
    rollout: Rollout | None = None,
    step: int = 1,
    audio_weight: float = 1.0,
    mode: AudioVideoMode = "joint",
) -> StepOutput:
    """Forward and loss (video + audio_weight * audio) for one batch; the caller does backward, clipping and the
    optimizer step. `step`: the optimizer step being trained (a ramped rollout's chance depends on it)."""
    inputs = model_inputs(transformer, batch, generator=generator, first_frame_p=first_frame_p, sigmas=sigmas,
                          cross_timestep=cross_timestep, rollout=rollout, step=step, mode=mode)
    video_pred, audio_pred = transformer(**inputs.kwargs)  # [B, N, C], [B, T_a, C_a]
    video_loss = masked_mse(video_pred.float(), inputs.video_target, inputs.loss_mask)
    audio_loss = None
    if inputs.audio_target is not None:
        audio_loss = torch.nn.functional.mse_loss(audio_pred.float(), inputs.audio_target)
    loss = video_loss if audio_loss is None else video_loss + audio_weight * audio_loss
    return StepOutput(
        loss=loss,
        video_loss=video_loss.detach(),
        audio_loss=None if audio_loss is None else audio_loss.detach(),
        sigma=inputs.sigma.detach(),
        rollout_steps=inputs.rollout_steps,
    )


def model_inputs(
    transformer: Any,
    batch: TrainBatch,
    *,
    generator: torch.Generator,
    first_frame_p: float = 0.0,
    sigmas: SigmaSampler = LTX2_SHIFT,
    cross_timestep: bool = False,
    rollout: Rollout | None = None,
    step: int = 1,
    mode: AudioVideoMode = "joint",
) -> ModelInputs:
    """Noise the batch and build the transformer's keyword arguments (the step without the forward).

    `sigmas`: the flavour's training noise levels (flow_matching.sigma_sampler); `cross_timestep`: the flavour's
    `use_cross_timestep` (2.3+), as its pipeline calls the transformer; `rollout`: scheduled sampling (rollout.py),
    whose draws come after every other, so that a run whose chance is 0 draws exactly what a run without it does."""
    _require_unit_patches(transformer)
    if mode != "joint" and batch.audio_latents is None:
        raise ValueError(f"audio_video_mode {mode} needs audio latents: give the datasets an audio block")
    if mode == "audio_only":
        return _audio_only_inputs(transformer, batch, generator=generator, sigmas=sigmas, cross_timestep=cross_timestep)
    device, dtype = batch.latents.device, transformer.dtype
    size, _, frames, height, width = batch.latents.shape
    x0 = pack_latents(batch.latents.float())
    num_tokens = x0.shape[1]

    sigma = sigmas.sample(size, num_tokens, generator).to(device)  # [B]
    noise = _randn(x0.shape, generator, device)
    # x_t = (1 - sigma) * x0 + sigma * noise; target = noise - x0
    noisy, video_target = noisy_and_target(x0, noise, sigma)
    conditioned = first_frame_mask(size, frames, height * width, first_frame_p, generator).to(device)  # [B, N]
    if mode == "video_to_audio":
        conditioned = torch.ones_like(conditioned)  # the whole video is the condition
    noisy = torch.where(conditioned[..., None], x0, noisy)  # conditioning tokens stay clean
    timestep = sigma * TIMESTEP_SCALE  # [B]
    video_sigma = audio_sigma = timestep  # the prompt AdaLN's (2.3+)
    # Per-token timesteps only when some clip is conditioned: [B, N] embeddings cost N times [B].
    video_timestep = timestep[:, None] * (~conditioned) if conditioned.any() else timestep
    audio_timestep = timestep
    if mode == "video_to_audio":
        video_timestep = video_sigma = torch.zeros_like(timestep)

    if batch.audio_latents is None:
        # Video-only fast path: 1 dummy token, cross-modal attention off (the video never sees it).
        audio_in = torch.zeros(size, 1, transformer.config.audio_in_channels, device=device)
        audio_target = None
    else:
        audio_noise = _randn(batch.audio_latents.shape, generator, device)
        audio_in, audio_target = noisy_and_target(batch.audio_latents.float(), audio_noise, sigma)
        if mode == "audio_to_video":  # the audio is the condition: clean, timestep 0, no audio loss
            audio_in, audio_target = batch.audio_latents.float(), None
            audio_timestep = audio_sigma = torch.zeros_like(timestep)

    # RoPE time axis in seconds: each clip's own fps (a batch may mix frame rates).
    video_coords = torch.cat([
        transformer.rope.prepare_video_coords(1, frames, height, width, device, fps=fps) for fps in batch.frame_rates
    ])
    loss_mask = (~conditioned).float()
    if batch.reference_latents is not None:
        noisy, video_target, video_timestep, loss_mask, video_coords = _with_reference(
            transformer, batch, noisy, video_target, video_timestep, loss_mask, video_coords)
    kwargs = dict(
        hidden_states=noisy.to(dtype),
        audio_hidden_states=audio_in.to(dtype),
        encoder_hidden_states=batch.text.to(dtype),
        audio_encoder_hidden_states=batch.audio_text.to(dtype),
        encoder_attention_mask=batch.text_mask,
        audio_encoder_attention_mask=batch.text_mask,
        timestep=video_timestep,
        audio_timestep=audio_timestep,
        sigma=video_sigma,  # prompt AdaLN of 2.3+ (ignored by 2.0); the pipelines pass the scaled timestep too
        num_frames=frames,
        height=height,
        width=width,
        audio_num_frames=audio_in.shape[1],
        video_coords=video_coords,
        isolate_modalities=batch.audio_latents is None,
        use_cross_timestep=cross_timestep,
        return_dict=False,
    )
    if mode != "joint":  # the audio's own prompt-AdaLN sigma; else it follows `sigma`, as the pipelines call it
        kwargs["audio_sigma"] = audio_sigma
    rollout_steps = draw_steps(rollout, step, sigma, generator)
    if rollout_steps.any() and batch.reference_latents is not None:
        raise ValueError("scheduled sampling with IC-LoRA references is not supported: remove one of them")
    if rollout_steps.any():
        kwargs["hidden_states"] = roll_out(transformer, kwargs, x0, noise, sigma, conditioned, rollout_steps).to(dtype)
    return ModelInputs(
        kwargs=kwargs, video_target=video_target, audio_target=audio_target,
        loss_mask=loss_mask, sigma=sigma, rollout_steps=rollout_steps,
    )


def pack_latents(latents: torch.Tensor) -> torch.Tensor:
    """Patchify (patch 1x1x1): [B, C, F, H, W] -> [B, F*H*W, C], frame-major as LTX2Pipeline._pack_latents."""
    return latents.permute(0, 2, 3, 4, 1).flatten(1, 3)


def _with_reference(transformer: Any, batch: TrainBatch, noisy: torch.Tensor, target: torch.Tensor,
                    timestep: torch.Tensor, loss_mask: torch.Tensor, coords: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The clip's tokens followed by its reference's: clean, timestep 0, no loss, positions scaled (module doc)."""
    reference = batch.reference_latents.float()
    size, _, frames, height, width = reference.shape
    factor = batch.latents.shape[3] // height
    if batch.latents.shape[3:] != (height * factor, width * factor) or reference.shape[2] != batch.latents.shape[2]:
        raise ValueError(f"IC-LoRA reference latents {tuple(reference.shape[2:])} do not fit the clip's "
                         f"{tuple(batch.latents.shape[2:])}: the same frames at the clip's size divided by a whole "
                         "factor (reference_downscale_factor)")
    tokens = pack_latents(reference)
    ref_coords = torch.cat([transformer.rope.prepare_video_coords(1, frames, height, width, noisy.device, fps=fps)
                            for fps in batch.frame_rates])
    ref_coords[:, 1:3] = ref_coords[:, 1:3] * factor  # height and width axes, in the target's pixel space
    per_token = timestep[:, None].expand(size, noisy.shape[1]) if timestep.ndim == 1 else timestep
    zeros = torch.zeros(size, tokens.shape[1], device=noisy.device)
    return (torch.cat([noisy, tokens], dim=1), torch.cat([target, torch.zeros_like(tokens)], dim=1),
            torch.cat([per_token, zeros.to(per_token)], dim=1), torch.cat([loss_mask, zeros], dim=1),
            torch.cat([coords, ref_coords], dim=2))


def _audio_only_inputs(transformer: Any, batch: TrainBatch, *, generator: torch.Generator, sigmas: SigmaSampler,
                       cross_timestep: bool) -> ModelInputs:
    """The audio stream alone: a noised audio, one zero video token at timestep 0 that it never attends to. The
    noise levels are the flavour's, shifted as for a clip of as many tokens as the audio has."""
    device, dtype = batch.audio_latents.device, transformer.dtype
    size = batch.audio_latents.shape[0]
    sigma = sigmas.sample(size, batch.audio_latents.shape[1], generator).to(device)
    noise = _randn(batch.audio_latents.shape, generator, device)
    audio_in, audio_target = noisy_and_target(batch.audio_latents.float(), noise, sigma)
    timestep, zero = sigma * TIMESTEP_SCALE, torch.zeros(size, device=device)
    video = torch.zeros(size, 1, transformer.config.in_channels, device=device)
    kwargs = dict(
        hidden_states=video.to(dtype), audio_hidden_states=audio_in.to(dtype),
        encoder_hidden_states=batch.text.to(dtype), audio_encoder_hidden_states=batch.audio_text.to(dtype),
        encoder_attention_mask=batch.text_mask, audio_encoder_attention_mask=batch.text_mask,
        timestep=zero, audio_timestep=timestep, sigma=zero, audio_sigma=timestep, num_frames=1, height=1, width=1,
        audio_num_frames=audio_in.shape[1],
        video_coords=transformer.rope.prepare_video_coords(size, 1, 1, 1, device, fps=batch.frame_rates[0]),
        isolate_modalities=True, use_cross_timestep=cross_timestep, return_dict=False,
    )
    return ModelInputs(kwargs=kwargs, video_target=torch.zeros_like(video), audio_target=audio_target,
                       loss_mask=torch.zeros(size, 1, device=device), sigma=sigma,
                       rollout_steps=torch.zeros(size, dtype=torch.long))


def first_frame_mask(
    batch_size: int, latent_frames: int, tokens_per_frame: int, probability: float, generator: torch.Generator
) -> torch.Tensor:
    """[B, F*HW] bool, True on the first latent frame's tokens of the clips drawn for I2V conditioning.

    Single-frame clips are never conditioned (nothing would be left to learn from).
    """
    mask = torch.zeros(batch_size, latent_frames * tokens_per_frame, dtype=torch.bool)
    if probability <= 0 or latent_frames < 2:
        return mask
    # Drawn on the generator's device, then moved, so the random stream does not depend on the batch.
    chosen = (torch.rand(batch_size, generator=generator, device=generator.device) < probability).cpu()
    mask[:, :tokens_per_frame] = chosen[:, None]
    return mask


def masked_mse(prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the tokens where mask is 1: per clip, then over the batch. [B, N, C] -> []."""
    per_token = (prediction - target).pow(2).mean(dim=-1)  # [B, N]
    per_clip = (per_token * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)  # [B]
    return per_clip.mean()


def _randn(shape: torch.Size | tuple[int, ...], generator: torch.Generator, device: torch.device) -> torch.Tensor:
    return torch.randn(shape, generator=generator, device=generator.device, dtype=torch.float32).to(device)


def _require_unit_patches(transformer: Any) -> None:
    config = transformer.config
    if (config.patch_size, config.patch_size_t) != (1, 1):
        raise ValueError(
            f"transformer/config.json has patch_size {config.patch_size}, patch_size_t {config.patch_size_t}; "
            "LTX-2 uses 1 and 1 (one token per latent cell), the only packing implemented here"
        )
