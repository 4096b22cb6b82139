"""Stage `train`: a LoRA trained from the cached latents and caption embeddings.

Recipe: every kept sample whose latents and caption embedding are cached -> buckets of sample ids (with
repeats) -> load the transformer and connectors once -> add the LoRA -> train (ltx2core.training.loop),
resuming from the run's latest checkpoint -> each checkpoint's LoRA into `checkpoints` -> final LoRA files
(diffusers and ComfyUI formats), loss curve, TensorBoard logs.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from ltx2core.config.databackend import VideoDataset
from ltx2core.config.train import TrainConfig
from ltx2core.data.tensors import from_record
from ltx2core.models.loading import load_connectors, load_scheduler, load_transformer
from ltx2core.models.runtime import compute_dtype, pick_device
from ltx2core.models.source import component_config, resolve_source
from ltx2core.training.checkpoint import latest_checkpoint
from ltx2core.training.data import BucketBatches, TrainExample
from ltx2core.training.flow_matching import DynamicShift
from ltx2core.training.fp8 import apply_fp8_base
from ltx2core.training.loop import TrainSettings, train
from ltx2core.training.lora import LoraSpec, add_lora, save_lora, target_modules
from ltx2core.training.offload import SWAP_KEYS, swap_plan
from ltx2core.training.sinks import HistorySink
from ltx2core.training.tread import resolve_routes
from storage.sql import sql_in
from storage.store import Store
from tasks.pending import max_steps, run_id, training_refs
from tasks.progress import sink
from tasks.report import StageReport


class StoreSource:
    """The training examples, read from the store a batch at a time (the loop never sees storage)."""

    def __init__(self, store: Store, refs: dict[str, tuple[str, str, float]]):
        self.store = store
        self.refs = refs  # sample_id -> (latents key, text_embeds key, frame rate)

    def load(self, keys: Sequence[str]) -> list[TrainExample]:
        latent_keys = {self.refs[k][0] for k in keys}
        text_keys = {self.refs[k][1] for k in keys}
        latents = {r["key"]: r for r in self.store.read("latents", where=sql_in("key", latent_keys)).to_pylist()}
        texts = {r["key"]: r for r in self.store.read("text_embeds", where=sql_in("key", text_keys)).to_pylist()}
        out = []
        for key in keys:
            lat_key, text_key, fps = self.refs[key]
            z, t = latents[lat_key], texts[text_key]
            audio = (from_record(z["audio_latents"], z["audio_latents_shape"], z["audio_latents_dtype"])
                     if z["audio_latents"] is not None else None)
            out.append(TrainExample(
                key=key, latents=from_record(z["latents"], z["latents_shape"], z["latents_dtype"]).float(),
                text_features=from_record(t["features"], t["features_shape"], t["features_dtype"]).float(),
                frame_rate=fps, audio_latents=audio.float() if audio is not None else None))
        return out


class StageProgress:
    """Steps into the stage's progress bar (the CLI's), with the loss and speed."""

    def log(self, step: int, metrics) -> None:
        sink().advance("train", 1, note=f"step {step}  loss {metrics['loss']:.4f}  {metrics['s_per_step']:.2f} s/step")

    def close(self) -> None:
        pass


@task(name="train", cache_policy=NO_CACHE)
def train_lora(store_uri: str, config: TrainConfig, datasets: list[VideoDataset], force: bool = False) -> StageReport:
    t0 = time.perf_counter()
    log = get_run_logger()
    store = Store.open(store_uri)
    report = StageReport("train", scope=run_id(config))
    source = resolve_source(config.pretrained_model_name_or_path, config.model_flavour)
    refs, buckets = training_refs(store, config, datasets, source)
    if not refs:
        raise ValueError("no sample has both its latents and its caption embedding cached: run the stages "
                         "probe,filter,bucket,captions,text-embeds,latents first (`ltx2 status` shows what is missing)")
    batches = BucketBatches(buckets, batch_size=config.train_batch_size, seed=config.seed or 0)
    output_dir = Path(config.output_dir)
    resume = None if force or config.resume_from_checkpoint is None else (
        latest_checkpoint(output_dir) if config.resume_from_checkpoint == "latest"
        else Path(config.resume_from_checkpoint))
    total = max_steps(config, batches)
    done = int(resume.name.rsplit("-", 1)[1]) if resume else 0
    report.skipped = done
    if done >= total:
        log.info("train %s: up to date (step %d of %d in %s)", report.scope, done, total, output_dir)
        return _finish(report, store, t0)

    device = pick_device()
    dtype = compute_dtype(config.mixed_precision, device)
    with_audio = any(d.video.audio for d in datasets)
    log.info("train %s: %d samples in %d buckets, steps %d..%d on %s with %s", report.scope, len(refs), len(buckets),
             done + 1, total, device, source.label)
    # Block swap (musubi_blocks_to_swap, or enable_group_offload mapped onto it with a warning): the model
    # loads on the CPU and the swapper places it.
    plan = swap_plan(num_blocks=component_config(source, "transformer")["num_layers"],
                     **config.model_dump(include=set(SWAP_KEYS)))
    transformer = load_transformer(source, dtype=dtype, device="cpu" if plan else device)
    connectors = load_connectors(source, dtype=dtype, device=device)
    spec = LoraSpec(rank=config.lora_rank, alpha=config.lora_alpha or config.lora_rank, dropout=config.lora_dropout,
                    targets=tuple(target_modules(config.peft_lora_target_modules, with_audio=with_audio)))
    add_lora(transformer, spec, seed=config.seed or 0)
    if config.base_model_precision == "fp8-e4m3fn":  # after add_lora: PEFT must see plain Linear layers
        log.info("train %s: fp8 base weights save %.1f GiB", report.scope, apply_fp8_base(transformer) / 2**30)
    if plan:
        plan.attach(transformer, device)
    settings = TrainSettings(
        output_dir=output_dir, max_steps=total, text_max_length=source.flavour.text_max_length, model=source.label,
        learning_rate=config.learning_rate, lr_scheduler=config.lr_scheduler, lr_warmup_steps=config.lr_warmup_steps,
        gradient_accumulation_steps=config.gradient_accumulation_steps, max_grad_norm=config.max_grad_norm,
        optimizer=config.optimizer, seed=config.seed or 0, mixed_precision=config.mixed_precision,
        gradient_checkpointing=config.gradient_checkpointing,
        first_frame_p=config.ltx2_first_frame_conditioning_probability,
        checkpointing_steps=config.checkpointing_steps, checkpoints_total_limit=config.checkpoints_total_limit,
        validation_steps=config.validation_steps,
        tread_routes=resolve_routes(config.tread_config.routes, len(transformer.transformer_blocks))
        if config.tread_config else (),
        device=str(device), shift=DynamicShift.from_scheduler_config(load_scheduler(source).config),
    )
    history = HistorySink(output_dir / "loss.csv")
    sinks = [history, StageProgress()] + _trackers(config, output_dir)

    def on_checkpoint(step: int, folder: Path) -> None:
        lora = (folder / "pytorch_lora_weights.safetensors").read_bytes()
        last = history.rows[-1]["loss"] if history.rows else None
        store.upsert("checkpoints", [{"key": f"{report.scope}/{step:06d}", "run_id": report.scope, "step": step,
                                      "lora": lora, "lora_path": str(folder), "loss": last,
                                      "created_at": datetime.now(UTC)}])

    def on_validate(step: int) -> None:  # with the training transformer: no second copy of the model
        from tasks.validate import run_validation

        for row in run_validation(store, config, datasets, source, step=step, lora=None, transformer=transformer):
            log.info("validation sample at step %d: %s", step, row["video_path"])

    sink().start("train", total - done)
    try:
        result = train(transformer, StoreSource(store, refs), batches, connectors=connectors, settings=settings,
                       sinks=sinks, resume_from=resume, on_checkpoint=on_checkpoint,
                       on_validate=on_validate if _has_validation(config) else None,
                       crepa=_crepa(config, source, transformer, device, dtype))
    finally:
        for s in sinks:
            s.close()
    save_lora(transformer, output_dir)
    report.done = result.steps_run
    report.counts = {"step": result.step, "samples": len(refs), "buckets": len(buckets)}
    curve = history.write_png(output_dir / "loss.png")
    _artifact(report.scope, result, source.label, output_dir, curve)
    log.info("train %s: %d steps to step %d; LoRA in %s", report.scope, result.steps_run, result.step, output_dir)
    last = result.history[-1] if result.history else {}
    sink().finish("train", f"step {result.step}  loss {last.get('loss', float('nan')):.4f}")
    return _finish(report, store, t0)


def _crepa(config: TrainConfig, source, transformer, device, dtype):
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
                 seed=config.seed or 0)


def _has_validation(config: TrainConfig) -> bool:
    return config.validation_steps > 0 and bool(
        config.validation_prompt or config.validation_prompt_library or config.validation_using_datasets)


def _finish(report: StageReport, store: Store, t0: float) -> StageReport:
    report.versions = store.versions(["checkpoints"])
    report.seconds = time.perf_counter() - t0
    return report


def _trackers(config: TrainConfig, output_dir: Path) -> list:
    if config.report_to == "tensorboard":
        from ltx2core.training.sinks import TensorBoardSink

        return [TensorBoardSink(output_dir / "logs")]
    return []


def _artifact(run: str, result, label: str, output_dir: Path, curve: Path) -> None:
    """The loss curve and the LoRA's whereabouts in the Prefect UI."""
    png = base64.b64encode(curve.read_bytes()).decode()
    last = result.history[-1] if result.history else {}
    create_markdown_artifact(
        key=f"train-{run}".lower().replace("_", "-"),
        markdown=(f"# Training run `{run}`\n\nModel: {label}\n\nStep {result.step} "
                  f"(this run: {result.steps_run}); last loss {last.get('loss', float('nan')):.4f}\n\n"
                  f"![loss curve](data:image/png;base64,{png})\n\nLoRA: `{output_dir}/pytorch_lora_weights.safetensors` "
                  f"(ComfyUI: `lora_comfyui.safetensors`)\n"),
        description=f"LoRA training {run}")
