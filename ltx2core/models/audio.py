"""Audio latents for LTX-2: waveform -> log-mel spectrogram -> audio VAE -> packed, normalised tokens (the audio
VAE is the same in 2.0, 2.3 and 2.5).

diffusers 0.42.1 ships the audio VAE (`AutoencoderKLLTX2Audio`, mel spectrogram -> latents) but no waveform ->
mel step for it: its `MelSTFT` belongs to the 2.3 vocoder's bandwidth extender (a causal STFT, hop 80, with
filter buffers from the checkpoint). What Lightricks' ltx-core feeds the audio VAE (read in two ports of it:
ComfyUI's LTX-2 audio VAE wrapper and SimpleTuner's LTX-2 audio autoencoder) is torchaudio's MelSpectrogram
with, from the audio VAE's config, sample_rate (16000), mel_hop_length (160) and mel_bins (64), and fixed:
n_fft = win_length = 1024, a periodic Hann window, centred frames with reflect padding, magnitude (power 1),
f_min 0, f_max = sample_rate / 2, Slaney mel scale with Slaney area normalisation; then log(max(mel, 1e-5)),
laid out [batch, channels, frames, mel_bins]. `log_mel_spectrogram` computes exactly that with torch.stft and
our own Slaney filter bank (checked against transformers' `mel_filter_bank`), so torchaudio is not needed.

The VAE's posterior mode is then packed and normalised as LTX2Pipeline does for audio latents it is given
(`_pack_audio_latents` then `_normalize_audio_latents`): [T, C * M] tokens, (x - latents_mean) / latents_std,
which is what the transformer takes as `audio_hidden_states`. The audio VAE is causal in time: a clip of S
samples gives 1 + S // hop mel frames and (frames - 1) // 4 + 1 latent frames (122 for 4.84 s at 16 kHz;
LTX2Pipeline generates round(4.84 * 25) = 121), all kept, as ltx-core's trainer keeps them.
"""

from __future__ import annotations

import math
from typing import Any

import torch

N_FFT = 1024  # ltx-core's audio VAE config (n_fft), not part of diffusers' config
LOG_FLOOR = 1e-5


def slaney_mel_filters(num_freqs: int, num_mels: int, sample_rate: int) -> torch.Tensor:
    """[num_freqs, num_mels] triangular filters on the Slaney mel scale, area-normalised, from 0 Hz to Nyquist.

    The layout torchaudio's `melscale_fbanks(..., norm="slaney", mel_scale="slaney")` returns.
    """
    freqs = torch.linspace(0, sample_rate // 2, num_freqs, dtype=torch.float64)
    mels = torch.linspace(_hz_to_mel(0.0), _hz_to_mel(sample_rate / 2), num_mels + 2, dtype=torch.float64)
    edges = _mel_to_hz(mels)  # num_mels + 2 band edges in Hz
    widths = edges[1:] - edges[:-1]
    slopes = edges[None, :] - freqs[:, None]  # [num_freqs, num_mels + 2]
    rising = -slopes[:, :-2] / widths[:-1]
    falling = slopes[:, 2:] / widths[1:]
    filters = torch.clamp(torch.minimum(rising, falling), min=0.0)
    filters = filters * (2.0 / (edges[2:] - edges[:-2]))  # equal area per band
    return filters.to(torch.float32)


# Slaney's mel scale: linear below 1 kHz (3 mels per 200 Hz), logarithmic above (27 mels per factor 6.4).
_LINEAR_HZ_PER_MEL = 200.0 / 3
_LOG_START_HZ = 1000.0
_LOG_START_MEL = _LOG_START_HZ / _LINEAR_HZ_PER_MEL
_MELS_PER_LOG_STEP = 27.0 / math.log(6.4)


def _hz_to_mel(hz: float) -> float:
    if hz < _LOG_START_HZ:
        return hz / _LINEAR_HZ_PER_MEL
    return _LOG_START_MEL + math.log(hz / _LOG_START_HZ) * _MELS_PER_LOG_STEP


def _mel_to_hz(mels: torch.Tensor) -> torch.Tensor:
    linear = mels * _LINEAR_HZ_PER_MEL
    logarithmic = _LOG_START_HZ * torch.exp((mels - _LOG_START_MEL) / _MELS_PER_LOG_STEP)
    return torch.where(mels >= _LOG_START_MEL, logarithmic, linear)


def log_mel_spectrogram(
    waveform: torch.Tensor, *, sample_rate: int, hop_length: int, mel_bins: int, n_fft: int = N_FFT
) -> torch.Tensor:
    """[B, C, S] float samples -> [B, C, 1 + S // hop_length, mel_bins] natural-log mel magnitudes (float32)."""
    batch, channels, samples = waveform.shape
    flat = waveform.reshape(batch * channels, samples).to(torch.float32)
    window = torch.hann_window(n_fft, device=flat.device)  # periodic, as torchaudio's default
    spectrum = torch.stft(
        flat, n_fft=n_fft, hop_length=hop_length, win_length=n_fft, window=window, center=True,
        pad_mode="reflect", return_complex=True,
    ).abs()  # [B*C, n_fft // 2 + 1, frames]
    filters = slaney_mel_filters(n_fft // 2 + 1, mel_bins, sample_rate).to(flat.device)
    mel = torch.matmul(spectrum.transpose(1, 2), filters)  # [B*C, frames, mel_bins]
    return torch.log(mel.clamp(min=LOG_FLOOR)).reshape(batch, channels, -1, mel_bins)


@torch.no_grad()
def encode_audio(audio_vae: Any, waveform: torch.Tensor) -> torch.Tensor:
    """[channels, samples] at the audio VAE's sample rate -> [T, C * M] normalised latents, on the VAE's device.

    A mono waveform is repeated over the channels the VAE takes (stereo for LTX-2), keeping its full level.
    """
    config = audio_vae.config
    if waveform.ndim != 2:
        raise ValueError(f"waveform must be [channels, samples], got {tuple(waveform.shape)}")
    if waveform.shape[0] != config.in_channels:
        if waveform.shape[0] != 1:
            raise ValueError(
                f"the audio VAE takes {config.in_channels} channels, got {waveform.shape[0]}: give mono or "
                f"{config.in_channels}-channel samples"
            )
        waveform = waveform.expand(config.in_channels, -1)
    mel = log_mel_spectrogram(
        waveform.to(audio_vae.device)[None], sample_rate=config.sample_rate, hop_length=config.mel_hop_length,
        mel_bins=config.mel_bins,
    )
    latents = audio_vae.encode(mel.to(audio_vae.dtype)).latent_dist.mode()  # [1, C, T, M]
    tokens = latents.transpose(1, 2).flatten(2, 3)[0]  # [T, C * M], as LTX2Pipeline._pack_audio_latents
    mean, std = audio_vae.latents_mean, audio_vae.latents_std
    if tokens.shape[-1] != mean.numel():
        raise ValueError(
            f"the audio VAE makes {latents.shape[1]} channels x {latents.shape[3]} mel bins = {tokens.shape[-1]} "
            f"features per token but its latents_mean has {mean.numel()}: audio_vae/config.json (ch_mult, "
            "mel_bins, latent_channels) does not describe these weights"
        )
    return (tokens - mean.to(tokens)) / std.to(tokens)
