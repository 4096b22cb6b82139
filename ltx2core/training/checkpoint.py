"""Training checkpoints that survive a kill, a full disk or a power cut, and resume exactly.

A checkpoint is a folder `<root>/checkpoint-<step:06d>/`:
  pytorch_lora_weights.safetensors   the LoRA (diffusers format, loads with LTX2Pipeline.load_lora_weights)
  lora_comfyui.safetensors           the same LoRA for ComfyUI (lora.py)
  training_state.pt                  optimizer, LR scheduler, data position (no random state: the loop
                                     seeds every batch's draws from (seed, step, batch), loop.py)
  checkpoint.json                    step, config fingerprint, data position, time (written last)
It is written into a hidden staging folder beside it, every file fsynced, then renamed into place in one
step, so `checkpoint-*` folders are always complete: a crash or an exception during a save leaves the
previous checkpoints as they were (tested by failing a write mid-save). Staging folders a killed process
left behind are ignored by `latest_checkpoint` and removed by the next save.

Resuming compares the saved config fingerprint with the new one and refuses on any difference, listing
each as `key: old -> new`: training on with another rank, learning rate or data would silently be a
different run.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from ltx2core.training.durable import fsync_dir, fsync_file, publish
from ltx2core.training.lora import DIFFUSERS_FILE, LoraSpec, write_lora_files

log = logging.getLogger(__name__)

STATE_FILE = "training_state.pt"
META_FILE = "checkpoint.json"
_NAME = re.compile(r"^checkpoint-(\d+)$")
_STAGING_PREFIX = ".staging-checkpoint-"


class CheckpointMismatch(ValueError):
    """The checkpoint was made by a run with other settings."""


@dataclass(frozen=True)
class Checkpoint:
    folder: Path
    step: int
    lora_state: dict[str, torch.Tensor]  # PEFT keys without adapter name (lora.lora_state_dict)
    optimizer_state: dict[str, Any]
    lr_scheduler_state: dict[str, Any]
    data_position: dict[str, int]
    config_fingerprint: dict[str, Any]
    extra_state: dict[str, Any]  # other trained state (e.g. the CREPA projector); never in the LoRA files


def checkpoint_folder(root: Path, step: int) -> Path:
    return Path(root) / f"checkpoint-{step:06d}"


def save_checkpoint(
    root: Path,
    *,
    step: int,
    lora_state: dict[str, torch.Tensor],
    lora_spec: LoraSpec,
    flavour: str,
    optimizer: torch.optim.Optimizer,
    lr_scheduler: Any,
    data_position: Mapping[str, int],
    config_fingerprint: Mapping[str, Any],
    extra_state: Mapping[str, Any] | None = None,
) -> Path:
    """Write `<root>/checkpoint-<step>` atomically (module docstring); returns the folder."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    _remove_stale_staging(root)
    final = checkpoint_folder(root, step)
    staging = root / f"{_STAGING_PREFIX}{step:06d}-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    try:
        write_lora_files(staging, lora_state, lora_spec, flavour=flavour, comfy=True)
        state = {
            "step": step,
            "optimizer": optimizer.state_dict(),
            "lr_scheduler": lr_scheduler.state_dict(),
            "data_position": dict(data_position),
            "extra": dict(extra_state or {}),
        }
        torch.save(state, staging / STATE_FILE)
        fsync_file(staging / STATE_FILE)
        meta = {
            "step": step,
            "config_fingerprint": _plain(config_fingerprint),
            "data_position": dict(data_position),
            "created_at": datetime.now(UTC).isoformat(),
        }
        (staging / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        fsync_file(staging / META_FILE)
        fsync_dir(staging)
        _replace_folder(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log.info("saved checkpoint step %d to %s", step, final)
    return final


def latest_checkpoint(root: Path) -> Path | None:
    """The complete checkpoint folder with the highest step under `root`, or None."""
    steps = _checkpoints(Path(root))
    return steps[max(steps)] if steps else None


def prune_checkpoints(root: Path, keep: int) -> list[Path]:
    """Delete all but the newest `keep` checkpoints; returns what was deleted."""
    if keep < 1:
        raise ValueError(f"checkpoints_total_limit {keep} must be at least 1")
    steps = _checkpoints(Path(root))
    doomed = [steps[s] for s in sorted(steps)[:-keep]]
    for folder in doomed:
        shutil.rmtree(folder)
    return doomed


def load_checkpoint(folder: Path, *, config_fingerprint: Mapping[str, Any] | None = None) -> Checkpoint:
    """Read a checkpoint; with `config_fingerprint`, refuse one made with other settings (CheckpointMismatch)."""
    folder = Path(folder)
    meta_path = folder / META_FILE
    if not meta_path.is_file():
        raise FileNotFoundError(
            f"{folder} is not a complete checkpoint (no {META_FILE}): point resume_from_checkpoint at a "
            "checkpoint-NNNNNN folder, or 'latest'"
        )
    meta = json.loads(meta_path.read_text())
    if config_fingerprint is not None:
        differences = fingerprint_differences(meta["config_fingerprint"], config_fingerprint)
        if differences:
            raise CheckpointMismatch(
                f"{folder} was trained with other settings:\n  " + "\n  ".join(differences) + "\nrestore these "
                "settings to resume, or start this run again from step 0 (`ltx2 run --force train`, or another "
                "output_dir)"
            )
    state = torch.load(folder / STATE_FILE, map_location="cpu", weights_only=True)
    lora_state = {k.removeprefix("transformer."): v for k, v in load_file(str(folder / DIFFUSERS_FILE)).items()}
    return Checkpoint(
        folder=folder,
        step=int(state["step"]),
        lora_state=lora_state,
        optimizer_state=state["optimizer"],
        lr_scheduler_state=state["lr_scheduler"],
        data_position=dict(state["data_position"]),
        config_fingerprint=meta["config_fingerprint"],
        extra_state=state.get("extra", {}),
    )


def fingerprint_differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """`key: old -> new` for every key whose value differs (missing keys read as <unset>)."""
    old, new = _plain(old), _plain(new)
    unset = "<unset>"
    return [
        f"{key}: {old.get(key, unset)} -> {new.get(key, unset)}"
        for key in sorted(old.keys() | new.keys())
        if old.get(key, unset) != new.get(key, unset)
    ]


def _checkpoints(root: Path) -> dict[int, Path]:
    if not root.is_dir():
        return {}
    found = {}
    for folder in root.iterdir():
        match = _NAME.match(folder.name)
        if match and (folder / META_FILE).is_file():
            found[int(match.group(1))] = folder
    return found


def _replace_folder(staging: Path, final: Path) -> None:
    """Rename `staging` to `final`; an existing `final` (the same step saved again) is swapped out first."""
    if not final.exists():
        publish(staging, final)
        return
    # Between these two renames a crash leaves no folder for this step; older checkpoints are untouched.
    retired = final.with_name(f"{_STAGING_PREFIX}old-{final.name}-{uuid.uuid4().hex[:8]}")
    final.rename(retired)
    publish(staging, final)
    shutil.rmtree(retired, ignore_errors=True)


def _remove_stale_staging(root: Path) -> None:
    for folder in root.glob(f"{_STAGING_PREFIX}*"):
        log.warning("removing %s, left by an interrupted checkpoint save", folder)
        shutil.rmtree(folder, ignore_errors=True)


def _plain(values: Mapping[str, Any]) -> dict[str, Any]:
    """JSON round trip, so tuples and lists (or 1 and 1.0 from a file) compare as the file will hold them."""
    return json.loads(json.dumps(dict(values), sort_keys=True))

