"""Stage `latents`: VAE latents of every kept clip, keyed by (video, clip spec, bucket, VAE, options).

Recipe: the dataset's kept, bucketed samples -> keys missing from `latents` -> shards of clips -> per
shard, load the VAE once, decode clips on the CPU ahead of the encoder (ltx2core.data.encode_latents) ->
write rows as they finish. A clip that cannot be decoded is a row with an `error`; the stage carries on.
"""

from __future__ import annotations

import os
import time
from contextlib import nullcontext
from pathlib import Path

import torch
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from ltx2core.config.databackend import VideoDataset
from ltx2core.config.train import TrainConfig
from ltx2core.data.buckets import same_aspect
from ltx2core.data.encode_latents import AudioSpec, LatentJob, encode_latent_jobs
from ltx2core.data.tensors import to_record
from ltx2core.keys import LatentModel, clip_spec, latent_model, model_source, vae_options
from ltx2core.models.loading import load_audio_vae, load_vae, load_vae_config
from ltx2core.models.placement import on_device
from ltx2core.models.runtime import compute_dtype, pick_device
from ltx2core.models.scale import LTX2
from storage.store import Store
from tasks.datasets import clip_plan, reference_plan
from tasks.pending import latent_work
from tasks.progress import sink
from tasks.report import StageReport, reporting
from tasks.shards import ONE, Shard, Spread

SHARD_SIZE = 256  # most clips per Prefect task (one VAE load each)
COMMIT_EVERY = 16  # clips per commit: a killed stage loses at most this much work
DECODE_WORKERS = max(2, min(4, (os.cpu_count() or 2) - 1))  # 4 threads kept an H200's VAE fed (BENCHMARKS.md)


def _decode_threads(device: torch.device) -> int:
    """Threads decoding clips beside the VAE. On a GPU, DECODE_WORKERS keep it fed. On the CPU the VAE and the
    decoders share this process's cores: torch's thread budget, which is 1 in a Dask worker (its nanny sets
    OMP_NUM_THREADS=1), where the one thread decodes and encodes in turn rather than oversubscribe its core."""
    return DECODE_WORKERS if device.type == "cuda" else min(DECODE_WORKERS, torch.get_num_threads() - 1)


def _job(key: str, sample: dict, dataset: VideoDataset, placeholder_channels: int | None,
         reference_scale: int) -> LatentJob:
    audio = dataset.video.audio
    plan = clip_plan(sample)
    reference, problem = _reference(sample, dataset, plan, reference_scale) if dataset.reference_dir else (None, None)
    return LatentJob(key=key, path=sample["path"], plan=plan,
                     audio=AudioSpec(audio.sample_rate, audio.channels, audio.allow_zero_audio) if audio else None,
                     placeholder_channels=placeholder_channels,
                     reference=reference, reference_error=problem)


def _reference(sample: dict, dataset: VideoDataset, plan, scale: int) -> tuple[tuple[str, object] | None, str | None]:
    """(reference file, its ClipPlan) -- the clip's frames, at the clip's size / `scale`, covered and centre-cropped
    like the clip, so that a reference of the clip's aspect is aligned with it (reference_strict insists on it) --
    or why there is none (recorded as the clip's latents error: the clip is then not trained)."""
    reference = sample.get("reference")
    if reference is None:
        stem = Path(sample["path"]).relative_to(Path(str(dataset.instance_data_dir))).with_suffix("")
        return None, (f"{sample['path']}: no reference video {stem}.* in {dataset.reference_dir} (conditioning_data "
                      f"{dataset.conditioning_data}: a reference is named like its clip)")
    if dataset.reference_fit == "reference_strict" and not same_aspect(reference["width"], reference["height"],
                                                                      plan.resize_width, plan.resize_height):
        return None, (f"{sample['path']}: its reference {reference['path']} is {reference['width']}x"
                      f"{reference['height']}, of another aspect than the clip, which reference_strict cannot align "
                      f"with it: give it the clip's aspect, or set \"conditioning_type\": \"reference_loose\" on "
                      f"{dataset.conditioning_data} to cover and centre-crop it")
    width, height = plan.width // scale, plan.height // scale
    if (width * scale, height * scale) != (plan.width, plan.height) or width % LTX2.spatial or height % LTX2.spatial:
        return None, (f"{sample['path']}: its bucket {plan.width}x{plan.height} divided by "
                      f"ltx2_reference_spatial_scale_factor {scale} is not a multiple of {LTX2.spatial}: choose a "
                      "resolution whose buckets divide, or another factor")
    return (reference["path"], reference_plan(plan, reference, width, height)), None


@task(name="latents-shard", cache_policy=NO_CACHE, retries=1)
def latents_shard(store_uri: str, config: TrainConfig, dataset: VideoDataset, shard: Shard[tuple[str, dict]],
                  model: LatentModel) -> dict:
    """Encode one shard of clips, committing every COMMIT_EVERY clips; returns the clips encoded, the errors and
    the seconds the VAEs took to load and reach the device.

    Idempotent, as Dask may run a shard again after losing the worker that held its result: it writes only
    its own keys, by upsert, and a clip encodes to the same row each time. `model` is the VAE the keys were
    made for; a worker whose VAE differs refuses instead of writing rows under keys they do not match."""
    keyed = shard.items
    store = Store.open(store_uri)
    source = model_source(config)
    options = vae_options(config)
    if latent_model(source, config) != model:
        raise RuntimeError(f"the VAE of {source.label} on this machine differs from the one the flow planned "
                           "for; give every Dask worker the same model files (or hub cache)")
    device = pick_device()
    dtype = compute_dtype(config.mixed_precision, device)
    audio_only = dataset.video.audio is not None and dataset.video.audio.audio_only
    loading = time.perf_counter()
    vae = None if audio_only else load_vae(source, dtype=dtype)  # an audio-only dataset does no video work
    # 53M parameters: float32 costs nothing and keeps the mel front end exact (Lightricks does the same).
    audio_vae = load_audio_vae(source, dtype=torch.float32) if dataset.video.audio else None
    spec, errors, rows = clip_spec(dataset), 0, []
    channels = load_vae_config(source)["latent_channels"] if audio_only else None  # the placeholders' channels
    jobs = [_job(key, sample, dataset, channels, model.reference_scale) for key, sample in keyed]
    samples = dict(keyed)
    with on_device(vae, device, offload=config.offload_during_startup) if vae is not None else nullcontext():
        if audio_vae is not None:
            audio_vae.to(device)
        load_seconds = time.perf_counter() - loading
        for result in encode_latent_jobs(jobs, vae=vae, audio_vae=audio_vae, options=options, device=device,
                                         dtype=dtype, decode_workers=_decode_threads(device)):
            sample = samples[result.key]
            row = {"key": result.key, "video_id": sample["video_id"], "clip_spec": spec, "bucket": sample["bucket"],
                   "vae_fp": model.vae_fp, "options": model.options_key, "frame_rate": sample["frame_rate"],
                   "error": result.error}
            for name in ("latents", "logvar", "audio_latents", "reference_latents"):
                tensor = getattr(result, name)
                data, shape, dt = to_record(tensor) if tensor is not None else (None, None, None)
                row |= {name: data, f"{name}_shape": shape, f"{name}_dtype": dt}
            errors += result.error is not None
            rows.append(row)
            if len(rows) == COMMIT_EVERY:
                store.upsert("latents", rows)
                sink().advance(f"latents {dataset.id}", len(rows))
                rows = []
        store.upsert("latents", rows)
        sink().advance(f"latents {dataset.id}", len(rows))
    if audio_vae is not None:
        audio_vae.to("cpu")
    return {"encoded": len(jobs) - errors, "errors": errors, "load_seconds": load_seconds}


def run(store_uri: str, config: TrainConfig, dataset: VideoDataset, force: bool = False,
        spread: Spread = ONE) -> StageReport:
    """Encode the dataset's missing latents in the shards `spread` asks for (one per worker of a cluster)."""
    log = get_run_logger()
    with reporting(store_uri, "latents", dataset.id, tables=["latents"], verb="encoded") as (store, report):
        source = model_source(config)
        model = latent_model(source, config)
        work = latent_work(store, dataset, model, force)
        report.skipped = len(work.wanted) - len(work.todo)
        sink().start(f"latents {dataset.id}", len(work.todo))
        items = list(work.todo.items())
        shards = spread.cut(items, most=SHARD_SIZE)
        if shards:
            log.info("latents %s: encoding %d clips with %s", dataset.id, len(items), source.label)
        futures = spread.submit(shards, lambda shard: latents_shard.submit(store_uri, config, dataset, shard, model))
        for future in futures:
            out = future.result()
            report.done += out["encoded"] + out["errors"]
            report.load_seconds += out["load_seconds"]
            if out["errors"]:
                report.reasons["clip could not be decoded"] = report.reasons.get("clip could not be decoded", 0) + out[
                    "errors"]
                report.failed += out["errors"]
        stats = store.stats("latents")
        report.counts = {"clips": len(work.wanted), "table_bytes": stats["bytes"] or 0}
    log.info("latents %s: %d clips, %s", dataset.id, len(work.wanted),
             "up to date" if report.up_to_date else f"{report.done} encoded ({report.failed} failed)")
    return report
