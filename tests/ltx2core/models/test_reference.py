"""The diffusers transformer we train against Lightricks' reference model code (ltx-core, PyPI, used as a test
oracle): a tiny ltx-core model of 2.0 and of 2.3 with random weights, its state dict renamed by
ltx2core/models/original_keys.py into diffusers' transformer, gives the same video and audio velocities on the
same inputs (float32), with the flavour's sigma and timestep inputs."""

from __future__ import annotations

import pytest
import torch

from ltx2core.models.original_keys import PREFIX, to_diffusers, to_original
from ltx2core.models.tiny import _transformer

TOLERANCE = 1e-5  # float32; the two implementations order some sums differently


def _reference(release: str) -> torch.nn.Module:
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


@pytest.mark.parametrize("release", ["2.0", "2.3"])
def test_the_diffusers_transformer_equals_ltx_core_s_on_its_renamed_weights(release: str) -> None:
    from ltx_core.guidance.perturbations import BatchedPerturbationConfig
    from ltx_core.model.transformer.modality import Modality

    reference = _reference(release)
    ours = _transformer(release).eval()
    original = {PREFIX + k: v for k, v in reference.state_dict().items()}  # as a single file names them
    names = to_diffusers(original, ours.state_dict())
    ours.load_state_dict({names[k]: v for k, v in original.items()}, strict=True)
    assert to_original(names.values()) == {v: k.removeprefix(PREFIX) for k, v in names.items()}

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
    for a, b in zip(mine, theirs, strict=True):
        assert a.shape == b.shape and (a - b).abs().max() <= TOLERANCE * b.abs().max()
    assert theirs[0].abs().max() > 0.1  # a real signal


def test_a_checkpoint_of_another_release_is_refused_naming_the_keys() -> None:
    reference = {PREFIX + k: v for k, v in _reference("2.3").state_dict().items()}
    with pytest.raises(ValueError, match=r"40 unknown tensors .*prompt_adaln_single.*model_flavour"):
        to_diffusers(reference, _transformer("2.0").state_dict())
