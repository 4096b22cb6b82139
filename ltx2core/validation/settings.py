"""What a validation run samples and how it fits in memory: plain data, checked once when built (from the config:
ltx2core/keys.py)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Literal

from ltx2core.models.scale import LTX2
from ltx2core.models.vae_options import VaeOptions

log = logging.getLogger(__name__)

# SimpleTuner's LTX-2 quickstart: black or noisy validation videos usually mean a guidance outside this range.
GUIDANCE_RANGE = (2.0, 6.0)


@dataclass(frozen=True)
class ValidationSettings:
    guidance: float = 5.0  # classifier-free guidance on video; <= 1 (with audio_guidance) samples without negative
    steps: int = 30
    seed: int = 42  # every sample starts from this seed's noise, so prompts and checkpoints compare
    resolutions: tuple[tuple[int, int], ...] = ((768, 512),)  # (width, height): one video per prompt and size
    num_frames: int = 121  # 8k+1
    frame_rate: float = 25.0  # what the model is told (RoPE time, audio length) and the mp4's rate
    # The rest of the flavour's recipe (ltx2core/models/flavours.py: ValidationRecipe); defaults are 2.0's.
    audio_guidance: float = 5.0  # classifier-free guidance on audio
    stg_scale: float = 0.0  # spatio-temporal guidance, at `stg_blocks`
    stg_blocks: tuple[int, ...] = ()
    modality_scale: float = 1.0  # modality-isolation guidance (1 = off)
    guidance_rescale: float = 0.0
    sigmas: tuple[float, ...] | None = None  # a distilled model's fixed schedule (`steps` is then its length)

    @property
    def guided(self) -> bool:
        """Whether sampling needs the negative prompt (classifier-free guidance on either modality)."""
        return self.guidance > 1 or self.audio_guidance > 1

    def __post_init__(self) -> None:
        problems = [LTX2.frames_error("validation_num_video_frames", self.num_frames)]
        if not self.resolutions:
            problems.append("validation_resolution is empty: give at least one WxH, e.g. 768x512")
        for width, height in self.resolutions:
            problems += [
                LTX2.size_error(f"validation_resolution {width}x{height} width", width),
                LTX2.size_error(f"validation_resolution {width}x{height} height", height),
            ]
        if self.steps < 1:
            problems.append(f"validation_num_inference_steps {self.steps} must be at least 1")
        if self.frame_rate <= 0:
            problems.append(f"frame_rate {self.frame_rate} must be positive")
        if self.guidance < 0:
            problems.append(f"validation_guidance {self.guidance} must not be negative")
        problems = [p for p in problems if p]
        if problems:
            raise ValueError("; ".join(problems))
        low, high = GUIDANCE_RANGE
        if self.sigmas is None and not low <= self.guidance <= high:
            log.warning(
                "validation_guidance %g is outside %g-%g: LTX-2 validation videos tend to come out black or noisy "
                "there (SimpleTuner's quickstart keeps 5.0)", self.guidance, low, high,
            )


@dataclass(frozen=True)
class MemoryOptions:
    """Where the sampler's models live. The text encoder is never among them (cached prompt features)."""

    group_offload: bool = False  # stream the transformer's blocks from the CPU (diffusers group offloading)
    offload_type: Literal["block_level", "leaf_level"] = "block_level"
    blocks_per_group: int = 1  # block_level: transformer blocks moved together
    use_stream: bool = False  # prefetch the next group on a CUDA stream: correct for inference (not for training)
    vae: VaeOptions = field(default_factory=VaeOptions)  # decoding: tiling, framewise, slicing, patch_conv

    def __post_init__(self) -> None:
        if self.blocks_per_group < 1:
            raise ValueError(f"group_offload_blocks_per_group {self.blocks_per_group} must be at least 1")
