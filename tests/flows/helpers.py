"""A small real dataset and config files for pipeline tests."""

from __future__ import annotations

import json
import shutil
from fractions import Fraction
from pathlib import Path

from ltx2core.media.synth import write_clip

# name -> (width, height, frames, fps, rotation); lengths chosen around min_frames 33 / max_frames 129 at 25 fps
CLIPS = {
    "beach.mp4": (160, 96, 50, 25, 0),  # 50 frames: kept
    "fast.mp4": (96, 96, 60, 50, 0),  # 60 at 50 fps = 30 at 25 fps < 33: rejected although it has 60 frames
    "portrait.mov": (160, 96, 40, 25, 90),  # displayed 96x160: a portrait bucket
    "long.webm": (128, 96, 150, 25, 0),  # 150 > 129: rejected
    "ntsc.mkv": (128, 72, 48, Fraction(30000, 1001), 0),  # 48 at 29.97 = 40 at 25: kept
}
KEPT = {"beach.mp4", "portrait.mov", "ntsc.mkv"}


def make_dataset(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, (name, (w, h, n, fps, rot)) in enumerate(CLIPS.items()):
        write_clip(folder / name, width=w, height=h, num_frames=n, fps=fps, rotation=rot, seed=i)
        (folder / name).with_suffix(".txt").write_text(f"clip {Path(name).stem}", encoding="utf-8")
    shutil.copy(folder / "beach.mp4", folder / "beach_copy.mp4")  # byte-identical: one video, one sample
    (folder / "beach_copy.txt").write_text("clip beach copy")
    return folder


def write_configs(root: Path, dataset_dir: Path, block: dict | None = None, **video) -> tuple[Path, Path]:
    """config.json + multidatabackend.json for the tiny model over `dataset_dir`; `block` overrides dataset keys."""
    config = root / "config.json"
    config.write_text(json.dumps({"model_family": "ltxvideo2", "pretrained_model_name_or_path": "tiny",
                                  "output_dir": str(root / "output")}))
    block = {"id": "clips", "type": "local", "dataset_type": "video", "instance_data_dir": str(dataset_dir),
             "caption_strategy": "textfile", "resolution": 64,
             "video": {"num_frames": 33, "min_frames": 33, "max_frames": 129, "frame_rate": 25} | video} | (block or {})
    backend = root / "multidatabackend.json"
    backend.write_text(json.dumps([block, {"id": "text-embeds", "dataset_type": "text_embeds", "default": True,
                                           "type": "local", "cache_dir": "cache/text"}]))
    return config, backend
