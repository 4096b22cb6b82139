"""Which tensors of a whole Lightricks checkpoint belong to which component, and their diffusers names.

A whole checkpoint (`ltx-2.3-22b-dev.safetensors`) holds, by prefix (the prefixes ltx-core's own key filters use):
  transformer   model.diffusion_model.*                         (names: original_keys.py)
  connectors    text_embedding_projection.*, model.diffusion_model.{video_,audio_}embeddings_connector.*
  vae           vae.{encoder,decoder,per_channel_statistics}.*
  audio_vae     audio_vae.*        vocoder   vocoder.*
The connectors' and the VAE's renames are below, each a rule on name segments that maps both ways (the tests
write our tiny components in the original layout with `to_original` and read them back). A name that maps to None
is a tensor the diffusers model does not have and that is dropped on purpose (named in IGNORED); a name no rule
explains is returned as it is, so that the strict check names it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from ltx2core.models.original_keys import PREFIX


class CheckpointFileError(ValueError):
    """A checkpoint file that does not fit the flavour's component; says which tensors and what to do. (Here, not
    beside the loader, so that reporting it imports no torch.)"""


CONNECTOR_PREFIXES = (
    "text_embedding_projection.", f"{PREFIX}video_embeddings_connector.", f"{PREFIX}audio_embeddings_connector.",
    f"{PREFIX}embeddings_connector.",
)
PREFIXES = {"connectors": CONNECTOR_PREFIXES, "vae": ("vae.",), "audio_vae": ("audio_vae.",),
            "vocoder": ("vocoder.",)}
# Latent statistics the encoders and decoders do not use (diffusers keeps mean-of-means and std-of-means only).
IGNORED = tuple(f"{vae}.per_channel_statistics.{name}" for vae in ("vae", "audio_vae")
                for name in ("channel", "mean-of-stds"))

_CONNECTOR_TOP = {  # original -> diffusers
    "text_embedding_projection.aggregate_embed": "text_proj_in",  # 2.0: one projection
    "text_embedding_projection.video_aggregate_embed": "video_text_proj_in",  # 2.3+: one per modality
    "text_embedding_projection.audio_aggregate_embed": "audio_text_proj_in",
    f"{PREFIX}video_embeddings_connector": "video_connector",
    f"{PREFIX}audio_embeddings_connector": "audio_connector",
}
_CONNECTOR_SEGMENTS = {"transformer_1d_blocks": "transformer_blocks", "q_norm": "norm_q", "k_norm": "norm_k"}
_VAE_SEGMENTS = {"res_blocks": "resnets", "last_time_embedder": "time_embedder",
                 "last_scale_shift_table": "scale_shift_table"}
_VAE_STATISTICS = {"vae.per_channel_statistics.mean-of-means": "latents_mean",
                   "vae.per_channel_statistics.std-of-means": "latents_std"}
_AUDIO_STATISTICS = {f"audio_{k}": v for k, v in _VAE_STATISTICS.items()}


# The transformer's top-level modules in either naming, for files without the `model.diffusion_model.` prefix
# (transformer-only files, diffusers' names); every parameter of the tiny 2.0 / 2.3 / 2.5 models is one of these.
TRANSFORMER_MODULES = frozenset({
    "transformer_blocks", "proj_in", "patchify_proj", "audio_proj_in", "audio_patchify_proj", "proj_out",
    "audio_proj_out", "scale_shift_table", "audio_scale_shift_table", "time_embed", "adaln_single",
    "audio_time_embed", "audio_adaln_single", "prompt_adaln", "prompt_adaln_single", "audio_prompt_adaln",
    "audio_prompt_adaln_single", "caption_projection", "audio_caption_projection", "keyframes_abs_pos_embedding",
    "av_cross_attn_video_scale_shift", "av_ca_video_scale_shift_adaln_single", "av_cross_attn_audio_scale_shift",
    "av_ca_audio_scale_shift_adaln_single", "av_cross_attn_video_a2v_gate", "av_ca_a2v_gate_adaln_single",
    "av_cross_attn_audio_v2a_gate", "av_ca_v2a_gate_adaln_single",
})


def component_of(key: str) -> str:
    """The component a tensor of a checkpoint file belongs to; "other" for what none of ours is (the Gemma weights
    of LTX-2.5's text-encoder file, a stray tensor)."""
    for component, prefixes in PREFIXES.items():
        if key.startswith(prefixes):
            return component
    if key.startswith(PREFIX) or key.split(".", 1)[0] in TRANSFORMER_MODULES:
        return "transformer"
    return "other"


def _segments(name: str, table: dict[str, str]) -> str:
    return ".".join(table.get(part, part) for part in name.split("."))


def connector_names(keys: Iterable[str]) -> dict[str, str | None]:
    """original -> diffusers names of the text connectors (LTX2TextConnectors)."""
    names: dict[str, str | None] = {}
    for key in keys:
        names[key] = key  # unknown unless a rule applies: the strict check then names it
        for top, diffusers in _CONNECTOR_TOP.items():
            if key.startswith(top + "."):
                names[key] = diffusers + _segments(key[len(top):], _CONNECTOR_SEGMENTS)
    return names


def vae_names(keys: Iterable[str]) -> dict[str, str | None]:
    """original -> diffusers names of the video VAE (AutoencoderKLLTX2Video).

    The original numbers the encoder's stages flat: res, downsampler, res, downsampler, ..., and the mid block last;
    the decoder: the mid block first, then upsampler, res, upsampler, res, ... Diffusers nests each sampler in its
    stage (`down_blocks.i.downsamplers.0`, `up_blocks.i.upsamplers.0`)."""
    keys = list(keys)
    encoder_stages = [int(m.group(1)) for k in keys if (m := re.match(r"vae\.encoder\.down_blocks\.(\d+)\.", k))]
    last = max(encoder_stages, default=-1)
    names: dict[str, str | None] = {}
    for key in keys:
        if key in _VAE_STATISTICS or key in IGNORED:
            names[key] = _VAE_STATISTICS.get(key)
            continue
        name = key.removeprefix("vae.")
        if m := re.match(r"encoder\.down_blocks\.(\d+)\.(.*)", name):
            index, rest = int(m.group(1)), m.group(2)
            stage = ("mid_block" if index == last else
                     f"down_blocks.{index // 2}" if index % 2 == 0 else f"down_blocks.{index // 2}.downsamplers.0")
            name = f"encoder.{stage}.{rest}"
        elif m := re.match(r"decoder\.up_blocks\.(\d+)\.(.*)", name):
            index, rest = int(m.group(1)), m.group(2)
            stage = ("mid_block" if index == 0 else
                     f"up_blocks.{(index - 1) // 2}.upsamplers.0" if index % 2 else f"up_blocks.{(index - 2) // 2}")
            name = f"decoder.{stage}.{rest}"
        names[key] = _segments(name, _VAE_SEGMENTS)
    return names


def audio_vae_names(keys: Iterable[str]) -> dict[str, str | None]:
    """original -> diffusers names of the audio VAE (AutoencoderKLLTX2Audio): the same module names under
    `audio_vae.`, the latent statistics as diffusers' buffers."""
    return {key: _AUDIO_STATISTICS[key] if key in _AUDIO_STATISTICS else None if key in IGNORED
            else key.removeprefix("audio_vae.") for key in keys}


_VOCODER_SEGMENTS = {"ups": "upsamplers", "resblocks": "resnets", "conv_pre": "conv_in", "conv_post": "conv_out",
                     "act_post": "act_out"}


def vocoder_names(keys: Iterable[str]) -> dict[str, str | None]:
    """original -> diffusers names of the vocoder (LTX2Vocoder; 2.3+: LTX2VocoderWithBWE, whose generator, bandwidth
    extension and mel STFT sit under `vocoder.vocoder.`, `vocoder.bwe_generator.`, `vocoder.mel_stft.`): HiFi-GAN's
    names to diffusers', and the anti-aliasing low-pass filter one level up."""
    return {key: _segments(key.removeprefix("vocoder."), _VOCODER_SEGMENTS).replace(".downsample.lowpass.",
                                                                                    ".downsample.")
            for key in keys}


def to_original(component: str, names: Iterable[str]) -> dict[str, str]:
    """diffusers -> original names of a component's parameters, the inverse of the rules above (for the tests, which
    write our tiny models in Lightricks' layout and read them back)."""
    names = list(names)
    if component == "connectors":
        top = {v: k for k, v in _CONNECTOR_TOP.items()}
        back = {v: k for k, v in _CONNECTOR_SEGMENTS.items()}
        out = {}
        for name in names:
            head = next(h for h in top if name.startswith(h + "."))
            out[name] = top[head] + _segments(name[len(head):], back)
        return out
    if component == "vae":
        back = {v: k for k, v in _VAE_SEGMENTS.items()}
        stats = {v: k for k, v in _VAE_STATISTICS.items()}
        stages = 1 + max(int(m.group(1)) for n in names if (m := re.match(r"encoder\.down_blocks\.(\d+)\.", n)))
        out = {}
        for name in names:
            if name in stats:
                out[name] = stats[name]
                continue
            original = _segments(name, back)
            if m := re.match(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.(.*)", original):
                original = f"encoder.down_blocks.{2 * int(m.group(1)) + 1}.{m.group(2)}"
            elif m := re.match(r"encoder\.down_blocks\.(\d+)\.(.*)", original):
                original = f"encoder.down_blocks.{2 * int(m.group(1))}.{m.group(2)}"
            elif original.startswith("encoder.mid_block."):
                original = f"encoder.down_blocks.{2 * stages}." + original.removeprefix("encoder.mid_block.")
            elif m := re.match(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.(.*)", original):
                original = f"decoder.up_blocks.{2 * int(m.group(1)) + 1}.{m.group(2)}"
            elif m := re.match(r"decoder\.up_blocks\.(\d+)\.(.*)", original):
                original = f"decoder.up_blocks.{2 * int(m.group(1)) + 2}.{m.group(2)}"
            elif original.startswith("decoder.mid_block."):
                original = "decoder.up_blocks.0." + original.removeprefix("decoder.mid_block.")
            out[name] = "vae." + original
        return out
    if component == "audio_vae":
        stats = {v: k for k, v in _AUDIO_STATISTICS.items()}
        return {name: stats.get(name, "audio_vae." + name) for name in names}
    if component == "vocoder":
        back = {v: k for k, v in _VOCODER_SEGMENTS.items()}
        return {name: "vocoder." + re.sub(r"\.downsample\.filter$", ".downsample.lowpass.filter", _segments(name, back))
                for name in names}
    raise ValueError(f"no original layout for {component!r} here")


COMPONENT_NAMES = {"connectors": connector_names, "vae": vae_names, "audio_vae": audio_vae_names,
                   "vocoder": vocoder_names}
