"""Audio front end: Slaney mel filters, the log-mel spectrogram, and audio latents packed as the pipeline does.

Run: .venv/bin/pytest tests/ltx2core/models/test_audio.py
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch
from diffusers import LTX2Pipeline
from transformers.audio_utils import mel_filter_bank

from ltx2core.models.audio import N_FFT, encode_audio, log_mel_spectrogram, slaney_mel_filters

RATE, HOP = 16000, 160  # LTX-2.0's audio VAE config


@pytest.mark.parametrize("num_mels", [64, 8])
def test_mel_filters_match_an_independent_slaney_filter_bank(num_mels: int) -> None:
    reference = mel_filter_bank(
        num_frequency_bins=N_FFT // 2 + 1, num_mel_filters=num_mels, min_frequency=0.0, max_frequency=RATE / 2,
        sampling_rate=RATE, norm="slaney", mel_scale="slaney",
    )
    ours = slaney_mel_filters(N_FFT // 2 + 1, num_mels, RATE).numpy()
    assert ours.shape == reference.shape
    assert np.abs(ours - reference).max() <= 1e-6 * np.abs(reference).max()


def _tones(seconds: float, *freqs: float) -> torch.Tensor:
    t = torch.arange(round(seconds * RATE), dtype=torch.float64) / RATE
    return torch.stack([0.3 * torch.sin(2 * math.pi * f * t) for f in freqs]).to(torch.float32)


def test_a_tone_lights_the_mel_band_that_hears_its_frequency() -> None:
    waveform = _tones(1.0, 440.0, 2000.0)  # one tone per channel
    mel = log_mel_spectrogram(waveform[None], sample_rate=RATE, hop_length=HOP, mel_bins=64)
    assert mel.shape == (1, 2, 1 + RATE // HOP, 64)  # centred frames: one per hop, plus one
    filters = slaney_mel_filters(N_FFT // 2 + 1, 64, RATE)
    for channel, freq in enumerate((440.0, 2000.0)):
        band = int(filters[round(freq * N_FFT / RATE)].argmax())
        assert int(mel[0, channel, 50].argmax()) == band


def test_silence_sits_on_the_log_floor() -> None:
    mel = log_mel_spectrogram(torch.zeros(1, 2, 3200), sample_rate=RATE, hop_length=HOP, mel_bins=8)
    assert torch.allclose(mel, torch.full_like(mel, math.log(1e-5)))


def test_latents_are_the_posterior_mode_packed_and_normalised_as_the_pipeline_does(tiny_audio_vae: Any) -> None:
    waveform = _tones(0.68, 440.0, 660.0)  # 17 frames at 25 fps
    ours = encode_audio(tiny_audio_vae, waveform)
    mel = log_mel_spectrogram(waveform[None], sample_rate=RATE, hop_length=HOP, mel_bins=8)
    with torch.no_grad():
        mode = tiny_audio_vae.encode(mel).latent_dist.mode()
    expected = LTX2Pipeline._normalize_audio_latents(
        LTX2Pipeline._pack_audio_latents(mode), tiny_audio_vae.latents_mean, tiny_audio_vae.latents_std
    )[0]
    mel_frames = 1 + waveform.shape[1] // HOP
    assert ours.shape == ((mel_frames - 1) // 4 + 1, 4)  # causal 4x in time; 2 channels x 2 mel bins
    assert torch.equal(ours, expected)


def test_mono_is_heard_on_both_channels(tiny_audio_vae: Any) -> None:
    mono = _tones(0.4, 300.0)
    assert torch.equal(encode_audio(tiny_audio_vae, mono), encode_audio(tiny_audio_vae, mono.repeat(2, 1)))


def test_an_audio_vae_whose_tokens_do_not_match_its_statistics_is_refused() -> None:
    from diffusers import AutoencoderKLLTX2Audio

    # No downsampling (ch_mult (1,)): 2 channels x 8 mel bins per token against statistics for 4 features.
    audio_vae = AutoencoderKLLTX2Audio(base_channels=4, ch_mult=(1,), num_res_blocks=1, latent_channels=2,
                                       mel_bins=8, resolution=32).eval()
    with pytest.raises(ValueError, match="2 channels x 8 mel bins = 16 features per token but its latents_mean"):
        encode_audio(audio_vae, _tones(0.2, 440.0, 440.0))
