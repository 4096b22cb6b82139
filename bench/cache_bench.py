"""Cache-stage benchmark: video VAE encode, latents end to end from .mp4 files, caption features; each beside
its plain diffusers / transformers baseline, all measured in this one run on this one machine.

Full size: LTX-2.0-shaped components with RANDOM bf16 weights built directly on the GPU (nothing is
downloaded, nothing trained: times and memory are real, values are not), on one H100 or H200:
  vae   one 121x512x768 clip. Baselines as ../shared/research/cache_baselines.py: diffusers `vae.encode` plain, with
        spatial tiling (enable_tiling) and with framewise temporal tiling. Ours: `encode_video` with each
        memory option. Seconds (best of 2 after a warm-up) and peak GiB (max_memory_allocated after a reset:
        absolute, and above the weights).
  e2e   real 768x512 .mp4 clips made here by synth (25 and 50 fps sources, 121 frames at 25 fps), run through
        `encode_latent_jobs` with each result written to an Arrow IPC file (Lance's stand-in), against the
        bare VAE encode rate of the same clips already on the GPU (target: >= 80 %); plus decode-only rates
        and one run with audio (a full-size random audio VAE).
  text  Gemma-3-12B-shaped Gemma3ForConditionalGeneration + LTX-2.0 LTX2TextConnectors, ~200-token
        captions. Baseline as the research: all hidden states of captions padded to 1024, batch 32
        (research on an H200: 15.7 captions/s). Ours: `encode_captions(bucketed=True)` (target >= 60/s), and
        its features against the padded path's (`bucketed=False`) on the same captions.
Gemma-3-12B's configuration: google/gemma-3-12b-it's config.json (transformers 4.51.3) as written out in
ostris/ai-toolkit extensions_built_in/diffusion_models/ltx2/ltx2.py; LTX-2.0's VAE, audio VAE and connector
configs: ../shared/research/diffusers_ltx2_peers.md, A2.

On the GPU box (torch, transformers, pyarrow are there; .whl carries diffusers 0.42.1, av 18.1.0 and pydantic
2.14.4 with pydantic-core, annotated-types, typing-inspection, typing-extensions), from the repository root,
with carry [".whl"]; an estimated 3 minutes on one H100:
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    .whl/*.whl && export PYTHONPATH=/tmp/site || exit; PYTHONUNBUFFERED=1 python3 bench/cache_bench.py
Here, the same code paths on the tiny model and the CPU (< 60 s):
  .venv/bin/python bench/cache_bench.py --tiny
`--parts vae,e2e,text` runs a subset. Prints a table; writes JSON to $OUT if set, else bench/results/.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import multiprocessing
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.train_bench import _default_dtype  # noqa: E402
from ltx2core.data.encode_latents import AudioSpec, LatentJob, encode_latent_jobs  # noqa: E402
from ltx2core.data.tensors import to_record  # noqa: E402
from ltx2core.media import synth  # noqa: E402
from ltx2core.media.decode import ClipPlan, decode_clip  # noqa: E402
from ltx2core.models import full_size, tiny  # noqa: E402
from ltx2core.models.text import ENCODE_BATCH, ENCODE_TOKENS, encode_captions  # noqa: E402
from ltx2core.models.vae import VaeOptions, encode_video  # noqa: E402

GIB = 2**30


@dataclass(frozen=True)
class Sizes:
    """Everything that differs between the full-size run and the tiny CPU run."""

    tiny: bool
    device: torch.device
    dtype: torch.dtype
    frames: int
    width: int
    height: int
    source_width: int  # clips are written at this size and resized/cropped to width x height
    tile: tuple[int, int]  # (tile_size, tile_stride) for spatial tiling
    reps: int  # timed runs after the warm-up; the best counts
    clips: int
    workers: tuple[int, ...]
    captions: int
    caption_tokens: tuple[int, int]  # range of tokens per caption
    padded_length: int  # what LTX2Pipeline pads captions to
    baseline_batch: int  # batch of the research baseline (all hidden states at padded_length)
    padded_feature_batch: int  # batch of our padded feature path, the reference for the features
    bucketed_batch: int
    flavour: str = "2.0"  # 2.3: its wider decoder and per-modality connectors (2.5's VAE encoder is 2.3's)


FULL = dict(reps=2, frames=121, width=768, height=512, source_width=768, tile=(512, 448), clips=12, workers=(2, 4, 8),
            captions=256, caption_tokens=(150, 250), padded_length=1024, baseline_batch=32, padded_feature_batch=8,
            bucketed_batch=ENCODE_BATCH)
TINY = dict(reps=1, frames=17, width=64, height=64, source_width=96, tile=(64, 64), clips=4, workers=(1, 2),
            captions=16, caption_tokens=(20, 60), padded_length=64, baseline_batch=8, padded_feature_batch=4,
            bucketed_batch=8)


@dataclass
class Report:
    rows: list[dict[str, Any]] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)

    def add(self, part: str, name: str, **values: Any) -> None:
        row = {"part": part, "name": name, **{k: v for k, v in values.items() if v is not None}}
        self.rows.append(row)
        print(_format_row(row), flush=True)


def _format_row(row: dict[str, Any]) -> str:
    cells = [f"{row['part']:<5}", f"{row['name']:<40}"]
    for key, unit in (("s", "s"), ("peak_gib", "GiB"), ("peak_above_weights_gib", "GiB+w"), ("rate", "/s"),
                      ("ratio", "x"), ("rel_err", "rel")):
        value = row.get(key)
        cells.append(f"{value:>9.4g} {unit:<5}" if isinstance(value, float | int) else " " * 15)
    return " ".join(cells) + ("  " + row["note"] if row.get("note") else "")


# ---- timing and memory


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(fn: Callable[[], Any], device: torch.device, reps: int = 2) -> tuple[Any, float, float | None]:
    """(output, best seconds of `reps` after one warm-up, peak GiB allocated over all runs; None on the CPU)."""
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    out = fn()
    _sync(device)
    times = []
    for _ in range(reps):
        del out
        t0 = time.perf_counter()
        out = fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    peak = torch.cuda.max_memory_allocated(device) / GIB if device.type == "cuda" else None
    return out, min(times), peak


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _weights_gib(*modules: Any) -> float:
    return sum(p.numel() * p.element_size() for m in modules for p in m.parameters()) / GIB


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.float(), b.float()
    return float((a - b).norm() / b.norm())


# ---- models

def build_vae(sizes: Sizes) -> Any:
    if sizes.tiny:
        from ltx2core.models.loading import load_vae
        from ltx2core.models.source import resolve_source

        return load_vae(resolve_source("tiny", sizes.flavour), dtype=sizes.dtype)
    from diffusers import AutoencoderKLLTX2Video

    with _default_dtype(sizes.dtype), torch.device(sizes.device):  # random init straight on the GPU
        vae = AutoencoderKLLTX2Video(**full_size.video_vae(sizes.flavour))
    return vae.eval().requires_grad_(False)


def build_audio_vae(sizes: Sizes) -> Any:
    from diffusers import AutoencoderKLLTX2Audio

    # Float32, as Lightricks' trainer runs it ("needs float32 for quality"); 53 M parameters. The tiny model's
    # own audio VAE does not downsample, so the tiny run builds one with the real 4x layout.
    config = {} if not sizes.tiny else dict(base_channels=4, ch_mult=(1, 2, 4), num_res_blocks=1, latent_channels=2,
                                            mel_bins=8, resolution=32)
    with torch.device(sizes.device):
        vae = AutoencoderKLLTX2Audio(**config)
    return vae.eval().requires_grad_(False)


def build_text(sizes: Sizes) -> dict[str, Any]:
    if sizes.tiny:
        from ltx2core.models import loading
        from ltx2core.models.source import resolve_source

        source = resolve_source("tiny", sizes.flavour)
        return dict(tokenizer=loading.load_tokenizer(source),
                    text_encoder=loading.load_text_encoder(source, dtype=sizes.dtype),
                    connectors=loading.load_connectors(source, dtype=sizes.dtype))
    from diffusers.pipelines.ltx2 import LTX2TextConnectors
    from transformers import Gemma3ForConditionalGeneration

    with _default_dtype(sizes.dtype), torch.device(sizes.device):
        text_encoder = Gemma3ForConditionalGeneration(full_size.text_encoder(sizes.flavour))
        connectors = LTX2TextConnectors(**full_size.connectors(sizes.flavour))
    return dict(tokenizer=_left_padded(tiny.char_tokenizer(sizes.padded_length)),
                text_encoder=text_encoder.eval().requires_grad_(False), connectors=connectors.eval().requires_grad_(False))


def _left_padded(tokenizer: Any) -> Any:
    tokenizer.padding_side = "left"
    return tokenizer


# ---- part: vae


def part_vae(sizes: Sizes, report: Report, models: dict[str, Any]) -> None:
    from diffusers import LTX2Pipeline

    vae = models.setdefault("vae", build_vae(sizes))
    weights = _weights_gib(vae)
    report.facts["vae_weights_gib"] = round(weights, 3)
    generator = torch.Generator(sizes.device).manual_seed(0)
    shape = (1, 3, sizes.frames, sizes.height, 2 * sizes.width if sizes.tiny else sizes.width)
    x = torch.rand(shape, generator=generator, device=sizes.device, dtype=sizes.dtype) * 2 - 1
    report.facts["vae_clip"] = list(shape)
    size, stride = sizes.tile

    def diffusers_encode(tiling: bool, framewise: bool) -> torch.Tensor:
        vae.disable_tiling()
        if tiling:
            vae.enable_tiling(tile_sample_min_height=size, tile_sample_min_width=size,
                              tile_sample_stride_height=stride, tile_sample_stride_width=stride)
        vae.use_framewise_decoding = framewise  # diffusers' switch for temporal tiling, encode included
        try:
            with torch.inference_mode():
                mode = vae.encode(x).latent_dist.mode()
            return LTX2Pipeline._normalize_latents(mode, vae.latents_mean, vae.latents_std, vae.config.scaling_factor)
        finally:
            vae.disable_tiling()
            vae.use_framewise_decoding = False

    reference, plain_s = None, None
    for name, tiling, framewise in (("diffusers plain", False, False), ("diffusers tiling", True, False),
                                    ("diffusers framewise", False, True)):
        encode = lambda tiling=tiling, framewise=framewise: diffusers_encode(tiling, framewise)  # noqa: E731
        out, seconds, peak = _guarded(lambda: measure(encode, sizes.device, sizes.reps))
        if out is None:
            report.add("vae", name, note=seconds)
            continue
        reference = out if reference is None else reference
        plain_s = seconds if plain_s is None else plain_s
        report.add("vae", name, s=seconds, peak_gib=peak, peak_above_weights_gib=_above(peak, weights),
                   rel_err=_rel_err(out, reference) if out is not reference else None)
        _free(sizes.device)

    ours = {
        "ours plain": VaeOptions(),
        "ours patch_conv": VaeOptions(patch_conv=True),
        "ours temporal_roll": VaeOptions(temporal_roll=True),
        "ours temporal_roll 16-frame blocks": VaeOptions(temporal_roll=True, roll_frames=16),
        "ours temporal_roll+patch_conv": VaeOptions(temporal_roll=True, patch_conv=True),
        f"ours tiling {size}/{stride}": VaeOptions(tiling=True, tile_size=size, tile_stride=stride),
        "ours tiling+temporal_roll": VaeOptions(tiling=True, tile_size=size, tile_stride=stride, temporal_roll=True),
    }
    for name, options in ours.items():
        def run(options: VaeOptions = options) -> torch.Tensor:
            with torch.inference_mode():
                return encode_video(vae, x, options=options).latents

        out, seconds, peak = _guarded(lambda: measure(run, sizes.device, sizes.reps))
        if out is None:
            report.add("vae", name, note=seconds)
            continue
        note = ""
        if "temporal_roll" in name and "tiling" not in name and peak is not None and plain_s:
            note = f"target: peak <= 3.5 GiB, s <= 2x diffusers plain ({seconds / plain_s:.2f}x)"
        elif "tiling" in name and peak is not None:
            note = "target: peak <= 6 GiB"
        report.add("vae", name, s=seconds, peak_gib=peak, peak_above_weights_gib=_above(peak, weights),
                   rel_err=_rel_err(out, reference), note=note)
        _free(sizes.device)
    del x


def _above(peak: float | None, weights: float) -> float | None:
    return None if peak is None else peak - weights


def _guarded(fn: Callable[[], tuple[Any, float, float | None]]) -> tuple[Any, Any, float | None]:
    """Run a measurement; an out-of-memory or shape error is reported in the table instead of ending the run."""
    try:
        return fn()
    except (torch.cuda.OutOfMemoryError, RuntimeError) as exc:
        return None, f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}", None


# ---- part: e2e


def make_clips(sizes: Sizes, folder: Path) -> list[Path]:
    """Half the clips at 25 fps, half at 50 fps (every other frame is used), each with a stereo AAC track."""
    specs = []
    for i in range(sizes.clips):
        fps = 25 if i % 2 == 0 else 50
        specs.append(dict(path=folder / f"clip_{i:02d}.mp4", width=sizes.source_width, height=sizes.height,
                          num_frames=sizes.frames * fps // 25 + 2, fps=fps, seed=i, audio_rate=48000))
    if sizes.tiny:  # milliseconds each: starting worker processes would cost more
        return [_write_clip(spec) for spec in specs]
    context = multiprocessing.get_context("forkserver")
    with ProcessPoolExecutor(max_workers=min(len(specs), os.cpu_count() or 1), mp_context=context) as pool:
        return list(pool.map(_write_clip, specs))


def _write_clip(spec: dict[str, Any]) -> Path:
    return synth.write_clip(**spec)


def _plan(sizes: Sizes) -> ClipPlan:
    return ClipPlan(start_frame=0, num_frames=sizes.frames, frame_rate=25, resize_width=sizes.source_width,
                    resize_height=sizes.height, crop_left=(sizes.source_width - sizes.width) // 2, crop_top=0,
                    width=sizes.width, height=sizes.height)


def part_e2e(sizes: Sizes, report: Report, models: dict[str, Any], clips: list[Path]) -> None:
    import pyarrow as pa

    vae = models.setdefault("vae", build_vae(sizes))
    plan = _plan(sizes)
    options = VaeOptions()
    jobs = [LatentJob(f"clip-{i}", str(path), plan) for i, path in enumerate(clips)]

    # Decode only, on W threads (what the encoder can be fed at most).
    for workers in sizes.workers:
        t0 = time.perf_counter()
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(lambda job: decode_clip(job.path, job.plan).to(sizes.dtype), jobs))
        rate = len(jobs) / (time.perf_counter() - t0)
        report.add("e2e", f"decode only, {workers} threads", rate=rate, note="clips/s")

    # The bare encode rate: the same clips, decoded beforehand and already on the device.
    pixels = [decode_clip(job.path, job.plan).to(sizes.device, sizes.dtype)[None] for job in jobs]

    def encode_all() -> None:
        with torch.inference_mode():
            for clip in pixels:
                encode_video(vae, clip, options=options)

    _, seconds, _ = measure(encode_all, sizes.device, sizes.reps)  # best pass after a warm-up pass
    bare = len(pixels) / seconds
    del pixels
    _free(sizes.device)
    report.add("e2e", "bare VAE encode (clips on the device)", rate=bare, note="clips/s")

    with tempfile.TemporaryDirectory() as scratch:
        for workers in sizes.workers:
            arrow = Path(scratch) / f"{workers}.arrow"
            rate, steady, stored = _e2e(jobs, vae, None, options, sizes, workers, arrow, pa)
            report.add("e2e", f"encode_latent_jobs + Arrow, {workers} threads", rate=rate, ratio=rate / bare,
                       note="clips/s, all clips; target ratio >= 0.8")
            report.add("e2e", "... steady state (after the first clip)", rate=steady, ratio=steady / bare)
        report.facts["bytes_per_clip"] = stored
        audio_vae = build_audio_vae(sizes)
        audio_jobs = [LatentJob(j.key, j.path, j.plan, AudioSpec(audio_vae.config.sample_rate)) for j in jobs]
        workers = max(sizes.workers)
        rate, steady, stored = _e2e(audio_jobs, vae, audio_vae, options, sizes, workers,
                                    Path(scratch) / "audio.arrow", pa)
        report.add("e2e", f"... with audio, {workers} threads", rate=rate, ratio=rate / bare, note="clips/s")
        report.add("e2e", "... with audio, steady state", rate=steady, ratio=steady / bare)
        report.facts["bytes_per_clip_with_audio"] = stored
        del audio_vae


def _e2e(jobs: list[LatentJob], vae: Any, audio_vae: Any, options: VaeOptions, sizes: Sizes, workers: int,
         path: Path, pa: Any) -> tuple[float, float, dict[str, int]]:
    """Clips/s of decode + encode + one Arrow IPC row per clip, overall and from the first row on (steady state:
    without the first decode, which nothing can overlap), and the bytes stored per clip by tensor."""
    names = ("latents", "logvar", "audio_latents")
    schema = pa.schema([pa.field("key", pa.string()), pa.field("error", pa.string())] + [
        f for n in names for f in (pa.field(n, pa.large_binary()), pa.field(f"{n}_shape", pa.list_(pa.int32())),
                                   pa.field(f"{n}_dtype", pa.string()))])
    stored: dict[str, int] = {}
    t0, first = time.perf_counter(), 0.0
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, schema) as writer:
        for result in encode_latent_jobs(jobs, vae=vae, audio_vae=audio_vae, options=options, device=sizes.device,
                                         dtype=sizes.dtype, decode_workers=workers, prefetch=workers + 2):
            if result.error:
                raise RuntimeError(result.error)
            row: dict[str, list[Any]] = {"key": [result.key], "error": [None]}
            for name in names:
                tensor = getattr(result, name)
                data, shape, dtype = to_record(tensor) if tensor is not None else (None, None, None)
                row |= {name: [data], f"{name}_shape": [shape], f"{name}_dtype": [dtype]}
                stored[name] = len(data) if data is not None else 0
            writer.write_batch(pa.record_batch(row, schema=schema))
            first = first or time.perf_counter()
    end = time.perf_counter()
    return len(jobs) / (end - t0), (len(jobs) - 1) / (end - first), stored


# ---- part: text


def _captions(sizes: Sizes) -> list[str]:
    from ltx2core.rehearsal import caption  # the rehearsal's captions: its text-embeds stage is compared with these

    return [caption(seed, sizes.caption_tokens) for seed in range(sizes.captions)]


def part_text(sizes: Sizes, report: Report, models: dict[str, Any]) -> None:
    models.pop("vae", None)
    _free(sizes.device)
    t0 = time.perf_counter()
    text = build_text(sizes)
    report.facts["text_build_s"] = round(time.perf_counter() - t0, 1)
    weights = _weights_gib(text["text_encoder"], text["connectors"])
    report.facts["text_weights_gib"] = round(weights, 2)
    captions = _captions(sizes)
    tokenizer, length = text["tokenizer"], sizes.padded_length
    lengths = [len(ids) for ids in tokenizer(captions, truncation=True, max_length=length)["input_ids"]]
    report.facts["caption_tokens_mean"] = sum(lengths) / len(lengths)

    # Baseline (../shared/research/cache_baselines.py): the bare Gemma stack on captions left-padded to max length,
    # every hidden state kept and stacked.
    batch = captions[: sizes.baseline_batch]
    tokens = tokenizer(batch, padding="max_length", truncation=True, max_length=length, return_tensors="pt")
    language_model = text["text_encoder"].model.language_model

    def baseline() -> torch.Tensor:
        with torch.inference_mode():
            hidden = language_model(input_ids=tokens["input_ids"].to(sizes.device),
                                    attention_mask=tokens["attention_mask"].to(sizes.device),
                                    output_hidden_states=True).hidden_states
            return torch.stack(hidden, dim=-1)

    out, seconds, peak = _guarded(lambda: measure(baseline, sizes.device, sizes.reps))
    if out is None:
        report.add("text", f"baseline: all hidden states, {length} tok, bs {len(batch)}", note=seconds)
    else:
        report.add("text", f"baseline: all hidden states, {length} tok, bs {len(batch)}", s=seconds, peak_gib=peak,
                   peak_above_weights_gib=_above(peak, weights), rate=len(batch) / seconds, note="captions/s")
    del out
    _free(sizes.device)

    def features(bucketed: bool, batch_size: int, max_tokens: int | None = None) -> Callable[[], list[Any]]:
        return lambda: encode_captions(captions, **text, max_length=length, device=sizes.device, dtype=sizes.dtype,
                                       batch_size=batch_size, bucketed=bucketed, max_batch_tokens=max_tokens)

    padded, seconds, peak = _guarded(lambda: measure(features(False, sizes.padded_feature_batch), sizes.device, 1))
    if padded is None:
        report.add("text", "encode_captions padded (reference)", note=seconds)
    else:
        report.add("text", f"encode_captions padded to {length}, bs {sizes.padded_feature_batch}", s=seconds,
                   peak_gib=peak, peak_above_weights_gib=_above(peak, weights), rate=len(captions) / seconds,
                   note="captions/s")
    _free(sizes.device)
    # As the text-embeds stage calls it: its batch and token budget, halving a batch that runs out of memory.
    halvings = _Count()
    logging.getLogger("ltx2core.models.text").addHandler(halvings)
    stage_tokens = None if sizes.tiny else ENCODE_TOKENS
    ours, seconds, peak = _guarded(lambda: measure(features(True, sizes.bucketed_batch, stage_tokens), sizes.device,
                                                   sizes.reps))
    report.facts["text_batches_halved"] = halvings.count
    report.facts["pytorch_cuda_alloc_conf"] = os.environ.get("PYTORCH_CUDA_ALLOC_CONF")
    if ours is None:
        report.add("text", "encode_captions bucketed", note=seconds)
        return
    rel = None
    if padded is not None:
        a = torch.cat([e.features.float() for e in ours])
        b = torch.cat([e.features.float() for e in padded])
        rel = _rel_err(a, b)
        report.facts["text_features_finite"] = bool(torch.isfinite(a).all() and torch.isfinite(b).all())
    report.add("text", f"encode_captions bucketed, bs {sizes.bucketed_batch}, <= {stage_tokens} tokens (the stage)",
               s=seconds, peak_gib=peak,
               peak_above_weights_gib=_above(peak, weights), rate=len(captions) / seconds, rel_err=rel,
               note="captions/s; target >= 60; rel_err vs padded")
    per_caption = [e.features.numel() * e.features.element_size() for e in ours]
    report.facts["bytes_per_caption_mean"] = sum(per_caption) / len(per_caption)
    outputs = 1 if text["connectors"].config.per_modality_projections else 2  # 2.3+: video | audio in one row
    report.facts["bytes_per_caption_padded_connector_outputs"] = outputs * length * ours[0].features.shape[1] * 2


class _Count(logging.Handler):
    """Counts the warnings of halved batches."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += "out of memory" in record.getMessage()


# ---- main


PARTS = ("vae", "e2e", "text")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="the tiny model on the CPU (a smoke test of this script)")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}")
    parser.add_argument("--flavour", default="2.0", choices=["2.0", "2.3"],
                        help="2.3: its VAE and connectors (2.5's VAE encoder is 2.3's; its Gemma-4 is not built here)")
    args = parser.parse_args()
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        parser.error(f"unknown parts {unknown}: choose from {','.join(PARTS)}")
    if not args.tiny and not torch.cuda.is_available():
        parser.error("the full-size benchmark needs a CUDA GPU; use --tiny here")
    device = torch.device("cpu" if args.tiny else "cuda")
    sizes = Sizes(tiny=args.tiny, device=device, dtype=torch.float32 if args.tiny else torch.bfloat16,
                  flavour=args.flavour, **(TINY if args.tiny else FULL))

    import av
    import diffusers
    import transformers

    report = Report()
    report.facts |= {
        "mode": "tiny (CPU, random tiny model)" if args.tiny else "full size, RANDOM bf16 weights",
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "cpus": os.cpu_count(), "torch": torch.__version__, "diffusers": diffusers.__version__,
        "transformers": transformers.__version__, "av": av.__version__, "date": date.today().isoformat(),
        "flavour": args.flavour,
    }
    print(json.dumps(report.facts), flush=True)
    started, elapsed, models = time.perf_counter(), {}, {}
    with tempfile.TemporaryDirectory() as folder:
        clips: list[Path] = []
        if "e2e" in parts:  # before CUDA starts, on every core
            t0 = time.perf_counter()
            clips = make_clips(sizes, Path(folder))
            elapsed["clip synthesis"] = time.perf_counter() - t0
        for part in parts:
            t0 = time.perf_counter()
            if part == "vae":
                part_vae(sizes, report, models)
            elif part == "e2e":
                part_e2e(sizes, report, models, clips)
            else:
                part_text(sizes, report, models)
            elapsed[part] = time.perf_counter() - t0
            print(f"-- {part}: {elapsed[part]:.1f} s", flush=True)
    report.facts["elapsed_s"] = {k: round(v, 1) for k, v in elapsed.items()} | {
        "total": round(time.perf_counter() - started, 1)}
    print(json.dumps(report.facts, indent=1))

    out = Path(os.environ["OUT"]) if os.environ.get("OUT") else ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    name = f"cache-{args.flavour}-{'tiny' if args.tiny else 'full'}-{date.today().isoformat()}.json"
    (out / name).write_text(json.dumps({"facts": report.facts, "rows": report.rows}, indent=1) + "\n")
    print(f"wrote {out / name}")


if __name__ == "__main__":
    main()
