"""The video VAE's memory options and the cache key they imply: plain data, no torch, so finding the latents a
run still needs (tasks/pending.py) does not import the model code. How each option behaves: vae.py; how the
config's switches map to them: ltx2core/keys.py."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ltx2core.models.scale import LTX2


@dataclass(frozen=True)
class VaeOptions:
    tiling: bool = False
    tile_size: int = 512  # pixels of one spatial tile, halo included
    tile_stride: int = 448  # pixels between tile starts: the core each tile contributes
    framewise: bool = False
    tile_frames: int = 16  # frames per temporal tile (framewise)
    tile_frames_stride: int = 8  # frames between temporal tile starts (framewise)
    roll_frames: int = 8  # frames per streamed block (temporal_roll): 8 keeps full size under 3.5 GiB (H200)
    slicing: bool = False
    patch_conv: bool = False
    patch_conv_frames: int = 8  # output frames per conv call with patch_conv
    temporal_roll: bool = False

    def __post_init__(self) -> None:
        errors = [
            LTX2.size_error("vae tile_size", self.tile_size),
            LTX2.size_error("vae tile_stride", self.tile_stride),
            _multiple_error("vae tile_frames", self.tile_frames, LTX2.temporal),
            _multiple_error("vae tile_frames_stride", self.tile_frames_stride, LTX2.temporal),
            _multiple_error("vae roll_frames", self.roll_frames, LTX2.temporal),
        ]
        overlap = self.tile_size - self.tile_stride
        if overlap < 0 or overlap % (2 * LTX2.spatial):
            errors.append(
                f"vae tile_size {self.tile_size} - tile_stride {self.tile_stride} must be a non-negative multiple of "
                f"{2 * LTX2.spatial} (each tile reads the same halo on both sides): e.g. tile_stride "
                f"{self.tile_size - 2 * LTX2.spatial}"
            )
        if self.tile_frames_stride > self.tile_frames:
            errors.append(f"vae tile_frames_stride {self.tile_frames_stride} exceeds tile_frames {self.tile_frames}")
        if self.patch_conv_frames < 1:
            errors.append(f"vae patch_conv_frames {self.patch_conv_frames} must be at least 1")
        if self.framewise and self.temporal_roll:
            errors.append("vae framewise and vae_enable_temporal_roll both split time: enable one of them")
        errors = [e for e in errors if e]
        if errors:
            raise ValueError("; ".join(errors))

    @property
    def halo(self) -> int:
        return (self.tile_size - self.tile_stride) // 2

    def cache_key(self, vae_config: Mapping[str, Any]) -> str:
        """The options that change latents beyond rounding, for the latents cache key ("exact" when none).

        Needs only vae/config.json, so missing rows can be found without loading the VAE.
        """
        parts = []
        if self.tiling and self.halo < encoder_receptive_radius(vae_config):
            parts.append(f"tiles{self.tile_size}/{self.tile_stride}")
        if self.framewise:
            parts.append(f"framewise{self.tile_frames}/{self.tile_frames_stride}")
        return "+".join(parts) or "exact"


def _multiple_error(key: str, value: int, step: int) -> str | None:
    if value >= step and value % step == 0:
        return None
    below, above = max(step, value // step * step), max(step, -(-value // step) * step)
    return f"{key} {value} is not a positive multiple of {step}: use {below} or {above}"


def encoder_receptive_radius(vae_config: Mapping[str, Any]) -> int:
    """Pixels beyond its own footprint that a latent cell reads on each side (the exact-tiling halo).

    Walks the encoder layout of `AutoencoderKLLTX2Video`: every 3x3x3 conv at a scale of s pixels per cell
    reaches s pixels further; downsamplers fold space after their conv.
    """
    layers = list(vae_config["layers_per_block"])
    scaling = vae_config["spatio_temporal_scaling"]
    if isinstance(scaling, bool):
        scaling = [scaling] * (len(layers) - 1)
    scale = int(vae_config["patch_size"])
    radius = scale  # conv_in
    for count, scaled, kind in zip(layers[:-1], scaling, vae_config["downsample_type"], strict=True):
        radius += 2 * count * scale  # resnets of two convs each
        if scaled:
            radius += scale  # the downsampler's conv
            if kind != "temporal":
                scale *= 2
    return radius + 2 * layers[-1] * scale + scale  # mid block resnets and conv_out
