"""The training loop on the tiny model (CPU, float32): what it trains, that it learns, and exact resume."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from ltx2core.training.checkpoint import CheckpointMismatch, checkpoint_folder, latest_checkpoint
from ltx2core.training.data import BucketBatches, collate
from ltx2core.training.loop import TrainResult, TrainSettings, train
from ltx2core.training.lora import lora_state_dict
from ltx2core.training.sinks import HistorySink
from ltx2core.training.step import training_step
from tests.ltx2core.training.helpers import BUCKET, MemorySource, make_examples

LEARNING_RATE = 1e-2  # large: a few steps must move a rank-4 LoRA visibly
RESUME_AT, TOTAL = 3, 6
EVALUATION_DRAWS = 8


class Crash(Exception):
    """Stands in for a killed process."""


class CrashAfter:
    """A sink that kills the run once a given step is logged."""

    def __init__(self, step: int) -> None:
        self.step = step

    def log(self, step: int, metrics: Any) -> None:
        if step == self.step:
            raise Crash(step)

    def close(self) -> None:
        pass


def _settings(output_dir: Path, text_max_length: int, **overrides: Any) -> TrainSettings:
    values = dict(output_dir=output_dir, max_steps=TOTAL, text_max_length=text_max_length, model="tiny",
                  learning_rate=LEARNING_RATE, checkpointing_steps=RESUME_AT, seed=5)
    return TrainSettings(**{**values, **overrides})


def _batches(examples: dict[str, Any], batch_size: int = 2) -> BucketBatches:
    return BucketBatches({BUCKET: [(key, i % 2) for i, key in enumerate(examples)]}, batch_size=batch_size, seed=8)


def _run(
    transformer: Any, connectors: Any, settings: TrainSettings, examples: dict[str, Any], **kwargs: Any
) -> tuple[TrainResult, MemorySource]:
    source = MemorySource(examples)
    result = train(transformer, source, _batches(examples), connectors=connectors, settings=settings, **kwargs)
    return result, source


def _lora_equal(a: Any, b: Any) -> bool:
    first, second = lora_state_dict(a), lora_state_dict(b)
    return first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


def test_a_few_steps_change_the_lora_and_nothing_else(
    lora_transformer: Callable[..., Any], connectors: Any, text_max_length: int, tmp_path: Path
) -> None:
    transformer = lora_transformer()
    before = {name: p.detach().clone() for name, p in transformer.named_parameters()}
    _run(transformer, connectors, _settings(tmp_path, text_max_length, max_steps=3), make_examples(4))
    after = dict(transformer.named_parameters())
    lora = [name for name in before if ".lora_" in name]
    assert lora and all(not torch.equal(before[name], after[name]) for name in lora)
    assert all(torch.equal(before[name], after[name]) for name in before if name not in lora)
    assert all(not after[name].requires_grad for name in before if name not in lora)
    assert transformer.is_gradient_checkpointing  # on unless the settings say otherwise


def test_loss_falls_on_a_repeated_batch(
    lora_transformer: Callable[..., Any], connectors: Any, text_max_length: int, tmp_path: Path
) -> None:
    transformer = lora_transformer()
    examples = make_examples(1)
    batch = collate(list(examples.values()), connectors=connectors, text_max_length=text_max_length, device="cpu",
                    dtype=torch.float32)

    def fixed_loss() -> float:  # the same noises and sigmas every time
        with torch.no_grad():
            return sum(
                training_step(transformer, batch, generator=torch.Generator().manual_seed(seed)).loss.item()
                for seed in range(EVALUATION_DRAWS)
            ) / EVALUATION_DRAWS

    start = fixed_loss()
    source = MemorySource(examples)
    batches = BucketBatches({BUCKET: [("clip0", 0)]}, batch_size=1, seed=0)
    result = train(transformer, source, batches, connectors=connectors,
                   settings=_settings(tmp_path, text_max_length, max_steps=20, checkpointing_steps=20,
                                      learning_rate=3e-2))
    assert len(result.history) == 20 and set(source.served) == {("clip0",)}
    assert fixed_loss() < 0.9 * start  # measured 0.74-0.84 (most of the target is unpredictable noise)


def test_each_batch_is_read_once_in_order_on_the_prefetch_thread(
    lora_transformer: Callable[..., Any], connectors: Any, text_max_length: int, tmp_path: Path
) -> None:
    examples = make_examples(5)
    settings = _settings(tmp_path, text_max_length, gradient_accumulation_steps=2)
    result, source = _run(lora_transformer(), connectors, settings, examples)
    assert source.served == list(result.batch_keys)  # each micro-batch read once, none read and dropped
    assert source.threads and all(name.startswith("ltx2-prefetch") for name in source.threads)
    assert not [t for t in threading.enumerate() if t.name.startswith("ltx2-prefetch")]  # closed with the run

    crashed = MemorySource(examples)
    with pytest.raises(Crash):
        train(lora_transformer(), crashed, _batches(examples), connectors=connectors,
              settings=_settings(tmp_path / "crash", text_max_length, gradient_accumulation_steps=2),
              sinks=[CrashAfter(2)])
    # two steps of two batches, then at most the third step's, read ahead when the run died
    assert crashed.served[:4] == source.served[:4] and len(crashed.served) <= 6
    assert not [t for t in threading.enumerate() if t.name.startswith("ltx2-prefetch")]


def test_resume_equals_one_uninterrupted_run(
    lora_transformer: Callable[..., Any], connectors: Any, text_max_length: int, tmp_path: Path
) -> None:
    examples = make_examples(5)
    # Dropout, accumulation and I2V draws make every random stream matter.
    options = dict(first_frame_p=0.5, gradient_accumulation_steps=2, lr_scheduler="cosine", lr_warmup_steps=2)
    whole = lora_transformer(dropout=0.1)
    _, whole_source = _run(whole, connectors, _settings(tmp_path / "whole", text_max_length, **options), examples)

    # The interrupted run dies one step past its checkpoint, that step already logged.
    part_dir = tmp_path / "parts"
    first_source = MemorySource(examples)
    with pytest.raises(Crash):
        train(lora_transformer(dropout=0.1), first_source, _batches(examples), connectors=connectors,
              settings=_settings(part_dir, text_max_length, **options),
              sinks=[HistorySink(part_dir / "history.csv"), CrashAfter(RESUME_AT + 1)])
    assert latest_checkpoint(part_dir) == checkpoint_folder(part_dir, RESUME_AT)
    # A new process: a fresh transformer, optimizer and data order, from the checkpoint before the crash.
    resumed = lora_transformer(dropout=0.1, seed=99)  # another init: the checkpoint must overwrite it
    history = HistorySink(part_dir / "history.csv")
    result, second_source = _run(resumed, connectors, _settings(part_dir, text_max_length, **options), examples,
                                 resume_from=latest_checkpoint(part_dir), sinks=[history])

    assert result.step == TOTAL and result.steps_run == TOTAL - RESUME_AT
    assert _lora_equal(whole, resumed)
    accumulation = options["gradient_accumulation_steps"]
    assert first_source.served[: RESUME_AT * accumulation] + second_source.served == whole_source.served
    assert [int(row["step"]) for row in history.rows] == list(range(1, TOTAL + 1))  # step 4 replaced, not doubled
    assert latest_checkpoint(part_dir) == checkpoint_folder(part_dir, TOTAL)


def test_resume_with_changed_settings_is_refused(
    lora_transformer: Callable[..., Any], connectors: Any, text_max_length: int, tmp_path: Path
) -> None:
    examples = make_examples(3)
    _run(lora_transformer(), connectors, _settings(tmp_path, text_max_length, max_steps=RESUME_AT), examples)
    with pytest.raises(CheckpointMismatch, match=r"learning_rate: 0\.01 -> 0\.02"):
        _run(lora_transformer(), connectors, _settings(tmp_path, text_max_length, learning_rate=2e-2), examples,
             resume_from=latest_checkpoint(tmp_path))


def test_validation_does_not_change_what_is_trained(
    lora_transformer: Callable[..., Any], connectors: Any, text_max_length: int, tmp_path: Path
) -> None:
    examples = make_examples(3)
    plain = lora_transformer(dropout=0.1)
    _run(plain, connectors, _settings(tmp_path / "plain", text_max_length, max_steps=4), examples)

    calls: list[tuple[str, int]] = []

    def validate(step: int) -> None:  # a sampler drawing from every global random stream
        calls.append(("validate", step))
        torch.rand(100), random.random(), np.random.rand()
        validated.eval()

    validated = lora_transformer(dropout=0.1)
    _run(validated, connectors, _settings(tmp_path / "validated", text_max_length, max_steps=4, validation_steps=2),
         examples, on_validate=validate, on_checkpoint=lambda step, folder: calls.append((folder.name, step)))
    assert calls == [("validate", 2), ("checkpoint-000003", 3), ("checkpoint-000004", 4), ("validate", 4)]
    assert _lora_equal(plain, validated)
