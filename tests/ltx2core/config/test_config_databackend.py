"""multidatabackend.json: LTX-2 rules, SimpleTuner spellings, one error listing every problem.

Run: .venv/bin/pytest tests/ltx2core/config -q
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from config_samples import TEXT_EMBEDS_BLOCK, VIDEO_DIR, video_block, write_json
from pydantic import ValidationError

from ltx2core.config import ConfigError, TextEmbedsDataset, VideoDataset, VideoOptions, load_databackend

FILE = "config/multidatabackend.json"
NAME = "dataset 'my-video-dataset'"
WHERE = f"{FILE}: {NAME}: "


def load(*blocks: dict, check_paths: bool = True) -> tuple[list, list[str]]:
    return load_databackend(write_json(FILE, list(blocks)), check_paths=check_paths)


def problems(*blocks: dict) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load(*blocks)
    return caught.value.problems


def test_quickstart_dataset_loads_with_absolute_paths(workdir: Path) -> None:
    datasets, warnings = load(video_block(), TEXT_EMBEDS_BLOCK)

    video, embeds = datasets
    assert isinstance(video, VideoDataset) and isinstance(embeds, TextEmbedsDataset)
    assert video.instance_data_dir == workdir / VIDEO_DIR
    assert embeds.cache_dir == workdir / "cache/text/ltxvideo2"
    assert (video.video.num_frames, video.video.min_frames, video.repeats) == (57, 57, 10)
    assert warnings == []


@pytest.mark.parametrize(
    ("video", "line"),
    [
        ({"num_frames": 61, "min_frames": 65}, "video.num_frames 61 is not 8k+1: use 57 or 65"),
        ({"min_frames": 61}, "video.min_frames 61 is not 8k+1: use 57 or 65"),
        ({"max_frames": 130}, "video.max_frames 130 is not 8k+1: use 129 or 137"),
        ({"num_frames": 0, "min_frames": None}, "video.num_frames 0 must be at least 1 (use 1, 9, 17, ...)"),
    ],
)
def test_frame_counts_must_be_8k_plus_1(workdir: Path, video: dict, line: str) -> None:
    assert problems(video_block(video=video)) == [WHERE + line]


def test_min_frames_defaults_to_num_frames(workdir: Path) -> None:
    (dataset,), _ = load(video_block(video={"num_frames": 121, "min_frames": None}))
    assert dataset.video.min_frames == 121


@pytest.mark.parametrize(
    ("video", "start"),
    [
        ({"num_frames": 57, "min_frames": 49}, "video.min_frames 49 is below num_frames 57"),
        ({"num_frames": 57, "min_frames": 65, "max_frames": 57}, "video.max_frames 57 is below min_frames 65"),
        ({"num_frames": None}, "video.num_frames is required with bucket_strategy 'aspect_ratio'"),
    ],
)
def test_inconsistent_lengths_rejected(workdir: Path, video: dict, start: str) -> None:
    (line,) = problems(video_block(video=video))
    assert line.startswith(WHERE + start)


@pytest.mark.parametrize(
    ("interval", "fix"),
    [(12, "use 8 or 16"), (4, "use 8"), (0, "use 8"), (-8, "use 8")],
)
def test_frame_interval_must_be_a_positive_multiple_of_8(workdir: Path, interval: int, fix: str) -> None:
    block = video_block(video={"bucket_strategy": "resolution_frames", "frame_interval": interval})
    assert problems(block) == [WHERE + f"video.frame_interval {interval} is not a positive multiple of 8: {fix}"]


def test_resolution_frames_needs_no_num_frames(workdir: Path) -> None:
    block = video_block(video={"num_frames": None, "min_frames": 49, "max_frames": 121, "frame_interval": 16})
    block["video"]["bucket_strategy"] = "resolution_frames"
    (dataset,), _ = load(block)
    assert (dataset.video.num_frames, dataset.video.min_frames, dataset.video.frame_interval) == (None, 49, 16)


@pytest.mark.parametrize(
    ("resolution_type", "resolution", "line"),
    [
        ("pixel", 500, "resolution 500 is not a multiple of 32: use 480 or 512"),
        ("pixel_area", 700, "resolution 700 is not a multiple of 32: use 672 or 704"),
        ("pixel", 16, "resolution 16 is not a multiple of 32: use 32"),
        ("pixel", 512.5, "resolution 512.5 must be whole pixels with resolution_type 'pixel'"),
        ("area", 0, "resolution 0 megapixels must be above 0"),
    ],
)
def test_resolution_on_the_32_pixel_grid(workdir: Path, resolution_type: str, resolution: float, line: str) -> None:
    (problem,) = problems(video_block(resolution=resolution, resolution_type=resolution_type))
    assert problem.startswith(WHERE + line)


def test_area_resolution_is_megapixels(workdir: Path) -> None:
    (dataset,), _ = load(video_block(resolution=0.39, resolution_type="area"))
    assert dataset.resolution == 0.39


def test_missing_folder_is_named_with_the_absolute_path_tried(workdir: Path) -> None:
    (line,) = problems(video_block(instance_data_dir="datasets/nope"))
    assert line.startswith(f"{WHERE}instance_data_dir 'datasets/nope' -> {workdir / 'datasets/nope'}: no such folder")


def test_check_paths_false_skips_existence_but_still_resolves(workdir: Path) -> None:
    (dataset,), _ = load(video_block(instance_data_dir="elsewhere/videos"), check_paths=False)
    assert dataset.instance_data_dir == workdir / "elsewhere/videos"


def test_disabled_dataset_needs_no_folder(workdir: Path) -> None:
    datasets, _ = load(video_block(), video_block(id="old", instance_data_dir="gone", disable=True))
    assert [d.disabled for d in datasets] == [False, True]


@pytest.mark.parametrize(
    ("changes", "line"),
    [
        ({"caption_strategy": "instanceprompt"}, "instance_prompt is required with caption_strategy 'instanceprompt'"),
        ({"caption_strategy": "parquet"}, "parquet is required with caption_strategy 'parquet'"),
        ({"type": "aws"}, "aws_bucket_name is required with type 'aws'"),
        ({"type": "huggingface"}, "type \"huggingface\": Input should be 'local' or 'aws'"),
    ],
)
def test_caption_and_backend_requirements(workdir: Path, changes: dict, line: str) -> None:
    (problem,) = problems(video_block(**changes))
    assert problem.startswith(WHERE + line)


def test_caption_table_must_exist(workdir: Path) -> None:
    block = video_block(caption_strategy="jsonl", parquet={"path": "captions.jsonl"})
    (problem,) = problems(block)
    assert problem.startswith(f"{WHERE}parquet.path {workdir / 'captions.jsonl'}: no such file")


def test_parquet_captions_load_when_the_table_exists(workdir: Path) -> None:
    (workdir / "captions.parquet").write_bytes(b"PAR1")
    (dataset,), _ = load(video_block(caption_strategy="parquet", parquet={"path": "captions.parquet"}))
    assert dataset.parquet.path == workdir / "captions.parquet"
    assert (dataset.parquet.caption_column, dataset.parquet.filename_column) == ("caption", "filename")


def test_aws_dataset_is_kept_with_a_warning(workdir: Path) -> None:
    block = video_block(type="aws", aws_bucket_name="videos", aws_access_key_id="AKIAKEYID",
                        aws_secret_access_key="s3cr3t")
    del block["instance_data_dir"]
    (dataset,), warnings = load(block)
    assert dataset.aws_bucket_name == "videos" and "s3cr3t" not in repr(dataset)
    # What the stages record as their inputs (stage_runs) holds neither credential.
    recorded = json.dumps(dataset.model_dump(mode="json"))
    assert "s3cr3t" not in recorded and "AKIAKEYID" not in recorded
    assert warnings == [f"{WHERE}type 'aws' is kept but not read yet: probing reads local folders only"]


def test_image_and_untyped_datasets_are_skipped_with_a_warning(workdir: Path) -> None:
    image = {"id": "photos", "dataset_type": "image", "instance_data_dir": "photos", "resolution": 1024}
    untyped = {"id": "legacy", "instance_data_dir": "legacy"}
    datasets, warnings = load(image, video_block(), untyped)
    assert [d.id for d in datasets] == ["my-video-dataset"]
    assert warnings == [
        f"{FILE}: dataset 'photos': image datasets are not supported yet; skipped",
        f"{FILE}: dataset 'legacy': no dataset_type, which SimpleTuner reads as image: image datasets are not "
        "supported yet; skipped",
    ]


def test_a_file_without_video_datasets_is_rejected(workdir: Path) -> None:
    image = {"id": "photos", "dataset_type": "image"}
    assert problems(image, TEXT_EMBEDS_BLOCK) == [
        f'{FILE}: no enabled video dataset: add a block with "dataset_type": "video"'
    ]


def test_unknown_dataset_type_is_rejected(workdir: Path) -> None:
    (line,) = problems(video_block(dataset_type="vidoe"))
    assert line.startswith(f"{WHERE}dataset_type 'vidoe' is not one of video, text_embeds")


def test_unknown_keys_are_named_in_one_warning(workdir: Path) -> None:
    block = video_block(minimum_image_size=512, video={"is_i2v": True, "fps": 24})
    embeds = dict(TEXT_EMBEDS_BLOCK, write_batch_size=128)
    (video, _), warnings = load(block, embeds)
    assert video.video.is_i2v is True
    assert warnings == [
        f"{FILE}: ignored 3 keys this trainer does not use: dataset 'my-video-dataset': video.fps, "
        "dataset 'my-video-dataset': minimum_image_size, dataset 'text-embeds': write_batch_size"
    ]


def test_dataset_level_bucket_strategy_moves_into_the_video_block(workdir: Path) -> None:
    block = video_block(bucket_strategy="resolution_frames", video={"frame_interval": 8})
    del block["video"]["bucket_strategy"]
    (dataset,), warnings = load(block)
    assert dataset.video.bucket_strategy == "resolution_frames" and warnings == []
    clash = video_block(bucket_strategy="resolution_frames")
    assert problems(clash) == [
        f'{WHERE}bucket_strategy "resolution_frames" disagrees with video.bucket_strategy "aspect_ratio": keep one'
    ]


def test_dataset_level_audio_block_moves_into_the_video_block(workdir: Path) -> None:
    (dataset,), warnings = load(video_block(audio={"sample_rate": 16000, "channels": 1, "auto_split": True}))
    assert (dataset.video.audio.sample_rate, dataset.video.audio.channels) == (16000, 1)
    assert warnings == [f"{FILE}: ignored 1 key this trainer does not use: {NAME}: video.audio.auto_split"]
    assert problems(video_block(audio={"channels": 1}, video={"audio": {"channels": 2}})) == [
        f'{WHERE}audio {{"channels": 1}} disagrees with video.audio {{"channels": 2}}: keep one'
    ]


def test_ids_must_be_unique_and_one_default_text_embeds(workdir: Path) -> None:
    second_embeds = dict(TEXT_EMBEDS_BLOCK, id="more-embeds")
    assert problems(video_block(), video_block(), TEXT_EMBEDS_BLOCK, second_embeds) == [
        f"{WHERE}id is used by 2 datasets: ids must be unique",
        f"{FILE}: text_embeds datasets ['text-embeds', 'more-embeds'] all set default: true; keep one",
    ]


def test_every_problem_of_every_block_is_reported_together(workdir: Path) -> None:
    lines = problems(
        video_block(resolution=500, repeats=-1, video={"num_frames": 61, "min_frames": 65}),
        video_block(id="second", instance_data_dir="missing"),
        "not a block",
    )
    assert lines[0] == f"{WHERE}resolution 500 is not a multiple of 32: use 480 or 512"
    assert lines[1] == f"{WHERE}repeats -1: Input should be greater than or equal to 0"
    assert lines[2] == f"{WHERE}video.num_frames 61 is not 8k+1: use 57 or 65"
    assert lines[3].startswith(f"{FILE}: dataset 'second': instance_data_dir 'missing' -> ")
    assert lines[4] == f"{FILE}: dataset #3: expected a JSON object, got a string"
    assert len(lines) == 5


def test_missing_required_keys_are_named(workdir: Path) -> None:
    block = video_block()
    del block["resolution"], block["video"]
    assert problems(block) == [f"{WHERE}resolution is required", f"{WHERE}video is required"]


def test_string_values_from_simpletuner_are_coerced(workdir: Path) -> None:
    block = video_block(repeats="2", disabled="false", resolution="512",
                        video={"num_frames": "121", "min_frames": "121"})
    (dataset,), _ = load(block)
    assert (dataset.repeats, dataset.disabled, dataset.resolution, dataset.video.num_frames) == (2, False, 512, 121)


def test_simpletuner_s_crop_keys_are_named_as_ignored(workdir: Path) -> None:
    """The bucket keeps each clip's aspect and crops only its rounding to 32: there is no crop to choose."""
    _, warnings = load(video_block(crop=True, crop_style="face", crop_aspect="preserve"), TEXT_EMBEDS_BLOCK)
    assert warnings == [f"{FILE}: ignored 3 keys this trainer does not use: {NAME}: crop, {NAME}: crop_style, "
                        f"{NAME}: crop_aspect"]


def test_models_refuse_unknown_keys_inside_the_project() -> None:
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        VideoOptions(num_frames=9, fps=25)


def test_a_misspelt_dataset_key_gets_a_guess_from_its_own_block(workdir: Path) -> None:
    _, warnings = load(video_block(reslution=512, video={"min_frame": 9}), TEXT_EMBEDS_BLOCK)
    assert warnings == [f"{FILE}: ignored 2 keys this trainer does not use: {NAME}: video.min_frame (did you mean "
                        f"min_frames?), {NAME}: reslution (did you mean resolution?)"]
