"""Checkpoints land whole or not at all, resume only with the same settings, and carry every random stream."""

from __future__ import annotations

import errno
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from ltx2core.training import checkpoint as checkpoint_module
from ltx2core.training.checkpoint import (
    CheckpointMismatch,
    latest_checkpoint,
    load_checkpoint,
    prune_checkpoints,
    save_checkpoint,
)
from ltx2core.training.lora import lora_spec_of, lora_state_dict
from ltx2core.training.optim import make_lr_scheduler, make_optimizer

FINGERPRINT = {"learning_rate": 1e-4, "lora_rank": 4, "lora_targets": ["attn1.to_q", "attn2.to_q"], "seed": 42}


@pytest.fixture
def trainer_state(lora_transformer: Callable[..., Any]) -> dict[str, Any]:
    """A LoRA transformer with an optimizer that has taken one step (so it has state to save)."""
    transformer = lora_transformer()
    params = [p for p in transformer.parameters() if p.requires_grad]
    optimizer = make_optimizer("adamw", params, learning_rate=1e-3)
    scheduler = make_lr_scheduler("linear", optimizer, warmup_steps=2, total_steps=10)
    for param in params:
        param.grad = torch.ones_like(param)
    optimizer.step()
    scheduler.step()
    return dict(transformer=transformer, optimizer=optimizer, scheduler=scheduler)


def _save(root: Path, step: int, state: dict[str, Any], fingerprint: dict[str, Any] = FINGERPRINT) -> Path:
    transformer = state["transformer"]
    return save_checkpoint(
        root, step=step, lora_state=lora_state_dict(transformer), lora_spec=lora_spec_of(transformer),
        flavour="2.0", optimizer=state["optimizer"], lr_scheduler=state["scheduler"],
        data_position={"epoch": 0, "index": step}, config_fingerprint=fingerprint,
    )


def _disk_full(*args: Any, **kwargs: Any) -> None:
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_save_that_fails_midway_leaves_the_previous_checkpoint_intact(
    trainer_state: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = _save(tmp_path, 1, trainer_state)
    saved = load_checkpoint(first)
    # The LoRA files are already written when the training state fails: a disk that fills up mid-save.
    monkeypatch.setattr(checkpoint_module.torch, "save", _disk_full)
    for step in (2, 1):  # a new step, and the same step saved again over a complete checkpoint
        with pytest.raises(OSError, match="No space left"):
            _save(tmp_path, step, trainer_state)
        assert latest_checkpoint(tmp_path) == first
        assert [p.name for p in tmp_path.iterdir()] == [first.name]  # no half-written folder remains
    monkeypatch.undo()

    again = load_checkpoint(latest_checkpoint(tmp_path))
    assert again.step == 1 and again.data_position == {"epoch": 0, "index": 1}
    assert all(torch.equal(again.lora_state[k], v) for k, v in saved.lora_state.items())
    assert again.lora_state.keys() == lora_state_dict(trainer_state["transformer"]).keys()
    assert again.optimizer_state["state"].keys() == saved.optimizer_state["state"].keys()


def test_a_folder_left_by_a_killed_save_is_ignored_then_removed(trainer_state: dict[str, Any], tmp_path: Path) -> None:
    first = _save(tmp_path, 1, trainer_state)
    leftover = tmp_path / ".staging-checkpoint-000002-deadbeef"  # what kill -9 during a save leaves
    leftover.mkdir()
    (leftover / "pytorch_lora_weights.safetensors").write_bytes(b"\x00" * 10)
    assert latest_checkpoint(tmp_path) == first
    second = _save(tmp_path, 2, trainer_state)
    assert latest_checkpoint(tmp_path) == second and not leftover.exists()


def test_resuming_with_other_settings_is_refused_with_each_difference(
    trainer_state: dict[str, Any], tmp_path: Path
) -> None:
    folder = _save(tmp_path, 3, trainer_state)
    load_checkpoint(folder, config_fingerprint=dict(FINGERPRINT))  # the same settings resume
    changed = {**FINGERPRINT, "learning_rate": 2e-4, "lora_rank": 8, "first_frame_p": 0.5}
    del changed["seed"]
    with pytest.raises(CheckpointMismatch) as raised:
        load_checkpoint(folder, config_fingerprint=changed)
    message = str(raised.value)
    for line in ("learning_rate: 0.0001 -> 0.0002", "lora_rank: 4 -> 8", "first_frame_p: <unset> -> 0.5",
                 "seed: 42 -> <unset>"):
        assert line in message
    assert "lora_targets" not in message  # a list saved as JSON still equals the list it was


def test_prune_keeps_the_newest(trainer_state: dict[str, Any], tmp_path: Path) -> None:
    folders = [_save(tmp_path, step, trainer_state) for step in (5, 10, 15)]
    assert prune_checkpoints(tmp_path, 2) == folders[:1]
    assert sorted(p.name for p in tmp_path.iterdir()) == [f.name for f in folders[1:]]
    assert latest_checkpoint(tmp_path) == folders[-1]
