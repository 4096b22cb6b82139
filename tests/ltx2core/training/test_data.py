"""One-bucket batches in a seeded, resumable order; collation refuses batches that cannot be stacked."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from itertools import islice
from typing import Any

import pytest
import torch

from ltx2core.training.data import BucketBatches, TrainExample, collate
from tests.ltx2core.training.helpers import make_examples

BUCKETS = {
    "768x512@121": [("a1", 0), ("a2", 2), ("a3", 0), ("a4", 1), ("a5", 0)],
    "512x512@49": [("b1", 0), ("b2", 0), ("b3", 3)],
    "1024x576@97": [("c1", 0)],
}
BATCH_SIZE = 2
SEED = 11


def _epoch(batches: BucketBatches) -> list[Any]:
    return list(islice(batches, batches.batches_per_epoch))


def test_each_batch_is_one_bucket_and_each_sample_appears_one_plus_repeats_times() -> None:
    batches = BucketBatches(BUCKETS, batch_size=BATCH_SIZE, seed=SEED)
    bucket_of = {key: bucket for bucket, samples in BUCKETS.items() for key, _ in samples}
    for _ in range(2):
        epoch = _epoch(batches)
        assert all({bucket_of[k] for k in batch.keys} == {batch.bucket} for batch in epoch)
        assert all(1 <= len(batch.keys) <= BATCH_SIZE for batch in epoch)
        counts = Counter(key for batch in epoch for key in batch.keys)
        assert counts == {key: 1 + repeats for samples in BUCKETS.values() for key, repeats in samples}


def test_order_is_fixed_by_seed_and_epoch() -> None:
    first = _epoch(BucketBatches(BUCKETS, batch_size=BATCH_SIZE, seed=SEED))
    again = _epoch(BucketBatches(BUCKETS, batch_size=BATCH_SIZE, seed=SEED))
    other_seed = _epoch(BucketBatches(BUCKETS, batch_size=BATCH_SIZE, seed=SEED + 1))
    two_epochs = BucketBatches(BUCKETS, batch_size=BATCH_SIZE, seed=SEED)
    _epoch(two_epochs)
    assert first == again
    assert first != other_seed
    assert _epoch(two_epochs) != first  # a new shuffle every epoch


def test_a_restored_position_continues_the_same_sequence() -> None:
    uninterrupted = BucketBatches(BUCKETS, batch_size=BATCH_SIZE, seed=SEED)
    expected = list(islice(uninterrupted, 25))  # crosses two epoch boundaries

    first_run = BucketBatches(BUCKETS, batch_size=BATCH_SIZE, seed=SEED)
    head = list(islice(first_run, 9))
    position = first_run.position
    resumed = BucketBatches(BUCKETS, batch_size=BATCH_SIZE, seed=SEED)
    resumed.restore(position)
    assert head + list(islice(resumed, 16)) == expected


def test_peek_names_the_next_step_without_moving_the_position() -> None:
    batches = BucketBatches(BUCKETS, batch_size=BATCH_SIZE, seed=SEED)
    for _ in range(3 * batches.steps_per_epoch(2)):  # across epoch boundaries
        position = batches.position
        upcoming = batches.peek_step(2)
        assert batches.position == position
        assert batches.next_step(2) == upcoming


def test_fingerprint_changes_with_what_decides_the_order() -> None:
    base = BucketBatches(BUCKETS, batch_size=BATCH_SIZE, seed=SEED).fingerprint
    more_repeats = {**BUCKETS, "1024x576@97": [("c1", 1)]}
    assert BucketBatches(BUCKETS, batch_size=BATCH_SIZE, seed=SEED).fingerprint == base
    assert BucketBatches(more_repeats, batch_size=BATCH_SIZE, seed=SEED).fingerprint != base
    assert BucketBatches(BUCKETS, batch_size=BATCH_SIZE + 1, seed=SEED).fingerprint != base


@pytest.mark.parametrize(
    ("buckets", "message"),
    [({"a": []}, "every bucket is empty"), ({"a": [("x", -1)]}, "repeats")],
)
def test_bad_bucket_lists_are_refused(buckets: dict[str, list[tuple[str, int]]], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        BucketBatches(buckets, batch_size=BATCH_SIZE, seed=SEED)


def test_collate_refuses_what_cannot_share_a_batch(connectors: Any, text_max_length: int) -> None:
    video, audio = make_examples(2), make_examples(2, audio=True)
    other_shape = TrainExample("odd", torch.zeros(8, 3, 2, 2), torch.zeros(2, 32), 25.0)
    cases = [
        ([video["clip0"], other_shape], "one bucket"),
        ([video["clip0"], audio["clip1"]], "no audio latents"),
        ([video["clip0"], replace(video["clip1"], text_features=None)], "neither caption features nor"),
    ]
    for examples, message in cases:
        with pytest.raises(ValueError, match=message):
            collate(examples, connectors=connectors, text_max_length=text_max_length, device="cpu",
                    dtype=torch.float32)


def test_collate_stacks_latents_and_expands_captions(connectors: Any, text_max_length: int) -> None:
    examples = list(make_examples(3, audio=True, frame_rate=24.0).values())
    batch = collate(examples, connectors=connectors, text_max_length=text_max_length, device="cpu",
                    dtype=torch.float32)
    assert batch.keys == ("clip0", "clip1", "clip2")
    assert torch.equal(batch.latents[1], examples[1].latents)
    assert batch.text.shape == batch.audio_text.shape == (3, text_max_length, 32)
    assert batch.audio_latents is not None and torch.equal(batch.audio_latents[2], examples[2].audio_latents)
    assert batch.frame_rates == (24.0, 24.0, 24.0)
    assert not batch.text.requires_grad


def test_captions_expanded_once_give_the_batch_the_connectors_give(connectors: Any, text_max_length: int) -> None:
    """Precomputed captions (the train stage's way to free the connectors' GPU memory) change no input."""
    from dataclasses import replace

    from ltx2core.training.data import expand_captions

    examples = list(make_examples(3).values())
    captions = expand_captions({e.key: e.text_features for e in examples}, connectors=connectors,
                               text_max_length=text_max_length, device="cpu", dtype=torch.float32, batch_size=2)
    kwargs = {"connectors": connectors, "text_max_length": text_max_length, "device": "cpu", "dtype": torch.float32}
    fresh = collate(examples, **kwargs)
    cached = collate([replace(e, caption=captions[e.key]) for e in examples], connectors=None,
                     **{k: v for k, v in kwargs.items() if k != "connectors"})
    for part in ("text", "audio_text", "text_mask"):
        torch.testing.assert_close(getattr(cached, part), getattr(fresh, part), rtol=1e-6, atol=1e-6, msg=part)
    assert cached.text_mask.dtype == fresh.text_mask.dtype
