"""The stage names and their order (imports nothing heavy, so the CLI can check arguments fast)."""

from __future__ import annotations

from typing import Literal

Stage = Literal["probe", "filter", "bucket", "captions", "text-embeds", "latents", "train", "validate"]
STAGES: tuple[Stage, ...] = ("probe", "filter", "bucket", "captions", "text-embeds", "latents", "train", "validate")
READS_SOURCE_FILES = {"probe", "captions", "latents"}  # the others run from the store, e.g. on a machine without the videos


def selected(stages: list[str]) -> list[str]:
    """Stages to run, in pipeline order, whatever order they were asked in."""
    return [s for s in STAGES if not stages or s in stages]
