"""The full-size configs of each release's components, for diffusers' classes: what a release's diffusers repository
holds, written down here so that a full-size model can be built without downloading anything (the benchmarks and
`ltx2 rehearse` build them with random weights: random_weights.py).

Values from diffusers' conversion script (scripts/convert_ltx2_to_diffusers.py), google/gemma-3-12b-it's config and
../shared/research/ltx2_flavours.md section 2; checked by parameter counts on the meta device
(tests/ltx2core/models/test_full_size.py: the transformers' 18.876e9 / 18.989e9 / 18.988e9, the figures the research
counted). LTX-2.5's Gemma-4 fine-tune is published as hidden 3840 x 48 layers only: its other sizes are taken to be
Gemma-3-12B's (an assumption, said where it is used).
"""

from __future__ import annotations

from typing import Any

from ltx2core.models.flavours import FLAVOURS

TEXT_MAX_LENGTH = 1024  # tokens every caption is padded to, for every release (the connectors' sequence length)

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

_VOCODER_2_0: dict[str, Any] = dict(  # LTX2Vocoder: 24 kHz
    in_channels=128, hidden_channels=1024, out_channels=2, upsample_kernel_sizes=[16, 15, 8, 4, 4],
    upsample_factors=[6, 5, 2, 2, 2], resnet_kernel_sizes=[3, 7, 11], resnet_dilations=[[1, 3, 5]] * 3,
    act_fn="leaky_relu", leaky_relu_negative_slope=0.1, antialias=False, final_act_fn="tanh", final_bias=True,
    output_sampling_rate=24000,
)
_VOCODER_2_3: dict[str, Any] = dict(  # LTX2VocoderWithBWE: 16 kHz, then a bandwidth extension to 48 kHz
    in_channels=128, hidden_channels=1536, out_channels=2, upsample_kernel_sizes=[11, 4, 4, 4, 4, 4],
    upsample_factors=[5, 2, 2, 2, 2, 2], resnet_kernel_sizes=[3, 7, 11], resnet_dilations=[[1, 3, 5]] * 3,
    act_fn="snakebeta", leaky_relu_negative_slope=0.1, antialias=True, antialias_ratio=2, antialias_kernel_size=12,
    final_act_fn=None, final_bias=False, bwe_in_channels=128, bwe_hidden_channels=512, bwe_out_channels=2,
    bwe_upsample_kernel_sizes=[12, 11, 4, 4, 4], bwe_upsample_factors=[6, 5, 2, 2, 2],
    bwe_resnet_kernel_sizes=[3, 7, 11], bwe_resnet_dilations=[[1, 3, 5]] * 3, bwe_act_fn="snakebeta",
    bwe_leaky_relu_negative_slope=0.1, bwe_antialias=True, bwe_antialias_ratio=2, bwe_antialias_kernel_size=12,
    bwe_final_act_fn=None, bwe_final_bias=False, filter_length=512, hop_length=80, window_length=512,
    num_mel_channels=64, input_sampling_rate=16000, output_sampling_rate=48000,
)
VOCODER = {"2.0": _VOCODER_2_0, "2.3": _VOCODER_2_3, "2.5": _VOCODER_2_3}

# The flow-matching schedules: the dev models' dynamic shift, and the distilled models' plain one (which
# LTX-2.5-Diffusers' folder ships for both its transformers; flavours.py corrects it for the full model).
SCHEDULER: dict[str, Any] = dict(use_dynamic_shifting=True, base_shift=0.95, max_shift=2.05, base_image_seq_len=1024,
                                 max_image_seq_len=4096, shift_terminal=0.1)
DISTILLED_SCHEDULER: dict[str, Any] = dict(use_dynamic_shifting=False, shift_terminal=None)

_GEMMA_12B_TEXT: dict[str, Any] = dict(  # google/gemma-3-12b-it
    vocab_size=262208, hidden_size=3840, intermediate_size=15360, num_hidden_layers=48, num_attention_heads=16,
    num_key_value_heads=8, head_dim=256, hidden_activation="gelu_pytorch_tanh", rms_norm_eps=1e-6,
    sliding_window=1024, layer_types=(["sliding_attention"] * 5 + ["full_attention"]) * 8,
    max_position_embeddings=131072, pad_token_id=0, eos_token_id=1, bos_token_id=2,
)


def text_encoder(flavour: str) -> Any:
    """The transformers config of the flavour's text encoder: Gemma-3-12B (2.0, 2.3) with its SigLIP vision tower,
    or LTX-2.5's Gemma-4 at Gemma-3-12B's sizes (assumed: module docstring)."""
    from transformers import (
        Gemma3Config,
        Gemma3TextConfig,
        Gemma4UnifiedConfig,
        Gemma4UnifiedTextConfig,
        SiglipVisionConfig,
    )

    if FLAVOURS[flavour].text_encoder == "gemma4":
        text = {k: v for k, v in _GEMMA_12B_TEXT.items() if k != "vocab_size"}
        return Gemma4UnifiedConfig(text_config=Gemma4UnifiedTextConfig(**text))
    text_config = Gemma3TextConfig(**_GEMMA_12B_TEXT, query_pre_attn_scalar=256, rope_theta=1_000_000.0,
                                   rope_local_base_freq=10_000.0, rope_scaling={"factor": 8.0, "rope_type": "linear"},
                                   attn_logit_softcapping=None, final_logit_softcapping=None)
    vision_config = SiglipVisionConfig(hidden_size=1152, intermediate_size=4304, num_hidden_layers=27,
                                       num_attention_heads=16, image_size=896, patch_size=14, vision_use_head=False)
    return Gemma3Config(text_config=text_config, vision_config=vision_config, mm_tokens_per_image=256,
                        boi_token_index=255999, eoi_token_index=256000, image_token_index=262144)


def scheduler(flavour: str) -> dict[str, Any]:
    """The scheduler config in the flavour's folder: the distilled one in 2.3-distilled's and in 2.5's."""
    return DISTILLED_SCHEDULER if flavour in ("2.3-distilled", "2.5", "2.5-distilled") else SCHEDULER


def transformer(flavour: str) -> dict[str, Any]:
    return TRANSFORMER[FLAVOURS[flavour].release]


def connectors(flavour: str) -> dict[str, Any]:
    return CONNECTORS[FLAVOURS[flavour].release]


def video_vae(flavour: str) -> dict[str, Any]:
    return VIDEO_VAE[FLAVOURS[flavour].release]


def vocoder(flavour: str) -> dict[str, Any]:
    return VOCODER[FLAVOURS[flavour].release]
