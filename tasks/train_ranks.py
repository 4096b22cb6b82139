"""The train stage's run, built the same way in one process and in every rank of a several-GPU run.

`plan_run` decides what to train from the store and the config (no model loaded); `run_training` has the
model assembled (ltx2core/training/assemble.py: LoRA, fp8/int8, block swap, FSDP2; its settings from
ltx2core/keys.py), trains (ltx2core.training.loop) and, on rank 0, writes each checkpoint's row into `checkpoints` and the final LoRA
files and loss curve. tasks/train.py calls both in its own process for one GPU or the CPU; for several it
writes a job file and launches

    python -m torch.distributed.run --standalone --nproc_per_node=N -m tasks.train_ranks JOB.json

whose `main` runs in every rank: it reads the job (store, config, datasets), joins the process group and
calls the same two functions. Rank 0 prints a STEP_LINE per optimizer step (train.py turns them into the
stage's progress bar) and writes the run's summary to the job's result file; a rank that fails writes its
error to the job's failures folder, which train.py reports. Imports no Prefect.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from ltx2core.config.databackend import VideoDataset
from ltx2core.config.train import TrainConfig
from ltx2core.data.tensors import from_record
from ltx2core.keys import (
    has_validation_prompts,
    model_settings,
    model_source,
    run_id,
    train_batches,
    train_settings,
)
from ltx2core.models.loading import load_scheduler
from ltx2core.models.runtime import compute_dtype, pick_device
from ltx2core.models.source import ModelSource, component_config
from ltx2core.training.assemble import assemble_training_model
from ltx2core.training.audio_balance import audio_warnings
from ltx2core.training.checkpoint import latest_checkpoint
from ltx2core.training.data import ExpandedCaption, TrainExample, expand_captions
from ltx2core.training.distributed import World, join_world, leave_world, rank_device, wait_for_main
from ltx2core.training.loop import train
from ltx2core.training.lora import save_lora
from ltx2core.training.sinks import HistorySink, MetricSink
from storage.sql import sql_in
from storage.store import Store
from tasks.datasets import samples_of
from tasks.pending import train_total, training_refs

# What training reads of a row (storage.schemas.tensor_fields): not the latents' log-variance, which it never uses
LATENT_COLUMNS = ["key", *(f"{name}{part}" for name in ("latents", "audio_latents", "reference_latents")
                           for part in ("", "_shape", "_dtype"))]
FEATURE_COLUMNS = ["key", "features", "features_shape", "features_dtype"]
STEP_LINE = "ltx2-train-step "  # + JSON {"step", "loss", "s_per_step"}: one line per step from rank 0


class StoreSource:
    """The training examples, read from the store a batch at a time (the loop never sees storage)."""

    def __init__(self, store: Store, refs: dict[str, tuple[str, str, float]],
                 captions: Mapping[str, ExpandedCaption] | None = None):
        self.store = store
        self.refs = refs  # sample_id -> (latents key, text_embeds key, frame rate)
        self.captions = captions or {}  # text_embeds key -> the connectors' output, when precomputed

    def text_features(self) -> dict[str, torch.Tensor]:
        """Every caption feature the run trains on, by text_embeds key (for expand_captions)."""
        rows = self._rows("text_embeds", FEATURE_COLUMNS, {ref[1] for ref in self.refs.values()})
        return {key: from_record(r["features"], r["features_shape"], r["features_dtype"]).float()
                for key, r in rows.items()}

    def load(self, keys: Sequence[str]) -> list[TrainExample]:
        latent_keys = {self.refs[k][0] for k in keys}
        # a caption expanded before training needs no features: reading them was half of a step's reading
        text_keys = {self.refs[k][1] for k in keys} - self.captions.keys()
        latents = self._rows("latents", LATENT_COLUMNS, latent_keys)
        texts = self._rows("text_embeds", FEATURE_COLUMNS, text_keys)
        out = []
        for key in keys:
            lat_key, text_key, fps = self.refs[key]
            z, t = latents[lat_key], texts.get(text_key)
            audio, reference = (from_record(z[name], z[f"{name}_shape"], z[f"{name}_dtype"]).float()
                                if z.get(name) is not None else None for name in ("audio_latents", "reference_latents"))
            out.append(TrainExample(
                key=key, latents=from_record(z["latents"], z["latents_shape"], z["latents_dtype"]).float(),
                text_features=from_record(t["features"], t["features_shape"], t["features_dtype"]).float() if t
                else None,
                frame_rate=fps, audio_latents=audio, reference_latents=reference,
                caption=self.captions.get(text_key)))
        return out

    def _rows(self, table: str, columns: list[str], keys: set[str]) -> dict[str, dict]:
        if not keys:
            return {}
        return {r["key"]: r for r in self.store.read(table, columns, where=sql_in("key", keys)).to_pylist()}


@dataclass(frozen=True)
class RunPlan:
    """What a train run has to do, read from the store and the output folder."""

    scope: str  # the run id (its output folder's name)
    source: ModelSource
    refs: dict[str, tuple[str, str, float]]  # sample_id -> (latents key, text_embeds key, frame rate)
    buckets: dict[str, list[tuple[str, int]]]  # bucket -> [(sample_id, repeats)]
    resume: Path | None  # the checkpoint to resume from
    done: int  # steps already trained (the checkpoint's)
    total: int  # steps the run trains in all


@dataclass(frozen=True)
class RunSummary:
    step: int  # optimizer steps done in total
    steps_run: int  # of which in this run
    last: dict[str, float]  # the last step's metrics ({} when none ran)
    warnings: tuple[str, ...] = ()  # what the user should know about this run (audio_balance.audio_warnings)


def plan_run(store: Store, config: TrainConfig, datasets: list[VideoDataset], *, force: bool) -> RunPlan:
    source = model_source(config)
    refs, buckets = training_refs(store, config, datasets, source)
    if not refs:
        raise ValueError("no sample has both its latents and its caption embedding cached: run the stages "
                         "probe,filter,bucket,captions,text-embeds,latents first (`ltx2 status` shows what is missing)")
    output_dir = Path(config.output_dir)
    resume = None if force or config.resume_from_checkpoint is None else (
        latest_checkpoint(output_dir) if config.resume_from_checkpoint == "latest"
        else Path(config.resume_from_checkpoint))
    done = int(resume.name.rsplit("-", 1)[1]) if resume else 0
    return RunPlan(scope=run_id(config), source=source, refs=refs, buckets=buckets, resume=resume, done=done,
                   total=train_total(config, buckets))


def run_training(
    store: Store, config: TrainConfig, datasets: list[VideoDataset], plan: RunPlan, *, world: World,
    device: torch.device, progress: MetricSink, log: Any,
) -> RunSummary:
    """Load, place and train (module docstring); every rank calls it alike. `log`: a logger (Prefect's or not)."""
    source, output_dir = plan.source, Path(config.output_dir)
    dtype = compute_dtype(config.mixed_precision, device)
    with_audio = any(d.video.audio for d in datasets)
    fsdp = config.fsdp_enable and world.size > 1
    if config.fsdp_enable and not fsdp:
        log.info("train %s: fsdp_enable with one process: nothing to shard, training without FSDP", plan.scope)
    log.info("train %s: %d samples in %d buckets, steps %d..%d on %s with %s%s", plan.scope, len(plan.refs),
             len(plan.buckets), plan.done + 1, plan.total, _where(world, device), source.label,
             ", FSDP2" if fsdp else "")
    num_blocks = component_config(source, "transformer")["num_layers"]
    assembled = assemble_training_model(
        source, model_settings(config, num_blocks=num_blocks, with_audio=with_audio, world_size=world.size),
        device=device, dtype=dtype)
    transformer, connectors, parked = assembled.transformer, assembled.connectors, assembled.parked
    if assembled.base_bytes_saved:
        log.info("train %s: %s base weights save %.1f GiB", plan.scope, config.base_model_precision,
                 assembled.base_bytes_saved / 2**30)
    if config.base_model_precision == "fp8-e4m3fn" and device.type == "cuda" and not config.compile_blocks:
        log.warning("train %s: fp8 base weights without compile_blocks: quantizing each layer's input is not "
                    "fused, and steps are slower than bf16 (1.17x on an H100; with compile_blocks 0.80x, "
                    "BENCHMARKS.md)", plan.scope)
    settings = train_settings(config, source, max_steps=plan.total, num_blocks=num_blocks,
                              scheduler_config=load_scheduler(source).config, device=str(device))
    history = HistorySink(output_dir / "loss.csv")  # written by rank 0 only
    sinks = [history, progress, *_trackers(config, output_dir)] if world.main else []

    def on_checkpoint(step: int, folder: Path) -> None:  # rank 0 only
        lora = (folder / "pytorch_lora_weights.safetensors").read_bytes()
        last = history.rows[-1]["loss"] if history.rows else None
        store.upsert("checkpoints", [{"key": f"{plan.scope}/{step:06d}", "run_id": plan.scope, "step": step,
                                      "lora": lora, "lora_path": str(folder), "loss": last,
                                      "flavour": source.flavour.name,
                                      "created_at": datetime.now(UTC)}])

    def on_validate(step: int) -> None:  # with the training transformer: no second copy of the model
        from tasks.validate import run_validation

        # rank 0; under FSDP every rank, as each forward gathers the shards, and rank 0 alone writes
        with parked.restored(device) if parked else nullcontext():  # sampling runs both modalities
            for row in run_validation(store, config, datasets, source, step=step, lora=None,
                                      transformer=transformer, write=world.main):
                log.info("validation sample at step %d: %s", step, row["video_path"])

    validate = _has_validation(config)
    if validate and fsdp:  # the prompts' features stored before the ranks read them, by rank 0 alone
        from tasks.validate import validation_prompts

        if world.main:
            validation_prompts(store, config, datasets, source, device, dtype)
        wait_for_main(world)
    source_of_examples = StoreSource(store, plan.refs)
    if _captions_fit(len({ref[1] for ref in plan.refs.values()}), connectors, source.text_max_length):
        # The connectors' output per caption, once, on the host; then the connectors leave the GPU (2.7 GiB at
        # full size) instead of expanding the same captions every step.
        source_of_examples.captions = expand_captions(
            source_of_examples.text_features(), connectors=connectors,
            text_max_length=source.text_max_length, device=device, dtype=dtype)
        connectors.to("cpu")
        if device.type == "cuda":
            torch.cuda.empty_cache()
    try:
        result = train(transformer, source_of_examples, train_batches(config, plan.buckets), connectors=connectors,
            settings=settings, sinks=sinks, resume_from=plan.resume, on_checkpoint=on_checkpoint,
            on_validate=on_validate if validate else None,
            crepa=_crepa(config, source, transformer, device, dtype), world=world)
    finally:
        for sink in sinks:
            sink.close()
    warnings = tuple(audio_warnings(result.history, audio_share(store, datasets, plan)))
    if world.main:
        save_lora(transformer, output_dir, flavour=source.flavour.name)
        history.write_png(output_dir / "loss.png")
        for warning in warnings:
            log.warning("train %s: %s", plan.scope, warning)
    return RunSummary(step=result.step, steps_run=result.steps_run,
                      last=dict(result.history[-1]) if result.history else {}, warnings=warnings)


def audio_share(store: Store, datasets: list[VideoDataset], plan: RunPlan) -> float:
    """The share of an epoch's samples (repeats counted) that carry audio: those of datasets with an audio block."""
    with_audio = {s["sample_id"] for d in datasets if d.video.audio
                  for s in samples_of(store, d.id, kept_only=True)}
    counts = [(repeats + 1, sample in with_audio) for entries in plan.buckets.values() for sample, repeats in entries]
    total = sum(n for n, _ in counts)
    return sum(n for n, audio in counts if audio) / total if total else 0.0


class StepLines:
    """A sink printing each step as a STEP_LINE on stdout, for the launching task to read."""

    def log(self, step: int, metrics: Mapping[str, float]) -> None:
        fields = {"step": step, "loss": metrics["loss"], "s_per_step": metrics["s_per_step"]}
        print(STEP_LINE + json.dumps(fields), flush=True)

    def close(self) -> None:
        pass


def main(argv: Sequence[str] | None = None) -> None:
    """One rank of a several-GPU run: `python -m torch.distributed.run ... -m tasks.train_ranks JOB.json`."""
    (job_file,) = sys.argv[1:] if argv is None else argv
    job = json.loads(Path(job_file).read_text())
    device_type = pick_device().type
    world = join_world(device_type)
    logging.basicConfig(level=logging.INFO if world.main else logging.WARNING, stream=sys.stdout, force=True,
                        format=f"[rank {world.rank}] %(levelname)s %(name)s: %(message)s")
    try:
        store = Store.open(job["store_uri"])
        config = TrainConfig.model_validate(job["config"])
        datasets = [VideoDataset.model_validate(d) for d in job["datasets"]]
        plan = plan_run(store, config, datasets, force=job["force"])
        summary = run_training(store, config, datasets, plan, world=world, device=rank_device(world, device_type),
                               progress=StepLines(), log=logging.getLogger("tasks.train"))
        if world.main:
            Path(job["result"]).write_text(json.dumps(asdict(summary)))
    except BaseException as error:
        failure = {"rank": world.rank, "time": time.time(), "error": f"{type(error).__name__}: {error}"}
        (Path(job["failures"]) / f"rank{world.rank}.json").write_text(json.dumps(failure))
        raise  # the traceback goes to stderr, which train.py logs; torchrun stops the other ranks
    leave_world(world)


CAPTION_CACHE_BYTES = 8 * 2**30  # host memory the expanded captions may take; more captions: expand per step


def _captions_fit(captions: int, connectors: Any, text_max_length: int) -> bool:
    """Whether the run's expanded captions fit CAPTION_CACHE_BYTES (~15.7 MB each at full size: ~540)."""
    c = connectors.config
    width = (c.video_connector_num_attention_heads * c.video_connector_attention_head_dim
             + c.audio_connector_num_attention_heads * c.audio_connector_attention_head_dim)
    element = next(connectors.parameters()).element_size()
    return captions * text_max_length * (width * element + 8) <= CAPTION_CACHE_BYTES  # + the int64 mask


def _where(world: World, device: torch.device) -> str:
    return str(device) if world.size == 1 else f"{world.size} ranks ({device.type})"


def _crepa(config: TrainConfig, source: ModelSource, transformer: Any, device: torch.device, dtype: torch.dtype):
    """CREPA's regulariser, when enabled: DINOv2 from the local torch hub cache, the VAE to decode clean frames."""
    if not config.crepa_enabled:
        return None
    from ltx2core.models.loading import load_vae
    from ltx2core.training.crepa import Crepa, CrepaSettings, load_dinov2

    settings = CrepaSettings(block_index=config.crepa_block_index, weight=config.crepa_lambda,
                             adjacent_distance=config.crepa_adjacent_distance, adjacent_tau=config.crepa_adjacent_tau,
                             image_size=config.crepa_encoder_image_size)
    encoder = load_dinov2(config.crepa_encoder).to(device, dtype)
    return Crepa(transformer, encoder=encoder, vae=load_vae(source, dtype=dtype, device=device), settings=settings,
                 seed=config.seed)


def _has_validation(config: TrainConfig) -> bool:
    return config.validation_steps > 0 and has_validation_prompts(config)


def _trackers(config: TrainConfig, output_dir: Path) -> list[MetricSink]:
    if config.report_to == "tensorboard":
        from ltx2core.training.sinks import TensorBoardSink

        return [TensorBoardSink(output_dir / "logs")]
    if config.report_to == "wandb":
        from ltx2core.training.sinks import WandbSink

        return [WandbSink(project=config.tracker_project_name, run=output_dir.name, directory=output_dir / "logs",
                          config=config.model_dump(mode="json"))]
    return []


if __name__ == "__main__":
    main()
