"""Video VAE encode and decode with LTX-2's normalisation and memory options.

What is stored per clip: the posterior MEAN, normalised with the VAE's per-channel `latents_mean` /
`latents_std` exactly as LTX2Pipeline._normalize_latents does, which is what the I2V pipeline conditions
on (`.mode()`); plus the posterior log-variance, one channel (the LTX-2 encoder predicts one log-variance
and repeats it over the channels), so a posterior sample can still be drawn at train time for 1/C more
bytes. The first latent frame of a clip is its I2V first-frame latent: the encoder is causal, so latent
frame 0 depends on pixel frame 0 only (tested).

Memory options and how exact they are (float32, tiny model: tests/ltx2core/models/test_video_vae.py; and
the full-size LTX-2.0 encoder, random weights, one H200, 2026-11-26):
  slicing       one clip of the batch at a time                                      exact (rounding)
  patch_conv    every causal conv in time chunks with kernel overlap (causal_conv.py) exact (0 in float32)
  temporal_roll the causal encoder streamed block by block with a causal cache       exact (4e-6 rel, fp32)
  tiling        spatial tiles, each encoded with a halo and cropped to its core (no blending): exact when
                the halo (tile_size - tile_stride) / 2 covers the encoder's receptive field
                (`encoder_receptive_radius`: 208 px tiny, 488 px for LTX-2.0, so 1024+ px tiles for the
                real VAE); smaller halos are approximate and logged
  framewise     diffusers' temporal tiling (`use_framewise_decoding`): approximate; only the first
                `tile_frames` + 1 frames are exact (causal), later tiles restart the causal padding
In bfloat16 the "exact" options still differ from a plain run by bf16 rounding (different conv shapes):
~1e-2 relative on the random full-size encoder. `VaeOptions.cache_key` counts them as the same latents.
Peak memory above the weights, 121x512x768 in bf16: plain 5.0 GiB, patch_conv(8) 3.8, temporal_roll(16)
1.1, temporal_roll(8) 0.75, tiling 512/448 3.1 (approximate), framewise 16/8 0.74 (approximate).
Decoding (validation only) uses diffusers' own tiling / framewise / slicing, which blend tiles.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

import torch

from ltx2core.models.causal_conv import patched_causal_convs
from ltx2core.models.scale import LTX2
from ltx2core.models.vae_options import VaeOptions, encoder_receptive_radius

log = logging.getLogger(__name__)

LOGVAR_RANGE = (-30.0, 20.0)  # the clamp diffusers' DiagonalGaussianDistribution applies
PIXEL_SLACK = 1e-3  # resampling filters overshoot [-1, 1] by a rounding error


@dataclass(frozen=True)
class VideoLatents:
    latents: torch.Tensor  # [B, C, F', H', W'] posterior mean, (mean - latents_mean) * scaling_factor / latents_std
    logvar: torch.Tensor  # [B, 1, F', H', W'] posterior log-variance, before normalisation
    channel_scale: torch.Tensor  # [C] scaling_factor / latents_std: the posterior std in normalised units

    @property
    def first_frame(self) -> torch.Tensor:
        """[B, C, 1, H', W']: the I2V conditioning latent of the clip's first frame."""
        return self.latents[:, :, :1]

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """A normalised posterior sample: latents + exp(logvar / 2) * channel_scale * noise."""
        noise = torch.randn(
            self.latents.shape, generator=generator, device=self.latents.device, dtype=self.latents.dtype
        )
        std = torch.exp(0.5 * self.logvar) * self.channel_scale.view(1, -1, 1, 1, 1)
        return self.latents + std * noise


@torch.no_grad()
def encode_video(vae: Any, pixels: torch.Tensor, *, options: VaeOptions = VaeOptions()) -> VideoLatents:
    """Encode pixels [B, 3, F, H, W] in [-1, 1] (F = 8k+1, H and W multiples of 32).

    Runs on the VAE's device, in its dtype; the latents stay there (the caller moves them to storage).
    """
    _check_pixels(pixels)
    if options.tiling and options.halo < encoder_receptive_radius(vae.config):
        log.info(
            "vae tiling halo %d px is below the encoder's receptive field (%d px): tiled latents are approximate",
            options.halo, encoder_receptive_radius(vae.config),
        )
    x = pixels.to(vae.device, vae.dtype)
    clips = x.split(1) if options.slicing else (x,)
    moments = torch.cat([_encode_tiled(vae, clip, options) for clip in clips])
    channels = vae.config.latent_channels
    mean, logvar = moments[:, :channels], moments[:, channels : channels + 1].clamp(*LOGVAR_RANGE)
    latents_mean = vae.latents_mean.view(1, -1, 1, 1, 1).to(mean)
    latents_std = vae.latents_std.view(1, -1, 1, 1, 1).to(mean)
    scaling = vae.config.scaling_factor
    return VideoLatents(
        latents=(mean - latents_mean) * scaling / latents_std,
        logvar=logvar,
        channel_scale=scaling / latents_std.flatten(),
    )


def _encode_tiled(vae: Any, x: torch.Tensor, options: VaeOptions) -> torch.Tensor:
    """Raw encoder moments [B, 2C, F', H', W'], from spatial tiles cropped to their cores when tiling."""
    height, width = x.shape[-2:]
    if not options.tiling or (height <= options.tile_size and width <= options.tile_size):
        return _encode_frames(vae, x, options)
    cell = LTX2.spatial
    core_h = height if height <= options.tile_size else options.tile_stride
    core_w = width if width <= options.tile_size else options.tile_stride
    channels = 2 * vae.config.latent_channels  # the encoder's moments: C means, then C (repeated) log-variances
    output = x.new_empty(x.shape[0], channels, LTX2.latent_frames(x.shape[2]), height // cell, width // cell)
    for top in range(0, height, core_h):
        for left in range(0, width, core_w):
            bottom, right = min(top + core_h, height), min(left + core_w, width)
            tile_top, tile_left = max(0, top - options.halo), max(0, left - options.halo)
            tile = x[..., tile_top : min(height, bottom + options.halo), tile_left : min(width, right + options.halo)]
            moments = _encode_frames(vae, tile, options)
            output[..., top // cell : bottom // cell, left // cell : right // cell] = moments[
                ..., (top - tile_top) // cell : (bottom - tile_top) // cell,
                (left - tile_left) // cell : (right - tile_left) // cell,
            ]
    return output


def _encode_frames(vae: Any, x: torch.Tensor, options: VaeOptions) -> torch.Tensor:
    chunk = options.patch_conv_frames if options.patch_conv else None
    if options.temporal_roll:
        with patched_causal_convs(vae.encoder, chunk_frames=chunk, stream=True):
            # Frame 0 alone (the causal first frame), then blocks of roll_frames frames (multiples of 8).
            starts = range(1, x.shape[2], options.roll_frames)
            blocks = [x[:, :, :1], *(x[:, :, s : s + options.roll_frames] for s in starts)]
            return torch.cat([vae.encoder(block) for block in blocks], dim=2)
    chunked = patched_causal_convs(vae.encoder, chunk_frames=chunk) if chunk else nullcontext()
    if options.framewise:
        with chunked, _diffusers_flags(vae, options, use_framewise_decoding=True, use_tiling=False):
            return vae.encode(x).latent_dist.parameters
    with chunked:
        return vae.encoder(x)


@torch.no_grad()
def decode_video(vae: Any, latents: VideoLatents | torch.Tensor, *, options: VaeOptions = VaeOptions()) -> torch.Tensor:
    """Normalised latents -> pixels [B, 3, F, H, W] in [-1, 1], with diffusers' tiling for decode.

    temporal_roll needs a causal decoder, and LTX-2.0's is not: it falls back to patch_conv's chunking.
    """
    z = latents.latents if isinstance(latents, VideoLatents) else latents
    z = z.to(vae.device, vae.dtype)
    latents_mean = vae.latents_mean.view(1, -1, 1, 1, 1).to(z)
    latents_std = vae.latents_std.view(1, -1, 1, 1, 1).to(z)
    raw = z * latents_std / vae.config.scaling_factor + latents_mean
    # Timestep-conditioned decoders get t = 0 and no decode noise (LTX2Pipeline's default decode_timestep).
    temb = torch.zeros(z.shape[0], device=z.device, dtype=z.dtype) if vae.config.timestep_conditioning else None
    if options.temporal_roll and not options.patch_conv:
        log.info("vae_enable_temporal_roll: the decoder is not causal, decoding with patch_conv chunking instead")
    chunked = options.patch_conv or options.temporal_roll
    with (
        patched_causal_convs(vae.decoder, chunk_frames=options.patch_conv_frames) if chunked else nullcontext(),
        _diffusers_flags(
            vae, options, use_tiling=options.tiling, use_framewise_decoding=options.framewise,
            use_slicing=options.slicing,
        ),
    ):
        video = vae.decode(raw, temb).sample
    return video.clamp(-1.0, 1.0)


@contextmanager
def _diffusers_flags(vae: Any, options: VaeOptions, **flags: bool) -> Iterator[None]:
    """Set the VAE's tiling attributes from `options` (and `flags`) for the block, then restore them."""
    values: dict[str, Any] = dict(
        use_slicing=False, use_tiling=False, use_framewise_decoding=False,
        tile_sample_min_height=options.tile_size, tile_sample_min_width=options.tile_size,
        tile_sample_stride_height=options.tile_stride, tile_sample_stride_width=options.tile_stride,
        tile_sample_min_num_frames=options.tile_frames, tile_sample_stride_num_frames=options.tile_frames_stride,
    )
    values.update(flags)
    saved = {name: getattr(vae, name) for name in values}
    try:
        for name, value in values.items():
            setattr(vae, name, value)
        yield
    finally:
        for name, value in saved.items():
            setattr(vae, name, value)


def _check_pixels(pixels: torch.Tensor) -> None:
    if pixels.ndim != 5 or pixels.shape[1] != 3:
        raise ValueError(f"pixels must be [batch, 3, frames, height, width], got {tuple(pixels.shape)}")
    frames, height, width = pixels.shape[2:]
    errors = [
        LTX2.frames_error("frames", frames), LTX2.size_error("height", height), LTX2.size_error("width", width)
    ]
    errors = [e for e in errors if e]
    if errors:
        raise ValueError("; ".join(errors))
    low, high = float(pixels.min()), float(pixels.max())
    if low < -1 - PIXEL_SLACK or high > 1 + PIXEL_SLACK:
        raise ValueError(f"pixels must be in [-1, 1], got [{low:.3f}, {high:.3f}]: map uint8 frames with x / 127.5 - 1")
