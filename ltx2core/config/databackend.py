"""Typed `multidatabackend.json`: SimpleTuner's list of dataset blocks, checked against LTX-2's rules.

Only `video` and `text_embeds` blocks are modelled; the loader skips other dataset types with a warning.
Keys and defaults follow SimpleTuner so a migrating user's file keeps its meaning; what SimpleTuner
rounds silently (frame counts, sizes) is refused here with the nearest valid values.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, Field, SecretStr, ValidationInfo, field_validator, model_validator

from ltx2core.config.fields import (
    StrictModel,
    check_frame_step,
    check_frames,
    check_size,
    missing_path,
    resolve_path,
    rule_error,
)

CaptionStrategy = Literal["textfile", "filename", "instanceprompt", "parquet", "jsonl"]
BucketStrategy = Literal["aspect_ratio", "resolution_frames"]
ResolutionType = Literal["pixel", "pixel_area", "area"]
BackendType = Literal["local", "aws"]
ReferenceFit = Literal["reference_strict", "reference_loose"]  # SimpleTuner's conditioning_type of IC-LoRA references

SUPPORTED_DATASET_TYPES = ("video", "text_embeds", "conditioning")
# SimpleTuner dataset types a file may hold that this project does not train on yet.
SKIPPED_DATASET_TYPES = ("image", "eval", "audio", "image_embeds", "conditioning_image_embeds")


class ParquetCaptions(StrictModel):
    """Captions from a table (`caption_strategy` parquet or jsonl)."""

    path: Path = Field(description="Parquet or JSON-lines file holding one row per video")
    caption_column: str = Field("caption", description="Column with the caption text")
    filename_column: str = Field("filename", description="Column with the video file name")

    @field_validator("path")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        return resolve_path(value)


class AudioOptions(StrictModel):
    """Opt-in audio: with this block the clip's soundtrack is trained too (SimpleTuner's `audio` block)."""

    sample_rate: int = Field(16000, gt=0, description="Hz the soundtrack is resampled to (LTX-2's audio VAE: 16000)")
    channels: Literal[1, 2] = Field(2, description="Channels read from the file (LTX-2's audio VAE is stereo)")
    allow_zero_audio: bool = Field(False, description="Use silence for videos without an audio stream")
    audio_only: bool = Field(False, description="Train the soundtrack alone: no video is decoded or encoded "
                             "(needs audio_video_mode audio_only)")


class VideoOptions(StrictModel):
    """The dataset's `video` block: clip length, length filters and bucketing."""

    num_frames: int | None = Field(
        None, description="Frames per training clip, 8k+1 (121 = 4.84 s at 25 fps); optional with resolution_frames"
    )
    min_frames: int | None = Field(None, description="Shorter videos are skipped; 8k+1, at least num_frames (default)")
    max_frames: int | None = Field(None, description="Longer videos are skipped; 8k+1")
    frame_rate: float = Field(25.0, gt=0, description="Frames per second that frame counts are measured at")
    bucket_strategy: BucketStrategy = Field(
        "aspect_ratio", description="aspect_ratio: group by shape only; resolution_frames: group by WxH@F"
    )
    frame_interval: int | None = Field(
        None, description="resolution_frames only: bucket frame counts are 1 + a multiple of this (a multiple of 8)"
    )
    is_i2v: bool = Field(False, description="Condition on the clean first frame (image-to-video training)")
    audio: AudioOptions | None = Field(None, description="Train the soundtrack too (SimpleTuner: dataset-level block)")

    @field_validator("num_frames", "min_frames", "max_frames")
    @classmethod
    def _check_frames(cls, value: int | None, info: ValidationInfo) -> int | None:
        return check_frames(info.field_name, value)

    @field_validator("frame_interval")
    @classmethod
    def _check_interval(cls, value: int | None) -> int | None:
        return None if value is None else check_frame_step("frame_interval", value)

    @model_validator(mode="after")
    def _check_lengths(self) -> VideoOptions:
        problems = []
        if self.num_frames is None and self.bucket_strategy == "aspect_ratio":
            problems.append(("num_frames", "num_frames is required with bucket_strategy 'aspect_ratio': e.g. 121"))
        if self.min_frames is None:  # SimpleTuner: min_frames defaults to num_frames
            self.min_frames = self.num_frames or 1
        elif self.num_frames is not None and self.min_frames < self.num_frames:
            problems.append(
                ("min_frames", f"min_frames {self.min_frames} is below num_frames {self.num_frames}: a shorter video "
                 f"cannot give a {self.num_frames}-frame clip; set min_frames >= {self.num_frames} or leave it out")
            )
        if self.max_frames is not None and self.max_frames < self.min_frames:
            problems.append(
                ("max_frames", f"max_frames {self.max_frames} is below min_frames {self.min_frames}: every video "
                 f"would be skipped; set max_frames >= {self.min_frames} or leave it out")
            )
        if problems:
            raise rule_error(*problems)
        return self


class VideoDataset(StrictModel):
    """A `dataset_type: video` block."""

    id: str = Field(min_length=1, description="Unique name; keys this dataset's rows, so keep it stable")
    dataset_type: Literal["video"] = "video"
    type: BackendType = Field("local", description="local folder, or aws (S3; kept, not probed yet)")
    disabled: bool = Field(False, validation_alias=AliasChoices("disabled", "disable"), description="Skip it")
    instance_data_dir: Path | None = Field(None, description="Folder of videos (type local)")
    caption_strategy: CaptionStrategy = Field(
        "filename", description="textfile: sibling .txt; filename; instanceprompt; parquet/jsonl: a table"
    )
    instance_prompt: str | None = Field(None, description="Caption of every video (caption_strategy instanceprompt)")
    parquet: ParquetCaptions | None = Field(None, description="Caption table (caption_strategy parquet or jsonl)")
    resolution_type: ResolutionType = Field(
        "pixel", description="pixel: short edge in px; pixel_area: area of a resolution^2 square; area: megapixels"
    )
    resolution: int | float = Field(description="Short edge or square edge in px (multiple of 32), or megapixels")
    repeats: int = Field(0, ge=0, description="Extra passes per epoch: N means each video is seen N+1 times")
    probability: float = Field(1.0, ge=0, description="Relative chance this dataset is sampled")
    cache_dir_vae: Path | None = Field(None, description="SimpleTuner's VAE cache folder")
    conditioning_data: str | None = Field(None, description="IC-LoRA: the id of the conditioning dataset whose "
                                          "videos are this one's references (paired by file name)")
    reference_dir: Path | None = Field(None, description="Set from conditioning_data when the file is loaded")
    reference_fit: ReferenceFit = Field("reference_strict", description="Set from conditioning_data's "
                                        "conditioning_type when the file is loaded")
    video: VideoOptions = Field(description="Clip length, length filters and bucketing")
    aws_bucket_name: str | None = None
    aws_region_name: str | None = None
    aws_endpoint_url: str | None = None
    aws_access_key_id: SecretStr | None = None  # a credential too: never in a log or a recorded stage input
    aws_secret_access_key: SecretStr | None = None
    aws_data_prefix: str | None = None

    @field_validator("caption_strategy", mode="before")
    @classmethod
    def _caption_alias(cls, value: Any) -> Any:
        return "instanceprompt" if value == "instance_prompt" else value  # SimpleTuner's web UI spelling

    @field_validator("instance_data_dir", mode="before")
    @classmethod
    def _check_data_dir(cls, value: Any, info: ValidationInfo) -> Any:
        if value is None or info.data.get("type") != "local":
            return value
        path = resolve_path(value)
        problem = missing_path("instance_data_dir", value, path, info, folder=True)
        if problem and not info.data.get("disabled"):
            raise rule_error(("instance_data_dir", problem))
        return path

    @field_validator("cache_dir_vae")
    @classmethod
    def _absolute(cls, value: Path | None) -> Path | None:
        return None if value is None else resolve_path(value)

    @field_validator("resolution", mode="before")
    @classmethod
    def _check_resolution(cls, value: Any, info: ValidationInfo) -> Any:
        kind = info.data.get("resolution_type")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise rule_error(("resolution", f"resolution {value!r} is not a number")) from None
        if kind == "area":
            if number <= 0:
                raise rule_error(("resolution", f"resolution {value} megapixels must be above 0 (e.g. 0.39 ~ 768x512)"))
            return number
        if kind is None:  # resolution_type itself was invalid; that error is reported
            return value
        if not number.is_integer():
            raise rule_error(
                ("resolution", f"resolution {value} must be whole pixels with resolution_type '{kind}' "
                 "(use resolution_type 'area' for megapixels)")
            )
        return check_size("resolution", int(number))

    @model_validator(mode="after")
    def _check_sources(self, info: ValidationInfo) -> VideoDataset:
        problems = []
        if self.type == "local" and self.instance_data_dir is None:
            problems.append(("instance_data_dir", "instance_data_dir is required with type 'local': the video folder"))
        if self.type == "aws" and not self.aws_bucket_name:
            problems.append(("aws_bucket_name", "aws_bucket_name is required with type 'aws'"))
        if self.caption_strategy == "instanceprompt" and not self.instance_prompt:
            problems.append(
                ("instance_prompt", "instance_prompt is required with caption_strategy 'instanceprompt': the caption")
            )
        if self.caption_strategy in ("parquet", "jsonl") and self.parquet is None:
            problems.append(
                ("parquet", f"parquet is required with caption_strategy '{self.caption_strategy}': "
                 '{"path": "captions.parquet", "caption_column": "caption", "filename_column": "filename"}')
            )
        elif self.caption_strategy in ("parquet", "jsonl") and self.type == "local" and not self.disabled:
            path = self.parquet.path
            if problem := missing_path("parquet.path", path, path, info, folder=False):
                problems.append(("parquet.path", problem))
        if problems:
            raise rule_error(*problems)
        return self


class TextEmbedsDataset(StrictModel):
    """A `dataset_type: text_embeds` block (SimpleTuner's text-encoder cache)."""

    id: str = Field(min_length=1)
    dataset_type: Literal["text_embeds"] = "text_embeds"
    type: BackendType = "local"
    default: bool = Field(False, description="Holds the embeds of validation prompts too")
    disabled: bool = Field(False, validation_alias=AliasChoices("disabled", "disable"))
    cache_dir: Path | None = Field(None, description="Cache folder (local) or prefix (aws)")

    @field_validator("cache_dir", mode="before")
    @classmethod
    def _absolute(cls, value: Any, info: ValidationInfo) -> Any:
        if value in (None, ""):
            return None
        return resolve_path(value) if info.data.get("type") == "local" else value


class ConditioningDataset(StrictModel):
    """A `dataset_type: conditioning` block: IC-LoRA reference videos, named by a video dataset's
    `conditioning_data` and paired with its clips by file name, as SimpleTuner pairs them."""

    id: str = Field(min_length=1)
    dataset_type: Literal["conditioning"] = "conditioning"
    conditioning_type: ReferenceFit = Field(
        "reference_strict", description="How a reference (a.* here for a.mp4) is cut like its clip: reference_strict "
        "keeps the two aligned and refuses a reference of another aspect; reference_loose covers and centre-crops it")
    type: Literal["local"] = "local"
    disabled: bool = Field(False, validation_alias=AliasChoices("disabled", "disable"))
    instance_data_dir: Path = Field(description="Folder of reference videos")

    @field_validator("instance_data_dir", mode="before")
    @classmethod
    def _check_data_dir(cls, value: Any, info: ValidationInfo) -> Any:
        path = resolve_path(value)
        if problem := missing_path("instance_data_dir", value, path, info, folder=True):
            raise rule_error(("instance_data_dir", problem))
        return path


Dataset = VideoDataset | TextEmbedsDataset | ConditioningDataset


def check_dataset_set(datasets: list[Dataset]) -> list[tuple[str | None, str]]:
    """Rules across blocks, as `(dataset id or None, problem)`."""
    problems: list[tuple[str | None, str]] = []
    ids = [d.id for d in datasets]
    for repeated in sorted({i for i in ids if ids.count(i) > 1}):
        problems.append((repeated, f"id is used by {ids.count(repeated)} datasets: ids must be unique"))
    defaults = [d.id for d in datasets if isinstance(d, TextEmbedsDataset) and d.default and not d.disabled]
    if len(defaults) > 1:
        problems.append((None, f"text_embeds datasets {defaults} all set default: true; keep one"))
    if not any(isinstance(d, VideoDataset) and not d.disabled for d in datasets):
        problems.append((None, 'no enabled video dataset: add a block with "dataset_type": "video"'))
    conditioning = {d.id for d in datasets if isinstance(d, ConditioningDataset) and not d.disabled}
    for d in datasets:
        if isinstance(d, VideoDataset) and d.conditioning_data is not None and d.conditioning_data not in conditioning:
            problems.append((d.id, f"conditioning_data {d.conditioning_data!r} names no enabled conditioning dataset "
                             f"(those are {sorted(conditioning) or 'none'}): add a block with \"dataset_type\": "
                             "\"conditioning\" and that id"))
    return problems


def with_references(datasets: list[Dataset]) -> list[Dataset]:
    """Each video dataset with its conditioning dataset's folder as `reference_dir` (IC-LoRA)."""
    refs = {d.id: d for d in datasets if isinstance(d, ConditioningDataset)}
    return [d.model_copy(update={"reference_dir": refs[d.conditioning_data].instance_data_dir,
                                 "reference_fit": refs[d.conditioning_data].conditioning_type})
            if isinstance(d, VideoDataset) and d.conditioning_data in refs else d for d in datasets]
