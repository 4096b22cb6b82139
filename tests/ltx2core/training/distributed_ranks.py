"""The ranks of test_distributed.py: two processes training the tiny LTX-2, started by torchrun.

    python -m torch.distributed.run --standalone --nproc_per_node=2 -m tests.ltx2core.training.distributed_ranks \
        OUT [cpu|cuda]

On the CPU the ranks talk over gloo; with `cuda` each takes its GPU and they talk over NCCL.
Three runs of the real loop, each on a freshly loaded transformer (as a new process would have):
  straight     data parallel, steps 1..4 in one go
  resumed      data parallel, steps 1..2, then a new transformer resumes the step-2 checkpoint to step 4
  fsdp         as resumed, with the base sharded by FSDP2 (distributed.shard_base) and gradient checkpointing
straight and fsdp validate at step 4 with the training transformer: one T2V sample, which a rank saves as
OUT/<run>-sample-rank<R>.pt when the loop has it sample (rank 0 of data parallel; every rank of FSDP).
Rank 0 writes the checkpoints under OUT/<run>; every rank writes OUT/rank<R>.json: the keys it loaded per
call of the sample source, per run, whether the FSDP transformer was sharded, its device and the backend.
The test module builds the same data and settings from here to train its one-process reference.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import torch

from ltx2core.models import loading
from ltx2core.models.source import resolve_source
from ltx2core.models.text import projection_widths
from ltx2core.training.checkpoint import checkpoint_folder
from ltx2core.training.data import BucketBatches, TrainExample
from ltx2core.training.distributed import (
    SINGLE,
    World,
    is_sharded,
    join_world,
    leave_world,
    rank_device,
    shard_base,
)
from ltx2core.training.flow_matching import sigma_sampler
from ltx2core.training.loop import TrainResult, TrainSettings, ValidateCallback, train
from ltx2core.training.lora import LoraSpec, add_lora, target_modules
from ltx2core.validation.sampling import ValidationPrompt, load_sampler, sample_t2v
from ltx2core.validation.settings import ValidationSettings
from tests.ltx2core.training.helpers import LATENT_CHANNELS, MemorySource, make_examples

STEPS, RESUME_AT = 4, 2
RANKS = 2
WIDE = (LATENT_CHANNELS, 2, 2, 4)  # a second bucket: 128x64 pixels
VALIDATION = ValidationSettings(guidance=1.0, audio_guidance=1.0, steps=2, resolutions=((64, 64),), num_frames=9)


def text_width(flavour: str) -> int:
    """The flavour's cached caption width (2.3+ caches the connectors' per-modality projections)."""
    return sum(projection_widths(loading.load_connectors(resolve_source("tiny", flavour), dtype=torch.float32)))


def examples(flavour: str = "2.0") -> dict[str, TrainExample]:
    """Two buckets: four square clips and three wide ones, so some steps leave a rank without a clip."""
    square = make_examples(4, audio=True, text_width=text_width(flavour))
    generator = torch.Generator().manual_seed(1)
    wide = {
        f"wide{i}": TrainExample(key=f"wide{i}", latents=torch.randn(WIDE, generator=generator),
                                 text_features=torch.randn(2 + i, example.text_features.shape[1], generator=generator),
                                 frame_rate=25.0, audio_latents=example.audio_latents)
        for i, example in enumerate(list(square.values())[:3])
    }
    return {**square, **wide}


def batches() -> BucketBatches:
    buckets = {"64x64@9": [("clip0", 1), ("clip1", 0), ("clip2", 0), ("clip3", 0)],
               "128x64@9": [("wide0", 0), ("wide1", 0), ("wide2", 0)]}
    return BucketBatches(buckets, batch_size=1, seed=3)


def settings(output_dir: Path, max_steps: int, *, accumulation: int, device: str = "cpu",
             flavour: str = "2.0") -> TrainSettings:
    # Dropout, I2V conditioning and audio make every random stream matter; lr is large so 4 steps move the LoRA.
    # The flavour's own noise levels and transformer call, as the train stage sets them (keys.train_settings).
    source = resolve_source("tiny", flavour)
    return TrainSettings(output_dir=output_dir, max_steps=max_steps,
                         text_max_length=source.text_max_length, model="tiny", learning_rate=1e-2,
                         seed=5, first_frame_p=0.5,
                         gradient_accumulation_steps=accumulation, checkpointing_steps=RESUME_AT, mixed_precision="no",
                         validation_steps=STEPS, device=device, flavour=flavour,
                         sigmas=sigma_sampler(source.flavour.distilled, loading.load_scheduler(source).config),
                         cross_timestep=source.flavour.use_cross_timestep)


def lora_transformer(*, seed: int = 1, device: torch.device | str = "cpu", flavour: str = "2.0") -> Any:
    transformer = loading.load_transformer(resolve_source("tiny", flavour), dtype=torch.float32)
    add_lora(transformer, LoraSpec(4, 4, 0.1, tuple(target_modules(None, with_audio=True))), seed=seed)
    return transformer.to(device)


def run(transformer: Any, output_dir: Path, max_steps: int, *, world: World = SINGLE, accumulation: int = 1,
        resume_from: Path | None = None, source: MemorySource | None = None, device: str = "cpu",
        on_validate: ValidateCallback | None = None, flavour: str = "2.0") -> TrainResult:
    connectors = loading.load_connectors(resolve_source("tiny", flavour), dtype=torch.float32, device=device)
    return train(transformer, source or MemorySource(examples(flavour)), batches(), connectors=connectors,
                 settings=settings(output_dir, max_steps, accumulation=accumulation, device=device, flavour=flavour),
                 resume_from=resume_from, world=world, on_validate=on_validate)


def sample_into(path: Path, transformer: Any, device: torch.device, flavour: str = "2.0") -> ValidateCallback:
    """Validation with the training transformer, as the train stage does: one T2V sample, its frames saved."""
    prompt = ValidationPrompt("a fox", torch.randn(5, text_width(flavour), generator=torch.Generator().manual_seed(7)))

    def on_validate(step: int) -> None:
        sampler = load_sampler(resolve_source("tiny", flavour), device=device, dtype=torch.float32,
                               transformer=transformer)
        [sample] = sample_t2v(sampler, [prompt], None, VALIDATION)
        torch.save(sample.frames, path)

    return on_validate


def main(out: Path, device_type: str, flavour: str = "2.0") -> None:
    torch.set_num_threads(1)
    world = join_world(device_type)
    device = rank_device(world, device_type)
    served: dict[str, list[list[str]]] = {}

    def interrupted(name: str, fsdp: bool) -> bool:
        source, sharded = MemorySource(examples(flavour)), True
        for max_steps, resume, seed in ((RESUME_AT, None, 1), (STEPS, checkpoint_folder(out / name, RESUME_AT), 99)):
            # the resumed one starts from another init
            transformer = lora_transformer(seed=seed, device=device, flavour=flavour)
            if fsdp:
                shard_base(transformer)
                sharded = sharded and is_sharded(transformer)
            validate = sample_into(out / f"{name}-sample-rank{world.rank}.pt", transformer, device,
                                   flavour) if fsdp else None
            run(transformer, out / name, max_steps, world=world, resume_from=resume, source=source,
                device=str(device), on_validate=validate, flavour=flavour)
        served[name] = [list(keys) for keys in source.served]
        return sharded

    source = MemorySource(examples(flavour))
    transformer = lora_transformer(device=device, flavour=flavour)
    run(transformer, out / "straight", STEPS, world=world, source=source, device=str(device),
        on_validate=sample_into(out / f"straight-sample-rank{world.rank}.pt", transformer, device, flavour),
        flavour=flavour)
    served["straight"] = [list(keys) for keys in source.served]
    interrupted("resumed", fsdp=False)
    sharded = interrupted("fsdp", fsdp=True)
    (out / f"rank{world.rank}.json").write_text(json.dumps({"served": served, "sharded": sharded, "device": str(device),
                                                            "backend": torch.distributed.get_backend()}))
    leave_world(world)


if __name__ == "__main__":
    main(Path(sys.argv[1]), *sys.argv[2:4])
