"""The settings users change most between runs, given on top of the config files.

The Prefect UI renders this model as a form on every deployment and `ltx2 run` takes the same values as
flags, so a run can try another resolution or learning rate without editing JSON. They are applied to the
files' contents before validation, so a bad value is reported like a bad key in the file, and the
fingerprints of every stage see the effective value (a new resolution re-buckets and re-encodes; a new
learning rate only retrains).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ltx2core.models.scale import LTX2


class Overrides(BaseModel):
    """Leave a field empty to keep the config files' value."""

    model_config = ConfigDict(extra="forbid")

    resolution: int | None = Field(
        None, gt=0, description="Every video dataset's resolution (short edge in px, multiple of 32)")
    num_frames: int | None = Field(
        None, gt=0, description="Frames per training clip, 8k+1 (min_frames is raised to it when lower)")
    max_train_steps: int | None = Field(None, ge=1, description="Optimizer steps")
    lora_rank: int | None = Field(None, ge=1, description="LoRA rank")
    learning_rate: float | None = Field(None, gt=0, description="Peak learning rate")

    def is_empty(self) -> bool:
        return not self.model_dump(exclude_none=True)

    def describe(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.model_dump(exclude_none=True).items())

    def apply_to_config(self, data: dict[str, Any]) -> dict[str, Any]:
        """config.json contents with the training overrides set (a new dict)."""
        values = self.model_dump(include={"max_train_steps", "lora_rank", "learning_rate"}, exclude_none=True)
        return data | values

    def apply_to_video_dataset(self, block: dict[str, Any]) -> dict[str, Any]:
        """One video dataset block (its `video` options already gathered) with the overrides set (a new dict)."""
        block = dict(block)
        if self.resolution is not None:
            block["resolution"] = self.resolution
            if block.get("resolution_type", "pixel") != "pixel":
                block["resolution_type"] = "pixel"  # the override is a short edge in px
        # an invalid frame count is reported once, as the override's; min/max are only lifted for a valid one
        if self.num_frames is not None and isinstance(block.get("video", {}), dict):
            video = dict(block.get("video", {}))
            video["num_frames"] = self.num_frames
            for key in ("min_frames", "max_frames"):  # keep the length window able to hold one clip
                if isinstance(video.get(key), int) and video[key] < self.num_frames and LTX2.frames_ok(self.num_frames):
                    video[key] = self.num_frames
            block["video"] = video
        return block
