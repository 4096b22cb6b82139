"""What each stage still has to do, read from the tables: the one place that decides "up to date".

The stages use it to pick their work, `ltx2 status` to count it, and `ltx2 run` to skip starting an
orchestrator when nothing is pending. The keys it compares are ltx2core/keys.py's; here are only the queries.
It imports neither Prefect nor any model code, so it is fast.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from ltx2core.config.databackend import VideoDataset
from ltx2core.config.train import TrainConfig
from ltx2core.data import captions as caption_sources
from ltx2core.data.discover import FileEntry, list_media
from ltx2core.keys import (
    LatentModel,
    TextModel,
    bucket_spec,
    caption_source,
    clip_spec,
    filter_fingerprint,
    has_validation_prompts,
    latent_key,
    latent_model,
    max_steps,
    model_source,
    probe_folders,
    run_id,
    sample_id,
    text_model,
    train_batches,
)
from storage.files import read_parquet_rows
from storage.sql import sql_eq
from storage.store import Store
from tasks.datasets import dataset_videos, folder_prefix, references_of, samples_of

BUCKET_COLUMNS = ("bucket", "width", "height", "num_frames", "start_frame", "frame_rate", "resize_width",
                  "resize_height", "crop_left", "crop_top", "bucket_fp")


# ---- probe


@dataclass(frozen=True)
class ProbeWork:
    todo: list[FileEntry]  # new or changed files
    gone: list[str]  # paths in `files` that are no longer on disk
    current: int  # files whose row is up to date


def probe_work(store: Store, folders: list[str], force: bool = False) -> ProbeWork:
    listing = [e for folder in folders for e in list_media(folder)]
    known = {r["path"]: (r["size"], r["mtime_ns"])
             for r in store.read("files", ["path", "size", "mtime_ns"]).to_pylist()}
    prefixes = tuple(folder_prefix(f) for f in folders)
    on_disk = {e.path for e in listing}
    gone = [p for p in known if p.startswith(prefixes) and p not in on_disk]
    todo = [e for e in listing if force or known.get(e.path) != (e.size, e.mtime_ns)]
    return ProbeWork(todo=todo, gone=gone, current=len(listing) - len(todo))


# ---- filter


@dataclass(frozen=True)
class FilterWork:
    wanted: dict[str, tuple[str, str]]  # sample_id -> (video_id, path)
    stale: list[str]  # sample ids to (re)judge
    gone: list[str]  # sample ids whose video left the folder, or whose clip spec changed


def filter_work(store: Store, dataset: VideoDataset, force: bool = False) -> FilterWork:
    row_fp, spec = filter_fingerprint(dataset), clip_spec(dataset)
    wanted = {sample_id(dataset.id, vid, spec): (vid, path)
              for vid, path in dataset_videos(store, str(dataset.instance_data_dir)).items()}
    current = {r["sample_id"]: r for r in samples_of(store, dataset.id, ["sample_id", "filter_fp", "path"])}
    stale = [sid for sid, (_, path) in wanted.items()
             if force or sid not in current or (current[sid]["filter_fp"], current[sid]["path"]) != (row_fp, path)]
    return FilterWork(wanted, stale, [sid for sid in current if sid not in wanted])


# ---- bucket


@dataclass(frozen=True)
class BucketWork:
    kept: list[dict]  # kept sample rows
    stale: list[dict]  # kept rows whose bucket is missing or stale
    dropped: list[dict]  # rejected rows that still carry a bucket


def bucket_work(store: Store, dataset: VideoDataset, force: bool = False) -> BucketWork:
    fp = bucket_spec(dataset).fingerprint
    rows = samples_of(store, dataset.id)
    kept = [r for r in rows if r["kept"]]
    return BucketWork(kept, [r for r in kept if force or r["bucket_fp"] != fp],
                      [r for r in rows if not r["kept"] and r["bucket"] is not None])


# ---- captions


@dataclass(frozen=True)
class CaptionWork:
    kept: list[dict]  # kept sample rows (sample_id, path)
    todo: list[tuple[dict, caption_sources.CaptionSource]]  # whose caption is missing or stale


def caption_work(store: Store, dataset: VideoDataset, strategy=None, force: bool = False) -> CaptionWork:
    strategy = strategy or caption_source(dataset, read_parquet_rows)
    current = store.column_map("captions", "source_fp", where=sql_eq("dataset_id", dataset.id))
    kept = samples_of(store, dataset.id, ["sample_id", "path"], kept_only=True)
    sources = ((s, strategy.source(s["path"])) for s in kept)
    return CaptionWork(kept, [(s, src) for s, src in sources if force or current.get(s["sample_id"]) != src.fp])


# ---- all stages


def nothing_pending(store: Store, config, datasets: list[VideoDataset], stages: list[str]) -> bool:
    """True when every chosen stage is up to date: a rerun would do no work."""

    def source():
        return model_source(config)

    def latents_current(d: VideoDataset) -> bool:
        return not latent_work(store, d, latent_model(source(), config)).todo

    checks = {
        "probe": lambda: not (w := probe_work(store, probe_folders(datasets))).todo
        and not w.gone,
        "filter": lambda: all(not (w := filter_work(store, d)).stale and not w.gone for d in datasets),
        "bucket": lambda: all(not (w := bucket_work(store, d)).stale and not w.dropped for d in datasets),
        "captions": lambda: all(not caption_work(store, d).todo for d in datasets),
        "text-embeds": lambda: not text_embed_work(store, wanted_captions(store, datasets), text_model(source())).todo,
        "latents": lambda: all(latents_current(d) for d in datasets),
        "train": lambda: train_current(store, config, datasets, source()),
        "validate": lambda: validated(store, config),
    }
    return all(checks[s]() for s in stages)


# ---- text-embeds


def wanted_captions(store: Store, datasets: list[VideoDataset]) -> list[str]:
    """Distinct captions of the kept samples of `datasets` (identical captions are encoded once)."""
    from storage.sql import sql_in

    kept = {s["sample_id"] for d in datasets for s in samples_of(store, d.id, ["sample_id"], kept_only=True)}
    rows = store.read("captions", ["sample_id", "caption"],
                      where=sql_in("dataset_id", [d.id for d in datasets]) + " AND caption IS NOT NULL")
    return sorted({r["caption"] for r in rows.to_pylist() if r["sample_id"] in kept})


@dataclass(frozen=True)
class TextEmbedWork:
    wanted: dict[str, str]  # key -> caption
    todo: dict[str, str]  # key -> caption, not yet cached


def text_embed_work(store: Store, captions: list[str], model: TextModel, force: bool = False) -> TextEmbedWork:
    wanted = {model.key(c): c for c in captions}
    present = set() if force else store.keys("text_embeds")
    return TextEmbedWork(wanted, {k: c for k, c in wanted.items() if k not in present})


# ---- latents


@dataclass(frozen=True)
class LatentWork:
    wanted: dict[str, dict]  # key -> the first kept, bucketed sample row that needs it
    todo: dict[str, dict]  # the keys not yet cached


def latent_work(store: Store, dataset: VideoDataset, model: LatentModel, force: bool = False) -> LatentWork:
    rows = [r for r in samples_of(store, dataset.id, kept_only=True) if r["bucket"] is not None]
    references = references_of(store, dataset)
    wanted: dict[str, dict] = {}
    for r in sorted(rows, key=lambda r: r["sample_id"]):
        reference = references.get(r["path"])
        wanted.setdefault(latent_key(r, dataset, model, reference and reference["video_id"]),
                          r | {"reference": reference})
    present = set() if force else store.keys("latents")  # failed clips too: `--force latents` retries them
    return LatentWork(wanted, {k: r for k, r in wanted.items() if k not in present})


# ---- train


def train_steps_done(config) -> int:
    from ltx2core.training.checkpoint import latest_checkpoint

    latest = latest_checkpoint(Path(config.output_dir))
    return int(latest.name.rsplit("-", 1)[1]) if latest else 0


def training_refs(store: Store, config, datasets: list[VideoDataset], source) -> tuple[dict, dict]:
    """(sample_id -> (latents key, text key, fps), bucket -> [(sample_id, repeats)]) for every trainable sample."""
    text = text_model(source)
    cached_latents = store.keys("latents", where="error IS NULL")
    cached_text = store.keys("text_embeds")
    lat_model = latent_model(source, config)
    refs, buckets = {}, defaultdict(list)
    for d in datasets:
        captions = store.column_map("captions", "caption", where=sql_eq("dataset_id", d.id))
        references = references_of(store, d)
        for s in samples_of(store, d.id, kept_only=True):
            caption = captions.get(s["sample_id"])
            if s["bucket"] is None or caption is None:
                continue
            reference = references.get(s["path"])
            lat, txt = latent_key(s, d, lat_model, reference and reference["video_id"]), text.key(caption)
            if lat in cached_latents and txt in cached_text:
                refs[s["sample_id"]] = (lat, txt, s["frame_rate"])
                buckets[s["bucket"]].append((s["sample_id"], s["repeats"]))
    return refs, dict(buckets)


def train_current(store: Store, config: TrainConfig, datasets: list[VideoDataset], source) -> bool:
    """The run's latest checkpoint is at its last step (a resumable run is not current)."""
    done = train_steps_done(config)
    if config.max_train_steps:
        return done >= config.max_train_steps
    refs, buckets = training_refs(store, config, datasets, source)
    return bool(refs) and done >= train_total(config, buckets)


def train_total(config: TrainConfig, buckets: dict[str, list[tuple[str, int]]]) -> int:
    """The run's optimizer steps on this machine's processes (`num_processes` resolved for its device)."""
    from ltx2core.models.runtime import pick_device
    from ltx2core.training.distributed import process_count

    return max_steps(config, train_batches(config, buckets), process_count(config.num_processes, pick_device()))


def validated(store: Store, config) -> bool:
    """The run's latest checkpoint has LoRA samples (a changed prompt needs `--force validate`)."""
    if not has_validation_prompts(config):
        return True  # nothing to validate
    rows = store.read("checkpoints", ["step"], where=sql_eq("run_id", run_id(config))).to_pylist()
    if not rows:
        return False
    step = max(r["step"] for r in rows)
    return store.count("validations", where=sql_eq("run_id", run_id(config)) + f" AND step = {step} AND lora") > 0
