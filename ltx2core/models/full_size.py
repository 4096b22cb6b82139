"""The full-size configs of each release's components, for diffusers' classes: what a release's diffusers repository
holds, written down here so that a full-size model can be built without downloading anything (the benchmarks, and
the rehearsal of issue #18, build them with random weights on the GPU).

Values from diffusers' conversion script (scripts/convert_ltx2_to_diffusers.py) and ../shared/research/
ltx2_flavours.md section 2; checked by parameter counts on the meta device (tests/ltx2core/models/test_full_size.py:
the transformers' 18.876e9 / 18.989e9 / 18.988e9, the figures the research counted).
"""

from __future__ import annotations

from typing import Any

from ltx2core.models.flavours import FLAVOURS

TRANSFORMER_2_0: dict[str, Any] = dict(
    in_channels=128, out_channels=128, patch_size=1, patch_size_t=1, num_attention_heads=32, attention_head_dim=128,
    cross_attention_dim=4096, vae_scale_factors=(8, 32, 32), pos_embed_max_pos=20, base_height=2048, base_width=2048,
    gated_attn=False, cross_attn_mod=False, audio_in_channels=128, audio_out_channels=128, audio_patch_size=1,
    audio_patch_size_t=1, audio_num_attention_heads=32, audio_attention_head_dim=64, audio_cross_attention_dim=2048,
    audio_scale_factor=4, audio_pos_embed_max_pos=20, audio_sampling_rate=16000, audio_hop_length=160,
    audio_gated_attn=False, audio_cross_attn_mod=False, num_layers=48, activation_fn="gelu-approximate",
    qk_norm="rms_norm_across_heads", norm_elementwise_affine=False, norm_eps=1e-6, caption_channels=3840,
    attention_bias=True, attention_out_bias=True, rope_theta=10000.0, rope_double_precision=True, causal_offset=1,
    timestep_scale_multiplier=1000, cross_attn_timestep_scale_multiplier=1000, rope_type="split",
    use_prompt_embeddings=True, perturbed_attn=False,
)
# 2.3: gated attention, cross-attention modulation with prompt AdaLN, no caption projection; 2.5 adds no FFN bias
# in the video stream and the keyframe embedding.
_TRANSFORMER_2_3 = TRANSFORMER_2_0 | dict(gated_attn=True, audio_gated_attn=True, cross_attn_mod=True,
                                          audio_cross_attn_mod=True, use_prompt_embeddings=False, perturbed_attn=True)
TRANSFORMER = {"2.0": TRANSFORMER_2_0, "2.3": _TRANSFORMER_2_3,
               "2.5": _TRANSFORMER_2_3 | dict(ff_bias=False, use_keyframes_abs_pos_embedding=True)}

_CONNECTORS_2_0: dict[str, Any] = dict(
    caption_channels=3840, text_proj_in_factor=49, video_connector_num_attention_heads=30,
    video_connector_attention_head_dim=128, video_connector_num_layers=2, video_connector_num_learnable_registers=128,
    audio_connector_num_attention_heads=30, audio_connector_attention_head_dim=128, audio_connector_num_layers=2,
    audio_connector_num_learnable_registers=128, connector_rope_base_seq_len=4096, rope_type="split",
)
_CONNECTORS_2_3 = _CONNECTORS_2_0 | dict(  # per-modality projections to 4096 / 2048, 8 gated layers each
    video_connector_num_attention_heads=32, video_connector_num_layers=8, video_gated_attn=True,
    audio_connector_num_attention_heads=32, audio_connector_attention_head_dim=64, audio_connector_num_layers=8,
    audio_gated_attn=True, per_modality_projections=True, video_hidden_dim=4096, audio_hidden_dim=2048, proj_bias=True,
)
CONNECTORS = {"2.0": _CONNECTORS_2_0, "2.3": _CONNECTORS_2_3, "2.5": _CONNECTORS_2_3}  # Gemma-4-12B: 3840 x 49 too

_VIDEO_VAE_2_0: dict[str, Any] = dict(decoder_causal=False, spatial_compression_ratio=32, temporal_compression_ratio=8)
_VIDEO_VAE_2_3 = _VIDEO_VAE_2_0 | dict(  # a wider decoder with its own up-sampling order (2.5's encoder is 2.3's)
    block_out_channels=(256, 512, 1024, 1024), layers_per_block=(4, 6, 4, 2, 2),
    decoder_block_out_channels=(256, 512, 512, 1024), decoder_layers_per_block=(4, 6, 4, 2, 2),
    decoder_spatio_temporal_scaling=(True,) * 4, decoder_inject_noise=(False,) * 5,
    upsample_type=("spatiotemporal", "spatiotemporal", "temporal", "spatial"), upsample_residual=(False,) * 4,
    upsample_factor=(2, 2, 1, 2), decoder_spatial_padding_mode="zeros",
)
VIDEO_VAE = {"2.0": _VIDEO_VAE_2_0, "2.3": _VIDEO_VAE_2_3, "2.5": _VIDEO_VAE_2_3}

AUDIO_VAE: dict[str, Any] = {}  # diffusers' defaults are LTX-2's, the same in every release


def transformer(flavour: str) -> dict[str, Any]:
    return TRANSFORMER[FLAVOURS[flavour].release]


def connectors(flavour: str) -> dict[str, Any]:
    return CONNECTORS[FLAVOURS[flavour].release]


def video_vae(flavour: str) -> dict[str, Any]:
    return VIDEO_VAE[FLAVOURS[flavour].release]
