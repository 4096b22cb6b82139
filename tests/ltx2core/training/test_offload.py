"""The offload keys as a block-swap plan: musubi_blocks_to_swap, enable_group_offload mapped onto the swapper with
a warning, refused combinations, and a group-offload run on the tiny model that trains the plain run's LoRA."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from ltx2core.config.train import TrainConfig
from ltx2core.training.data import BucketBatches
from ltx2core.training.loop import TrainSettings, train
from ltx2core.training.lora import lora_state_dict
from ltx2core.training.offload import SWAP_KEYS, SwapPlan, swap_plan
from tests.ltx2core.training.helpers import BUCKET, MemorySource, make_examples

LTX2_BLOCKS = 48


def _config_plan(**keys: Any) -> SwapPlan | None:
    """swap_plan fed from a real TrainConfig, as the train task feeds it."""
    config = TrainConfig(**keys)
    return swap_plan(num_blocks=LTX2_BLOCKS, **config.model_dump(include=set(SWAP_KEYS)))


def test_musubi_keys_swap_the_last_n_blocks_one_streamed_ahead(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        plan = _config_plan(musubi_blocks_to_swap=12, musubi_block_swap_device="cpu")
    assert plan == SwapPlan(blocks_to_swap=12, swap_device="cpu", prefetch=1)
    assert not caplog.records


def test_no_offload_key_means_no_plan() -> None:
    assert _config_plan() is None


@pytest.mark.parametrize(("kind", "per_group", "prefetch"), [("block_level", 1, 1), ("leaf_level", 3, 3),
                                                              ("block_level", 60, LTX2_BLOCKS - 1)])
def test_group_offload_becomes_the_block_swapper_with_a_warning(
    caplog: pytest.LogCaptureFixture, kind: str, per_group: int, prefetch: int
) -> None:
    with caplog.at_level(logging.WARNING):
        plan = _config_plan(enable_group_offload=True, group_offload_type=kind,
                            group_offload_blocks_per_group=per_group)
    assert plan == SwapPlan(blocks_to_swap=LTX2_BLOCKS, swap_device="cpu", prefetch=prefetch)
    [record] = caplog.records
    assert record.levelno == logging.WARNING
    message = record.getMessage()
    assert "diffusers group offloading is not used for training" in message
    assert "silently drops every LoRA update" in message
    assert f"all {LTX2_BLOCKS} blocks off the GPU, {prefetch} streamed ahead" in message
    assert f"group_offload_type {kind}" in message


def test_group_offload_with_a_stream_maps_the_same_way() -> None:
    """The combination diffusers trains wrong with (the config refuses it today, so no TrainConfig here)."""
    plan = swap_plan(num_blocks=LTX2_BLOCKS, enable_group_offload=True, group_offload_use_stream=True,
                     gradient_checkpointing=True)
    assert plan == SwapPlan(blocks_to_swap=LTX2_BLOCKS, swap_device="cpu", prefetch=1)


def test_impossible_combinations_are_refused_together() -> None:
    with pytest.raises(ValueError) as error:
        swap_plan(num_blocks=LTX2_BLOCKS, musubi_blocks_to_swap=50, enable_group_offload=True,
                  gradient_checkpointing=False)
    message = str(error.value)
    assert "musubi_blocks_to_swap and enable_group_offload both move transformer blocks off the GPU" in message
    assert "musubi_blocks_to_swap needs gradient_checkpointing true" in message
    assert f"musubi_blocks_to_swap 50: the transformer has {LTX2_BLOCKS} blocks" in message


@pytest.mark.parametrize("keys", [dict(enable_group_offload=True, group_offload_blocks_per_group=2),
                                  dict(musubi_blocks_to_swap=1)])
def test_a_planned_swap_trains_the_plain_runs_lora(
    lora_transformer: Callable[..., Any], connectors: Any, text_max_length: int, tmp_path: Path,
    keys: dict[str, Any],
) -> None:
    examples = make_examples(4)

    def train_steps(transformer: Any, output_dir: Path) -> dict[str, torch.Tensor]:
        batches = BucketBatches({BUCKET: [(key, 0) for key in examples]}, batch_size=2, seed=8)
        settings = TrainSettings(output_dir=output_dir, max_steps=3, text_max_length=text_max_length, model="tiny",
                                 learning_rate=1e-2, seed=5)
        train(transformer, MemorySource(examples), batches, connectors=connectors, settings=settings)
        return lora_state_dict(transformer)

    plain = train_steps(lora_transformer(dropout=0.1), tmp_path / "plain")
    transformer = lora_transformer(dropout=0.1)
    blocks = len(transformer.transformer_blocks)
    plan = swap_plan(num_blocks=blocks, **keys)
    swapper = plan.attach(transformer, "cpu")
    swapped = train_steps(transformer, tmp_path / "swapped")

    assert swapper.swapped == tuple(range(blocks - plan.blocks_to_swap, blocks))
    assert all(torch.equal(plain[key], swapped[key]) for key in plain)
