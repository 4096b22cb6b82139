"""PEFT LoRA on the LTX-2 transformer: which layers, how it is added, and the two files users load.

Targets are module-name SUFFIXES, matched the way PEFT matches them (the name equals the target or ends
with "." + target). `attn1.to_q` therefore hits `transformer_blocks.N.attn1.to_q` and not its audio twin
`audio_attn1.to_q`; a bare `to_q` (SimpleTuner's and Lightricks' default) hits all six attentions.
Video-only data trains the video attentions only: with the video-only fast path (step.py) the audio and
cross-modal attentions would get no gradient at all.

Files written by `save_lora` (both load with `LTX2Pipeline.load_lora_weights`, tested on the tiny model):
  pytorch_lora_weights.safetensors  diffusers format (`transformer.` keys, the LoRA config in the header),
                                    what `load_lora_weights(folder)` picks; weights exactly as trained.
  lora_comfyui.safetensors          ComfyUI / original LTX-2 naming (`diffusion_model.` keys, lora_A/lora_B),
                                    the format of Lightricks' trainer, for ComfyUI's LoRA loader.
The ComfyUI file carries NO `.alpha` tensors: diffusers 0.42.1 rejects any key without "lora" in it
(`load_lora_weights` raises "Invalid LoRA checkpoint", measured), and with no alpha both ComfyUI and
diffusers apply scale 1. So the scale alpha/rank is folded into lora_B: the file holds lora_B * alpha/rank,
which is the trained lora_B bit for bit at the default alpha = rank, and gives the same product
lora_B @ lora_A * alpha/rank in both loaders for any alpha. Key names are checked at save time against
diffusers' own converter (`_convert_non_diffusers_ltx2_lora_to_diffusers`), so what is written is what
it maps back.

Both headers record the flavour trained on (`ltx2_flavour`): a LoRA fits only its release's transformer.
The diffusers file's header records `lora_dropout` 0 whatever the training used: diffusers builds the
adapter from that record, with its dropout modules in training mode that nothing switches off, so a
recorded 0.1 made two calls with one seed differ (measured: 6e-3 in the latents). Dropout is a training
setting; the checkpoint's config fingerprint keeps the trained value for resuming.

Which file goes where: diffusers (`LTX2Pipeline.load_lora_weights`) reads either; ComfyUI and Lightricks'
ltx-pipelines take the ComfyUI file (ltx-pipelines ignores alpha and silently skips the diffusers keys).
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from ltx2core.training.durable import publish

log = logging.getLogger(__name__)

ADAPTER = "default"  # the adapter name PEFT gives the one LoRA we train
DIFFUSERS_FILE = "pytorch_lora_weights.safetensors"  # diffusers' LORA_WEIGHT_NAME_SAFE
COMFY_FILE = "lora_comfyui.safetensors"
COMFY_PREFIX = "diffusion_model."
FLAVOUR_METADATA = "ltx2_flavour"  # safetensors header key: the model_flavour the LoRA was trained on

PROJECTIONS = ("to_q", "to_k", "to_v", "to_out.0")
VIDEO_ATTENTIONS = ("attn1", "attn2")  # video self-attention, video <- text
AUDIO_ATTENTIONS = ("audio_attn1", "audio_attn2", "audio_to_video_attn", "video_to_audio_attn")
VIDEO_FEED_FORWARD = ("ff.net.0.proj", "ff.net.2")
AUDIO_FEED_FORWARD = ("audio_ff.net.0.proj", "audio_ff.net.2")


@dataclass(frozen=True)
class LoraSpec:
    rank: int
    alpha: float  # scale = alpha / rank
    dropout: float
    targets: tuple[str, ...]  # module-name suffixes

    def __post_init__(self) -> None:
        problems = []
        if self.rank < 1:
            problems.append(f"lora_rank {self.rank} must be at least 1")
        if self.alpha <= 0:
            problems.append(f"lora_alpha {self.alpha} must be positive")
        if not 0 <= self.dropout < 1:
            problems.append(f"lora_dropout {self.dropout} must be in [0, 1)")
        if not self.targets:
            problems.append("peft_lora_target_modules is empty: name at least one module suffix, e.g. attn1.to_q")
        if problems:
            raise ValueError("; ".join(problems))


def target_modules(configured: Sequence[str] | None, *, with_audio: bool, feed_forward: bool = False,
                   audio_only: bool = False) -> list[str]:
    """The LoRA targets: `configured` (config `peft_lora_target_modules`) as given, else the default.

    Default: the q/k/v/out projections of the video attentions (`attn1`, `attn2`); with audio data all six
    attentions; `audio_only` (an audio-only LoRA, whose step isolates the modalities) the audio self- and text
    attentions alone; `feed_forward` adds the trained streams' feed-forward layers.
    """
    if configured:
        return list(dict.fromkeys(configured))
    attentions = AUDIO_ATTENTIONS[:2] if audio_only else VIDEO_ATTENTIONS + (AUDIO_ATTENTIONS if with_audio else ())
    targets = [f"{attention}.{projection}" for attention in attentions for projection in PROJECTIONS]
    if feed_forward:
        video_ff = () if audio_only else VIDEO_FEED_FORWARD
        targets += [*video_ff, *(AUDIO_FEED_FORWARD if with_audio or audio_only else ())]
    return targets


def add_lora(transformer: Any, spec: LoraSpec, *, seed: int) -> list[torch.nn.Parameter]:
    """Add one LoRA adapter; return its parameters (float32, the only ones that require grad).

    lora_A is initialised from `seed` (lora_B is zero, so the adapted model starts equal to the base);
    the caller's RNG state is left alone. Raises if a target matches no linear layer.
    """
    from peft import LoraConfig

    linear_names = [name for name, module in transformer.named_modules() if isinstance(module, torch.nn.Linear)]
    unmatched = [t for t in spec.targets if not any(_matches(name, t) for name in linear_names)]
    if unmatched:
        raise ValueError(
            f"peft_lora_target_modules {unmatched} match no linear layer of the transformer; module names look "
            f"like {linear_names[len(linear_names) // 2]!r} (targets are suffixes, e.g. attn1.to_q or ff.net.2)"
        )
    transformer.requires_grad_(False)
    config = LoraConfig(
        r=spec.rank, lora_alpha=spec.alpha, lora_dropout=spec.dropout, target_modules=list(spec.targets),
        init_lora_weights=True,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        transformer.add_adapter(config, adapter_name=ADAPTER)
    params = [p for p in transformer.parameters() if p.requires_grad]
    for param in params:  # trainable weights in float32 even on a bf16 base: Adam updates vanish in bf16
        param.data = param.data.float()
    log.info("LoRA rank %d alpha %g on %d modules: %d trainable parameters", spec.rank, spec.alpha,
             len(params) // 2, sum(p.numel() for p in params))
    return params


def lora_state_dict(transformer: Any) -> dict[str, torch.Tensor]:
    """The adapter's weights, PEFT keys without the adapter name (`...attn1.to_q.lora_A.weight`), CPU copies."""
    from peft.utils import get_peft_model_state_dict

    state = get_peft_model_state_dict(transformer, adapter_name=ADAPTER)
    return {key: value.detach().to("cpu", copy=True).contiguous() for key, value in state.items()}


def load_lora_state(transformer: Any, state: dict[str, torch.Tensor]) -> None:
    """Put saved adapter weights back into a transformer that has the same adapter (`add_lora`)."""
    from peft.utils import set_peft_model_state_dict

    expected = set(lora_state_dict(transformer))
    if set(state) != expected:
        missing, extra = sorted(expected - set(state)), sorted(set(state) - expected)
        raise ValueError(
            f"saved LoRA weights do not fit this adapter (missing {missing[:3]}, unexpected {extra[:3]}): the "
            "checkpoint was trained with other lora_rank or peft_lora_target_modules"
        )
    set_peft_model_state_dict(transformer, state, adapter_name=ADAPTER)


def lora_spec_of(transformer: Any) -> LoraSpec:
    """The LoraSpec of the transformer's adapter, as PEFT recorded it."""
    config = transformer.peft_config[ADAPTER]
    return LoraSpec(
        rank=int(config.r), alpha=float(config.lora_alpha), dropout=float(config.lora_dropout),
        targets=tuple(sorted(config.target_modules)),
    )


def save_lora(transformer: Any, folder: Path, *, flavour: str, comfy: bool = True) -> list[Path]:
    """Write the adapter of `transformer` to `folder` (see the module docstring); returns the files."""
    return write_lora_files(folder, lora_state_dict(transformer), lora_spec_of(transformer), flavour=flavour,
                            comfy=comfy)


def write_lora_files(
    folder: Path, state: dict[str, torch.Tensor], spec: LoraSpec, *, flavour: str, comfy: bool = True
) -> list[Path]:
    """`save_lora` from weights already taken out of the model. Each file lands whole (temp name, fsync,
    rename); `folder` is created if needed. Both files record the flavour they were trained on in their header
    (`ltx2_flavour`), which `lora_flavour` reads back."""
    from diffusers import LTX2Pipeline

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    with tempfile.TemporaryDirectory(dir=folder, prefix=".lora-") as staging:
        metadata = {  # what loaders build the adapter from: settings for inference, so no dropout (docstring)
            "r": spec.rank, "lora_alpha": spec.alpha, "lora_dropout": 0.0,
            "target_modules": list(spec.targets), "init_lora_weights": True,
        }
        LTX2Pipeline.save_lora_weights(
            staging, transformer_lora_layers=state, transformer_lora_adapter_metadata=metadata
        )
        _add_header(Path(staging) / DIFFUSERS_FILE, {FLAVOUR_METADATA: flavour})
        written.append(publish(Path(staging) / DIFFUSERS_FILE, folder / DIFFUSERS_FILE))
        if comfy:
            save_file(comfy_state_dict(state, spec), Path(staging) / COMFY_FILE,
                      metadata={FLAVOUR_METADATA: flavour})
            written.append(publish(Path(staging) / COMFY_FILE, folder / COMFY_FILE))
    return written


def lora_flavour(file: Path) -> str | None:
    """The flavour a LoRA file was trained on, as this trainer records it; None for other trainers' files."""
    from safetensors import safe_open

    with safe_open(str(file), framework="pt") as f:
        return (f.metadata() or {}).get(FLAVOUR_METADATA)


def _add_header(file: Path, extra: dict[str, str]) -> None:
    """Rewrite a small safetensors file with `extra` added to its header metadata."""
    from safetensors import safe_open

    with safe_open(str(file), framework="pt") as f:
        metadata = (f.metadata() or {}) | extra
        tensors = {key: f.get_tensor(key) for key in f.keys()}
    save_file(tensors, file, metadata=metadata)


def comfy_state_dict(state: dict[str, torch.Tensor], spec: LoraSpec) -> dict[str, torch.Tensor]:
    """PEFT keys -> `diffusion_model.` keys, with the LoRA scale folded into lora_B (module docstring)."""
    from diffusers.loaders.lora_conversion_utils import _convert_non_diffusers_ltx2_lora_to_diffusers

    scale = spec.alpha / spec.rank
    comfy = {}
    for key, value in state.items():
        comfy[COMFY_PREFIX + key] = value * scale if ".lora_B." in key and scale != 1 else value.clone()
    # The original checkpoint renames some top-level modules (patchify_proj, adaln_single, q_norm, ...);
    # inside the blocks the names agree. Refuse a target whose name would not map back.
    back = _convert_non_diffusers_ltx2_lora_to_diffusers(dict.fromkeys(comfy, None))
    renamed = sorted(set(f"transformer.{k}" for k in state) - set(back))
    if renamed:
        raise ValueError(
            f"LoRA modules {renamed[:3]} have other names in the original LTX-2 checkpoint; the ComfyUI export "
            "supports targets inside transformer_blocks only: drop them from peft_lora_target_modules"
        )
    return comfy


def _matches(name: str, target: str) -> bool:
    return name == target or name.endswith("." + target)
