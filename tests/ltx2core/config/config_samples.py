"""Sample blocks for the config tests (imported by the test modules beside it)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

VIDEO_DIR = "datasets/videos"

VIDEO_BLOCK: dict[str, Any] = {
    "id": "my-video-dataset",
    "type": "local",
    "dataset_type": "video",
    "instance_data_dir": VIDEO_DIR,
    "caption_strategy": "textfile",
    "resolution": 512,
    "video": {"num_frames": 57, "min_frames": 57, "frame_rate": 25, "bucket_strategy": "aspect_ratio"},
    "repeats": 10,
}
TEXT_EMBEDS_BLOCK: dict[str, Any] = {
    "id": "text-embeds",
    "type": "local",
    "dataset_type": "text_embeds",
    "default": True,
    "cache_dir": "cache/text/ltxvideo2",
}
TRAIN_CONFIG: dict[str, Any] = {
    "model_family": "ltxvideo2",
    "model_flavour": "2.0",
    "pretrained_model_name_or_path": "tiny",
    "max_train_steps": 10,
    "validation_resolution": "64x64",
    "validation_num_video_frames": 9,
}


def video_block(**changes: Any) -> dict[str, Any]:
    """VIDEO_BLOCK with top-level keys replaced; `video={...}` merges into the video block."""
    block = copy.deepcopy(VIDEO_BLOCK)
    block["video"].update(changes.pop("video", {}))
    block.update(changes)
    return block


def write_json(path: str | Path, data: Any) -> str:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(data, indent=2))
    return str(path)
