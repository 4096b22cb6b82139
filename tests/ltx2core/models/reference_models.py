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
