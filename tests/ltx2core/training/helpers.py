"""In-memory training data for the tiny LTX-2: latents and caption features shaped like the real caches.

Random values stand in for encoded clips: what these tests check (the order, the noise, the loss, the
LoRA arithmetic, the files) does not depend on the pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from ltx2core.training.data import TrainExample

LATENT_CHANNELS = 8  # the tiny VAE's
LATENT_SHAPE = (LATENT_CHANNELS, 2, 2, 2)  # 9 frames of 64x64 pixels
CAPTION_CHANNELS = 32  # the tiny connectors' caption_channels
AUDIO_CHANNELS = 4  # the tiny transformer's audio_in_channels
AUDIO_TOKENS = 9  # round(9 frames / 25 fps * 25 tokens/s)
BUCKET = "64x64@9"


def make_examples(
    count: int, *, seed: int = 0, audio: bool = False, frame_rate: float = 25.0
) -> dict[str, TrainExample]:
    generator = torch.Generator().manual_seed(seed)
    examples = {}
    for i in range(count):
        key = f"clip{i}"
        examples[key] = TrainExample(
            key=key,
            latents=torch.randn(LATENT_SHAPE, generator=generator),
            text_features=torch.randn(3 + i, CAPTION_CHANNELS, generator=generator),
            frame_rate=frame_rate,
            audio_latents=torch.randn(AUDIO_TOKENS, AUDIO_CHANNELS, generator=generator) if audio else None,
        )
    return examples


@dataclass
class MemorySource:
    """A SampleSource over a dict; remembers every batch of keys it served."""

    examples: dict[str, TrainExample]
    served: list[tuple[str, ...]] = field(default_factory=list)

    def load(self, keys: Sequence[str]) -> list[TrainExample]:
        self.served.append(tuple(keys))
        return [self.examples[key] for key in keys]
