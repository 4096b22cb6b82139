"""Video-only training parks the audio stream's weights on the host: 10.5 GiB of LTX-2.0's 35 GiB.

On video-only data the step runs the transformer with one dummy audio token and `isolate_modalities=True`
(step.py): the audio<->video cross-attentions are skipped, so the video prediction, the loss and every video
LoRA gradient are independent of what the audio stream computes. The audio stream's own layers (audio self-
attention, audio-text cross-attention, audio feed-forward) and the two cross-modal attentions still sit in every
block: 117 M parameters a block, 5.6 B in all. `park_audio_stream` takes them out of the blocks (on the host) and
puts stand-ins in their place: the audio layers return zeros for the one dummy token, the cross-modal attentions
refuse to run. The video path is untouched, so the loss and the LoRA gradients are equal to the bit (tested);
only the discarded audio prediction changes. Sampling needs the real audio stream (the pipeline runs both
modalities jointly): `ParkedAudio.restored` puts the layers back on a device for the duration.

Park before the LoRA is added (the parked layers must carry no adapter), fp8 conversion, block swap or FSDP
sharding, so that none of them ever sees the audio weights.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

log = logging.getLogger(__name__)

AUDIO_LAYERS = ("audio_attn1", "audio_attn2", "audio_ff")  # only feed the audio stream
CROSS_MODAL = ("audio_to_video_attn", "video_to_audio_attn")  # never called with isolate_modalities=True


class _SilentAudio(torch.nn.Module):
    """Stands in for an audio layer: zeros shaped like its input (the dummy token), as the output is unused."""

    def forward(self, hidden_states: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        if hidden_states.shape[1] != 1:
            raise RuntimeError(
                f"the audio stream is parked for video-only training, but this forward has {hidden_states.shape[1]} "
                "audio tokens: restore it (ParkedAudio.restored) before running the model on audio"
            )
        return torch.zeros_like(hidden_states)


class _ParkedCrossModal(torch.nn.Module):
    """Stands in for an audio<->video attention, which only runs without isolate_modalities."""

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        raise RuntimeError(
            "the audio stream is parked for video-only training: the audio<->video attention cannot run; call the "
            "transformer with isolate_modalities=True or restore it (ParkedAudio.restored)"
        )


@dataclass(frozen=True)
class _Parked:
    block: torch.nn.Module
    name: str
    layer: torch.nn.Module  # the real one, on the host


@dataclass(frozen=True)
class ParkedAudio:
    """The audio layers taken out of a transformer's blocks (park_audio_stream)."""

    layers: tuple[_Parked, ...]

    @property
    def bytes(self) -> int:
        return sum(t.numel() * t.element_size() for p in self.layers for t in (*p.layer.parameters(),
                                                                               *p.layer.buffers()))

    @contextmanager
    def restored(self, device: torch.device | str) -> Iterator[None]:
        """The real audio layers back in their blocks, on `device`, for sampling; parked again afterwards."""
        stand_ins = []
        try:
            for parked in self.layers:
                stand_ins.append(getattr(parked.block, parked.name))
                setattr(parked.block, parked.name, parked.layer.to(device))
            yield
        finally:
            for parked, stand_in in zip(self.layers, stand_ins, strict=False):
                setattr(parked.block, parked.name, stand_in)
                parked.layer.to("cpu")


def park_audio_stream(transformer: Any) -> ParkedAudio:
    """Move every block's audio layers to the host and put stand-ins in their place (module docstring).

    Raises ValueError when a layer to park has trainable parameters (a LoRA on the audio stream: data with
    audio trains it, and then nothing may be parked).
    """
    layers = []
    for block in transformer.transformer_blocks:
        for name in (*AUDIO_LAYERS, *CROSS_MODAL):
            layer = getattr(block, name)
            if any(p.requires_grad for p in layer.parameters()):
                raise ValueError(f"{name} has trainable parameters (a LoRA on the audio stream?): a video-only run "
                                 "parks the audio stream, so add the LoRA after park_audio_stream, to video layers")
            layers.append(_Parked(block, name, layer.to("cpu")))
            setattr(block, name, _SilentAudio() if name in AUDIO_LAYERS else _ParkedCrossModal())
    parked = ParkedAudio(tuple(layers))
    log.info("video-only data: the audio stream (%d layers, %.1f GiB) is parked on the host", len(layers),
             parked.bytes / 2**30)
    return parked
