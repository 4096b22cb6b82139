"""The LTX-2 releases this trainer trains, and everything that differs between them, in one table.

A flavour is a release (2.0, 2.3, 2.5) and which of its transformers is trained (the full "dev" model, or the
distilled one that ComfyUI's fast workflows sample). diffusers 0.42.1 runs all of them with the same classes;
what changes is read from here:
  - the architecture, to refuse a folder of another release (`release_of`, from the component configs);
  - where the weights are (hub repo, and the transformer's subfolder: LTX-2.5-Diffusers' `transformer/` is the
    distilled model, `transformer_full/` the full one);
  - how the transformer is called (`use_cross_timestep`: 2.3+ modulate cross-modal attention by the other
    modality's sigma, as their pipelines do);
  - which noise levels training draws (`distilled`: the distilled sampler's fixed sigmas; dev: the dynamic shift);
  - the validation recipe Lightricks documents for it (steps, guidance per modality, STG, modality guidance);
  - the CRF of image-to-video's conditioning frame (33 through 2.3, 18 from 2.5).
Facts and sources: docs/decisions.md ("LTX-2.3 and 2.5").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

Release = Literal["2.0", "2.3", "2.5"]

# diffusers.pipelines.ltx2.utils.DISTILLED_SIGMA_VALUES: the 8 noise levels the distilled models are sampled at
DISTILLED_SIGMAS = (1.0, 0.99375, 0.9875, 0.98125, 0.975, 0.909375, 0.725, 0.421875)


@dataclass(frozen=True)
class ValidationRecipe:
    """A flavour's documented sampling settings (Lightricks' ltx-pipelines constants, diffusers' docs)."""

    steps: int
    guidance: float  # classifier-free guidance on video
    audio_guidance: float | None  # ... on audio; None: the video guidance (as it is set or defaulted)
    stg_scale: float = 0.0  # spatio-temporal guidance (0 = off)
    stg_blocks: tuple[int, ...] = ()
    modality_scale: float = 1.0  # modality-isolation guidance (1 = off)
    guidance_rescale: float = 0.0
    sigmas: tuple[float, ...] | None = None  # a fixed schedule (distilled) instead of `steps` shifted ones


@dataclass(frozen=True)
class Flavour:
    name: str  # what `model_flavour` says
    release: Release
    distilled: bool
    repo: str  # the diffusers-layout hub repository, the default pretrained_model_name_or_path
    transformer_subfolder: str
    text_encoder: Literal["gemma3", "gemma4"]
    use_cross_timestep: bool
    image_crf: int  # H.264 CRF of the I2V conditioning frame (diffusers' pipelines, per release)
    validation: ValidationRecipe
    scheduler_overrides: tuple[tuple[str, Any], ...] = ()  # the repo's scheduler config, corrected for this model

    @property
    def per_modality_text(self) -> bool:
        """2.3+: the connectors project the text separately for video (4096) and audio (2048), per-token norm."""
        return self.release != "2.0"


# 2.0: SimpleTuner's quickstart recipe (plain CFG 5.0 on both; diffusers' STG is a no-op on 2.0 weights).
_RECIPE_20 = ValidationRecipe(steps=30, guidance=5.0, audio_guidance=None)
# 2.3 / 2.5 dev: Lightricks' constants (CFG 3 video / 7 audio, STG 1 at block 28, modality 3, rescale 0.7).
_RECIPE_DEV = ValidationRecipe(steps=30, guidance=3.0, audio_guidance=7.0, stg_scale=1.0, stg_blocks=(28,),
                               modality_scale=3.0, guidance_rescale=0.7)
# Distilled: unguided, the fixed 8-sigma schedule.
_RECIPE_DISTILLED = ValidationRecipe(steps=len(DISTILLED_SIGMAS), guidance=1.0, audio_guidance=1.0,
                                     sigmas=DISTILLED_SIGMAS)
# LTX-2.5-Diffusers ships the distilled scheduler; the full model samples with the dev shift (diffusers' docs).
_DEV_SCHEDULER = (("use_dynamic_shifting", True), ("shift_terminal", 0.1))

FLAVOURS: dict[str, Flavour] = {f.name: f for f in (
    Flavour(name="2.0", release="2.0", distilled=False, repo="Lightricks/LTX-2", transformer_subfolder="transformer",
            text_encoder="gemma3", use_cross_timestep=False, image_crf=33, validation=_RECIPE_20),
    Flavour(name="2.3", release="2.3", distilled=False, repo="diffusers/LTX-2.3-Diffusers",
            transformer_subfolder="transformer", text_encoder="gemma3", use_cross_timestep=True, image_crf=33,
            validation=_RECIPE_DEV),
    Flavour(name="2.3-distilled", release="2.3", distilled=True, repo="dg845/LTX-2.3-Distilled-Diffusers",
            transformer_subfolder="transformer", text_encoder="gemma3", use_cross_timestep=True, image_crf=33,
            validation=_RECIPE_DISTILLED),
    Flavour(name="2.5", release="2.5", distilled=False, repo="Lightricks/LTX-2.5-Diffusers",
            transformer_subfolder="transformer_full", text_encoder="gemma4", use_cross_timestep=True, image_crf=18,
            validation=_RECIPE_DEV, scheduler_overrides=_DEV_SCHEDULER),
    Flavour(name="2.5-distilled", release="2.5", distilled=True, repo="Lightricks/LTX-2.5-Diffusers",
            transformer_subfolder="transformer", text_encoder="gemma4", use_cross_timestep=True, image_crf=18,
            validation=_RECIPE_DISTILLED),
)}
# SimpleTuner's spellings (its `model_flavour` values), and the obvious ones.
ALIASES = {"2": "2.0", "dev": "2.0", "2.0-dev": "2.0", "2.3-dev": "2.3", "2.5-dev": "2.5"}


def canonical(name: str) -> str:
    """`model_flavour` as written -> a FLAVOURS name; raises naming the supported ones."""
    name = ALIASES.get(str(name), str(name))
    if name not in FLAVOURS:
        quantised = (" (pre-quantised weights are not loaded: train the bf16 model with base_model_precision "
                     "fp8-e4m3fn or int8-torchao)") if any(q in name for q in ("fp8", "fp4", "int8")) else ""
        raise ValueError(f"model_flavour {name!r} is not supported{quantised}: use one of {', '.join(FLAVOURS)} "
                         f"(aliases: {', '.join(ALIASES)})")
    return name


def release_of(transformer_config: dict[str, Any]) -> Release:
    """Which release a transformer config is: 2.3 added gated attention and cross-attention modulation, 2.5
    the keyframe position embedding and a bias-free video feed-forward."""
    if transformer_config.get("use_keyframes_abs_pos_embedding") or transformer_config.get("ff_bias") is False:
        return "2.5"
    if transformer_config.get("gated_attn") or transformer_config.get("cross_attn_mod"):
        return "2.3"
    return "2.0"
