"""Video VAE encode/decode on the tiny model (float32): normalisation, first frame, and every memory option.

Tolerances: patch_conv is exact (asserted at 1e-6, measured 0); temporal_roll and slicing differ by float
rounding (asserted at 2e-6, measured <= 1e-6); tiling with a halo that covers the receptive field is exact
(measured 0). Approximate by construction, and asserted to be: tiling with a small halo, framewise.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from diffusers import LTX2Pipeline

from ltx2core.models.vae import (
    VaeOptions,
    VideoLatents,
    decode_video,
    encode_video,
    encoder_receptive_radius,
)

PATCH_CONV_TOLERANCE = 1e-6
ROUNDING_TOLERANCE = 2e-6
TINY_RADIUS = 208  # px; the tiling test below shows a halo of ceil32(208) = 224 px is exact
LTX2_0_ENCODER = {  # vae/config.json of LTX-2.0 (diffusers' conversion script), the keys the radius reads
    "patch_size": 4, "layers_per_block": [4, 6, 6, 2, 2], "spatio_temporal_scaling": [True, True, True, True],
    "downsample_type": ["spatial", "temporal", "spatiotemporal", "spatiotemporal"],
}


def _pixels(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed)) * 2 - 1


@pytest.fixture(scope="module")
def clip() -> torch.Tensor:
    # 2 clips of 17 = 2*8+1 frames -> latents [2, 8, 3, 2, 2] (the decoder's reflect padding needs 2+ cells)
    return _pixels(2, 3, 17, 64, 64)


@pytest.fixture(scope="module")
def reference(tiny_vae: Any, clip: torch.Tensor) -> VideoLatents:
    return encode_video(tiny_vae, clip)


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max())


def test_latents_are_the_posterior_mean_normalised_as_the_pipeline_does(
    tiny_vae: Any, clip: torch.Tensor, reference: VideoLatents
) -> None:
    with torch.no_grad():
        posterior = tiny_vae.encode(clip).latent_dist
    expected = LTX2Pipeline._normalize_latents(
        posterior.mode(), tiny_vae.latents_mean, tiny_vae.latents_std, tiny_vae.config.scaling_factor
    )
    assert reference.latents.shape == (2, 8, 3, 2, 2)
    assert _max_diff(reference.latents, expected) <= PATCH_CONV_TOLERANCE
    # One log-variance channel loses nothing: the encoder predicts one and repeats it over the channels.
    assert torch.equal(posterior.logvar, posterior.logvar[:, :1].expand_as(posterior.logvar))
    assert torch.equal(reference.logvar, posterior.logvar[:, :1])


def test_a_sample_is_a_posterior_sample_in_normalised_units(
    tiny_vae: Any, clip: torch.Tensor, reference: VideoLatents
) -> None:
    with torch.no_grad():
        raw = tiny_vae.encode(clip).latent_dist.sample(generator=torch.Generator().manual_seed(7))
    expected = LTX2Pipeline._normalize_latents(raw, tiny_vae.latents_mean, tiny_vae.latents_std)
    drawn = reference.sample(torch.Generator().manual_seed(7))
    assert _max_diff(drawn, expected) <= 1e-5
    assert _max_diff(drawn, reference.latents) > 1e-3  # it is not the mean


def test_first_latent_frame_is_the_latent_of_the_first_frame_alone(
    tiny_vae: Any, clip: torch.Tensor, reference: VideoLatents
) -> None:
    alone = encode_video(tiny_vae, clip[:, :, :1])
    assert alone.latents.shape == reference.first_frame.shape == (2, 8, 1, 2, 2)
    assert _max_diff(alone.latents, reference.first_frame) <= ROUNDING_TOLERANCE


@pytest.mark.parametrize(
    ("options", "tolerance"),
    [
        (VaeOptions(patch_conv=True, patch_conv_frames=2), PATCH_CONV_TOLERANCE),
        (VaeOptions(temporal_roll=True, roll_frames=8), ROUNDING_TOLERANCE),
        (VaeOptions(temporal_roll=True, tile_frames=16, patch_conv=True, patch_conv_frames=3), ROUNDING_TOLERANCE),
        (VaeOptions(slicing=True), ROUNDING_TOLERANCE),
    ],
    ids=["patch_conv", "temporal_roll", "temporal_roll+patch_conv", "slicing"],
)
def test_memory_options_give_the_plain_latents(
    tiny_vae: Any, clip: torch.Tensor, reference: VideoLatents, options: VaeOptions, tolerance: float
) -> None:
    latents = encode_video(tiny_vae, clip, options=options)
    assert _max_diff(latents.latents, reference.latents) <= tolerance
    assert _max_diff(latents.logvar, reference.logvar) <= tolerance
    assert options.cache_key(tiny_vae.config) == "exact"
    # The patches are gone afterwards: the VAE's own forward is back.
    assert all("forward" not in module.__dict__ for module in tiny_vae.modules())


def test_tiling_is_exact_when_the_halo_covers_the_receptive_field(tiny_vae: Any) -> None:
    assert encoder_receptive_radius(tiny_vae.config) == TINY_RADIUS
    wide = _pixels(1, 3, 1, 32, 576, seed=1)  # wider than a tile: 9 tiles of 64 px cores
    plain = encode_video(tiny_vae, wide).latents

    exact = VaeOptions(tiling=True, tile_size=64 + 2 * 224, tile_stride=64)
    assert _max_diff(encode_video(tiny_vae, wide, options=exact).latents, plain) <= ROUNDING_TOLERANCE
    assert exact.cache_key(tiny_vae.config) == "exact"

    small_halo = VaeOptions(tiling=True, tile_size=128, tile_stride=64)
    error = _max_diff(encode_video(tiny_vae, wide, options=small_halo).latents, plain)
    assert error > 0.01 * float(plain.abs().max())  # approximate, and keyed as such
    assert small_halo.cache_key(tiny_vae.config) == "tiles128/64"


def test_framewise_is_exact_for_the_first_tile_only(tiny_vae: Any) -> None:
    long = _pixels(1, 3, 25, 32, 32, seed=2)
    plain = encode_video(tiny_vae, long).latents
    options = VaeOptions(framewise=True, tile_frames=8, tile_frames_stride=8)
    framewise = encode_video(tiny_vae, long, options=options).latents
    assert framewise.shape == plain.shape
    # Frames 0..8 (latents 0 and 1) come from a tile that starts at frame 0: exact, since the encoder is causal.
    assert _max_diff(framewise[:, :, :2], plain[:, :, :2]) <= ROUNDING_TOLERANCE
    # Later tiles restart the causal padding mid-clip: different latents (with trained weights, less so).
    assert _max_diff(framewise[:, :, 2:], plain[:, :, 2:]) > 0.01
    assert options.cache_key(tiny_vae.config) == "framewise8/8"


def test_receptive_radius_of_the_ltx2_0_encoder() -> None:
    # Exact tiles of the real VAE need 2 * 512 px of overlap: exact tiling does not save memory at
    # training resolutions; the default 512/448 tiles are approximate.
    assert encoder_receptive_radius(LTX2_0_ENCODER) == 488
    assert VaeOptions(tiling=True).cache_key(LTX2_0_ENCODER) == "tiles512/448"


def test_decode_inverts_the_normalisation_and_patch_conv_decodes_exactly(
    tiny_vae: Any, reference: VideoLatents
) -> None:
    raw = LTX2Pipeline._denormalize_latents(
        reference.latents, tiny_vae.latents_mean, tiny_vae.latents_std, tiny_vae.config.scaling_factor
    )
    with torch.no_grad():
        expected = tiny_vae.decode(raw).sample.clamp(-1, 1)
    video = decode_video(tiny_vae, reference)
    assert video.shape == (2, 3, 17, 64, 64)
    assert _max_diff(video, expected) <= PATCH_CONV_TOLERANCE
    chunked = decode_video(tiny_vae, reference, options=VaeOptions(patch_conv=True, patch_conv_frames=2))
    assert _max_diff(chunked, video) <= PATCH_CONV_TOLERANCE


@pytest.mark.parametrize(
    ("fields", "hint"),
    [
        ({"tile_size": 500}, "tile_size 500 is not a multiple of 32: use 480 or 512"),
        ({"tile_stride": 480}, "must be a non-negative multiple of 64"),
        ({"tile_frames": 12}, "tile_frames 12 is not a positive multiple of 8: use 8 or 16"),
        ({"framewise": True, "temporal_roll": True}, "enable one of them"),
    ],
)
def test_bad_options_are_refused_with_valid_values(fields: dict[str, Any], hint: str) -> None:
    with pytest.raises(ValueError, match=hint):
        VaeOptions(**fields)


@pytest.mark.parametrize(
    ("shape", "scale", "hint"),
    [
        ((1, 3, 10, 32, 32), 1.0, "frames 10 is not 8k\\+1: use 9 or 17"),
        ((1, 3, 9, 32, 48), 1.0, "width 48 is not a multiple of 32: use 32 or 64"),
        ((1, 3, 9, 32, 32), 255.0, "pixels must be in \\[-1, 1\\]"),
    ],
)
def test_pixels_breaking_the_model_rules_are_refused(
    tiny_vae: Any, shape: tuple[int, ...], scale: float, hint: str
) -> None:
    with pytest.raises(ValueError, match=hint):
        encode_video(tiny_vae, torch.rand(*shape) * scale)
