"""LTX-2's shape rules, in one place.

The video VAE compresses 32x in space and 8x in time with a causal first frame, so a clip must have
8k+1 frames and a width and height that are multiples of 32. Everything else in the project asks this
module instead of writing 32 or 8 itself: the numbers come from the VAE config when one is loaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ScaleFactors:
    spatial: int = 32  # pixels per latent cell, each of height and width
    temporal: int = 8  # frames per latent frame, after the first

    @classmethod
    def from_vae_config(cls, config: Any) -> ScaleFactors:
        """Read the ratios from an `AutoencoderKLLTX2Video` config (or dict)."""
        get = config.get if isinstance(config, dict) else lambda k, d=None: getattr(config, k, d)
        return cls(spatial=int(get("spatial_compression_ratio", 32)), temporal=int(get("temporal_compression_ratio", 8)))

    # ---- frames: 8k+1
    def frames_ok(self, frames: int) -> bool:
        return frames >= 1 and (frames - 1) % self.temporal == 0

    def nearest_frames(self, frames: int) -> tuple[int, int]:
        """The valid frame counts just below and just above `frames` (equal when it is valid)."""
        below = max(1, (frames - 1) // self.temporal * self.temporal + 1)
        above = below if self.frames_ok(frames) else below + self.temporal
        return below, above

    def floor_frames(self, frames: int) -> int:
        """The longest valid clip that fits in `frames` frames (0 when none does)."""
        return 0 if frames < 1 else (frames - 1) // self.temporal * self.temporal + 1

    def latent_frames(self, frames: int) -> int:
        return (frames - 1) // self.temporal + 1

    def frames_error(self, key: str, frames: int) -> str | None:
        if self.frames_ok(frames):
            return None
        below, above = self.nearest_frames(frames)
        if frames < 1:
            return f"{key} {frames} must be at least 1 (use 1, {1 + self.temporal}, {1 + 2 * self.temporal}, ...)"
        return f"{key} {frames} is not {self.temporal}k+1: use {below} or {above}"

    # ---- width and height: multiples of 32
    def size_ok(self, pixels: int) -> bool:
        return pixels >= self.spatial and pixels % self.spatial == 0

    def nearest_sizes(self, pixels: int) -> tuple[int, int]:
        below = max(self.spatial, pixels // self.spatial * self.spatial)
        above = below if self.size_ok(pixels) else max(self.spatial, -(-pixels // self.spatial) * self.spatial)
        return below, above

    def round_size(self, pixels: float) -> int:
        """The multiple of `spatial` nearest to `pixels` (never below one cell)."""
        return max(self.spatial, int(round(pixels / self.spatial)) * self.spatial)

    def size_error(self, key: str, pixels: int) -> str | None:
        if self.size_ok(pixels):
            return None
        below, above = self.nearest_sizes(pixels)
        options = f"{below}" if below == above else f"{below} or {above}"
        return f"{key} {pixels} is not a multiple of {self.spatial}: use {options}"


LTX2 = ScaleFactors()
