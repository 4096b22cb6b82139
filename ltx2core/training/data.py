"""What the training loop eats: examples from a `SampleSource`, in batches of one bucket at a time.

`BucketBatches` decides the order: each sample appears 1 + repeats times per epoch, shuffled from
(seed, epoch), cut into batches inside its bucket (every clip of a batch has the same latent shape), and
the batches of all buckets interleaved. Its `position` (epoch, index of the next batch) is saved with a
checkpoint and restored, so a resumed run continues the exact same sequence. A bucket's last batch of an
epoch may be smaller than `batch_size`: no sample is dropped.

One optimizer step may take several batches (`next_step`): gradient accumulation and the ranks of a
several-GPU run. They come from ONE bucket, as consecutive batches of its shuffled samples, so every rank
works on the same clip shape and none waits for a slower one. The order of whole steps is shuffled the same
way as single batches are (one batch per step is exactly the order above). The position counts steps and
records how many batches a step took; a run resumed with another count (another number of GPUs) continues
at the same fraction of the epoch in the order cut for the new count (see `next_step`).

The loop never knows about storage: a `SampleSource` turns keys into `TrainExample`s, and `Prefetched` reads the
next step's on a thread while the GPU trains this one (`BucketBatches.peek_step` names them without moving the
position a checkpoint saves).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import random
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

import torch

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainExample:
    key: str
    latents: torch.Tensor  # [C, F, H, W] normalised video latents (posterior mean)
    text_features: torch.Tensor | None  # [T, C_txt] the caption's cached real-token features (models/text.py);
    # None when `caption` holds their expansion (a source need not read them)
    frame_rate: float  # the clip's fps: the time axis of the video RoPE
    audio_latents: torch.Tensor | None = None  # [T_a, C_a] packed, normalised; None for video-only data
    caption: ExpandedCaption | None = None  # the connectors' output for text_features, when precomputed
    reference_latents: torch.Tensor | None = None  # [C, F, H/s, W/s] IC-LoRA reference; None without one


@dataclass(frozen=True)
class ExpandedCaption:
    """One caption through the frozen connectors: what `collate` would compute for it every step."""

    video: torch.Tensor  # [L, D] video text embeddings
    audio: torch.Tensor  # [L, D_a] audio text embeddings
    mask: torch.Tensor  # [L] 1 = attend


def expand_captions(
    features: Mapping[str, torch.Tensor], *, connectors: Any, text_max_length: int, device: torch.device | str,
    dtype: torch.dtype, batch_size: int = 16,
) -> dict[str, ExpandedCaption]:
    """Every caption through the connectors once, results on the host: training then needs no connectors on
    the GPU. Each caption is expanded alone in the connectors (masked attention), so batching here does not
    change its result beyond float rounding."""
    from ltx2core.models.text import expand_for_transformer

    out: dict[str, ExpandedCaption] = {}
    keys = list(features)
    with torch.no_grad():
        for start in range(0, len(keys), batch_size):
            chunk = keys[start:start + batch_size]
            video, audio, mask = expand_for_transformer([features[k] for k in chunk], max_length=text_max_length,
                                                        connectors=connectors, device=device, dtype=dtype)
            for i, key in enumerate(chunk):
                out[key] = ExpandedCaption(video[i].cpu(), audio[i].cpu(), mask[i].cpu())
    return out


class SampleSource(Protocol):
    def load(self, keys: Sequence[str]) -> list[TrainExample]:
        """The examples for `keys`, in that order (a key may repeat)."""
        ...


class Prefetched:
    """`source` with examples read ahead on one thread, in the order asked: `prefetch(keys)` queues a read, and
    `load(keys)` returns the oldest queued read of those keys (or raises its error), else reads now. Reading is
    storage I/O and decoding (~10-20 ms a step at full size on our 2-core machine): on the thread it overlaps the
    GPU's step instead of adding to it."""

    def __init__(self, source: SampleSource) -> None:
        self.source = source
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="ltx2-prefetch")
        self._ahead: dict[tuple[str, ...], deque[Future[list[TrainExample]]]] = {}

    def prefetch(self, keys: Sequence[str]) -> None:
        self._ahead.setdefault(tuple(keys), deque()).append(self._pool.submit(self.source.load, keys))

    def load(self, keys: Sequence[str]) -> list[TrainExample]:
        queued = self._ahead.get(tuple(keys))
        if not queued:
            return self.source.load(keys)
        ahead = queued.popleft()
        if not queued:
            del self._ahead[tuple(keys)]
        return ahead.result()

    def close(self) -> None:
        """Drop what was read ahead and not used (the run ended, or failed, before its step)."""
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._ahead.clear()


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
        self._index = 0  # of the next step in this epoch's order
        self._per_step = 1  # batches per step of the current order
        self._order = self._epoch_order(0, 1)

    @property
    def batches_per_epoch(self) -> int:
        """Batches of up to `batch_size` clips in one epoch (however many a step takes)."""
        return sum(math.ceil(self._clips(samples) / self.batch_size) for samples in self._buckets.values())

    def steps_per_epoch(self, batches_per_step: int) -> int:
        """Optimizer steps in one epoch when each step takes up to `batches_per_step` batches of one bucket."""
        return sum(math.ceil(self._clips(samples) / (self.batch_size * batches_per_step))
                   for samples in self._buckets.values())

    @property
    def position(self) -> dict[str, int]:
        """Where the next step comes from: save it with a checkpoint, give it back to `restore`."""
        return {"epoch": self._epoch, "index": self._index, "batches_per_step": self._per_step}

    def restore(self, position: Mapping[str, int]) -> None:
        epoch, index = int(position["epoch"]), int(position["index"])
        per_step = int(position.get("batches_per_step", 1))  # saved before a step could take several batches: 1
        if epoch < 0 or per_step < 1 or not 0 <= index <= self.steps_per_epoch(per_step):
            raise ValueError(
                f"data position {dict(position)} is outside this data ({self.batches_per_epoch} batches per epoch)"
            )
        self._epoch, self._index, self._per_step = epoch, index, per_step
        self._order = self._epoch_order(epoch, per_step)

    @property
    def fingerprint(self) -> str:
        """Hash of everything that decides the order: the samples, their repeats, batch size and seed."""
        payload = json.dumps([self._buckets, self.batch_size, self.seed], sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    def __iter__(self) -> Iterator[BucketBatch]:
        return self

    def __next__(self) -> BucketBatch:
        return self.next_step(1)[0]

    def next_step(self, batches: int) -> tuple[BucketBatch, ...]:
        """The next optimizer step's batches: 1 to `batches` batches of one bucket, all full but the last.

        A step takes fewer than `batches` only at the end of a bucket's samples for the epoch. When
        `batches` differs from what the previous step took (the position was saved by a run with another
        number of GPUs or another gradient accumulation), the current epoch is cut again for the new count
        and continues at the same fraction of its steps: in that epoch a few clips may then be trained once
        more or once less than their repeats say; later epochs are whole again.
        """
        if batches < 1:
            raise ValueError(f"a step takes at least one batch, not {batches}")
        if batches != self._per_step:
            self._recut(batches)
        if self._index >= len(self._order):
            self._epoch, self._index = self._epoch + 1, 0
            self._order = self._epoch_order(self._epoch, self._per_step)
        step = self._order[self._index]
        self._index += 1
        return step

    def peek_step(self, batches: int) -> tuple[BucketBatch, ...]:
        """What `next_step(batches)` will return, without moving the position (to read its examples ahead)."""
        saved = self._epoch, self._index, self._per_step, self._order
        try:
            return self.next_step(batches)
        finally:
            self._epoch, self._index, self._per_step, self._order = saved

    def _recut(self, per_step: int) -> None:
        done, before, old_per_step = self._index, len(self._order), self._per_step
        self._per_step = per_step
        self._order = self._epoch_order(self._epoch, per_step)
        self._index = round(done * len(self._order) / before)
        if done:
            log.warning(
                "data order: steps took %d batches of %d clips, now %d: epoch %d continues at step %d of %d of the "
                "order cut for the new count (it was at step %d of %d); a few clips of this epoch may be trained "
                "once more or once less", old_per_step, self.batch_size, per_step, self._epoch, self._index,
                len(self._order), done, before,
            )

    def _epoch_order(self, epoch: int, per_step: int) -> list[tuple[BucketBatch, ...]]:
        rng = random.Random(f"{self.seed}:{epoch}")  # str seeds hash deterministically (not PYTHONHASHSEED)
        steps = []
        size = self.batch_size
        for bucket, samples in self._buckets.items():
            keys = [key for key, repeats in samples for _ in range(1 + repeats)]
            rng.shuffle(keys)
            for start in range(0, len(keys), size * per_step):  # a step: consecutive batches of the shuffled keys
                part = keys[start : start + size * per_step]
                steps.append(tuple(BucketBatch(bucket, tuple(part[i : i + size])) for i in range(0, len(part), size)))
        rng.shuffle(steps)  # one batch per step: the same draws, so the same order as shuffling single batches
        return steps

    @staticmethod
    def _clips(samples: Sequence[tuple[str, int]]) -> int:
        return sum(1 + repeats for _, repeats in samples)


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
    reference_latents: torch.Tensor | None = None  # [B, C, F_r, H_r, W_r] IC-LoRA references (clean); None = none


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
    if all(e.caption is not None for e in examples):  # expanded once before training (expand_captions)
        text, audio_text, mask = (torch.stack([getattr(e.caption, part) for e in examples]).to(device)
                                  for part in ("video", "audio", "mask"))
        text, audio_text = text.to(dtype), audio_text.to(dtype)
    else:
        unread = [e.key for e in examples if e.text_features is None]
        if unread:
            raise ValueError(f"samples {unread[:3]} come with neither caption features nor their expansion, in a "
                             "batch that needs the features: the source must read them")
        with torch.no_grad():
            text, audio_text, mask = expand_for_transformer(
                [e.text_features for e in examples], max_length=text_max_length, connectors=connectors,
                device=device, dtype=dtype,
            )
    references = [e.reference_latents for e in examples]
    if any(r is not None for r in references) and any(r is None for r in references):
        raise ValueError(f"samples {[e.key for e in examples if e.reference_latents is None][:3]} have no IC-LoRA "
                         "reference while others in the batch do: rerun the latents stage for them")
    return TrainBatch(
        keys=tuple(e.key for e in examples),
        latents=torch.stack([e.latents for e in examples]).to(device, dtype),
        text=text,
        audio_text=audio_text,
        text_mask=mask,
        frame_rates=tuple(float(e.frame_rate) for e in examples),
        audio_latents=audio,
        reference_latents=torch.stack(references).to(device, dtype) if references[0] is not None else None,
    )
