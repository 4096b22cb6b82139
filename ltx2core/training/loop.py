"""The LoRA training loop: batches -> steps -> optimizer updates, with checkpoints and resume.

The transformer comes in with its LoRA already added (lora.add_lora) and its base frozen; the loop owns
the optimizer, the LR schedule, the random streams and the data position, and saves all but the random
streams with every checkpoint (they need no saving, below), so that N steps, a kill, and a resume from step k
give the same LoRA as N steps in one go (tested to the bit on the CPU and on two GPUs). Validation runs
through `on_validate` with every random stream saved and restored around it, so validating does not change
what is trained.

A step takes world size x gradient_accumulation_steps batches of one bucket (`BucketBatches.next_step`);
batch i of the step is trained by rank i % world size, as its micro-batch i // world size. Each batch's
random draws (noise, sigmas, first-frame choice, TREAD tokens from the step generator; LoRA dropout from
torch's global stream) are seeded from (seed, step, i) alone, so they do not depend on which rank or
micro-batch trains it: 2 ranks with accumulation 1 train the same LoRA as 1 process with accumulation 2
(equal up to float summation order; tests/ltx2core/training/test_distributed.py), and a resume needs no
random state: a checkpoint resumes on any number and kind of device (a CUDA generator's state would not
load on the CPU, nor eight GPUs' states on two). Each batch's loss is weighted by its share of the step's
clips, so the update is the mean over the clips (distributed.py sums the ranks' gradients). A rank with no
batch left in a bucket's last step trains a stand-in batch at weight 0, so that every rank runs the same
collectives (FSDP all-gathers inside the forward); one process just skips it. Only rank 0 writes
checkpoints and calls `on_checkpoint` and `on_validate`; the others wait for it, except that every rank
samples a sharded model (`train`).
"""

from __future__ import annotations

import hashlib
import logging
import math
import random
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ltx2core.models.runtime import compute_dtype
from ltx2core.training.audio_balance import AudioBalance
from ltx2core.training.checkpoint import (
    checkpoint_folder,
    load_checkpoint,
    prune_checkpoints,
    save_checkpoint,
)
from ltx2core.training.crepa import Crepa
from ltx2core.training.data import BucketBatch, BucketBatches, Prefetched, SampleSource, collate
from ltx2core.training.distributed import SINGLE, World, is_sharded, sum_gradients, sum_values, wait_for_main
from ltx2core.training.flow_matching import LTX2_SHIFT, SigmaSampler
from ltx2core.training.lora import load_lora_state, lora_spec_of, lora_state_dict
from ltx2core.training.optim import make_lr_scheduler, make_optimizer
from ltx2core.training.recompute import Recompute, configure_blocks
from ltx2core.training.rollout import Rollout
from ltx2core.training.sinks import MetricSink
from ltx2core.training.step import AudioVideoMode, training_step
from ltx2core.training.tread import Route, TreadRouter

log = logging.getLogger(__name__)

CheckpointCallback = Callable[[int, Path], None]  # (step, checkpoint folder)
ValidateCallback = Callable[[int], None]  # (step); the callee has the transformer
CONSTANT_SCHEDULES = ("constant", "constant_with_warmup")
# Per step, summed over micro-batches and ranks: each loss times its clips, and the clips it covers.
_SUMS = ("loss", "video_loss", "audio_loss", "crepa_loss", "rollout_steps", "clips", "audio_clips", "crepa_clips",
         "rollout_clips")
_MEANS = (("loss", "clips"), ("video_loss", "clips"), ("audio_loss", "audio_clips"), ("crepa_loss", "crepa_clips"),
          ("rollout_steps", "rollout_clips"))


@dataclass(frozen=True)
class TrainSettings:
    output_dir: Path  # checkpoints land in output_dir/checkpoint-NNNNNN
    max_steps: int  # optimizer steps in total (a resumed run counts from its checkpoint)
    text_max_length: int  # tokens the connectors pad captions to (the model flavour's)
    model: str = ""  # what the LoRA is trained on (ModelSource.label): part of the resume fingerprint
    flavour: str = "2.0"  # model_flavour, recorded in the LoRA files (the label above carries it for resuming)
    learning_rate: float = 1e-4
    lr_scheduler: str = "constant"
    lr_warmup_steps: int = 0
    gradient_accumulation_steps: int = 1
    max_grad_norm: float = 1.0  # 0 = no clipping (the norm is still logged)
    optimizer: str = "adamw"
    seed: int = 42
    mixed_precision: str = "bf16"  # autocast dtype on CUDA; the CPU computes in float32
    gradient_checkpointing: bool = True
    recompute: Recompute = "full"  # what checkpointing recomputes (recompute.configure_blocks)
    selective_blocks: int | None = None  # with recompute "selective": how many blocks (None = all)
    compile_blocks: bool = False  # torch.compile each block (regional compilation)
    first_frame_p: float = 0.0  # probability of image-to-video conditioning per clip
    checkpointing_steps: int = 500
    checkpoints_total_limit: int | None = None
    validation_steps: int = 0  # 0 = never
    device: str = "cpu"
    sigmas: SigmaSampler = LTX2_SHIFT  # the flavour's training noise levels (flow_matching.sigma_sampler)
    cross_timestep: bool = False  # the flavour's use_cross_timestep (2.3+)
    tread_routes: tuple[Route, ...] = ()  # resolved spans (tread.resolve_routes); () = no TREAD
    rollout: Rollout | None = None  # scheduled sampling (rollout.py); None = off
    audio_loss_weight: float | str = 1.0  # the audio term's weight, or "auto" (audio_balance.py)
    audio_video_mode: AudioVideoMode = "joint"  # step.py: which modality, if any, is the clean condition

    def __post_init__(self) -> None:
        problems = []
        for name in ("max_steps", "gradient_accumulation_steps", "checkpointing_steps", "text_max_length"):
            if getattr(self, name) < 1:
                problems.append(f"{name} {getattr(self, name)} must be at least 1")
        if not 0 <= self.first_frame_p <= 1:
            problems.append(f"first_frame_p {self.first_frame_p} must be in [0, 1]")
        if self.max_grad_norm < 0:
            problems.append(f"max_grad_norm {self.max_grad_norm} must be 0 (off) or more")
        if problems:
            raise ValueError("; ".join(problems))

    def fingerprint(self) -> dict[str, Any]:
        """The settings a resumed run must share with its checkpoint (not paths, step counts or intervals)."""
        keys = ("model", "learning_rate", "lr_scheduler", "lr_warmup_steps", "gradient_accumulation_steps",
                "max_grad_norm", "optimizer", "seed", "mixed_precision", "first_frame_p", "text_max_length")
        values = {key: getattr(self, key) for key in keys}
        values["shift"] = asdict(self.sigmas)  # the key's name from when only the dynamic shift existed
        if self.cross_timestep:  # absent for 2.0, whose checkpoints predate it
            values["cross_timestep"] = True
        values["tread_routes"] = [asdict(route) for route in self.tread_routes]
        if self.rollout is not None:  # absent when off: checkpoints from before it resume
            values["rollout"] = asdict(self.rollout)
        if self.audio_loss_weight != 1.0:  # likewise
            values["audio_loss_weight"] = self.audio_loss_weight
        if self.audio_video_mode != "joint":  # likewise
            values["audio_video_mode"] = self.audio_video_mode
        if self.lr_scheduler not in CONSTANT_SCHEDULES:  # a decaying schedule is drawn over max_steps
            values["max_steps"] = self.max_steps
        return values


@dataclass(frozen=True)
class TrainResult:
    step: int  # optimizer steps done in total
    steps_run: int  # of which in this call
    last_checkpoint: Path | None
    history: tuple[dict[str, float], ...]  # the metrics of each step of this call (over all ranks)
    batch_keys: tuple[tuple[str, ...], ...]  # the samples of each micro-batch this rank trained, in order


def train(
    transformer: Any,
    source: SampleSource,
    batches: BucketBatches,
    *,
    connectors: Any,
    settings: TrainSettings,
    sinks: Sequence[MetricSink] = (),
    resume_from: Path | None = None,
    on_checkpoint: CheckpointCallback | None = None,
    on_validate: ValidateCallback | None = None,
    crepa: Crepa | None = None,
    world: World = SINGLE,
) -> TrainResult:
    """Train the transformer's LoRA for `settings.max_steps` optimizer steps (see the module docstring).

    Sinks are logged to, not closed: the caller owns them. Raises CheckpointMismatch when `resume_from` was
    trained with other settings or data, and FloatingPointError when the loss stops being finite (naming
    the step and the samples).

    On several ranks (`world`, distributed.join_world) every rank calls this with the same model, batches
    and settings (`settings.device` its own) and the same `on_validate` or None: rank 0 alone calls it
    (and `on_checkpoint`) while the others wait; with an FSDP-sharded transformer every rank calls
    `on_validate`, which must sample alike on all and write on rank 0 only. A checkpoint from any number of
    ranks resumes on any other (the settings must match, gradient_accumulation_steps included): with the same
    number the run continues exactly as it would have; with another the global batch changes, and the data
    order after the resume point with it (BucketBatches.next_step).
    """
    # A sharded transformer samples only when every rank runs the forward (each gathers the others' shards).
    every_rank_samples = world.size > 1 and is_sharded(transformer)
    device = torch.device(settings.device)
    dtype = compute_dtype(settings.mixed_precision, device)
    params = [p for p in transformer.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the transformer has no trainable parameters: add the LoRA (lora.add_lora) first")
    if crepa is not None:  # after the LoRA's, so the optimizer state lines up on resume
        params += list(crepa.regularizer.parameters())
    spec = lora_spec_of(transformer)
    fingerprint = {
        **settings.fingerprint(),
        "lora_rank": spec.rank, "lora_alpha": spec.alpha, "lora_dropout": spec.dropout,
        "lora_targets": list(spec.targets), "train_batch_size": batches.batch_size, "data": batches.fingerprint,
        "crepa": asdict(crepa.regularizer.settings) if crepa else None,
    }
    optimizer = make_optimizer(settings.optimizer, params, learning_rate=settings.learning_rate)
    scheduler = make_lr_scheduler(
        settings.lr_scheduler, optimizer, warmup_steps=settings.lr_warmup_steps, total_steps=settings.max_steps
    )
    generator = torch.Generator(device=device)  # noise, sigmas and I2V draws

    balance = AudioBalance.of(settings.audio_loss_weight)
    step, last_checkpoint = 0, None
    if resume_from is not None:
        checkpoint = load_checkpoint(resume_from, config_fingerprint=fingerprint)
        load_lora_state(transformer, checkpoint.lora_state)
        optimizer.load_state_dict(checkpoint.optimizer_state)
        scheduler.load_state_dict(checkpoint.lr_scheduler_state)
        batches.restore(checkpoint.data_position)
        if crepa is not None:
            crepa.regularizer.load_state_dict(checkpoint.extra_state["crepa_projector"])
        if balance.fixed is None and "audio_balance" in (checkpoint.extra_state or {}):
            balance.load_state_dict(checkpoint.extra_state["audio_balance"])
        step, last_checkpoint = checkpoint.step, checkpoint.folder
        log.info("resumed from %s at step %d", checkpoint.folder, step)
    else:
        _seed_everything(settings.seed, generator)

    configure_blocks(transformer, settings.recompute if settings.gradient_checkpointing else "none",
                     selective_blocks=settings.selective_blocks, compile_blocks=settings.compile_blocks)
    transformer.train()
    autocast = torch.autocast(device.type, dtype=dtype, enabled=device.type == "cuda" and dtype != torch.float32)

    # TREAD draws its kept tokens from the loop's generator, so a resumed run routes the same tokens
    router = TreadRouter(transformer, settings.tread_routes, generator) if settings.tread_routes else None
    history: list[dict[str, float]] = []
    batch_keys: list[tuple[str, ...]] = []
    start_step = step
    accumulation = settings.gradient_accumulation_steps
    per_step = world.size * accumulation  # batches of one bucket per optimizer step
    log.info(
        "training steps %d..%d: %d steps per epoch of %d x %d batches of up to %d clips (ranks x accumulation), "
        "lr %g (%s)", step + 1, settings.max_steps, batches.steps_per_epoch(per_step), world.size, accumulation,
        batches.batch_size, settings.learning_rate, settings.lr_scheduler,
    )
    examples = Prefetched(source)
    try:
        while step < settings.max_steps:
            started = time.perf_counter()
            step_batches = batches.next_step(per_step)
            mine = _rank_batches(step_batches, accumulation, world)
            # this rank's batches are read on a thread, in order: the next step's while this one trains
            ahead = [mine] if step == start_step else []
            if step + 1 < settings.max_steps:
                ahead.append(_rank_batches(batches.peek_step(per_step), accumulation, world))
            for planned in ahead:
                for _, chosen, _ in planned:
                    examples.prefetch(chosen.keys)
            clips = sum(len(chosen.keys) for chosen in step_batches)
            sums = dict.fromkeys(_SUMS, 0.0)
            audio_weight = balance.weight()
            for index, chosen, stand_in in mine:
                weight = 0.0 if stand_in else len(chosen.keys) / clips
                _seed_batch(settings.seed, step + 1, index, generator)
                batch = collate(
                    examples.load(chosen.keys), connectors=connectors, text_max_length=settings.text_max_length,
                    device=device, dtype=dtype,
                )
                with autocast:
                    output = training_step(
                        transformer, batch, generator=generator, first_frame_p=settings.first_frame_p,
                        sigmas=settings.sigmas, cross_timestep=settings.cross_timestep, rollout=settings.rollout,
                        step=step + 1, audio_weight=audio_weight, mode=settings.audio_video_mode,
                    )
                    crepa_loss = crepa.loss(batch.latents) if crepa else None  # reads this forward's hidden states
                total = output.loss if crepa_loss is None else output.loss + crepa_loss
                # each backward adds to .grad: weighted by its share of clips, the sum is the mean over the step
                (total * weight).backward()
                loss = total.item()  # a sync point on the GPU, once per micro-batch
                if not math.isfinite(loss):
                    raise FloatingPointError(
                        f"loss is {loss} at step {step + 1} on samples {list(chosen.keys)}: lower learning_rate or "
                        "check these samples' latents"
                    )
                if weight:
                    count = len(chosen.keys)
                    sums["clips"] += count
                    sums["loss"] += loss * count
                    sums["video_loss"] += output.video_loss.item() * count
                    if output.audio_loss is not None:
                        sums["audio_clips"] += count
                        sums["audio_loss"] += output.audio_loss.item() * count
                    if crepa_loss is not None:
                        sums["crepa_clips"] += count
                        sums["crepa_loss"] += crepa_loss.item() * count
                    if settings.rollout is not None:  # the mean Euler steps of the step's clips (0: not rolled out)
                        sums["rollout_clips"] += count
                        sums["rollout_steps"] += float(output.rollout_steps.float().mean()) * count
                    batch_keys.append(chosen.keys)
                del output, batch, total, crepa_loss  # drop this micro-batch's tensors before the next one is loaded

            sum_gradients(params, world)
            totals = dict(zip(_SUMS, sum_values(list(sums.values()), world, device), strict=True))
            limit = settings.max_grad_norm or math.inf  # max_grad_norm 0: no clipping, the norm is still logged
            grad_norm = float(torch.nn.utils.clip_grad_norm_(params, limit))
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1

            metrics = {name: totals[name] / totals[clips_key] for name, clips_key in _MEANS if totals[clips_key]}
            metrics.update(lr=scheduler.get_last_lr()[0], grad_norm=grad_norm, s_per_step=time.perf_counter() - started)
            if "audio_loss" in metrics:  # every rank has the same means: the weights stay equal across ranks
                metrics["audio_weight"] = audio_weight
                balance.update(metrics["video_loss"], metrics["audio_loss"])
            history.append({"step": float(step), **metrics})
            for sink in sinks:
                sink.log(step, metrics)

            if step % settings.checkpointing_steps == 0 or step == settings.max_steps:
                if world.main:
                    last_checkpoint = _checkpoint(transformer, settings, step, optimizer, scheduler, generator,
                                                  batches, fingerprint, crepa, balance)
                    if on_checkpoint:
                        on_checkpoint(step, last_checkpoint)
                else:
                    last_checkpoint = checkpoint_folder(settings.output_dir, step)
                wait_for_main(world)
            if on_validate and settings.validation_steps and step % settings.validation_steps == 0:
                if world.main or every_rank_samples:
                    with _random_streams_kept(generator):
                        on_validate(step)
                    transformer.train()
                wait_for_main(world)
    finally:
        examples.close()
        if router is not None:  # the hooks must not outlive this call on a reused transformer
            router.remove()
    return TrainResult(
        step=step, steps_run=step - start_step, last_checkpoint=last_checkpoint, history=tuple(history),
        batch_keys=tuple(batch_keys),
    )


def _rank_batches(step: tuple[BucketBatch, ...], accumulation: int,
                  world: World) -> list[tuple[int, BucketBatch, bool]]:
    """(place in the step, batch, stand-in) of each micro-batch this rank trains, in order: batch i goes to rank
    i % world size. A rank left without one in a bucket's last step trains the step's first batch at weight 0, a
    stand-in that keeps the collectives in step; one process just has fewer micro-batches."""
    mine = []
    for micro in range(accumulation):
        index = micro * world.size + world.rank
        if index < len(step):
            mine.append((index, step[index], False))
        elif world.size > 1:
            mine.append((index, step[0], True))
    return mine


def _checkpoint(
    transformer: Any, settings: TrainSettings, step: int, optimizer: torch.optim.Optimizer, scheduler: Any,
    generator: torch.Generator, batches: BucketBatches, fingerprint: dict[str, Any], crepa: Crepa | None,
    balance: AudioBalance,
) -> Path:
    extra = ({"crepa_projector": crepa.regularizer.state_dict()} if crepa else {}) | (
        {"audio_balance": balance.state_dict()} if balance.fixed is None else {})
    folder = save_checkpoint(
        settings.output_dir, step=step, lora_state=lora_state_dict(transformer), lora_spec=lora_spec_of(transformer),
        flavour=settings.flavour, optimizer=optimizer, lr_scheduler=scheduler,
        data_position=batches.position, config_fingerprint=fingerprint,
        extra_state=extra or None,
    )
    if settings.checkpoints_total_limit:
        prune_checkpoints(settings.output_dir, settings.checkpoints_total_limit)
    return folder


def _seed_batch(seed: int, step: int, index: int, generator: torch.Generator) -> None:
    """Seed the streams one batch draws from by (seed, step, its place in the step): not by rank or history."""
    digest = hashlib.sha256(f"{seed}:{step}:{index}".encode()).digest()
    batch_seed = int.from_bytes(digest[:8], "little") >> 1  # below 2**63: any generator takes it
    generator.manual_seed(batch_seed)
    torch.manual_seed(batch_seed)  # LoRA dropout (CPU and every GPU)


def _seed_everything(seed: int, generator: torch.Generator) -> None:
    torch.manual_seed(seed)  # CPU and every CUDA device: LoRA dropout draws from here
    random.seed(seed)
    np.random.seed(seed % 2**32)
    generator.manual_seed(seed)


@contextmanager
def _random_streams_kept(generator: torch.Generator) -> Iterator[None]:
    """Every stream a step or a sampler may read (torch's CPU and CUDA, Python's, NumPy's, the step generator's)
    as it was before the block."""
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    cpu, python, numpy, own = (torch.random.get_rng_state(), random.getstate(), np.random.get_state(),
                               generator.get_state())
    try:
        yield
    finally:
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)
        torch.random.set_rng_state(cpu)
        random.setstate(python)
        np.random.set_state(numpy)
        generator.set_state(own)
