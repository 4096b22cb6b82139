r"""Several-GPU LoRA training benchmark: one GPU vs data parallel on 2 GPUs vs FSDP2 on 2 GPUs, full-size LTX-2.x.

What runs is the real training loop (ltx2core.training.loop.train, as the train stage calls it on every rank)
on the full-size transformer of `--flavour` (2.0 by default; 18.9 B parameters) and its text connectors with RANDOM
bf16 weights (the random model source, ltx2core/models/random_weights.py), drawn on each rank's GPU; nothing is downloaded, times and memory are real,
values are not. Synthetic 768x512x121 video-only clips (6,144 video tokens; 200 cached caption-feature tokens
through the connectors once, as the train stage does, the connectors then moved off the GPU; the audio stream
parked on the host, as the train stage does on video-only data: audio_stream.py), batch 1 per GPU, LoRA r32
(alpha 32, no dropout) on the video attentions in float32, gradient checkpointing, bf16 autocast, AdamW lr 1e-4,
max_grad_norm 1. Modes, each launched by its own torchrun (a failure or an out-of-memory stays in its mode):
  single   1 process, 1 GPU
  ddp      2 ranks, the whole model on each; after backward one all-reduce of the LoRA gradients
           (distributed.sum_gradients; the project's data parallelism, not torch DDP)
  fsdp2    2 ranks, the frozen base sharded by FSDP2 (distributed.shard_base: fully_shard per block and root,
           reshard after forward, LoRA kept whole) with gradient checkpointing
Per mode: s/step = median of --steps steps after --warmup (the loop's own step timer, which ends at a GPU sync);
clips/s = ranks x 1 clip / s/step (scaling = that over the single GPU's); resident GiB = allocated once the model
is built (and sharded); peak GiB = torch.cuda.max_memory_allocated during the steps, per GPU; allreduce_ms = one
sum_gradients over the LoRA's gradients, alone (median of 5).

On the 2-GPU box (torch, transformers, peft are there; .whl carries diffusers 0.42.1 and pydantic), from the
repository root, with carry [".whl"] (about 3 minutes):
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD || exit; PYTHONUNBUFFERED=1 python3 bench/multigpu_bench.py
Here, the same code on the tiny model, the CPU and gloo, in float32 (a smoke test of this script):
  .venv/bin/python bench/multigpu_bench.py --tiny --steps 2 --warmup 0
Writes JSON to --out DIR, else $OUT, else bench/results (multigpu-<flavour>-<device>-<date>.json), and prints a
table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from datetime import date
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ltx2core.models.loading import load_scheduler  # noqa: E402
from ltx2core.training.audio_stream import park_audio_stream  # noqa: E402
from ltx2core.training.data import BucketBatches, TrainExample, expand_captions  # noqa: E402
from ltx2core.training.distributed import (  # noqa: E402
    World,
    join_world,
    leave_world,
    rank_device,
    shard_base,
    sum_gradients,
)
from ltx2core.training.flow_matching import sigma_sampler  # noqa: E402
from ltx2core.training.loop import TrainSettings, train  # noqa: E402
from ltx2core.training.lora import LoraSpec, add_lora, target_modules  # noqa: E402

MODES = {"single": 1, "ddp": 2, "fsdp2": 2}  # mode -> processes
GIB = 2**30
RANK = 32
SEED = 42
FULL_CLIP = (768, 512, 121)  # width, height, frames
CAPTION_TOKENS = 200
LAUNCH_TIMEOUT_S = 900


# ---- one rank


def build(tiny: bool, device: torch.device, flavour: str) -> tuple[Any, Any, Any]:
    """(transformer, connectors, model source), frozen, on `device`: the flavour's tiny model, or its full size
    with random weights drawn on the device (models/random_weights.py)."""
    from ltx2core.models.loading import load_connectors, load_transformer
    from ltx2core.models.source import resolve_source

    source = resolve_source("tiny" if tiny else "random", flavour)
    dtype = torch.float32 if tiny else torch.bfloat16
    transformer = load_transformer(source, dtype=dtype, device=device)
    return transformer, load_connectors(source, dtype=dtype, device=device), source


def clip(transformer: Any, connectors: Any, tiny: bool) -> TrainExample:
    """One synthetic clip as the store hands it to the loop: float32 tensors on the host."""
    from ltx2core.models.scale import LTX2
    from ltx2core.models.text import projection_widths

    width, height, frames = (64, 64, 9) if tiny else FULL_CLIP
    generator = torch.Generator().manual_seed(0)
    latent_dims = (LTX2.latent_frames(frames), height // LTX2.spatial, width // LTX2.spatial)
    caption_channels = sum(projection_widths(connectors))  # what the text cache holds for the flavour
    return TrainExample(
        key="bench", latents=torch.randn(transformer.config.in_channels, *latent_dims, generator=generator),
        text_features=torch.randn(20 if tiny else CAPTION_TOKENS, caption_channels, generator=generator),
        frame_rate=24.0,
    )


class SameClip:
    """A SampleSource that serves one clip under every key."""

    def __init__(self, example: TrainExample) -> None:
        self.example = example

    def load(self, keys: list[str]) -> list[TrainExample]:
        return [self.example for _ in keys]


def run_mode(mode: str, *, tiny: bool, warmup: int, steps: int, flavour: str) -> dict[str, Any] | None:
    """Train warmup + steps steps on this rank; rank 0 returns the mode's record."""
    device_type = "cpu" if tiny else "cuda"
    world = join_world(device_type)
    device = rank_device(world, device_type)
    if tiny:
        torch.set_num_threads(1)
    t0 = time.perf_counter()
    transformer, connectors, source = build(tiny, device, flavour)
    text_max_length = source.text_max_length
    park_audio_stream(transformer)  # video-only, as the train stage does
    params = add_lora(transformer, LoraSpec(RANK, RANK, 0.0, tuple(target_modules(None, with_audio=False))), seed=SEED)
    if mode == "fsdp2":
        shard_base(transformer)
    example = clip(transformer, connectors, tiny)
    # As the train stage does: the caption through the connectors once, then the connectors leave the GPU.
    example = replace(example, caption=expand_captions(
        {example.key: example.text_features}, connectors=connectors, text_max_length=text_max_length, device=device,
        dtype=torch.bfloat16 if device.type == "cuda" else torch.float32)[example.key])
    connectors.to("cpu")
    build_s = time.perf_counter() - t0
    resident = _allocated(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    total = warmup + steps
    batches = BucketBatches({"clip": [(f"clip{i}", 0) for i in range(world.size * total)]}, batch_size=1, seed=SEED)
    with tempfile.TemporaryDirectory(prefix="multigpu-bench-") as folder:  # the loop's final checkpoint
        settings = TrainSettings(output_dir=Path(folder), max_steps=total, text_max_length=text_max_length,
                                 model="bench", learning_rate=1e-4, seed=SEED, mixed_precision="bf16",
                                 gradient_checkpointing=True, checkpointing_steps=total, device=str(device),
                                 sigmas=sigma_sampler(source.flavour.distilled, load_scheduler(source).config),
                                 cross_timestep=source.flavour.use_cross_timestep)
        result = train(transformer, SameClip(example), batches, connectors=connectors,
                       settings=settings, world=world)
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    allreduce_ms = _allreduce_ms(params, world, device) if world.size > 1 else None
    peaks = _gather([peak, resident, _rss()], world)
    leave_world(world)
    if not world.main:
        return None
    times = [row["s_per_step"] for row in result.history[warmup:]]
    median = statistics.median(times)
    return {
        "mode": mode, "ranks": world.size, "s_per_step": round(median, 4), "s_per_step_min": round(min(times), 4),
        "clips_per_s": round(world.size / median, 4), "build_s": round(build_s, 1),
        "peak_gib_per_gpu": [None if p is None else round(p / GIB, 2) for p, _, _ in peaks],
        "resident_gib_per_gpu": [None if r is None else round(r / GIB, 2) for _, r, _ in peaks],
        "host_rss_gib_per_rank": [round(rss / GIB, 2) for _, _, rss in peaks],
        "allreduce_ms": allreduce_ms, "lora_params": sum(p.numel() for p in params),
        "last_loss": round(result.history[-1]["loss"], 4),
    }


def _allreduce_ms(params: list[torch.nn.Parameter], world: World, device: torch.device) -> float:
    times = []
    for _ in range(5):
        _sync(device)
        t0 = time.perf_counter()
        sum_gradients(params, world)
        _sync(device)
        times.append(time.perf_counter() - t0)
    return round(statistics.median(times) * 1000, 2)


def _gather(values: list[Any], world: World) -> list[list[Any]]:
    if world.size == 1:
        return [values]
    import torch.distributed as dist

    gathered: list[Any] = [None] * world.size
    dist.all_gather_object(gathered, values)
    return gathered


def _allocated(device: torch.device) -> int | None:
    return torch.cuda.memory_allocated(device) if device.type == "cuda" else None


def _rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ---- the launcher


def launch(mode: str, args: argparse.Namespace, parts: Path) -> dict[str, Any]:
    part = parts / f"{mode}.json"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={MODES[mode]}",
               str(Path(__file__).resolve()), "--worker", mode, "--out", str(part), "--steps", str(args.steps),
               "--warmup", str(args.warmup), "--flavour", args.flavour, *(["--tiny"] if args.tiny else [])]
    print(f"== {mode}: {' '.join(command)}", flush=True)
    t0 = time.perf_counter()
    try:
        code = subprocess.run(command, timeout=LAUNCH_TIMEOUT_S).returncode
    except subprocess.TimeoutExpired:
        code = "timeout"
    if code != 0 or not part.is_file():
        return {"mode": mode, "error": f"torchrun exited with {code} (its output is above)"}
    record = json.loads(part.read_text())
    record["launch_s"] = round(time.perf_counter() - t0, 1)
    return record


def table(records: list[dict[str, Any]]) -> str:
    lines = [f"{'mode':<8} {'ranks':>5} {'s/step':>8} {'clips/s':>8} {'scaling':>8} {'peak GiB/GPU':>14} "
             f"{'resident GiB':>13} {'allreduce ms':>13}"]
    single = next((r["clips_per_s"] for r in records if r.get("mode") == "single" and "error" not in r), None)
    for r in records:
        if "error" in r:
            lines.append(f"{r['mode']:<8} {r['error']}")
            continue
        scaling = f"{r['clips_per_s'] / single:.2f}x" if single else "-"
        peaks = "/".join("-" if p is None else f"{p:.1f}" for p in r["peak_gib_per_gpu"])
        resident = "/".join("-" if p is None else f"{p:.1f}" for p in r["resident_gib_per_gpu"])
        lines.append(f"{r['mode']:<8} {r['ranks']:>5} {r['s_per_step']:>8.3f} {r['clips_per_s']:>8.3f} "
                     f"{scaling:>8} {peaks:>14} {resident:>13} {r['allreduce_ms'] or '-':>13}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="the tiny model on the CPU with gloo (a smoke test)")
    parser.add_argument("--modes", default=",".join(MODES), help=f"comma-separated, of {', '.join(MODES)}")
    parser.add_argument("--steps", type=int, default=6, help="timed steps per mode, after the warm-up")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--out", type=Path, help="folder for the JSON (default $OUT, else bench/results)")
    parser.add_argument("--flavour", default="2.0", help="2.0, 2.3, 2.5 (the distilled ones have the same shapes)")
    parser.add_argument("--worker", choices=list(MODES), help=argparse.SUPPRESS)  # one rank, under torchrun
    args = parser.parse_args()
    if args.steps < 1 or args.warmup < 0:
        parser.error("--steps must be at least 1 and --warmup 0 or more")
    if args.worker:
        record = run_mode(args.worker, tiny=args.tiny, warmup=args.warmup, steps=args.steps, flavour=args.flavour)
        if record is not None:
            args.out.write_text(json.dumps(record, indent=1) + "\n")
        return
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if unknown := [m for m in modes if m not in MODES]:
        parser.error(f"--modes {unknown}: choose from {', '.join(MODES)}")
    if not args.tiny and torch.cuda.device_count() < max(MODES[m] for m in modes):
        parser.error(f"--modes {','.join(modes)} needs {max(MODES[m] for m in modes)} CUDA GPUs, "
                     f"{torch.cuda.device_count()} visible; use --tiny here")

    import diffusers

    out = args.out or (Path(os.environ["OUT"]) if os.environ.get("OUT") else ROOT / "bench" / "results")
    out.mkdir(parents=True, exist_ok=True)
    device = "cpu (tiny, gloo)" if args.tiny else torch.cuda.get_device_name(0)
    facts = {"mode": "tiny (CPU, float32, gloo)" if args.tiny else "full size, RANDOM bf16 weights, 768x512x121",
             "flavour": args.flavour,
             "device": device if not args.tiny else platform.processor() or "cpu", "torch": torch.__version__,
             "diffusers": diffusers.__version__, "date": date.today().isoformat(), "steps": args.steps,
             "warmup": args.warmup, "lora_rank": RANK, "batch_per_gpu": 1}
    slug = "tiny" if args.tiny else device.lower().replace("nvidia ", "").split()[0]
    path = out / f"multigpu-{args.flavour}-{slug}-{facts['date']}.json"
    records = []
    with tempfile.TemporaryDirectory(prefix="multigpu-parts-") as parts:
        for mode in modes:
            records.append(launch(mode, args, Path(parts)))
            path.write_text(json.dumps({"facts": facts, "runs": records}, indent=1) + "\n")
    print("\n" + table(records))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
