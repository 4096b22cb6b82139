"""What each stage still has to do, read from the tables: the one place that decides "up to date".

The stages use it to pick their work, `ltx2 status` to count it, and `ltx2 run` to skip starting an
orchestrator when nothing is pending. It imports neither Prefect nor any model code, so it is fast.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from ltx2core.config.databackend import VideoDataset
from ltx2core.data import captions as caption_sources
from ltx2core.data.buckets import BucketSpec
from ltx2core.data.discover import FileEntry, list_videos
from ltx2core.data.fingerprint import fingerprint
from ltx2core.data.frames import FrameLimits
from ltx2core.models.scale import LTX2
from storage.files import read_parquet_rows
from storage.sql import sql_eq
from storage.store import Store
from tasks.datasets import dataset_videos, folder_prefix, samples_of

BUCKET_COLUMNS = ("bucket", "width", "height", "num_frames", "start_frame", "frame_rate", "resize_width",
                  "resize_height", "crop_left", "crop_top", "bucket_fp")


# ---- probe


@dataclass(frozen=True)
class ProbeWork:
    todo: list[FileEntry]  # new or changed files
    gone: list[str]  # paths in `files` that are no longer on disk
    current: int  # files whose row is up to date


def probe_work(store: Store, folders: list[str], force: bool = False) -> ProbeWork:
    listing = [e for folder in folders for e in list_videos(folder)]
    known = {r["path"]: (r["size"], r["mtime_ns"])
             for r in store.read("files", ["path", "size", "mtime_ns"]).to_pylist()}
    prefixes = tuple(folder_prefix(f) for f in folders)
    on_disk = {e.path for e in listing}
    gone = [p for p in known if p.startswith(prefixes) and p not in on_disk]
    todo = [e for e in listing if force or known.get(e.path) != (e.size, e.mtime_ns)]
    return ProbeWork(todo=todo, gone=gone, current=len(listing) - len(todo))


# ---- filter


def limits_of(dataset: VideoDataset) -> FrameLimits:
    v = dataset.video
    return FrameLimits(num_frames=v.num_frames or v.min_frames, min_frames=v.min_frames, max_frames=v.max_frames,
                       frame_rate=float(v.frame_rate))


def clip_spec(dataset: VideoDataset) -> str:
    """What a sample is cut as: its identity, unlike min/max_frames which only decide whether it is kept."""
    v = dataset.video
    frames = v.num_frames if v.bucket_strategy == "aspect_ratio" else "bucket"
    return f"start=0;frames={frames};fps={float(v.frame_rate):g}"


def sample_id(dataset_id: str, video_id: str, spec: str) -> str:
    return fingerprint("sample", dataset_id, video_id, spec)


def filter_fingerprint(dataset: VideoDataset) -> str:
    return fingerprint(limits_of(dataset).fingerprint, dataset.repeats)


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


def bucket_spec(dataset: VideoDataset) -> BucketSpec:
    v = dataset.video
    return BucketSpec(strategy=v.bucket_strategy, resolution=dataset.resolution,
                      resolution_type=dataset.resolution_type, num_frames=v.num_frames or v.min_frames,
                      max_frames=v.max_frames, frame_interval=v.frame_interval or LTX2.temporal,
                      frame_rate=float(v.frame_rate))


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


def caption_strategy(dataset: VideoDataset):
    match dataset.caption_strategy:
        case "textfile":
            return caption_sources.TextFile()
        case "filename":
            return caption_sources.FromFilename()
        case "instanceprompt":
            return caption_sources.InstancePrompt(dataset.instance_prompt)
        case "parquet" | "jsonl":
            p = dataset.parquet
            reader = caption_sources.read_jsonl if str(p.path).endswith((".jsonl", ".json")) else read_parquet_rows
            return caption_sources.CaptionTable(str(p.path), p.filename_column, p.caption_column, reader)
    raise ValueError(f"dataset '{dataset.id}': unknown caption_strategy {dataset.caption_strategy!r}")


@dataclass(frozen=True)
class CaptionWork:
    kept: list[dict]  # kept sample rows (sample_id, path)
    todo: list[tuple[dict, caption_sources.CaptionSource]]  # whose caption is missing or stale


def caption_work(store: Store, dataset: VideoDataset, strategy=None, force: bool = False) -> CaptionWork:
    from storage.sql import sql_eq

    strategy = strategy or caption_strategy(dataset)
    current = store.column_map("captions", "source_fp", where=sql_eq("dataset_id", dataset.id))
    kept = samples_of(store, dataset.id, ["sample_id", "path"], kept_only=True)
    sources = ((s, strategy.source(s["path"])) for s in kept)
    return CaptionWork(kept, [(s, src) for s, src in sources if force or current.get(s["sample_id"]) != src.fp])


# ---- all stages


def nothing_pending(store: Store, config, datasets: list[VideoDataset], stages: list[str]) -> bool:
    """True when every chosen stage is up to date: a rerun would do no work."""

    def source():
        from ltx2core.models.source import resolve_source

        return resolve_source(config.pretrained_model_name_or_path, config.model_flavour)

    def latents_current(d: VideoDataset) -> bool:
        return not latent_work(store, d, latent_model(source(), vae_options(config))).todo

    checks = {
        "probe": lambda: not (w := probe_work(store, sorted({str(d.instance_data_dir) for d in datasets}))).todo
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


@dataclass(frozen=True)
class TextModel:
    """Which text encoder makes the embeddings, as far as cache keys are concerned."""

    encoder_fp: str
    max_length: int

    def key(self, caption: str) -> str:
        return fingerprint("text-embed", caption, self.encoder_fp, self.max_length)


def text_model(source) -> TextModel:
    from ltx2core.models.fingerprint import component_fingerprint

    parts = [component_fingerprint(source, c) for c in ("tokenizer", "text_encoder", "connectors")]
    return TextModel(encoder_fp=fingerprint(*parts), max_length=source.flavour.text_max_length)


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
class LatentModel:
    """Which VAE and options make the latents, as far as cache keys are concerned."""

    vae_fp: str
    options_key: str


def vae_options(config):
    from ltx2core.models.vae_options import VaeOptions

    return VaeOptions.from_config(vae_enable_tiling=config.vae_enable_tiling,
                                  vae_enable_slicing=config.vae_enable_slicing,
                                  vae_enable_patch_conv=config.vae_enable_patch_conv,
                                  vae_enable_temporal_roll=config.vae_enable_temporal_roll)


def latent_model(source, options) -> LatentModel:
    from ltx2core.models.fingerprint import component_fingerprint
    from ltx2core.models.source import component_config

    return LatentModel(vae_fp=component_fingerprint(source, "vae"),
                       options_key=options.cache_key(component_config(source, "vae")))


def latent_key(sample: dict, dataset: VideoDataset, model: LatentModel) -> str:
    audio = dataset.video.audio
    audio_key = f"audio={audio.sample_rate}x{audio.channels}" if audio else "audio=none"
    return fingerprint("latents", sample["video_id"], clip_spec(dataset), sample["bucket"], model.vae_fp,
                       model.options_key, audio_key)


@dataclass(frozen=True)
class LatentWork:
    wanted: dict[str, dict]  # key -> the first kept, bucketed sample row that needs it
    todo: dict[str, dict]  # the keys not yet cached


def latent_work(store: Store, dataset: VideoDataset, model: LatentModel, force: bool = False) -> LatentWork:
    rows = [r for r in samples_of(store, dataset.id, kept_only=True) if r["bucket"] is not None]
    wanted: dict[str, dict] = {}
    for r in sorted(rows, key=lambda r: r["sample_id"]):
        wanted.setdefault(latent_key(r, dataset, model), r)
    present = set() if force else store.keys("latents")  # failed clips too: `--force latents` retries them
    return LatentWork(wanted, {k: r for k, r in wanted.items() if k not in present})


# ---- train


def run_id(config) -> str:
    """A training run is its output folder: checkpoints there are resumed (or refused, listing what changed)."""
    return Path(config.output_dir).name


def train_steps_done(config) -> int:
    from ltx2core.training.checkpoint import latest_checkpoint

    latest = latest_checkpoint(Path(config.output_dir))
    return int(latest.name.rsplit("-", 1)[1]) if latest else 0


def training_refs(store: Store, config, datasets: list[VideoDataset], source) -> tuple[dict, dict]:
    """(sample_id -> (latents key, text key, fps), bucket -> [(sample_id, repeats)]) for every trainable sample."""
    text = text_model(source)
    cached_latents = store.keys("latents", where="error IS NULL")
    cached_text = store.keys("text_embeds")
    lat_model = latent_model(source, vae_options(config))
    refs, buckets = {}, defaultdict(list)
    for d in datasets:
        captions = store.column_map("captions", "caption", where=sql_eq("dataset_id", d.id))
        for s in samples_of(store, d.id, kept_only=True):
            caption = captions.get(s["sample_id"])
            if s["bucket"] is None or caption is None:
                continue
            lat, txt = latent_key(s, d, lat_model), text.key(caption)
            if lat in cached_latents and txt in cached_text:
                refs[s["sample_id"]] = (lat, txt, s["frame_rate"])
                buckets[s["bucket"]].append((s["sample_id"], s["repeats"]))
    return refs, dict(buckets)


def max_steps(config, batches) -> int:
    """Optimizer steps of the run: max_train_steps, or num_train_epochs of steps that each take
    processes x gradient_accumulation_steps batches of one bucket (as the loop draws them)."""
    if config.max_train_steps:
        return config.max_train_steps
    from ltx2core.models.runtime import pick_device
    from ltx2core.training.distributed import process_count

    per_step = process_count(config.num_processes, pick_device()) * config.gradient_accumulation_steps
    return max(1, config.num_train_epochs * batches.steps_per_epoch(per_step))


def train_current(store: Store, config, datasets: list[VideoDataset], source) -> bool:
    """The run's latest checkpoint is at its last step (a resumable run is not current)."""
    from ltx2core.training.data import BucketBatches

    done = train_steps_done(config)
    if config.max_train_steps:
        return done >= config.max_train_steps
    refs, buckets = training_refs(store, config, datasets, source)
    return bool(refs) and done >= max_steps(config, BucketBatches(buckets, batch_size=config.train_batch_size,
                                                                    seed=config.seed or 0))


def validated(store: Store, config) -> bool:
    """The run's latest checkpoint has LoRA samples (a changed prompt needs `--force validate`)."""
    if not (config.validation_prompt or config.validation_prompt_library or config.validation_using_datasets):
        return True  # nothing to validate
    rows = store.read("checkpoints", ["step"], where=sql_eq("run_id", run_id(config))).to_pylist()
    if not rows:
        return False
    step = max(r["step"] for r in rows)
    return store.count("validations", where=sql_eq("run_id", run_id(config)) + f" AND step = {step} AND lora") > 0
