"""What the training loop eats: examples from a `SampleSource`, in batches of one bucket at a time.

`BucketBatches` decides the order: each sample appears 1 + repeats times per epoch, shuffled from
(seed, epoch), cut into batches inside its bucket (every clip of a batch has the same latent shape), and
the batches of all buckets interleaved. Its `position` (epoch, index of the next batch) is saved with a
checkpoint and restored, so a resumed run continues the exact same sequence. A bucket's last batch of an
epoch may be smaller than `batch_size`: no sample is dropped.

The loop never knows about storage: a `SampleSource` turns keys into `TrainExample`s.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch


@dataclass(frozen=True)
class TrainExample:
    key: str
    latents: torch.Tensor  # [C, F, H, W] normalised video latents (posterior mean)
    text_features: torch.Tensor  # [T, C_txt] the caption's cached real-token features (models/text.py)
    frame_rate: float  # the clip's fps: the time axis of the video RoPE
    audio_latents: torch.Tensor | None = None  # [T_a, C_a] packed, normalised; None for video-only data


class SampleSource(Protocol):
    def load(self, keys: Sequence[str]) -> list[TrainExample]:
        """The examples for `keys`, in that order (a key may repeat)."""
        ...


@dataclass(frozen=True)
class BucketBatch:
    bucket: str
    keys: tuple[str, ...]


class BucketBatches:
    """An endless, resumable sequence of one-bucket batches (module docstring)."""

    def __init__(self, buckets: Mapping[str, Sequence[tuple[str, int]]], *, batch_size: int, seed: int) -> None:
        if batch_size < 1:
            raise ValueError(f"train_batch_size {batch_size} must be at least 1")
        negative = [(key, repeats) for samples in buckets.values() for key, repeats in samples if repeats < 0]
        if negative:
            raise ValueError(f"repeats must be 0 or more; got {negative[:3]}")
        self._buckets = {bucket: list(samples) for bucket, samples in sorted(buckets.items()) if samples}
        if not self._buckets:
            raise ValueError("no training samples: every bucket is empty (run the bucket and latents stages)")
        self.batch_size = batch_size
        self.seed = seed
        self._epoch = 0
        self._index = 0
        self._order = self._epoch_order(0)

    @property
    def batches_per_epoch(self) -> int:
        return len(self._order)

    @property
    def position(self) -> dict[str, int]:
        """Where the next batch comes from: save it with a checkpoint, give it back to `restore`."""
        return {"epoch": self._epoch, "index": self._index}

    def restore(self, position: Mapping[str, int]) -> None:
        epoch, index = int(position["epoch"]), int(position["index"])
        if epoch < 0 or not 0 <= index <= self.batches_per_epoch:
            raise ValueError(f"data position {dict(position)} is outside this data ({self.batches_per_epoch} batches)")
        self._epoch, self._index = epoch, index
        self._order = self._epoch_order(epoch)

    @property
    def fingerprint(self) -> str:
        """Hash of everything that decides the order: the samples, their repeats, batch size and seed."""
        payload = json.dumps([self._buckets, self.batch_size, self.seed], sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    def __iter__(self) -> Iterator[BucketBatch]:
        return self

    def __next__(self) -> BucketBatch:
        if self._index >= len(self._order):
            self._epoch, self._index = self._epoch + 1, 0
            self._order = self._epoch_order(self._epoch)
        batch = self._order[self._index]
        self._index += 1
        return batch

    def _epoch_order(self, epoch: int) -> list[BucketBatch]:
        rng = random.Random(f"{self.seed}:{epoch}")  # str seeds hash deterministically (not PYTHONHASHSEED)
        batches = []
        for bucket, samples in self._buckets.items():
            keys = [key for key, repeats in samples for _ in range(1 + repeats)]
            rng.shuffle(keys)
            batches += [
                BucketBatch(bucket, tuple(keys[i : i + self.batch_size])) for i in range(0, len(keys), self.batch_size)
            ]
        rng.shuffle(batches)
        return batches


@dataclass(frozen=True)
class TrainBatch:
    """One collated batch on the training device, text already through the connectors."""

    keys: tuple[str, ...]
    latents: torch.Tensor  # [B, C, F, H, W] clean video latents
    text: torch.Tensor  # [B, L, D] video text embeddings (connector output)
    audio_text: torch.Tensor  # [B, L, D] audio text embeddings
    text_mask: torch.Tensor  # [B, L] 1 = attend
    frame_rates: tuple[float, ...]  # per clip
    audio_latents: torch.Tensor | None  # [B, T_a, C_a]; None = video-only fast path


def collate(
    examples: Sequence[TrainExample],
    *,
    connectors: Any,
    text_max_length: int,
    device: torch.device | str,
    dtype: torch.dtype,
) -> TrainBatch:
    """Stack examples of one bucket and expand their captions for the transformer (no gradient)."""
    from ltx2core.models.text import expand_for_transformer

    shapes = {tuple(e.latents.shape) for e in examples}
    if len(shapes) != 1:
        raise ValueError(f"one batch holds latents of shapes {sorted(shapes)}: batches must come from one bucket")
    with_audio = [e.audio_latents is not None for e in examples]
    if any(with_audio) and not all(with_audio):
        missing = [e.key for e in examples if e.audio_latents is None]
        raise ValueError(
            f"samples {missing[:3]} have no audio latents while others in the batch do: rerun the latents stage "
            "for them or train video-only (no audio block in the dataset)"
        )
    audio = None
    if all(with_audio):
        lengths = {e.audio_latents.shape for e in examples if e.audio_latents is not None}
        if len(lengths) != 1:
            raise ValueError(
                f"audio latents of shapes {sorted(lengths)} in one batch (clips of one bucket at different frame "
                "rates): use train_batch_size 1 or one frame rate per dataset"
            )
        audio = torch.stack([e.audio_latents for e in examples]).to(device, dtype)  # type: ignore[misc]
    with torch.no_grad():
        text, audio_text, mask = expand_for_transformer(
            [e.text_features for e in examples], max_length=text_max_length, connectors=connectors,
            device=device, dtype=dtype,
        )
    return TrainBatch(
        keys=tuple(e.key for e in examples),
        latents=torch.stack([e.latents for e in examples]).to(device, dtype),
        text=text,
        audio_text=audio_text,
        text_mask=mask,
        frame_rates=tuple(float(e.frame_rate) for e in examples),
        audio_latents=audio,
    )
