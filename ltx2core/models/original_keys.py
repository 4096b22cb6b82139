"""Lightricks' original (ComfyUI, ltx-core) parameter names of the LTX-2 transformer <-> diffusers' names.

The original checkpoints prefix the transformer with `model.diffusion_model.` and name a few modules otherwise;
inside the blocks only the q/k norms and the audio-to-video modulation tables differ. Every rule is a whole
name segment, so a key maps both ways, and `to_diffusers` is strict: a key no rule and no diffusers name
explains is an error naming it, never a silent skip (the failure diffusers' `from_single_file` has for 2.3).
Checked against ltx-core's own model on the tiny 2.0 and 2.3 layouts (tests/ltx2core/models/test_reference.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

# original segment(s) -> diffusers segment(s); top level, then inside a block
TOP_LEVEL = {
    "patchify_proj": "proj_in",
    "audio_patchify_proj": "audio_proj_in",
    "adaln_single": "time_embed",
    "audio_adaln_single": "audio_time_embed",
    "prompt_adaln_single": "prompt_adaln",
    "audio_prompt_adaln_single": "audio_prompt_adaln",
    "av_ca_video_scale_shift_adaln_single": "av_cross_attn_video_scale_shift",
    "av_ca_audio_scale_shift_adaln_single": "av_cross_attn_audio_scale_shift",
    "av_ca_a2v_gate_adaln_single": "av_cross_attn_video_a2v_gate",
    "av_ca_v2a_gate_adaln_single": "av_cross_attn_audio_v2a_gate",
}
IN_BLOCK = {
    "q_norm": "norm_q",
    "k_norm": "norm_k",
    "scale_shift_table_a2v_ca_video": "video_a2v_cross_attn_scale_shift_table",
    "scale_shift_table_a2v_ca_audio": "audio_a2v_cross_attn_scale_shift_table",
}
PREFIX = "model.diffusion_model."


def _rename(key: str, top: Mapping[str, str], block: Mapping[str, str]) -> str:
    parts = key.split(".")
    if parts[0] == "transformer_blocks":
        return ".".join(block.get(p, p) for p in parts)
    return ".".join([top.get(parts[0], parts[0]), *parts[1:]])


def diffusers_name(key: str) -> str:
    """The diffusers name of one original key (with or without PREFIX); diffusers names map to themselves."""
    return _rename(key.removeprefix(PREFIX), TOP_LEVEL, IN_BLOCK)


def to_diffusers(keys: Iterable[str], expected: Iterable[str]) -> dict[str, str]:
    """original key -> diffusers key, for every key (with or without PREFIX); raises naming the keys that map
    to no parameter of `expected` and the parameters no key fills."""
    expected = set(expected)
    mapping = {key: diffusers_name(key) for key in keys}
    unknown = sorted(k for k, v in mapping.items() if v not in expected)
    missing = sorted(expected - set(mapping.values()))
    if unknown or missing:
        raise ValueError(f"the checkpoint does not fit this transformer: {len(unknown)} unknown tensors "
                         f"{unknown[:5]}, {len(missing)} parameters not in it {missing[:5]}: is model_flavour "
                         "the checkpoint's release?")
    return mapping


def to_original(keys: Iterable[str]) -> dict[str, str]:
    """diffusers key -> original key (without PREFIX), the inverse of `to_diffusers`."""
    top = {v: k for k, v in TOP_LEVEL.items()}
    block = {v: k for k, v in IN_BLOCK.items()}
    return {key: _rename(key, top, block) for key in keys}
