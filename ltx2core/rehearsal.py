"""What `ltx2 rehearse` runs: the user's config on random weights and synthetic clips, and what it measured.

A rehearsal copies the user's config.json and multidatabackend.json with four things changed: the model (random
weights of the flavour: models/random_weights.py), every video dataset's folder (synthetic clips at the dataset's
resolution, length and frame rate, captions of a detailed prompt's length), output_dir, and the number of steps.
Everything else -- memory options, LoRA rank, buckets, validation settings -- is the user's, since that is what is
measured.

When a stage runs out of memory, its `FIT_TRIES` are tried in order, each a change to the config that a user can
make. Latents: the exact temporal roll, then patch convolutions, then spatial tiles. Train: block swap first (exact,
and measured no slower on an H100 at 16 blocks), then the FP8 base, then both, then a lower resolution. The first
that fits is the advice.
"""

from __future__ import annotations

import json
import math
import random
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ltx2core.config.databackend import VideoDataset
from ltx2core.config.train import TrainConfig
from ltx2core.models.scale import LTX2

# A detailed LTX-2 prompt, in Gemma tokens (cache_bench draws its captions here; train_bench's are 200). The text
# encoder pads a batch only to its longest caption, so its work follows this. The random model's tokenizer is one
# token per character.
CAPTION_TOKENS = (150, 250)
WARMUP_STEPS = 2  # the first train steps (compilation, allocator growth) are left out of s/step
_WORDS = ("a", "slow", "camera", "pan", "across", "the", "city", "at", "dusk", "with", "warm", "light", "people",
          "walking", "past", "shop", "windows", "while", "rain", "falls", "on", "street", "reflections", "glow")


@dataclass(frozen=True)
class ClipShape:
    width: int
    height: int
    frames: int
    fps: float
    audio_rate: int | None = None

    def describe(self) -> str:
        return f"{self.width}x{self.height}x{self.frames}" + (" + audio" if self.audio_rate else "")


@dataclass(frozen=True)
class FitTry:
    label: str
    config: dict[str, Any]  # config.json keys to set
    resolution_scale: float = 1.0  # of every video dataset's resolution


_ROLL = {"vae_enable_temporal_roll": True}
_SWAP16, _SWAP32 = {"musubi_blocks_to_swap": 16, "compile_blocks": False}, {"musubi_blocks_to_swap": 32,
                                                                          "compile_blocks": False}
_FP8 = {"base_model_precision": "fp8-e4m3fn"}
FIT_TRIES: dict[str, tuple[FitTry, ...]] = {  # per stage, cheapest first; the train tries in the module docstring
    "latents": (
        FitTry("vae_enable_temporal_roll", _ROLL),
        FitTry("vae_enable_temporal_roll + vae_enable_patch_conv", _ROLL | {"vae_enable_patch_conv": True}),
        FitTry("vae_enable_temporal_roll + vae_enable_patch_conv + vae_enable_tiling",
               _ROLL | {"vae_enable_patch_conv": True, "vae_enable_tiling": True}),
    ),
    "train": (
        FitTry("musubi_blocks_to_swap 16", _SWAP16),
        FitTry("musubi_blocks_to_swap 32", _SWAP32),
        FitTry("base_model_precision fp8-e4m3fn", _FP8),
        FitTry("fp8-e4m3fn + musubi_blocks_to_swap 16", _FP8 | _SWAP16),
        FitTry("fp8-e4m3fn + musubi_blocks_to_swap 32", _FP8 | _SWAP32),
        FitTry("fp8-e4m3fn + musubi_blocks_to_swap 32 + resolution x0.75", _FP8 | _SWAP32, 0.75),
    ),
}


@dataclass
class StageFigures:
    """One stage's run in the rehearsal: items done, seconds, and peaks (GiB; gpu None without a GPU)."""

    stage: str
    items: int = 0
    unit: str = "item"
    seconds: float = 0.0  # the flow call's wall time: the stage, plus starting the flow run and its bookkeeping
    stage_seconds: float = 0.0  # the stage's own (its reports' seconds): reading, computing, writing its rows
    per_item_s: float | None = None  # the stage's own figure where it has one (train: median s/step)
    load_seconds: float = 0.0  # of stage_seconds, loading models: a fixed cost that a larger dataset does not repeat
    gpu_peak_gib: float | None = None
    host_peak_gib: float | None = None
    error: str | None = None
    note: str | None = None  # what the figures mean when they are not the plain run's
    tries: list[dict[str, Any]] = field(default_factory=list)  # train: the FIT_TRIES measured, in order

    def fitting_try(self) -> dict[str, Any] | None:
        """The first of `tries` that fitted, if any did."""
        return next((t for t in self.tries if t["error"] is None), None)

    def rate(self) -> float | None:
        if self.per_item_s is not None:
            return self.per_item_s
        return self.stage_seconds / self.items if self.items else None

    def rate_past_load(self) -> float | None:
        """s/item once the models are loaded: what each further item costs (None where the stage loads none)."""
        if self.per_item_s is not None or not self.load_seconds or not self.items:
            return None
        if self.load_seconds >= self.stage_seconds:  # shards that loaded side by side: not separable
            return None
        return (self.stage_seconds - self.load_seconds) / self.items


def clip_shape(dataset: VideoDataset, aspect: float = 1.5) -> ClipShape:
    """Synthetic clips for `dataset`: `aspect` (width / height) at its resolution, its clip length and frame rate."""
    if dataset.resolution_type == "pixel":
        height = int(dataset.resolution)
        width = height * aspect
    else:
        area = float(dataset.resolution) ** 2 if dataset.resolution_type == "pixel_area" else (
            float(dataset.resolution) * 1e6)
        height = math.sqrt(area / aspect)
        width = height * aspect
    video = dataset.video
    frames = video.num_frames or video.min_frames or 121
    audio = video.audio.sample_rate if video.audio else None
    return ClipShape(_multiple(width), _multiple(height), frames, video.frame_rate, audio)


def _multiple(pixels: float) -> int:
    return max(LTX2.spatial, round(pixels / LTX2.spatial) * LTX2.spatial)


def caption(seed: int, tokens: tuple[int, int] = CAPTION_TOKENS) -> str:
    """Words of a drawn length within `tokens` (with the tokenizer's <bos>) under the random model's tokenizer."""
    rng = random.Random(seed)
    room = rng.randint(*tokens) - 2  # <bos> and the full stop
    words = [rng.choice(_WORDS)]
    while len(text := " ".join(words)) < room:
        words.append(rng.choice(_WORDS))
    return text[:room].rstrip() + "."


def write_rehearsal_configs(config_path: Path, backend: list[dict[str, Any]], work: Path, *, model: str, steps: int,
                            clip_folders: dict[str, Path], change: FitTry | None = None) -> tuple[Path, Path]:
    """The user's two files, rewritten into `work` for the rehearsal (module docstring); `change` applied."""
    change = change or FitTry("as configured", {})
    settings = json.loads(Path(config_path).read_text()) | {
        "pretrained_model_name_or_path": model, "output_dir": str(work / "output"), "max_train_steps": steps,
        "checkpointing_steps": steps, "validation_steps": 0, "resume_from_checkpoint": None,
    } | change.config
    if not settings.get("validation_prompt") and not settings.get("validation_prompt_library"):
        settings["validation_prompt"] = caption(0)  # so that the validate stage samples something
    for key in ("pretrained_transformer_model_name_or_path", "text_encoder_path", "data_backend_config"):
        settings.pop(key, None)
    # IC-LoRA: a conditioning dataset's references are the synthetic clips of the dataset that names it
    references = {b.get("conditioning_data"): clip_folders[b["id"]] for b in backend
                  if b.get("id") in clip_folders and b.get("conditioning_data")}
    blocks = []
    for block in backend:
        block = dict(block)
        if block.get("dataset_type") == "conditioning" and block.get("id") in references:
            block["instance_data_dir"] = str(references[block["id"]])
        if block.get("id") in clip_folders:
            block |= {"instance_data_dir": str(clip_folders[block["id"]]), "caption_strategy": "textfile",
                      "type": "local"}
            if change.resolution_scale != 1.0:
                block["resolution"] = _scaled(block["resolution"], block.get("resolution_type", "pixel"),
                                              change.resolution_scale)
        blocks.append(block)
    config_file, backend_file = work / "config.json", work / "multidatabackend.json"
    config_file.write_text(json.dumps(settings, indent=2))
    backend_file.write_text(json.dumps(blocks, indent=2))
    return config_file, backend_file


def _scaled(resolution: float, kind: str, scale: float) -> float:
    if kind == "area":
        return round(float(resolution) * scale * scale, 3)
    return _multiple(float(resolution) * scale)


def median_step_seconds(loss_csv: Path) -> float | None:
    """Median s/step of the train stage's loss.csv, the first `WARMUP_STEPS` steps left out (when there are more)."""
    if not loss_csv.is_file():
        return None
    import csv

    with loss_csv.open(newline="") as handle:
        seconds = [float(r["s_per_step"]) for r in csv.DictReader(handle) if r.get("s_per_step")]
    kept = seconds[WARMUP_STEPS:] if len(seconds) > WARMUP_STEPS else seconds
    return statistics.median(kept) if kept else None


def fit_tries(stage: str, config: TrainConfig) -> list[FitTry]:
    """The stage's `FIT_TRIES` that change something for this config (a try it already has is no advice)."""
    current = config.model_dump(mode="json")
    return [t for t in FIT_TRIES.get(stage, ()) if t.resolution_scale != 1.0 or any(
        current.get(k) != v for k, v in t.config.items() if k != "compile_blocks")]


def advice(figures: StageFigures, card_gib: float | None) -> str:
    """One sentence on whether a stage fits, and if not which try does, with the figures measured."""
    card, stage = f"{card_gib:.0f} GiB" if card_gib else "this machine", figures.stage
    if figures.error is None:
        peak = f" (peak {figures.gpu_peak_gib:.1f} GiB)" if figures.gpu_peak_gib is not None else ""
        return f"{stage} fits {card} as configured{peak}"
    fitting = figures.fitting_try()
    tried = "; ".join(f"{t['label']}: {_outcome(t)}" for t in figures.tries)
    if fitting is None:
        return f"{stage} does not fit {card} as configured, nor with any option tried ({tried or 'none tried'})"
    return (f"{stage} does not fit {card} as configured; it fits with {fitting['label']} "
            f"({_outcome(fitting)}). Tried: {tried}")


def _outcome(t: dict[str, Any]) -> str:
    if t["error"] is not None:
        return "out of memory"
    speed = f"{t['s_per_step']:.2f} s/step, " if t.get("s_per_step") is not None else ""
    peak = f"peak {t['gpu_peak_gib']:.1f} GiB" if t.get("gpu_peak_gib") is not None else "fits"
    return speed + peak
