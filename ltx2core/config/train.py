"""Typed `config.json`: SimpleTuner's training keys for `model_family: ltxvideo2`.

Keys, spellings and defaults follow SimpleTuner so a migrating user's file keeps its meaning. Values the
model cannot use (frames that are not 8k+1, sizes off the 32-pixel grid, flavours or options this trainer
does not implement) are refused with the fix, rather than rounded or ignored.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, Field, field_validator, model_validator

from ltx2core.config.fields import StrictModel, check_frames, resolve_path, rule_error
from ltx2core.models.flavours import FLAVOURS, canonical
from ltx2core.models.scale import LTX2

TINY_MODEL = "tiny"  # pretrained_model_name_or_path naming the project's tiny random LTX-2 (tests, demo)
Flavour = Literal[tuple(FLAVOURS)]  # the names of ltx2core/models/flavours.py's table, nothing more


class TreadRoute(StrictModel):
    selection_ratio: float = Field(gt=0, lt=1, description="Share of video tokens routed around the span")
    start_layer_idx: int = Field(description="First block of the span (negative counts from the end)")
    end_layer_idx: int = Field(description="Last block of the span (negative counts from the end)")


class TreadConfig(StrictModel):
    """TREAD token routing: a random share of video tokens skips a span of blocks during training."""

    routes: list[TreadRoute] = Field(min_length=1)


class TrainConfig(StrictModel):
    """Everything `config.json` may say. Defaults are SimpleTuner's unless a field says otherwise."""

    # ---- model
    model_family: Literal["ltxvideo2"] = Field("ltxvideo2", description="Only LTX-2 is trained here")
    model_flavour: Flavour = Field(
        "2.0", description="The LTX-2 release and its transformer: 2.0 (aliases dev, 2), 2.3, 2.5 (full models; "
        "aliases 2.3-dev, 2.5-dev), 2.3-distilled, 2.5-distilled (the distilled transformers)")
    model_type: Literal["lora"] = Field("lora", description="Only LoRA training")
    lora_type: Literal["standard"] = Field("standard", description="PEFT LoRA (LyCORIS is not supported)")
    pretrained_model_name_or_path: str | None = Field(
        None, description=f"Hub id or folder of diffusers weights, or a single .safetensors checkpoint (Lightricks' "
        f"or ComfyUI's: its transformer, text connectors, VAEs and vocoder are read from it); '{TINY_MODEL}' = the "
        "flavour's tiny random model; null = the flavour's diffusers repository (config/README.md)"
    )
    text_encoder_path: str | None = Field(
        None, description="With a single-file pretrained_model_name_or_path: the diffusers folder or hub id the text "
        "encoder, tokenizer, scheduler, the components' configs and the components the file lacks come from; "
        "null = the flavour's diffusers repository"
    )
    pretrained_transformer_model_name_or_path: str | None = Field(
        None, description="A single .safetensors file the transformer comes from instead (Lightricks' or ComfyUI's "
        "layout: a whole checkpoint such as ltx-2.3-22b-dev.safetensors, a transformer-only file, FP8 files with "
        "scales); the other components still come from pretrained_model_name_or_path"
    )
    base_model_precision: Literal["no_change", "fp8-e4m3fn", "int8-torchao"] = Field(
        "no_change", description="no_change: frozen weights as loaded; fp8-e4m3fn: transformer block Linear weights "
        "stored in float8 (per-row scale), multiplied in fp8 where the GPU can; int8-torchao: the same weights in "
        "int8 by torchao (weight-only, SimpleTuner's LTX-2 default); LoRA stays float32"
    )
    train_text_encoder: bool = Field(
        False, description="Must stay false: the Gemma text encoder is frozen and its embeds cached")
    tokenizer_max_length: int = Field(1024, ge=1, description="Gemma prompt tokens (LTX-2 pipeline default)")

    # ---- paths
    output_dir: Path = Field(
        Path("output/models"), validate_default=True, description="LoRA checkpoints and validation videos"
    )
    data_backend_config: Path = Field(
        Path("config/multidatabackend.json"), validate_default=True, description="The datasets file"
    )

    # ---- optimisation
    train_batch_size: int = Field(1, ge=1, description="Clips per GPU per step")
    gradient_accumulation_steps: int = Field(1, ge=1, description="Steps summed per optimizer update")
    learning_rate: float = Field(1e-4, gt=0)
    lr_scheduler: Literal[
        "constant", "constant_with_warmup", "linear", "cosine", "cosine_with_restarts", "polynomial"
    ] = "constant"
    lr_warmup_steps: int = Field(0, ge=0)
    max_train_steps: int | None = Field(None, ge=1, description="Optimizer steps; wins over num_train_epochs (0=unset)")
    num_train_epochs: int | None = Field(1, ge=1, description="Passes over the data when max_train_steps is unset")
    optimizer: Literal["adamw", "adamw8bit"] = Field(
        "adamw", description="adamw: torch AdamW (float32 LoRA and state); adamw8bit: bitsandbytes' 8-bit AdamW"
    )
    max_grad_norm: float = Field(1.0, ge=0, description="Gradient clipping norm (0 = no clipping)")
    seed: int = Field(42, description="Seeds data order, noise and TREAD routing (null = the default)")
    mixed_precision: Literal["bf16", "fp16", "no"] = "bf16"
    gradient_checkpointing: bool = Field(True, description="Recompute activations in backward to save memory")
    gradient_checkpointing_policy: Literal["full", "selective"] = Field(
        "full", description="full: recompute whole blocks; selective: keep matmul and attention outputs, recompute "
        "the cheap ops (a third less compute, ~0.9 GiB more a block at 768x512x121; BENCHMARKS.md)")
    selective_checkpointing_blocks: int | None = Field(
        None, ge=0, description="With the selective policy: how many blocks keep their outputs (null = all; about "
        "36 fit an 80 GiB card at 768x512x121, all 48 a 141 GiB one)")
    compile_blocks: bool = Field(
        False, description="torch.compile each transformer block (regional; the first step compiles for 20-50 s)")

    # ---- several GPUs (one training process per GPU, launched with torchrun)
    num_processes: int | None = Field(
        None, ge=1, description="Training processes, one per GPU; null = every visible GPU on CUDA, 1 on the CPU"
    )
    fsdp_enable: bool = Field(False, description="FSDP2: shard the frozen base weights over the processes")
    fsdp_version: int = Field(2, description="Only 2 (torch FSDP2, fully_shard); SimpleTuner's deprecated 1 is refused")
    fsdp_reshard_after_forward: bool = Field(
        True, description="Free each block's gathered weights after its forward (less memory, one more all-gather)"
    )

    # ---- LoRA
    lora_rank: int = Field(16, ge=1)
    lora_alpha: float | None = Field(None, gt=0, description="Unset = lora_rank (scale 1)")
    lora_dropout: float = Field(0.1, ge=0, lt=1)
    peft_lora_target_modules: list[str] | None = Field(
        None, description="Module name suffixes to adapt; unset = the trainer's default (attention projections)"
    )

    audio_video_mode: Literal["joint", "video_to_audio", "audio_to_video", "audio_only"] = Field(
        "joint", description="joint: both noised; video_to_audio (foley) / audio_to_video: the first is the clean "
        "condition at timestep 0, the loss is the other's; audio_only: the audio stream alone, no video"
    )
    audio_loss_weight: float | Literal["auto"] = Field(
        1.0, description="Weight of the audio loss (video + w * audio); auto: the running video/audio loss ratio"
    )

    # ---- IC-LoRA (SimpleTuner's keys): references at the clip's size divided by this factor
    ltx2_reference_spatial_scale_factor: int = Field(1, ge=1, description="Reference size = clip size / this")
    ltx2_reference_temporal_scale_factor: int = Field(1, ge=1, description="Only 1: the in-context pipeline keeps "
                                                      "the reference's frames")

    # ---- scheduled sampling (SimpleTuner's rollout: ltx2core/training/rollout.py)
    scheduled_sampling_max_step_offset: int = Field(0, ge=0, description="Euler steps drawn from 0..N a clip; 0 = off")
    scheduled_sampling_probability: float = Field(0.0, ge=0, le=1, description="Chance a clip is rolled out")
    scheduled_sampling_ramp_steps: int = Field(0, ge=0, description="Ramp the chance from prob_start to prob_end")
    scheduled_sampling_prob_start: float = Field(0.0, ge=0, le=1)
    scheduled_sampling_prob_end: float = Field(0.5, ge=0, le=1)
    scheduled_sampling_sampler: str = Field("unipc", description="Flow matching rolls out with Euler steps (SimpleTuner"
                                            " uses this for eps/v models only)")
    scheduled_sampling_reflexflow: bool | None = Field(None, description="ReflexFlow loss terms: not implemented")
    scheduled_sampling_reflexflow_alpha: float | None = None
    scheduled_sampling_reflexflow_beta1: float | None = None
    scheduled_sampling_reflexflow_beta2: float | None = None

    # ---- checkpoints
    ltx2_first_frame_conditioning_probability: float = Field(
        0.0, ge=0, le=1, description="Image-to-video training: chance a clip's first frame is clean conditioning"
    )
    checkpointing_steps: int = Field(500, ge=1)
    checkpoints_total_limit: int | None = Field(None, ge=1, description="Keep only the newest N checkpoints")
    resume_from_checkpoint: str | None = Field("latest", description="'latest', a checkpoint path, or null = fresh")

    # ---- validation
    validation_steps: int = Field(100, ge=0, description="Validate every N steps (0 = never during training)")
    validation_prompt: str | None = None
    validation_prompt_library: Path | None = Field(
        None, description="A JSON file of named prompts ({name: prompt}) validated besides validation_prompt"
    )
    validation_base_model: bool = Field(False, description="Also sample the base model (no LoRA) at step 0")
    validation_negative_prompt: str | None = None
    validation_guidance: float | None = Field(
        None, ge=0, description="CFG scale on video; null = the flavour's (2.0: 5.0, 2.3/2.5: 3.0, distilled: 1.0)")
    ltx2_validation_audio_guidance: float | None = Field(
        None, ge=0, description="CFG scale on audio; null = the flavour's (2.0: validation_guidance, 2.3/2.5: 7.0, "
        "distilled: 1.0)")
    validation_num_inference_steps: int | None = Field(
        None, ge=1, description="null = the flavour's (30; distilled flavours sample their fixed 8-sigma schedule)")
    validation_seed: int | None = Field(None, description="Unset = seed")
    validation_resolution: list[tuple[int, int]] = Field(
        [(768, 512)], description="'WxH' or 'WxH,WxH' (or one number for a square); multiples of 32"
    )
    validation_num_video_frames: int = Field(121, description="8k+1 (SimpleTuner's unset value, 125, is not)")
    validation_using_datasets: bool = Field(False, description="Image-to-video from frames of eval_dataset_id")
    validation_disable_unconditional: bool = False
    eval_dataset_id: str | None = Field(None, description="Video dataset whose clips condition I2V validation")
    frame_rate: float = Field(
        25.0, gt=0, validation_alias=AliasChoices("frame_rate", "framerate"), description="fps told to the model"
    )

    # ---- memory
    offload_during_startup: bool = Field(False, description="Keep the text encoder off the GPU while VAE caching")
    enable_group_offload: bool = Field(False, description="diffusers group offloading of the transformer")
    group_offload_type: Literal["block_level", "leaf_level"] = "block_level"
    group_offload_blocks_per_group: int = Field(1, ge=1)
    group_offload_use_stream: bool = Field(False, description="Prefetch on a CUDA stream (not with checkpointing)")
    musubi_blocks_to_swap: int = Field(0, ge=0, le=47, description="Last N of 48 blocks live on the swap device")
    musubi_block_swap_device: str = "cpu"
    vae_enable_tiling: bool = Field(False, description="Spatial tiles in VAE encode/decode")
    vae_enable_slicing: bool = Field(False, description="One clip at a time through the VAE")
    vae_enable_patch_conv: bool = Field(False, description="Temporal chunks in the VAE's causal convolutions")
    vae_enable_temporal_roll: bool = Field(False, description="Stream the causal encoder in 8-frame blocks (exact)")
    vae_batch_size: int = Field(4, ge=1, description="Clips per VAE encode batch")

    # ---- regularisers and speed-ups
    tread_config: TreadConfig | None = None
    crepa_enabled: bool = Field(False, description="CREPA temporal alignment to a frozen vision encoder")
    crepa_block_index: int = Field(8, ge=0, description="Transformer block whose hidden states are aligned")
    crepa_lambda: float = Field(0.5, ge=0, description="Weight of the CREPA loss")
    crepa_adjacent_distance: int = Field(1, ge=0, description="Neighbour frames compared at this distance")
    crepa_adjacent_tau: float = Field(1.0, gt=0, description="Neighbour weight exp(-d/tau)")
    crepa_encoder: str = Field("dinov2_vitg14", description="torch hub vision encoder")
    crepa_encoder_image_size: int = Field(518, ge=1, description="Encoder input size (518 for vitg14, 224 for vits14)")

    # ---- tracking
    report_to: Literal["none", "tensorboard", "wandb"] = "none"
    tracker_project_name: str = "ltx2-lora"

    @model_validator(mode="before")
    @classmethod
    def _one_frame_rate(cls, data: Any) -> Any:
        if isinstance(data, dict) and {"frame_rate", "framerate"} <= data.keys():
            if data["frame_rate"] != data["framerate"]:
                raise rule_error(
                    ("frame_rate", f"frame_rate {data['frame_rate']} and framerate {data['framerate']} "
                     "are the same setting: keep one")
                )
            data = {k: v for k, v in data.items() if k != "framerate"}
        return data

    @field_validator("model_family", mode="before")
    @classmethod
    def _ltx2_only(cls, value: Any) -> Any:
        if value != "ltxvideo2":
            raise rule_error(
                ("model_family", f"model_family {value!r} is not supported: this trainer trains LTX-2 only; "
                 "set model_family to 'ltxvideo2'")
            )
        return value

    @field_validator("model_flavour", mode="before")
    @classmethod
    def _flavour(cls, value: Any) -> Any:
        try:
            return canonical(str(value))
        except ValueError as error:
            raise rule_error(("model_flavour", str(error))) from None

    @field_validator("train_text_encoder")
    @classmethod
    def _frozen_text_encoder(cls, value: bool) -> bool:
        if value:
            raise rule_error(
                ("train_text_encoder", "train_text_encoder true is not supported: Gemma3 stays frozen "
                 "and its embeds are cached; set it to false")
            )
        return value

    @field_validator("max_train_steps", "num_train_epochs", mode="before")
    @classmethod
    def _zero_is_unset(cls, value: Any) -> Any:
        return None if value in (0, "0") else value  # SimpleTuner writes 0 for "use the other one"

    @field_validator("seed", mode="before")
    @classmethod
    def _null_seed_is_the_default(cls, value: Any) -> Any:
        return cls.model_fields["seed"].default if value is None else value  # one default, not null -> 0 here and there

    @field_validator("validation_prompt_library", mode="before")
    @classmethod
    def _false_is_none(cls, value: Any) -> Any:
        return None if value in (False, "false", "False", "") else value  # SimpleTuner's examples write false

    @field_validator("output_dir", "data_backend_config", "validation_prompt_library")
    @classmethod
    def _absolute(cls, value: Path | None) -> Path | None:
        return None if value is None else resolve_path(value)

    @field_validator("peft_lora_target_modules", mode="before")
    @classmethod
    def _module_list(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        text = value.strip()
        return json.loads(text) if text.startswith("[") else [m.strip() for m in text.split(",") if m.strip()]

    @field_validator("tread_config", mode="before")
    @classmethod
    def _tread_json(cls, value: Any) -> Any:
        return json.loads(value) if isinstance(value, str) and value.strip().startswith("{") else value

    @field_validator("validation_resolution", mode="before")
    @classmethod
    def _parse_resolutions(cls, value: Any) -> Any:
        if isinstance(value, int):
            value = str(value)
        if not isinstance(value, str):
            return value
        sizes, problems = [], []
        for item in (part.strip() for part in value.split(",")):
            edges = item.lower().split("x")
            if len(edges) == 1:  # SimpleTuner: one number is a square
                edges = edges * 2
            if len(edges) != 2 or not all(e.strip().isdigit() for e in edges):
                problems.append(("validation_resolution", f"validation_resolution {item!r} is not WxH (e.g. 768x512)"))
                continue
            width, height = (int(e) for e in edges)
            for name, pixels in (("width", width), ("height", height)):
                if problem := LTX2.size_error(f"validation_resolution {item!r} {name}", pixels):
                    problems.append(("validation_resolution", problem))
            sizes.append((width, height))
        if problems:
            raise rule_error(*problems)
        return sizes

    @field_validator("fsdp_version")
    @classmethod
    def _fsdp2_only(cls, value: int) -> int:
        if value != 2:
            raise rule_error(
                ("fsdp_version", f"fsdp_version {value} is not supported: only FSDP2 (torch fully_shard) is; "
                 "set fsdp_version to 2")
            )
        return value

    @field_validator("validation_num_video_frames")
    @classmethod
    def _validation_frames(cls, value: int) -> int:
        return check_frames("validation_num_video_frames", value)

    @model_validator(mode="after")
    def _flavour_repo(self) -> TrainConfig:
        if self.pretrained_model_name_or_path is None:
            self.pretrained_model_name_or_path = FLAVOURS[self.model_flavour].repo
        return self

    @model_validator(mode="after")
    def _check_combinations(self) -> TrainConfig:
        problems = []
        if self.max_train_steps is None and self.num_train_epochs is None:
            problems.append(("max_train_steps", "max_train_steps or num_train_epochs must be set (both are 0/unset)"))
        if self.enable_group_offload and not self.gradient_checkpointing:
            # Measured (research/group_offload_check_h100.json): backward then fails with tensors left on the CPU.
            problems.append(
                ("enable_group_offload", "enable_group_offload needs gradient_checkpointing true: without it "
                 "backward fails with weights left on the CPU")
            )
        if self.enable_group_offload and self.group_offload_use_stream and self.gradient_checkpointing:
            # Measured: streamed offload swaps stale CPU copies back in, so LoRA weights never change.
            problems.append(
                ("group_offload_use_stream", "group_offload_use_stream with gradient_checkpointing trains nothing "
                 "(diffusers restores stale weights, LoRA updates are lost): set group_offload_use_stream false")
            )
        if self.lora_alpha is None:
            self.lora_alpha = float(self.lora_rank)
        if problems:
            raise rule_error(*problems)
        return self

    @model_validator(mode="after")
    def _check_recompute(self) -> TrainConfig:
        problems = []
        if self.gradient_checkpointing_policy == "selective" and not self.gradient_checkpointing:
            problems.append(("gradient_checkpointing_policy", "gradient_checkpointing_policy selective needs "
                             "gradient_checkpointing true (without checkpointing everything is kept anyway)"))
        if self.selective_checkpointing_blocks is not None and self.gradient_checkpointing_policy != "selective":
            problems.append(("selective_checkpointing_blocks", "selective_checkpointing_blocks only applies with "
                             "gradient_checkpointing_policy selective: set that, or remove this key"))
        # Combinations not verified to train the same LoRA compiled as eager are refused rather than trusted.
        for key, on in (("musubi_blocks_to_swap", self.musubi_blocks_to_swap), ("enable_group_offload",
                        self.enable_group_offload), ("tread_config", self.tread_config), ("fsdp_enable",
                        self.fsdp_enable)):
            if self.compile_blocks and on:
                problems.append(("compile_blocks", f"compile_blocks with {key} is not supported yet (not verified "
                                 f"to train the same LoRA): set compile_blocks false or remove {key}"))
        if problems:
            raise rule_error(*problems)
        return self

    @field_validator("ltx2_reference_temporal_scale_factor")
    @classmethod
    def _only_full_frames(cls, value: int) -> int:
        if value != 1:
            raise rule_error(("ltx2_reference_temporal_scale_factor", f"ltx2_reference_temporal_scale_factor {value} "
                              "is not supported: diffusers' LTX2InContextPipeline, which validates and runs IC-LoRAs, "
                              "keeps every frame of the reference; use 1"))
        return value

    @field_validator("audio_loss_weight")
    @classmethod
    def _check_audio_weight(cls, value: float | str) -> float | str:
        if value != "auto" and value < 0:
            raise rule_error(("audio_loss_weight", f"audio_loss_weight {value} must be 0 or more, or \"auto\""))
        return value

    @model_validator(mode="after")
    def _check_audio_video_mode(self) -> TrainConfig:
        if self.audio_video_mode not in ("video_to_audio", "audio_only"):
            return self
        uses_video = {"scheduled_sampling_max_step_offset": (self.scheduled_sampling_max_step_offset, "roll out"),
                      "ltx2_first_frame_conditioning_probability": (
                          self.ltx2_first_frame_conditioning_probability, "condition on its first frame"),
                      "crepa_enabled": (self.crepa_enabled, "align"), "tread_config": (self.tread_config, "route")}
        problems = [(key, f"{key} with audio_video_mode {self.audio_video_mode}: there is no noised video to {what}; "
                     f"remove {key} or use another audio_video_mode")
                    for key, (on, what) in uses_video.items() if on]
        if problems:
            raise rule_error(*problems)
        return self

    @model_validator(mode="after")
    def _check_scheduled_sampling(self) -> TrainConfig:
        if not self.scheduled_sampling_max_step_offset:
            return self
        problems = []
        if self.scheduled_sampling_reflexflow:
            problems.append(("scheduled_sampling_reflexflow", "scheduled_sampling_reflexflow is not implemented here: "
                             "the rollout trains on the plain velocity target; set it false (or remove it)"))
        if self.fsdp_enable:
            problems.append(("scheduled_sampling_max_step_offset", "scheduled sampling with fsdp_enable is not "
                             "supported: the ranks would roll out different numbers of steps and FSDP's gathers "
                             "would wait on each other; set fsdp_enable false (data parallel works)"))
        if problems:
            raise rule_error(*problems)
        return self

    @model_validator(mode="after")
    def _check_int8(self) -> TrainConfig:
        if self.base_model_precision != "int8-torchao":
            return self
        unverified = [key for key in ("musubi_blocks_to_swap", "enable_group_offload", "compile_blocks")
                      if getattr(self, key)]
        if unverified:
            raise rule_error((unverified[0], f"{unverified[0]} with base_model_precision int8-torchao is not "
                              "verified (torchao's int8 weights): use fp8-e4m3fn for that combination, or drop "
                              f"{unverified[0]}"))
        return self

    @model_validator(mode="after")
    def _check_fsdp(self) -> TrainConfig:
        if not self.fsdp_enable:
            return self
        problems = []
        if self.num_processes == 1:
            problems.append(("fsdp_enable", "fsdp_enable shards the model over several processes but num_processes "
                             "is 1: set num_processes to 2 or more (null = every GPU), or fsdp_enable false"))
        if self.base_model_precision != "no_change":
            problems.append(("base_model_precision", f"base_model_precision {self.base_model_precision} with "
                             "fsdp_enable: float8 base weights are not sharded here; use no_change (FSDP already "
                             "divides the base weights' memory by the number of GPUs) or fsdp_enable false"))
        if self.musubi_blocks_to_swap or self.enable_group_offload:
            key = "musubi_blocks_to_swap" if self.musubi_blocks_to_swap else "enable_group_offload"
            problems.append((key, f"{key} with fsdp_enable: block swap moves whole blocks to the host, FSDP keeps "
                             "1/N of each block on every GPU; use one of them (set fsdp_enable false, or "
                             f"{key} to {0 if key == 'musubi_blocks_to_swap' else 'false'})"))
        if problems:
            raise rule_error(*problems)
        return self
