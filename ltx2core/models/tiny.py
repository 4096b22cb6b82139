"""The tiny LTX-2: every component of LTX-2.0 with its real layout and shape rules, random weights, CPU-sized.

It is built from constructor configs with a fixed seed, saved in the diffusers layout that Lightricks/LTX-2
uses (model_index.json + one subfolder per component) and loaded back through the same `from_pretrained`
code as the real model, so tests and `make demo` exercise the real loading path. Its model_index.json
says it is tiny and untrained; nothing made with it is a model.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

VERSION = 2  # bump when the configs below change: the cached folder name carries it
SEED = 0
TEXT_MAX_LENGTH = 64  # the real model pads captions to 1024; must be a multiple of the connector registers
FLAVOUR_KEY = "_ltx2_flavour"  # diffusers ignores model_index.json keys that start with "_"
UNTRAINED_KEY = "_ltx2_untrained"

_GEMMA_HIDDEN = 32  # = caption_channels = connector width
_GEMMA_LAYERS = 2  # hidden states stacked = layers + 1 (embeddings)
_LATENT_CHANNELS = 8


def is_tiny_index(model_index: dict[str, Any]) -> bool:
    return model_index.get(FLAVOUR_KEY) == "tiny"


def tiny_model_dir() -> Path:
    """The shared tiny model folder, $LTX2_HOME/tiny-v<VERSION> (default ~/.cache/ltx2), built on first use."""
    home = Path(os.environ.get("LTX2_HOME") or Path.home() / ".cache" / "ltx2").expanduser()
    folder = home / f"tiny-v{VERSION}"
    if not (folder / "model_index.json").is_file():
        make_tiny_model(folder, exist_ok=True)
    return folder


def make_tiny_model(directory: Path, *, exist_ok: bool = False) -> Path:
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
        _save(build_tiny_pipeline(), staging)
        try:
            staging.rename(directory)
        except OSError:
            if not (exist_ok and (directory / "model_index.json").is_file()):
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info("wrote the tiny LTX-2 model (random weights, untrained) to %s", directory)
    return directory


def build_tiny_pipeline() -> Any:
    """An `LTX2Pipeline` of tiny random components (seed `SEED`; the caller's RNG state is left alone)."""
    import torch  # here, not at the top: resolving "tiny" (every CLI call) must not import torch
    from diffusers import LTX2Pipeline

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        return LTX2Pipeline(**_components())


def _components() -> dict[str, Any]:
    import torch
    from diffusers import (
        AutoencoderKLLTX2Audio,
        AutoencoderKLLTX2Video,
        FlowMatchEulerDiscreteScheduler,
        LTX2VideoTransformer3DModel,
    )
    from diffusers.pipelines.ltx2 import LTX2TextConnectors, LTX2Vocoder
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration, Gemma3TextConfig, SiglipVisionConfig

    text_encoder = Gemma3ForConditionalGeneration(
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
    # LTX-2.0 connector layout (shared text_proj_in, learnable registers, split RoPE) at width 32.
    connectors = LTX2TextConnectors(
        caption_channels=_GEMMA_HIDDEN, text_proj_in_factor=_GEMMA_LAYERS + 1,
        video_connector_num_attention_heads=4, video_connector_attention_head_dim=8, video_connector_num_layers=1,
        video_connector_num_learnable_registers=16,
        audio_connector_num_attention_heads=4, audio_connector_attention_head_dim=8, audio_connector_num_layers=1,
        audio_connector_num_learnable_registers=16,
        connector_rope_base_seq_len=4 * TEXT_MAX_LENGTH, rope_type="split",
    )
    # The real 2.0 down/up-sampling layout with tiny widths. The ratios must be given: the constructor's own
    # formula would say 64/16 for this layout.
    vae = AutoencoderKLLTX2Video(
        latent_channels=_LATENT_CHANNELS, block_out_channels=(8, 16, 32, 32), decoder_block_out_channels=(8, 16, 32),
        layers_per_block=(1, 1, 1, 1, 1), decoder_layers_per_block=(1, 1, 1, 1),
        downsample_type=("spatial", "temporal", "spatiotemporal", "spatiotemporal"),
        decoder_causal=False, spatial_compression_ratio=32, temporal_compression_ratio=8,
    )
    # Non-trivial latent statistics, so that normalisation is exercised (the real ones come from training).
    vae.latents_mean.copy_(torch.randn(_LATENT_CHANNELS) * 0.1)
    vae.latents_std.copy_(torch.rand(_LATENT_CHANNELS) + 0.5)
    audio_vae = AutoencoderKLLTX2Audio(
        base_channels=4, output_channels=2, ch_mult=(1, 2, 4), num_res_blocks=1, in_channels=2, resolution=32,
        latent_channels=2, mel_bins=8,
    )
    vocoder = LTX2Vocoder(
        in_channels=audio_vae.config.output_channels * audio_vae.config.mel_bins, hidden_channels=32, out_channels=2,
        upsample_kernel_sizes=[4, 4], upsample_factors=[2, 2], resnet_kernel_sizes=[3], resnet_dilations=[[1, 3, 5]],
        output_sampling_rate=16000,
    )
    transformer = LTX2VideoTransformer3DModel(
        in_channels=_LATENT_CHANNELS, out_channels=_LATENT_CHANNELS, num_attention_heads=2, attention_head_dim=8,
        cross_attention_dim=16, caption_channels=_GEMMA_HIDDEN,
        audio_in_channels=audio_vae.config.latent_channels * (audio_vae.config.mel_bins // 4),
        audio_out_channels=None, audio_num_attention_heads=2, audio_attention_head_dim=4,
        audio_cross_attention_dim=8, num_layers=2, rope_type="split",
    )
    scheduler = FlowMatchEulerDiscreteScheduler(  # LTX-2.0's non-distilled schedule
        use_dynamic_shifting=True, base_shift=0.95, max_shift=2.05, base_image_seq_len=1024,
        max_image_seq_len=4096, shift_terminal=0.1,
    )
    return dict(
        scheduler=scheduler, vae=vae, audio_vae=audio_vae, text_encoder=text_encoder, tokenizer=_tokenizer(),
        connectors=connectors, transformer=transformer, vocoder=vocoder,
    )


def _vocab() -> dict[str, int]:
    specials = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"]
    symbols = ["▁", *"abcdefghijklmnopqrstuvwxyz", *"ABCDEFGHIJKLMNOPQRSTUVWXYZ", *"0123456789", *".,;:!?'\"-()"]
    return {token: i for i, token in enumerate(specials + symbols)}


def _tokenizer() -> Any:
    from transformers import GemmaTokenizer

    # One token per character, built in memory (no download); adds <bos> like the real Gemma tokenizer.
    return GemmaTokenizer(vocab=_vocab(), merges=[], add_bos_token=True, model_max_length=TEXT_MAX_LENGTH)


def _save(pipeline: Any, folder: Path) -> None:
    pipeline.save_pretrained(folder, safe_serialization=True)
    index_path = folder / "model_index.json"
    index = json.loads(index_path.read_text())
    index.update({FLAVOUR_KEY: "tiny", UNTRAINED_KEY: True, "_ltx2_tiny_version": VERSION})
    index_path.write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
