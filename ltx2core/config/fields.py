"""Pieces shared by the config models: the strict base, rule errors, paths and frame checks.

Rule errors carry the key they are about so the loader can print its full path
(`video.num_frames 61 is not 8k+1: use 57 or 65`) instead of pydantic's generic wording.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationInfo
from pydantic_core import PydanticCustomError

from ltx2core.models.scale import LTX2

RULE_ERROR = "ltx2_rule"


class StrictModel(BaseModel):
    """Inside the project a misspelt key is a bug: refuse it. The SimpleTuner loader drops and names them first."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


def rule_error(*problems: tuple[str, str]) -> PydanticCustomError:
    """One validation error holding `(key, text)` problems; each `text` starts with its `key`."""
    return PydanticCustomError(
        RULE_ERROR, "{text}", {"text": "; ".join(text for _, text in problems), "problems": list(problems)}
    )


def check_frames(key: str, frames: int | None) -> int | None:
    """Frame counts must be 8k+1 (the VAE's causal first frame + 8 frames per latent frame)."""
    if frames is not None and (problem := LTX2.frames_error(key, frames)):
        raise rule_error((key, problem))
    return frames


def check_size(key: str, pixels: int) -> int:
    if problem := LTX2.size_error(key, pixels):
        raise rule_error((key, problem))
    return pixels


def check_frame_step(key: str, step: int) -> int:
    """A bucket step that is a multiple of the temporal factor keeps 1 + n*step frames at 8k+1."""
    factor = LTX2.temporal
    if step > 0 and step % factor == 0:
        return step
    below = step // factor * factor
    options = f"{factor}" if below < factor else f"{below} or {below + factor}"
    raise rule_error((key, f"{key} {step} is not a positive multiple of {factor}: use {options}"))


def resolve_path(value: str | Path) -> Path:
    """Relative paths are read from the current directory, as SimpleTuner does; models hold absolute paths."""
    return Path(value).expanduser().absolute()


def check_paths_enabled(info: ValidationInfo) -> bool:
    """Loading with `context={"check_paths": False}` skips existence checks (e.g. on a training-only machine)."""
    return bool((info.context or {}).get("check_paths", True))


def missing_path(key: str, raw: Any, path: Path, info: ValidationInfo, *, folder: bool) -> str | None:
    """The problem with a path that must exist, or None (also None when path checks are off)."""
    if not check_paths_enabled(info) or (path.is_dir() if folder else path.is_file()):
        return None
    shown = f"'{raw}' -> {path}" if str(raw) != str(path) else str(path)
    what = "folder" if folder else "file"
    return f"{key} {shown}: no such {what} (relative paths are read from {Path.cwd()})"
