"""Stage `validate`: text-to-video or image-to-video samples of a trained LoRA, as .mp4 files and rows.

Recipe: the checkpoint (latest of the run, or `--checkpoint STEP`) -> the validation prompts' embeddings
from `text_embeds` (missing ones are encoded and cached like any caption) -> one sampler (no text encoder)
-> samples per prompt and resolution (I2V: first frames of `eval_dataset_id` clips) -> .mp4 under
output_dir/validation, rows in `validations`, a contact sheet per sample in the Prefect UI.
"""

from __future__ import annotations

import base64
import json
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from ltx2core.config.databackend import VideoDataset
from ltx2core.config.train import TrainConfig
from ltx2core.data.fingerprint import fingerprint
from ltx2core.data.tensors import from_record, to_record
from ltx2core.keys import (
    has_validation_prompts,
    latent_key,
    latent_model,
    model_source,
    run_id,
    sampling_memory,
    text_model,
    validation_settings,
)
from ltx2core.media.decode import decode_frames
from ltx2core.models.runtime import compute_dtype, pick_device
from ltx2core.models.source import ModelSource
from ltx2core.validation.contact_sheet import contact_sheet
from ltx2core.validation.sampling import (
    Sample,
    ValidationPrompt,
    encode_prompts,
    load_sampler,
    sample_audio,
    sample_i2v,
    sample_ic,
    sample_t2v,
    sample_video_from_audio,
)
from ltx2core.validation.settings import MemoryOptions, ValidationSettings
from ltx2core.validation.video_io import first_frame_of, write_mp4, write_wav
from storage.sql import sql_eq, sql_in
from storage.store import Store
from tasks.artifacts import artifact_key
from tasks.datasets import clip_plan, reference_plan, references_of, samples_of
from tasks.progress import sink
from tasks.report import StageReport, reporting

I2V_CLIPS = 2  # eval clips sampled per validation
NOTHING_TO_VALIDATE = ("nothing to validate: set validation_prompt (or validation_prompt_library), or "
                       "validation_using_datasets with eval_dataset_id")


def prompt_texts(config: TrainConfig) -> list[str]:
    texts = [config.validation_prompt] if config.validation_prompt else []
    if config.validation_prompt_library:
        path = Path(config.validation_prompt_library)
        try:
            library = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"validation_prompt_library {path}: {e}: give a JSON object of name -> prompt") from None
        if not isinstance(library, dict) or not all(isinstance(v, str) for v in library.values()):
            raise ValueError(f"validation_prompt_library {path}: expected a JSON object of name -> prompt")
        texts += list(library.values())
    return list(dict.fromkeys(texts))


def cached_prompts(store: Store, source: ModelSource, texts: list[str], device, dtype) -> list[ValidationPrompt]:
    """The prompts' features from `text_embeds`; missing ones are encoded once and stored like captions."""
    model = text_model(source)
    keys = {model.key(t): t for t in texts}
    rows = {r["key"]: r for r in store.read("text_embeds", where=sql_in("key", keys)).to_pylist()}
    missing = [t for k, t in keys.items() if k not in rows]
    if missing:
        encoded = encode_prompts(source, missing, device=device, dtype=dtype)
        new = []
        for p in encoded:
            features = p.features.features if hasattr(p.features, "features") else p.features
            data, shape, dt = to_record(features)
            new.append({"key": model.key(p.text), "caption": p.text, "encoder_fp": model.encoder_fp,
                        "max_length": model.max_length, "num_tokens": int(shape[0]), "features": data,
                        "features_shape": shape, "features_dtype": dt})
        store.upsert("text_embeds", new)
        rows |= {r["key"]: r for r in new}
    return [ValidationPrompt(t, from_record(rows[k]["features"], rows[k]["features_shape"],
                                            rows[k]["features_dtype"])) for k, t in keys.items()]


def eval_clips(store: Store, config: TrainConfig, datasets: list[VideoDataset]) -> list[tuple[str, dict]]:
    """(caption, sample row) of the first kept, bucketed, captioned clips of `eval_dataset_id`."""
    dataset = next((d for d in datasets if d.id == config.eval_dataset_id), None)
    if dataset is None:
        raise ValueError(f"validation_using_datasets needs eval_dataset_id to name a video dataset "
                         f"(one of {[d.id for d in datasets]})")
    captions = store.column_map("captions", "caption", where=sql_eq("dataset_id", dataset.id))
    rows = sorted((s for s in samples_of(store, dataset.id, kept_only=True) if s["bucket"] and
                   captions.get(s["sample_id"])), key=lambda s: s["path"])
    return [(captions[s["sample_id"]], s) for s in rows[:I2V_CLIPS]]


def validation_prompts(store: Store, config: TrainConfig, datasets: list[VideoDataset], source: ModelSource,
                       device, dtype) -> tuple[list[str], list[tuple[str, dict]], list[ValidationPrompt]]:
    """(T2V prompt texts, I2V eval clips, every prompt's cached features: T2V, I2V, negative last); the features
    missing from `text_embeds` are encoded and stored."""
    # T2V from the validation prompts; I2V from eval clips (their first frame and caption) when asked; both
    # when both are configured.
    texts = prompt_texts(config)
    clips = eval_clips(store, config, datasets) if config.validation_using_datasets else []
    if not texts and not clips:
        raise ValueError(NOTHING_TO_VALIDATE)
    negative_text = config.validation_negative_prompt or ""
    return texts, clips, cached_prompts(store, source, [*texts, *(c for c, _ in clips), negative_text], device, dtype)


def run_validation(store: Store, config: TrainConfig, datasets: list[VideoDataset], source: ModelSource, *,
                   step: int, lora: Path | None, transformer=None, write: bool = True) -> list[dict]:
    """Sample, write the .mp4 files and `validations` rows; returns the rows (without the video bytes).

    `transformer`: the one being trained, its LoRA active (validation during training); else the model is
    loaded from `source` and `lora` (None = the base model) applied. `write` False: sample only, write and
    return nothing (the ranks of a sharded model other than rank 0, which sample alongside it).
    """
    device = pick_device()
    dtype = compute_dtype(config.mixed_precision, device)
    settings = validation_settings(config)
    texts, clips, prompts = validation_prompts(store, config, datasets, source, device, dtype)
    t2v_prompts, i2v_prompts, negative = prompts[:len(texts)], prompts[len(texts):-1], prompts[-1]
    memory = MemoryOptions() if transformer is not None else sampling_memory(config)
    sampler = load_sampler(source, device=device, dtype=dtype, memory=memory, transformer=transformer)
    if config.audio_video_mode == "audio_only":  # an audio LoRA: the eval clips lend their captions only
        samples = sample_audio(sampler, [*t2v_prompts, *i2v_prompts], negative, settings, lora=lora)
        clips = []
    else:
        samples = sample_t2v(sampler, t2v_prompts, negative, settings, lora=lora) if t2v_prompts else []
    eval_dataset = next((d for d in datasets if d.id == config.eval_dataset_id), None)
    if clips and config.audio_video_mode == "video_to_audio":  # foley: each eval clip's video, a sound for it
        cached = _cached_latents(store, config, source, eval_dataset, [s for _, s in clips])
        videos = [(row["latents"], decode_frames(s["path"], clip_plan(s)), row["frame_rate"])
                  for row, (_, s) in zip(cached, clips, strict=True)]
        samples += sample_audio(sampler, i2v_prompts, negative, settings, lora=lora, videos=videos)
    elif clips and config.audio_video_mode == "audio_to_video":  # each eval clip's sound, a video for it
        cached = _cached_latents(store, config, source, eval_dataset, [s for _, s in clips])
        sounds = [(row["audio_latents"], tuple(row["latents"].shape[1:]), row["frame_rate"]) for row in cached]
        samples += sample_video_from_audio(sampler, i2v_prompts, sounds, negative, settings, lora=lora)
    elif clips and eval_dataset is not None and eval_dataset.reference_dir is not None:  # an IC-LoRA
        references = references_of(store, eval_dataset)
        paired = [p for p, (_, s) in zip(i2v_prompts, clips, strict=True) if s["path"] in references]
        # the clip's frames of its reference, covering the clip's bucket (the pipeline scales it down itself)
        frames = [decode_frames(r["path"], reference_plan(plan := clip_plan(s), r, plan.width, plan.height))
                  for _, s in clips if (r := references.get(s["path"]))]
        samples += sample_ic(sampler, paired, frames, negative, settings,
                             downscale=config.ltx2_reference_spatial_scale_factor, lora=lora)
    elif clips:
        images = [first_frame_of(s["path"], clip_plan(s)) for _, s in clips]
        samples += sample_i2v(sampler, i2v_prompts, images, negative, settings, lora=lora)
    if not write:
        return []
    with_lora = lora is not None or transformer is not None
    return [_store_sample(store, config, source, s, step, settings, with_lora) for s in samples]


def _cached_latents(store: Store, config: TrainConfig, source: ModelSource, dataset: VideoDataset,
                    samples: list[dict]) -> list[dict]:
    """Each eval clip's cached latents row as tensors (latents, audio_latents) and its frame_rate: what an
    audio-conditioned LoRA's validation conditions on."""
    references, model = references_of(store, dataset), latent_model(source, config)
    keys = [latent_key(s, dataset, model, (r := references.get(s["path"])) and r["video_id"]) for s in samples]
    rows = {r["key"]: r for r in store.read("latents", where=f"{sql_in('key', keys)} AND error IS NULL").to_pylist()}
    if missing := [s["path"] for s, key in zip(samples, keys, strict=True) if key not in rows]:
        raise ValueError(f"validation of an {config.audio_video_mode} LoRA needs the latents of {missing[0]}: run "
                         "the latents stage first")
    return [{name: from_record(row[name], row[f"{name}_shape"], row[f"{name}_dtype"]).float()
             for name in ("latents", "audio_latents")} | {"frame_rate": float(row["frame_rate"])}
            for row in (rows[key] for key in keys)]


def _store_sample(store: Store, config: TrainConfig, source: ModelSource, s: Sample, step: int,
                  settings: ValidationSettings, with_lora: bool) -> dict:
    run = run_id(config)
    w, h = s.resolution
    details = {"guidance": settings.guidance, "audio_guidance": settings.audio_guidance, "steps": settings.steps,
               "stg_scale": settings.stg_scale, "modality_scale": settings.modality_scale,
               "guidance_rescale": settings.guidance_rescale, "num_frames": settings.num_frames,
               "frame_rate": s.frame_rate, "model": source.label,
               "negative_prompt": config.validation_negative_prompt or ""}
    key = fingerprint("validation", run, step, s.mode, s.prompt, w, h, s.seed, with_lora, details)
    path = Path(config.output_dir) / "validation" / f"step_{step:06d}_{s.mode}_{key[:8]}_{w}x{h}.mp4"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_mp4(path, s.frames, fps=s.frame_rate, audio=s.audio, sample_rate=s.sample_rate)
    if s.mode == "audio":  # the sound itself, beside the mp4 of a still frame
        write_wav(path.with_suffix(".wav"), s.audio, sample_rate=s.sample_rate)
    row = {"key": key, "run_id": run, "step": step, "mode": s.mode, "prompt": s.prompt, "seed": s.seed, "width": w,
           "height": h, "lora": with_lora, "settings": json.dumps(details), "video_path": str(path),
           "video": path.read_bytes(), "created_at": datetime.now(UTC)}
    store.upsert("validations", [row])
    sheet = base64.b64encode(contact_sheet(s.frames, tile_width=min(w, 256))).decode()
    untrained = " (random weights: the video is noise)" if source.untrained else ""
    create_markdown_artifact(
        key=artifact_key("validation", run, key[:8]),
        markdown=(f"# {s.mode.upper()} validation, run `{run}` step {step}{untrained}\n\n**Prompt:** {s.prompt}\n\n"
                  f"{w}x{h}, {settings.num_frames} frames at {s.frame_rate:g} fps, seed {s.seed}, guidance "
                  f"{settings.guidance} video / {settings.audio_guidance} audio, {settings.steps} steps, model "
                  f"{source.label}, LoRA: {'yes' if with_lora else 'no (base model)'}\n\n"
                  f"![frames](data:image/png;base64,{sheet})\n\nVideo: `{path}`\n"),
        description=f"{s.mode} sample, step {step}: {s.prompt[:60]}")
    return {k: v for k, v in row.items() if k != "video"}


def checkpoint_lora(store: Store, config: TrainConfig, step: int | None) -> tuple[int, Path]:
    """(step, a folder holding its pytorch_lora_weights.safetensors): from the checkpoints table, so any
    machine that reads the store can validate."""
    run = run_id(config)
    rows = store.read("checkpoints", ["step", "lora", "flavour"], where=sql_eq("run_id", run)
                      + ("" if step is None else f" AND step = {int(step)}")).to_pylist()
    if not rows:
        which = "any checkpoint" if step is None else f"a checkpoint at step {step}"
        raise ValueError(f"run {run!r} has no {which} in the store: run the train stage first "
                         "(`ltx2 status` lists the steps done)")
    row = max(rows, key=lambda r: r["step"])
    trained_on = row["flavour"] or "2.0"  # rows from before 2.3 have none: 2.0 was the only flavour
    if trained_on != config.model_flavour:
        raise ValueError(f"run {run!r} step {row['step']} is a LoRA of LTX-{trained_on}, but model_flavour is "
                         f"{config.model_flavour!r}: validate it with model_flavour {trained_on!r}, or train the "
                         f"{config.model_flavour} LoRA into another output_dir")
    folder = Path(tempfile.mkdtemp(prefix=f"ltx2-lora-{run}-{row['step']}-"))
    (folder / "pytorch_lora_weights.safetensors").write_bytes(row["lora"])
    return row["step"], folder


@task(name="validate", cache_policy=NO_CACHE)
def validate(store_uri: str, config: TrainConfig, datasets: list[VideoDataset], checkpoint: int | None = None,
             force: bool = False) -> StageReport:
    log = get_run_logger()
    run = run_id(config)
    with reporting(store_uri, "validate", run, tables=["validations"], verb="samples") as (store, report):
        sink().start(f"validate {run}", 0)
        if not has_validation_prompts(config):
            report.note = "nothing to validate"
            log.warning("validate %s: %s", run, NOTHING_TO_VALIDATE)
            return report
        source = model_source(config)
        step, lora = checkpoint_lora(store, config, checkpoint)
        done = store.count("validations", where=sql_eq("run_id", run) + f" AND step = {step} AND lora")
        if done and not force:
            report.skipped = done
            log.info("validate %s: step %d already has %d samples", run, step, done)
            return report
        rows = run_validation(store, config, datasets, source, step=step, lora=lora)
        if config.validation_base_model:
            rows += run_validation(store, config, datasets, source, step=0, lora=None)
        report.done = len(rows)
        for r in rows:
            log.info("validate %s: %s sample at step %d: %s", run, r["mode"], r["step"], r["video_path"])
        report.counts = {"step": step, "samples": len(rows)}
    return report
