"""Tiny models of Lightricks' reference code (ltx-core, PyPI), the test oracle: dimensions as the project's tiny
models (ltx2core/models/tiny.py), random weights."""

from __future__ import annotations

import torch


def reference_transformer(release: str) -> torch.nn.Module:
    from ltx_core.model.transformer.model import LTXModel, LTXModelType
    from ltx_core.model.transformer.rope import LTXRopeType
    from ltx_core.model.transformer.text_projection import PixArtAlphaTextProjection

    newer = release != "2.0"
    projections = {} if newer else dict(  # 2.0 projects its 32-wide tiny captions to the stream widths
        caption_projection=PixArtAlphaTextProjection(32, 16), audio_caption_projection=PixArtAlphaTextProjection(32, 8))
    torch.manual_seed(1)
    model = LTXModel(
        model_type=LTXModelType.AudioVideo, num_attention_heads=2, attention_head_dim=8, in_channels=8,
        out_channels=8, num_layers=2, cross_attention_dim=16, audio_num_attention_heads=2, audio_attention_head_dim=4,
        audio_in_channels=4, audio_out_channels=4, audio_cross_attention_dim=8, rope_type=LTXRopeType.SPLIT,
        av_ca_timestep_scale_multiplier=1000, apply_gated_attention=newer, cross_attention_adaln=newer, **projections)
    for param in model.parameters():  # ltx-core leaves some tensors uninitialised (torch.empty)
        param.data = torch.randn(param.shape) * 0.2
    return model.eval()


def velocities(reference: torch.nn.Module, ours: torch.nn.Module, release: str
               ) -> tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]]:
    """(ours, ltx-core's) video and audio velocities on the same random inputs (float32), ours called as the
    flavour's pipeline calls it: timestep = sigma = sigma * 1000, use_cross_timestep."""
    from ltx_core.guidance.perturbations import BatchedPerturbationConfig
    from ltx_core.model.transformer.modality import Modality

    generator = torch.Generator().manual_seed(0)
    frames, height, width, audio_tokens, text = 2, 2, 3, 5, 7
    video = torch.randn(1, frames * height * width, 8, generator=generator)
    audio = torch.randn(1, audio_tokens, 4, generator=generator)
    context_width = (16, 8) if release != "2.0" else (32, 32)
    video_text, audio_text = (torch.randn(1, text, w, generator=generator) for w in context_width)
    sigma = torch.tensor([0.7])
    video_coords = ours.rope.prepare_video_coords(1, frames, height, width, "cpu", fps=25.0)
    audio_coords = ours.audio_rope.prepare_audio_coords(1, audio_tokens, "cpu")
    with torch.no_grad():
        theirs = reference(
            Modality(latent=video, sigma=sigma, timesteps=sigma.expand(1, video.shape[1]), positions=video_coords,
                     context=video_text),
            Modality(latent=audio, sigma=sigma, timesteps=sigma.expand(1, audio_tokens), positions=audio_coords,
                     context=audio_text),
            BatchedPerturbationConfig.empty(1))
        mine = ours(hidden_states=video, audio_hidden_states=audio, encoder_hidden_states=video_text,
                    audio_encoder_hidden_states=audio_text, timestep=sigma * 1000, sigma=sigma * 1000,
                    num_frames=frames, height=height, width=width, audio_num_frames=audio_tokens,
                    video_coords=video_coords, audio_coords=audio_coords, use_cross_timestep=True, return_dict=False)
    assert theirs[0].abs().max() > 0.1  # a real signal
    return tuple(mine), tuple(theirs)


def reference_text(connectors: torch.nn.Module) -> torch.nn.Module:
    """ltx-core's text path after Gemma, holding the weights of our tiny connectors under its own names: 2.3's
    per-token norm, two aggregate embeddings and gated connectors, or 2.0's masked norm, one shared aggregate
    embedding and plain connectors (by whether `connectors` has per-modality projections)."""
    from ltx_core.model.transformer.rope import LTXRopeType
    from ltx_core.text_encoders.gemma.embeddings_connector import Embeddings1DConnector
    from ltx_core.text_encoders.gemma.embeddings_processor import EmbeddingsProcessor
    from ltx_core.text_encoders.gemma.feature_extractor import FeatureExtractorV1, FeatureExtractorV2

    config = connectors.config
    newer = config.per_modality_projections

    def connector(prefix: str) -> torch.nn.Module:
        heads = config[f"{prefix}_num_attention_heads"]
        module = Embeddings1DConnector(
            attention_head_dim=config[f"{prefix}_attention_head_dim"], num_attention_heads=heads, num_layers=1,
            positional_embedding_max_pos=[config.connector_rope_base_seq_len], num_learnable_registers=16,
            rope_type=LTXRopeType.SPLIT, double_precision_rope=True, apply_gated_attention=newer)
        ours = {k.removeprefix(prefix + "."): v for k, v in connectors.state_dict().items() if k.startswith(prefix)}
        theirs = {k.replace("transformer_blocks", "transformer_1d_blocks").replace("norm_q", "q_norm")
                  .replace("norm_k", "k_norm"): v for k, v in ours.items()}
        registers = theirs.pop("learnable_registers")
        module.load_state_dict(theirs, strict=False)
        module.learnable_registers = torch.nn.Parameter(registers)  # theirs is created in bf16
        return module

    extractor = FeatureExtractorV2(video_aggregate_embed=connectors.video_text_proj_in,
                                   audio_aggregate_embed=connectors.audio_text_proj_in,
                                   embedding_dim=config.caption_channels) if newer else (
        FeatureExtractorV1(aggregate_embed=connectors.text_proj_in, is_av=True))
    return EmbeddingsProcessor(feature_extractor=extractor, video_connector=connector("video_connector"),
                               audio_connector=connector("audio_connector")).eval()


def reference_vae(release: str) -> tuple[torch.nn.Module, torch.nn.Module]:
    """ltx-core's video encoder and decoder in the layout of our tiny VAE of `release` (ltx2core/models/tiny.py:
    widths 8-32, one layer per stage; encoder space, time, all, all; decoder 2.0: three residual all-upsamplers,
    reflect padding; 2.3: all, all, time, space, zero padding), random weights, one set of latent statistics."""
    from ltx_core.model.video_vae.enums import PaddingModeType
    from ltx_core.model.video_vae.video_vae import VideoDecoder, VideoEncoder

    res = ("res_x", {"num_layers": 1})
    encoder = VideoEncoder(in_channels=3, out_channels=8, patch_size=4, encoder_blocks=[
        res, ("compress_space_res", {"multiplier": 1}), res, ("compress_time_res", {"multiplier": 2}), res,
        ("compress_all_res", {"multiplier": 2}), res, ("compress_all_res", {"multiplier": 1}), res])
    if release == "2.0":
        up = ("compress_all", {"multiplier": 2, "residual": True})
        blocks, padding = [res, up, res, up, res, up, res], PaddingModeType.REFLECT
    else:
        blocks = [res, ("compress_space", {"multiplier": 2}), res, ("compress_time", {"multiplier": 2}), res,
                  ("compress_all", {"multiplier": 1}), res, ("compress_all", {"multiplier": 2}), res]
        padding = PaddingModeType.ZEROS
    decoder = VideoDecoder(  # blocks listed from the output end, as ltx-core's configs list them
        in_channels=8, out_channels=3, patch_size=4, base_channels=4, timestep_conditioning=False,
        decoder_spatial_padding_mode=padding, decoder_blocks=blocks)
    generator = torch.Generator().manual_seed(5)
    for tensor in [*encoder.parameters(), *decoder.parameters(), *encoder.buffers(), *decoder.buffers()]:
        if tensor.is_floating_point():  # ltx-core leaves some uninitialised; the statistics away from 0 and 1
            tensor.data = torch.randn(tensor.shape, generator=generator) * 0.2 + (1.0 if tensor.dim() == 1 else 0.0)
    # one set of latent statistics, as a checkpoint has (`vae.per_channel_statistics.*`)
    decoder.per_channel_statistics.load_state_dict(encoder.per_channel_statistics.state_dict())
    return encoder.eval(), decoder.eval()


def _stub_torchaudio() -> None:
    """ltx-core's audio package imports torchaudio for its preprocessing, which these tests do not use (and whose
    CUDA build breaks on these machines): an empty module stands in for the import."""
    import importlib.machinery
    import sys
    import types

    if "torchaudio" not in sys.modules:
        stub = types.ModuleType("torchaudio")
        stub.__spec__ = importlib.machinery.ModuleSpec("torchaudio", None)
        sys.modules["torchaudio"] = stub


def reference_vocoder(release: str) -> torch.nn.Module:
    """ltx-core's vocoder with random weights: 2.0's HiFi-GAN, or 2.3's with the bandwidth extension to 48 kHz
    (AMP blocks, snake-beta), at tiny widths; its input is always 2 x 64 mel bins (ltx-core fixes 128 channels)."""
    _stub_torchaudio()
    from ltx_core.model.audio_vae.vocoder import MelSTFT, Vocoder, VocoderWithBWE

    first = dict(resblock_kernel_sizes=[3], upsample_rates=[2, 2], upsample_kernel_sizes=[4, 4],
                 resblock_dilation_sizes=[[1, 3, 5]])
    if release == "2.0":
        model = Vocoder(**first, upsample_initial_channel=32, resblock="1", output_sampling_rate=16000)
    else:
        amp = dict(resblock="AMP1", activation="snakebeta", use_bias_at_final=False, upsample_initial_channel=16)
        model = VocoderWithBWE(
            # clamps rather than tanh (diffusers' 2.3 config has no final activation: equal while |x| < 1)
            vocoder=Vocoder(**first, **amp, use_tanh_at_final=False, output_sampling_rate=16000),
            bwe_generator=Vocoder(resblock_kernel_sizes=[3], upsample_rates=[4, 3, 2], upsample_kernel_sizes=[8, 7, 4],
                                  resblock_dilation_sizes=[[1, 3, 5]], **amp, apply_final_activation=False,
                                  output_sampling_rate=48000),
            mel_stft=MelSTFT(filter_length=32, hop_length=8, win_length=32, n_mel_channels=64),
            input_sampling_rate=16000, output_sampling_rate=48000, hop_length=8)
    generator = torch.Generator().manual_seed(7)
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        if "filter" not in name and "basis" not in name:  # the filters and STFT bases are fixed, not trained
            tensor.data = torch.randn(tensor.shape, generator=generator) * 0.1 + (0.5 if tensor.dim() == 1 else 0.0)
    if release != "2.0":
        # Keep the first stage inside (-1, 1), where ltx-core's final clamp and diffusers' none agree (diffusers'
        # 2.3 config has no final activation there; ltx-core clamps).
        model.vocoder.conv_post.weight.data *= 0.02
        # ltx-core creates the STFT bases as zeros and reads them from the checkpoint
        from diffusers.pipelines.ltx2 import LTX2VocoderWithBWE

        bases = LTX2VocoderWithBWE(filter_length=32, hop_length=8, window_length=32, num_mel_channels=64,
                                   in_channels=128, bwe_in_channels=128).mel_stft.state_dict()
        model.mel_stft.load_state_dict(bases)
    return model.eval()


def reference_audio_vae() -> tuple[torch.nn.Module, torch.nn.Module]:
    """ltx-core's audio encoder and decoder in the layout of our tiny audio VAE (base width 4, ch_mult 1-2-4, one
    res block per level, no attention, pixel norm, causal in time, 8 mel bins, 2 latent channels), random weights,
    one set of latent statistics."""
    _stub_torchaudio()
    from ltx_core.model.audio_vae.audio_vae import AudioDecoder, AudioEncoder
    from ltx_core.model.audio_vae.causality_axis import CausalityAxis
    from ltx_core.model.common.normalization import NormType

    shape = dict(ch=4, ch_mult=(1, 2, 4), num_res_blocks=1, attn_resolutions=set(), resolution=32, z_channels=2,
                 mel_bins=8, norm_type=NormType.PIXEL, mid_block_add_attention=False, is_causal=True,
                 causality_axis=CausalityAxis.HEIGHT)  # as its configurator's default; the constructor's is width
    encoder = AudioEncoder(**shape, double_z=True, in_channels=2)
    decoder = AudioDecoder(**shape, out_ch=2)
    generator = torch.Generator().manual_seed(6)
    for tensor in [*encoder.parameters(), *decoder.parameters(), *encoder.buffers(), *decoder.buffers()]:
        if tensor.is_floating_point():
            tensor.data = torch.randn(tensor.shape, generator=generator) * 0.2 + (1.0 if tensor.dim() == 1 else 0.0)
    decoder.per_channel_statistics.load_state_dict(encoder.per_channel_statistics.state_dict())
    return encoder.eval(), decoder.eval()
