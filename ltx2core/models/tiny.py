"""The tiny LTX-2 of each release: every component with its real layout and shape rules, random weights, CPU-sized.

Built from constructor configs with a fixed seed, saved in the diffusers layout of the release's repository
(model_index.json + one subfolder per component) and loaded back through the same `from_pretrained` code as
the real model, so tests and `make demo` exercise the real loading path. Its model_index.json says it is tiny,
untrained, and which release; nothing made with it is a model.

Per release, what the real one adds (ltx2core/models/flavours.py): 2.3 gated attention, cross-attention
timestep modulation and prompt AdaLN in the transformer (no caption projection), per-modality text projections
with a per-token norm in the connectors, the 2.3 video VAE layout, the bandwidth-extending vocoder (3x the
sample rate); 2.5 also a bias-free video feed-forward, the keyframe embedding and a Gemma-4 text encoder, and
LTX-2.5-Diffusers' two transformers: `transformer/` distilled, `transformer_full/` full. A distilled flavour's
folder has the distilled scheduler; 2.5's distilled flavour shares the 2.5 folder, as on the hub.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from ltx2core.models import full_size
from ltx2core.models.flavours import FLAVOURS

log = logging.getLogger(__name__)

VERSION = 3  # bump when the configs below change: the cached folder name carries it
SEED = 0
TEXT_MAX_LENGTH = 64  # the real model pads captions to 1024; must be a multiple of the connector registers
TINY_KEY = "_ltx2_tiny"  # diffusers ignores model_index.json keys that start with "_"
RELEASE_KEY = "_ltx2_release"
UNTRAINED_KEY = "_ltx2_untrained"

_GEMMA_HIDDEN = 32  # = caption_channels = connector width
_GEMMA_LAYERS = 2  # hidden states stacked = layers + 1 (embeddings)
_LATENT_CHANNELS = 8
_VIDEO_HEAD_DIM, _AUDIO_HEAD_DIM = 8, 4  # 2 heads each: transformer widths 16 (video) and 8 (audio)


def is_tiny_index(model_index: dict[str, Any]) -> bool:
    return bool(model_index.get(TINY_KEY)) or model_index.get("_ltx2_flavour") == "tiny"  # or v2's, all 2.0


def release_of_index(model_index: dict[str, Any]) -> str:
    return model_index.get(RELEASE_KEY, "2.0")


def folder_flavour(flavour: str) -> str:
    """Which tiny folder a flavour reads: its own, except 2.5-distilled, which shares 2.5's (one hub repo)."""
    return "2.5" if flavour == "2.5-distilled" else flavour


def tiny_model_dir(flavour: str = "2.0") -> Path:
    """The flavour's shared tiny model folder, $LTX2_HOME/tiny-<flavour>-v<VERSION> (default ~/.cache/ltx2), built
    on first use."""
    home = Path(os.environ.get("LTX2_HOME") or Path.home() / ".cache" / "ltx2").expanduser()
    folder = home / f"tiny-{folder_flavour(flavour)}-v{VERSION}"
    if not (folder / "model_index.json").is_file():
        make_tiny_model(folder, flavour, exist_ok=True)
    return folder


def make_tiny_model(directory: Path, flavour: str = "2.0", *, exist_ok: bool = False) -> Path:
    """Write the tiny model to `directory` atomically (a temporary sibling folder, then one rename).

    `directory` may exist if empty. A second writer racing for the same folder loses the rename and keeps
    the winner's identical copy.
    """
    directory = Path(directory).expanduser()
    if exist_ok and (directory / "model_index.json").is_file():
        return directory
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        raise FileExistsError(f"{directory} already exists: remove it or choose another folder for the tiny model")
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        _save(build_tiny_pipeline(flavour), staging, flavour)
        try:
            staging.rename(directory)
        except OSError:
            if not (exist_ok and (directory / "model_index.json").is_file()):
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info("wrote the tiny LTX-%s model (random weights, untrained) to %s", flavour, directory)
    return directory


def build_tiny_pipeline(flavour: str = "2.0") -> Any:
    """An `LTX2Pipeline` of tiny random components of the flavour (seed `SEED`; the caller's RNG state is left
    alone). For 2.5 its transformer is the distilled one, as in LTX-2.5-Diffusers (`tiny_transformers`)."""
    import torch  # here, not at the top: resolving "tiny" (every CLI call) must not import torch
    from diffusers import LTX2Pipeline

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        return LTX2Pipeline(**_components(folder_flavour(flavour)))


def tiny_transformers(flavour: str) -> dict[str, Any]:
    """subfolder -> transformer the flavour's folder holds besides the pipeline's: 2.5's full model."""
    import torch

    if folder_flavour(flavour) != "2.5":
        return {}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED + 1)  # other weights than the distilled one, so a test sees which was loaded
        return {"transformer_full": _transformer("2.5")}


def _components(flavour: str) -> dict[str, Any]:
    from diffusers import FlowMatchEulerDiscreteScheduler

    release = FLAVOURS[flavour].release
    text_encoder = _gemma4() if FLAVOURS[flavour].text_encoder == "gemma4" else _gemma3()
    connectors = _connectors(FLAVOURS[flavour].per_modality_text)
    vae = _video_vae(release)
    audio_vae, vocoder = _audio(release)
    transformer = _transformer(flavour)
    scheduler = FlowMatchEulerDiscreteScheduler(**full_size.scheduler(flavour))  # the real model's
    return dict(
        scheduler=scheduler, vae=vae, audio_vae=audio_vae, text_encoder=text_encoder, tokenizer=char_tokenizer(),
        connectors=connectors, transformer=transformer, vocoder=vocoder,
    )


def _gemma3() -> Any:
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration, Gemma3TextConfig, SiglipVisionConfig

    return Gemma3ForConditionalGeneration(
        Gemma3Config(
            text_config=Gemma3TextConfig(
                vocab_size=len(_vocab()), hidden_size=_GEMMA_HIDDEN, intermediate_size=64,
                num_hidden_layers=_GEMMA_LAYERS, layer_types=["sliding_attention", "full_attention"],
                num_attention_heads=2, num_key_value_heads=1, head_dim=16, sliding_window=16,
                max_position_embeddings=4 * TEXT_MAX_LENGTH, pad_token_id=0, eos_token_id=1, bos_token_id=2,
            ),
            # Gemma3ForConditionalGeneration needs a vision tower; the text path never runs it.
            vision_config=SiglipVisionConfig(
                hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                image_size=28, patch_size=14,
            ),
            mm_tokens_per_image=4,
        )
    ).eval()


def _gemma4() -> Any:
    """LTX-2.5's text encoder is a fine-tuned Gemma-4 (`Gemma4UnifiedForConditionalGeneration`)."""
    from transformers import Gemma4UnifiedConfig, Gemma4UnifiedForConditionalGeneration, Gemma4UnifiedTextConfig

    return Gemma4UnifiedForConditionalGeneration(
        Gemma4UnifiedConfig(text_config=Gemma4UnifiedTextConfig(
            vocab_size=len(_vocab()), hidden_size=_GEMMA_HIDDEN, intermediate_size=64,
            num_hidden_layers=_GEMMA_LAYERS, num_attention_heads=2, num_key_value_heads=1, head_dim=16,
            global_head_dim=16, sliding_window=16, max_position_embeddings=4 * TEXT_MAX_LENGTH, pad_token_id=0,
            eos_token_id=1, bos_token_id=2,
        ))
    ).eval()


def _connectors(per_modality: bool) -> Any:
    from diffusers.pipelines.ltx2 import LTX2TextConnectors

    if not per_modality:  # LTX-2.0: shared text_proj_in, learnable registers, split RoPE, at width 32
        return LTX2TextConnectors(
            caption_channels=_GEMMA_HIDDEN, text_proj_in_factor=_GEMMA_LAYERS + 1,
            video_connector_num_attention_heads=4, video_connector_attention_head_dim=8, video_connector_num_layers=1,
            video_connector_num_learnable_registers=16,
            audio_connector_num_attention_heads=4, audio_connector_attention_head_dim=8, audio_connector_num_layers=1,
            audio_connector_num_learnable_registers=16,
            connector_rope_base_seq_len=4 * TEXT_MAX_LENGTH, rope_type="split",
        )
    # 2.3+: per-modality projections (with bias) to the transformer's widths, gated connector attention.
    return LTX2TextConnectors(
        caption_channels=_GEMMA_HIDDEN, text_proj_in_factor=_GEMMA_LAYERS + 1,
        video_connector_num_attention_heads=2, video_connector_attention_head_dim=_VIDEO_HEAD_DIM,
        video_connector_num_layers=1, video_connector_num_learnable_registers=16, video_gated_attn=True,
        audio_connector_num_attention_heads=2, audio_connector_attention_head_dim=_AUDIO_HEAD_DIM,
        audio_connector_num_layers=1, audio_connector_num_learnable_registers=16, audio_gated_attn=True,
        connector_rope_base_seq_len=4 * TEXT_MAX_LENGTH, rope_type="split", per_modality_projections=True,
        video_hidden_dim=2 * _VIDEO_HEAD_DIM, audio_hidden_dim=2 * _AUDIO_HEAD_DIM, proj_bias=True,
    )


def _video_vae(release: str) -> Any:
    import torch
    from diffusers import AutoencoderKLLTX2Video

    # The real down/up-sampling layouts with tiny widths. The ratios must be given: the constructor's own
    # formula would say 64/16 for these layouts.
    if release == "2.0":
        vae = AutoencoderKLLTX2Video(
            latent_channels=_LATENT_CHANNELS, block_out_channels=(8, 16, 32, 32),
            decoder_block_out_channels=(8, 16, 32),
            layers_per_block=(1, 1, 1, 1, 1), decoder_layers_per_block=(1, 1, 1, 1),
            downsample_type=("spatial", "temporal", "spatiotemporal", "spatiotemporal"),
            decoder_causal=False, spatial_compression_ratio=32, temporal_compression_ratio=8,
        )
    else:  # 2.3's (and 2.5's) wider decoder with its own up-sampling order, zero padding
        vae = AutoencoderKLLTX2Video(
            latent_channels=_LATENT_CHANNELS, block_out_channels=(8, 16, 32, 32),
            decoder_block_out_channels=(8, 16, 16, 32), layers_per_block=(1,) * 5, decoder_layers_per_block=(1,) * 5,
            decoder_spatio_temporal_scaling=(True,) * 4, decoder_inject_noise=(False,) * 5,
            upsample_type=("spatiotemporal", "spatiotemporal", "temporal", "spatial"), upsample_residual=(False,) * 4,
            upsample_factor=(2, 2, 1, 2), decoder_causal=False, decoder_spatial_padding_mode="zeros",
            spatial_compression_ratio=32, temporal_compression_ratio=8,
        )
    # Non-trivial latent statistics, so that normalisation is exercised (the real ones come from training).
    vae.latents_mean.copy_(torch.randn(_LATENT_CHANNELS) * 0.1)
    vae.latents_std.copy_(torch.rand(_LATENT_CHANNELS) + 0.5)
    return vae


def _audio(release: str) -> tuple[Any, Any]:
    from diffusers import AutoencoderKLLTX2Audio
    from diffusers.pipelines.ltx2 import LTX2Vocoder, LTX2VocoderWithBWE

    audio_vae = AutoencoderKLLTX2Audio(
        base_channels=4, output_channels=2, ch_mult=(1, 2, 4), num_res_blocks=1, in_channels=2, resolution=32,
        latent_channels=2, mel_bins=8,
    )
    mel_channels = audio_vae.config.output_channels * audio_vae.config.mel_bins
    if release == "2.0":
        vocoder = LTX2Vocoder(
            in_channels=mel_channels, hidden_channels=32, out_channels=2, upsample_kernel_sizes=[4, 4],
            upsample_factors=[2, 2], resnet_kernel_sizes=[3], resnet_dilations=[[1, 3, 5]],
            output_sampling_rate=16000,
        )
    else:  # 2.3+: a second generator extends the bandwidth, 3x the first stage's rate (16 -> 48 kHz)
        vocoder = LTX2VocoderWithBWE(
            in_channels=mel_channels, hidden_channels=16, upsample_kernel_sizes=[4, 4], upsample_factors=[2, 2],
            resnet_kernel_sizes=[3], resnet_dilations=[[1, 3, 5]], bwe_in_channels=mel_channels,
            bwe_hidden_channels=16, bwe_upsample_kernel_sizes=[8, 7, 4], bwe_upsample_factors=[4, 3, 2],
            bwe_resnet_kernel_sizes=[3], bwe_resnet_dilations=[[1, 3, 5]], filter_length=32, hop_length=8,
            window_length=32, num_mel_channels=audio_vae.config.mel_bins, input_sampling_rate=16000,
            output_sampling_rate=48000,
        )
    return audio_vae, vocoder


def _transformer(flavour: str) -> Any:
    from diffusers import LTX2VideoTransformer3DModel

    release = FLAVOURS[flavour].release
    audio_in_channels = 2 * (8 // 4)  # the tiny audio VAE's latent channels x mel bins / 4
    common = dict(
        in_channels=_LATENT_CHANNELS, out_channels=_LATENT_CHANNELS, num_attention_heads=2,
        attention_head_dim=_VIDEO_HEAD_DIM, audio_in_channels=audio_in_channels, audio_out_channels=None,
        audio_num_attention_heads=2, audio_attention_head_dim=_AUDIO_HEAD_DIM, num_layers=2, rope_type="split",
    )
    if release == "2.0":  # caption projection from the connectors' width 32
        return LTX2VideoTransformer3DModel(**common, cross_attention_dim=16, audio_cross_attention_dim=8,
                                           caption_channels=_GEMMA_HIDDEN)
    extra = dict(ff_bias=False, use_keyframes_abs_pos_embedding=True) if release == "2.5" else {}
    # No caption projection: the text arrives at the transformer's widths (the connectors project per modality).
    return LTX2VideoTransformer3DModel(
        **common, cross_attention_dim=2 * _VIDEO_HEAD_DIM, audio_cross_attention_dim=2 * _AUDIO_HEAD_DIM,
        caption_channels=_GEMMA_HIDDEN, gated_attn=True, cross_attn_mod=True, audio_gated_attn=True,
        audio_cross_attn_mod=True, use_prompt_embeddings=False, perturbed_attn=True, **extra,
    )


def _vocab() -> dict[str, int]:
    specials = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"]
    symbols = ["▁", *"abcdefghijklmnopqrstuvwxyz", *"ABCDEFGHIJKLMNOPQRSTUVWXYZ", *"0123456789", *".,;:!?'\"-()"]
    return {token: i for i, token in enumerate(specials + symbols)}


def char_tokenizer(max_length: int = TEXT_MAX_LENGTH) -> Any:
    """A Gemma tokenizer with one token per character, built in memory (the real one cannot be downloaded here);
    adds <bos> like the real one. The tiny model's, and the full-size random model's (random_weights.py)."""
    from transformers import GemmaTokenizer

    return GemmaTokenizer(vocab=_vocab(), merges=[], add_bos_token=True, model_max_length=max_length)


def _save(pipeline: Any, folder: Path, flavour: str) -> None:
    pipeline.save_pretrained(folder, safe_serialization=True)
    for subfolder, transformer in tiny_transformers(flavour).items():
        transformer.save_pretrained(folder / subfolder, safe_serialization=True)
    index_path = folder / "model_index.json"
    index = json.loads(index_path.read_text())
    index.update({TINY_KEY: True, RELEASE_KEY: FLAVOURS[flavour].release, UNTRAINED_KEY: True,
                  "_ltx2_tiny_version": VERSION})
    index_path.write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
