"""In-memory training data for the tiny LTX-2: latents and caption features shaped like the real caches.

Random values stand in for encoded clips: what these tests check (the order, the noise, the loss, the
LoRA arithmetic, the files) does not depend on the pixels.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ltx2core.models.runtime import compute_dtype
from ltx2core.training.data import BucketBatches, TrainExample
from ltx2core.training.loop import TrainSettings, train
from ltx2core.training.lora import lora_state_dict

LATENT_CHANNELS = 8  # the tiny VAE's
LATENT_SHAPE = (LATENT_CHANNELS, 2, 2, 2)  # 9 frames of 64x64 pixels
CAPTION_CHANNELS = 32  # the tiny connectors' caption_channels
AUDIO_CHANNELS = 4  # the tiny transformer's audio_in_channels
AUDIO_TOKENS = 9  # round(9 frames / 25 fps * 25 tokens/s)
BUCKET = "64x64@9"


def make_examples(
    count: int, *, seed: int = 0, audio: bool = False, frame_rate: float = 25.0, text_width: int = CAPTION_CHANNELS
) -> dict[str, TrainExample]:
    """`text_width`: the cached caption features' channels (2.0's tiny Gemma width; 2.3+: the connectors'
    projection widths, models/text.projection_widths)."""
    generator = torch.Generator().manual_seed(seed)
    examples = {}
    for i in range(count):
        key = f"clip{i}"
        examples[key] = TrainExample(
            key=key,
            latents=torch.randn(LATENT_SHAPE, generator=generator),
            text_features=torch.randn(3 + i, text_width, generator=generator),
            frame_rate=frame_rate,
            audio_latents=torch.randn(AUDIO_TOKENS, AUDIO_CHANNELS, generator=generator) if audio else None,
        )
    return examples


@dataclass
class MemorySource:
    """A SampleSource over a dict; remembers every batch of keys it served, and on which thread."""

    examples: dict[str, TrainExample]
    served: list[tuple[str, ...]] = field(default_factory=list)
    threads: list[str] = field(default_factory=list)

    def load(self, keys: Sequence[str]) -> list[TrainExample]:
        self.served.append(tuple(keys))
        self.threads.append(threading.current_thread().name)
        return [self.examples[key] for key in keys]


def train_steps(
    transformer: Any, connectors: Any, text_max_length: int, output_dir: Path, *, steps: int = 3,
    learning_rate: float = 1e-2, device: str = "cpu", mixed_precision: str = "no", **options: Any,
) -> dict[str, "torch.Tensor"]:
    """`steps` optimizer steps of the real loop on audio data (every block path runs); returns the LoRA.

    The learning rate is large so that a few steps move a rank-4 LoRA visibly.
    """
    examples = make_examples(4, audio=True)
    batches = BucketBatches({BUCKET: [(key, 0) for key in examples]}, batch_size=2, seed=8)
    settings = TrainSettings(output_dir=output_dir, max_steps=steps, text_max_length=text_max_length, model="tiny",
                             learning_rate=learning_rate, seed=5, device=device, mixed_precision=mixed_precision,
                             **options)
    if device != "cpu":  # the session's connectors stay on the host for the other tests
        # in the compute dtype, as the train stage loads them: collate runs them outside autocast
        connectors = copy.deepcopy(connectors).to(device, compute_dtype(mixed_precision, torch.device(device)))
    train(transformer, MemorySource(examples), batches, connectors=connectors, settings=settings)
    return lora_state_dict(transformer)


def randomised(model: Any, seed: int = 5) -> Any:
    """`model` in eval mode with random LoRA weights (lora_B starts at zero, so a fresh LoRA does nothing)."""
    generator = torch.Generator().manual_seed(seed)
    for param in model.parameters():
        if param.requires_grad:
            param.data = torch.randn(param.shape, generator=generator) * 0.1
    return model.eval()
