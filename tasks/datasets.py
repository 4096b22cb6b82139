"""Reading one dataset's rows: its files, their videos, its samples (helpers shared by the stages)."""

from __future__ import annotations

from pathlib import Path

from storage.sql import sql_eq, sql_in
from storage.store import Store


def folder_prefix(folder: str) -> str:
    return str(folder).rstrip("/") + "/"


def dataset_videos(store: Store, folder: str) -> dict[str, str]:
    """video_id -> path for every video under `folder`; duplicates (same bytes) count once, first path wins."""
    prefix = folder_prefix(folder)
    out: dict[str, str] = {}
    rows = sorted(store.read("files", ["path", "video_id"]).to_pylist(), key=lambda r: r["path"])
    for r in rows:
        if r["path"].startswith(prefix):
            out.setdefault(r["video_id"], r["path"])
    return out


def references_of(store: Store, dataset) -> dict[str, dict]:
    """IC-LoRA: clip path -> its reference video (video_id, path, width, height) in the dataset's reference_dir,
    paired by the path under the folder without its extension (SimpleTuner's reference_strict). {} without one."""
    if dataset.reference_dir is None:
        return {}
    here, there = Path(str(dataset.instance_data_dir)), Path(str(dataset.reference_dir))
    candidates = dataset_videos(store, str(there))
    # readable videos only: a sound file of the same name (a.wav beside a.mp4) is no reference
    videos = {r["video_id"]: r for r in store.read(
        "videos", ["video_id", "path", "width", "height"],
        where=f"{sql_in('video_id', list(candidates))} AND error IS NULL AND width IS NOT NULL").to_pylist()
    } if candidates else {}
    by_stem = {str(Path(path).relative_to(there).with_suffix("")): videos[vid]
               for vid, path in candidates.items() if vid in videos}
    pairs = {}
    for path in dataset_videos(store, str(here)).values():
        reference = by_stem.get(str(Path(path).relative_to(here).with_suffix("")))
        if reference is not None:
            pairs[path] = reference
    return pairs


def samples_of(store: Store, dataset_id: str, columns: list[str] | None = None, kept_only: bool = False) -> list[dict]:
    where = sql_eq("dataset_id", dataset_id) + (" AND kept" if kept_only else "")
    return store.read("samples", columns, where=where).to_pylist()


PLAN_FIELDS = ("start_frame", "num_frames", "frame_rate", "resize_width", "resize_height", "crop_left", "crop_top",
               "width", "height")


def clip_plan(sample: dict):
    """How to cut a bucketed sample from its video (the bucket stage's columns of `samples`) as a ClipPlan."""
    from ltx2core.media.decode import ClipPlan  # torch and PyAV: not on the `ltx2 status` / no-op path

    return ClipPlan(**{f: sample[f] for f in PLAN_FIELDS})


def reference_plan(plan, reference: dict, width: int, height: int):
    """An IC-LoRA reference (a references_of row) cut like its clip's `plan` -- the same frames -- at `width` x
    `height`: covered keeping its aspect, then centre-cropped."""
    from dataclasses import replace

    from ltx2core.data.buckets import cover

    rw, rh, left, top = cover(reference["width"], reference["height"], width, height)
    return replace(plan, width=width, height=height, resize_width=rw, resize_height=rh, crop_left=left, crop_top=top)


def batches(rows: list, size: int):
    for i in range(0, len(rows), size):
        yield rows[i:i + size]
