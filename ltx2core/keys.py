"""What invalidates what: every cache key and row fingerprint, and every mapping from the config to the plain values
the library takes. One place, so a setting that changes numbers changes exactly the keys it should
(tests/ltx2core/test_keys.py checks each one), and the model flavour can join every model-dependent key here.

Keys are content addresses (`fingerprint` of plain values): a row whose key is present is current; a changed
input makes a new key, and the old row is simply no longer wanted. Per stage:
  filter    sample_id(dataset, video, clip_spec); the row is re-judged when filter_fingerprint changes
  bucket    bucket_spec(...).fingerprint on each kept sample
  captions  the caption source's own fingerprint (ltx2core/data/captions.py)
  text      TextModel.key(caption): the caption, the tokenizer/encoder/connectors' weights, max length
  latents   latent_key: the video, clip_spec, bucket, VAE weights, VAE options that change numbers, audio
  train     run_id: the output folder; its checkpoints record the settings they were trained with
Store queries that find the missing rows are tasks/pending.py's; nothing here touches a store.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ltx2core.data.buckets import BucketSpec
from ltx2core.data.fingerprint import fingerprint
from ltx2core.data.frames import FrameLimits
from ltx2core.models.scale import LTX2

if TYPE_CHECKING:
    from ltx2core.config.databackend import VideoDataset
    from ltx2core.config.train import TrainConfig
    from ltx2core.models.source import ModelSource
    from ltx2core.models.vae_options import VaeOptions
    from ltx2core.training.assemble import ModelSettings
    from ltx2core.training.data import BucketBatches
    from ltx2core.training.loop import TrainSettings
    from ltx2core.training.rollout import Rollout
    from ltx2core.validation.settings import MemoryOptions, ValidationSettings


# ---- samples: filter and bucket


def limits_of(dataset: VideoDataset) -> FrameLimits:
    v = dataset.video
    return FrameLimits(num_frames=v.num_frames or v.min_frames, min_frames=v.min_frames, max_frames=v.max_frames,
                       frame_rate=float(v.frame_rate), sound_files=bool(v.audio and v.audio.audio_only))


def clip_spec(dataset: VideoDataset) -> str:
    """What a sample is cut as: its identity, unlike min/max_frames which only decide whether it is kept."""
    v = dataset.video
    frames = v.num_frames if v.bucket_strategy == "aspect_ratio" else "bucket"
    return f"start=0;frames={frames};fps={float(v.frame_rate):g}"


def probe_folders(datasets: list[VideoDataset]) -> list[str]:
    """The folders the probe stage reads: every video dataset's, and its IC-LoRA references' (conditioning_data)."""
    return sorted({str(f) for d in datasets for f in (d.instance_data_dir, d.reference_dir) if f is not None})


def sample_id(dataset_id: str, video_id: str, spec: str) -> str:
    return fingerprint("sample", dataset_id, video_id, spec)


def filter_fingerprint(dataset: VideoDataset) -> str:
    """What the keep/reject decision and the repeats depend on: a change re-judges every sample."""
    return fingerprint(limits_of(dataset).fingerprint, dataset.repeats)


def bucket_spec(dataset: VideoDataset) -> BucketSpec:
    v = dataset.video
    return BucketSpec(strategy=v.bucket_strategy, resolution=dataset.resolution,
                      resolution_type=dataset.resolution_type, num_frames=v.num_frames or v.min_frames,
                      max_frames=v.max_frames, frame_interval=v.frame_interval or LTX2.temporal,
                      frame_rate=float(v.frame_rate))


# ---- captions


def caption_source(dataset: VideoDataset, read_table: Callable[[str, list[str]], list[dict]]):
    """The dataset's caption_strategy as a caption source; `read_table` reads a parquet file's rows (the
    storage layer's reader: this module touches no files format of the store)."""
    from ltx2core.data import captions

    match dataset.caption_strategy:
        case "textfile":
            return captions.TextFile()
        case "filename":
            return captions.FromFilename()
        case "instanceprompt":
            return captions.InstancePrompt(dataset.instance_prompt)
        case "parquet" | "jsonl":
            p = dataset.parquet
            reader = captions.read_jsonl if str(p.path).endswith((".jsonl", ".json")) else read_table
            return captions.CaptionTable(str(p.path), p.filename_column, p.caption_column, reader)
    raise ValueError(f"dataset '{dataset.id}': unknown caption_strategy {dataset.caption_strategy!r}")


# ---- the model


def model_source(config: TrainConfig) -> ModelSource:
    """Where every component comes from: the diffusers model, or checkpoint files with `text_encoder_path`'s diffusers
    model for the rest, and the transformer's own file when one is named (ltx2core/models/source.py)."""
    from ltx2core.models.source import resolve_source

    return resolve_source(config.pretrained_model_name_or_path, config.model_flavour,
                          transformer_file=config.pretrained_transformer_model_name_or_path,
                          text_encoder_path=config.text_encoder_path)


# ---- text embeddings


@dataclass(frozen=True)
class TextModel:
    """Which text encoder makes the embeddings, as far as cache keys are concerned."""

    encoder_fp: str
    max_length: int

    def key(self, caption: str) -> str:
        return fingerprint("text-embed", caption, self.encoder_fp, self.max_length)


def text_model(source: ModelSource) -> TextModel:
    from ltx2core.models.fingerprint import component_fingerprint

    parts = [component_fingerprint(source, c) for c in ("tokenizer", "text_encoder", "connectors")]
    return TextModel(encoder_fp=fingerprint(*parts), max_length=source.text_max_length)


# ---- latents


@dataclass(frozen=True)
class LatentModel:
    """Which VAE and options make the latents, as far as cache keys are concerned."""

    vae_fp: str
    options_key: str
    reference_scale: int = 1  # IC-LoRA references at the clip's size / this (ltx2_reference_spatial_scale_factor)


def vae_options(config: TrainConfig) -> VaeOptions:
    """The config's SimpleTuner-named VAE switches as the VAE's options."""
    from ltx2core.models.vae_options import VaeOptions

    return VaeOptions(tiling=config.vae_enable_tiling, slicing=config.vae_enable_slicing,
                      patch_conv=config.vae_enable_patch_conv, temporal_roll=config.vae_enable_temporal_roll)


def latent_model(source: ModelSource, config: TrainConfig) -> LatentModel:
    from ltx2core.models.fingerprint import component_fingerprint
    from ltx2core.models.source import component_config

    return LatentModel(vae_fp=component_fingerprint(source, "vae"),
                       options_key=vae_options(config).cache_key(component_config(source, "vae")),
                       reference_scale=config.ltx2_reference_spatial_scale_factor)


def latent_key(sample: dict[str, Any], dataset: VideoDataset, model: LatentModel, reference: str | None = None) -> str:
    """`reference`: the video_id of the sample's IC-LoRA reference (tasks/datasets.references_of), if it has one."""
    audio = dataset.video.audio
    audio_key = f"audio={audio.sample_rate}x{audio.channels}" if audio else "audio=none"
    if audio and audio.audio_only:  # zeros stand for the video: never the rows of the same clip with its video
        audio_key += ";video=none"
    if dataset.reference_dir is not None:  # absent without IC-LoRA: the keys of every other dataset are unchanged
        audio_key += f";reference={reference or 'missing'}/{model.reference_scale}"
        if dataset.reference_fit == "reference_loose":  # it encodes references that reference_strict refuses
            audio_key += "/loose"
    return fingerprint("latents", sample["video_id"], clip_spec(dataset), sample["bucket"], model.vae_fp,
                       model.options_key, audio_key)


# ---- training and validation


def run_id(config: TrainConfig) -> str:
    """A training run is its output folder: checkpoints there are resumed (or refused, listing what changed)."""
    return Path(config.output_dir).name


def train_batches(config: TrainConfig, buckets: dict[str, list[tuple[str, int]]]) -> BucketBatches:
    """The batches the loop draws: `train_batch_size` clips of one bucket, in an order seeded by `seed`."""
    from ltx2core.training.data import BucketBatches

    return BucketBatches(buckets, batch_size=config.train_batch_size, seed=config.seed)


def max_steps(config: TrainConfig, batches: BucketBatches, processes: int) -> int:
    """Optimizer steps of the run: max_train_steps, or num_train_epochs of steps that each take
    processes x gradient_accumulation_steps batches of one bucket (as the loop draws them)."""
    if config.max_train_steps:
        return config.max_train_steps
    return max(1, config.num_train_epochs * batches.steps_per_epoch(processes * config.gradient_accumulation_steps))


def validation_settings(config: TrainConfig) -> ValidationSettings:
    """The config's validation_* keys over the flavour's recipe (flavours.py): an unset guidance or step count is
    the flavour's; 2.0's audio guidance follows its video guidance; validation_seed unset means `seed`."""
    from ltx2core.models.flavours import FLAVOURS
    from ltx2core.validation.settings import ValidationSettings

    recipe = FLAVOURS[config.model_flavour].validation
    guidance = _first_set(config.validation_guidance, recipe.guidance)
    audio_guidance = _first_set(config.ltx2_validation_audio_guidance, recipe.audio_guidance, guidance)
    # a fixed schedule (distilled) has its own number of steps
    steps = recipe.steps if recipe.sigmas else _first_set(config.validation_num_inference_steps, recipe.steps)
    seed = _first_set(config.validation_seed, config.seed)
    return ValidationSettings(
        guidance=guidance, audio_guidance=audio_guidance, steps=steps,
        stg_scale=recipe.stg_scale, stg_blocks=recipe.stg_blocks, modality_scale=recipe.modality_scale,
        guidance_rescale=recipe.guidance_rescale, sigmas=recipe.sigmas, seed=seed,
        resolutions=tuple(tuple(r) for r in config.validation_resolution),
        num_frames=config.validation_num_video_frames, frame_rate=config.frame_rate)


def _first_set(*values: Any) -> Any:
    """The first value that is not None (an explicit 0 counts as set)."""
    return next(v for v in values if v is not None)


def sampling_memory(config: TrainConfig) -> MemoryOptions:
    """Where a stand-alone validation run keeps the sampler's models: group offload, and the VAE's decode options
    (temporal roll is an encoder option: decoding has no use for it)."""
    from ltx2core.models.vae_options import VaeOptions
    from ltx2core.validation.settings import MemoryOptions

    return MemoryOptions(
        group_offload=config.enable_group_offload, offload_type=config.group_offload_type,
        blocks_per_group=config.group_offload_blocks_per_group, use_stream=config.group_offload_use_stream,
        vae=VaeOptions(tiling=config.vae_enable_tiling, slicing=config.vae_enable_slicing,
                       patch_conv=config.vae_enable_patch_conv))


def has_validation_prompts(config: TrainConfig) -> bool:
    """Whether the validate stage has anything to sample: a prompt, a prompt library or the eval dataset."""
    return bool(config.validation_prompt or config.validation_prompt_library or config.validation_using_datasets)


def model_settings(config: TrainConfig, *, num_blocks: int, with_audio: bool, world_size: int) -> ModelSettings:
    """What assembling the training model takes from the config (ltx2core/training/assemble.py)."""
    from ltx2core.training.assemble import ModelSettings
    from ltx2core.training.lora import LoraSpec, target_modules
    from ltx2core.training.offload import SWAP_KEYS, swap_plan

    return ModelSettings(
        lora=LoraSpec(rank=config.lora_rank, alpha=config.lora_alpha or config.lora_rank, dropout=config.lora_dropout,
                      targets=tuple(target_modules(config.peft_lora_target_modules, with_audio=with_audio,
                                                   audio_only=config.audio_video_mode == "audio_only"))),
        seed=config.seed, base_precision=config.base_model_precision, with_audio=with_audio,
        # block swap: musubi_blocks_to_swap, or enable_group_offload mapped onto it with a warning
        swap=swap_plan(num_blocks=num_blocks, **config.model_dump(include=set(SWAP_KEYS))),
        fsdp=config.fsdp_enable and world_size > 1, reshard_after_forward=config.fsdp_reshard_after_forward)


def train_settings(config: TrainConfig, source: ModelSource, *, max_steps: int, num_blocks: int,
                   scheduler_config: Any, device: str) -> TrainSettings:
    """The loop's settings from the config (ltx2core/training/loop.py) and the flavour: its noise levels (from
    `scheduler_config`, the flavour's corrected scheduler) and how its transformer is called. The model's label
    joins the resume fingerprint, so a run is never resumed on another flavour or model."""
    from ltx2core.training.flow_matching import sigma_sampler
    from ltx2core.training.loop import TrainSettings
    from ltx2core.training.tread import resolve_routes

    return TrainSettings(
        output_dir=Path(config.output_dir), max_steps=max_steps, text_max_length=source.text_max_length,
        model=source.label, flavour=source.flavour.name,
        learning_rate=config.learning_rate, lr_scheduler=config.lr_scheduler, lr_warmup_steps=config.lr_warmup_steps,
        gradient_accumulation_steps=config.gradient_accumulation_steps, max_grad_norm=config.max_grad_norm,
        optimizer=config.optimizer, seed=config.seed, mixed_precision=config.mixed_precision,
        gradient_checkpointing=config.gradient_checkpointing, recompute=config.gradient_checkpointing_policy,
        selective_blocks=config.selective_checkpointing_blocks, compile_blocks=config.compile_blocks,
        first_frame_p=config.ltx2_first_frame_conditioning_probability,
        checkpointing_steps=config.checkpointing_steps, checkpoints_total_limit=config.checkpoints_total_limit,
        validation_steps=config.validation_steps,
        tread_routes=resolve_routes(config.tread_config.routes, num_blocks) if config.tread_config else (),
        device=device, sigmas=sigma_sampler(source.flavour.distilled, scheduler_config),
        cross_timestep=source.flavour.use_cross_timestep, rollout=rollout(config),
        audio_loss_weight=config.audio_loss_weight, audio_video_mode=config.audio_video_mode)


def rollout(config: TrainConfig) -> Rollout | None:
    """Scheduled sampling from SimpleTuner's keys; None when off (no offset, or a chance that is 0 throughout)."""
    from ltx2core.training.rollout import Rollout

    chance = (config.scheduled_sampling_prob_start, config.scheduled_sampling_prob_end) if (
        config.scheduled_sampling_ramp_steps) else (config.scheduled_sampling_probability,)
    if not config.scheduled_sampling_max_step_offset or max(chance) <= 0:
        return None
    return Rollout(max_step_offset=config.scheduled_sampling_max_step_offset,
                   probability=config.scheduled_sampling_probability,
                   ramp_steps=config.scheduled_sampling_ramp_steps, prob_start=config.scheduled_sampling_prob_start,
                   prob_end=config.scheduled_sampling_prob_end)
