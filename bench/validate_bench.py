r"""Validate-stage benchmark: one validation sample at 768x512x121, 30 steps, on the full-size LTX-2.0 model.

Full size: the LTX-2.0 transformer and text connectors (configs of bench/train_bench.py), video VAE, audio VAE,
vocoder and scheduler (../shared/research/diffusers_ltx2_peers.md, A2) with RANDOM bf16 weights built straight on the GPU
(nothing downloaded: times and memory are real, the videos are noise). The prompt and the negative prompt are
random cached features ([200, 3840] and [20, 3840] bf16, what the text_embeds table holds). The components are
assembled into a `Sampler` here the way `load_sampler` assembles loaded ones (pass-through connectors, no text
encoder, the real connectors on the CPU between samples), and each row runs `sample_t2v` with
ValidationSettings(guidance 5.0, 30 steps, 768x512, 121 frames, 25 fps, seed 42): classifier-free guidance, so
every step runs the transformer once on a batch of 2 (negative + prompt).

Rows:
  plain     the transformer resident on the GPU (MemoryOptions()).
  offload   MemoryOptions(group_offload, block_level, 1 block per group, use_stream): the transformer in host
            memory, streamed to the GPU block by block with the next block prefetched on a side stream.
Per row, after a warm-up sample of two steps (kernels, cuDNN choices, offload hooks): sample_s = the whole
`sample_t2v` call (connectors to the GPU and back, denoising, VAE decode to uint8 frames on the host, audio VAE +
vocoder); denoise_s = first transformer call to the end of the last (synchronised hooks on the transformer),
s/step = denoise_s / steps; decode_s = the rest after the last step (video + audio decode, copies to the host);
peak GiB = torch.cuda.max_memory_allocated after a reset at the row's start (absolute: every resident
component included); resident GiB = allocated at the row's start.

On the GPU box (torch, transformers, peft, pillow are there; .whl carries diffusers 0.42.1, av and pydantic), from
the repository root, with carry [".whl"]; an estimated 3 minutes on one H100 (builds ~20 s, plain ~50 s, moving the
transformer to pinned host memory ~40 s, offload ~70 s):
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD || exit; PYTHONUNBUFFERED=1 python3 bench/validate_bench.py
Here, the same code paths on the tiny model and the CPU in float32 (64x64x9, 2 steps; offload without a
stream, onto the CPU itself), in a few seconds:
  .venv/bin/python bench/validate_bench.py --tiny
Prints a table; writes JSON (after every row) to $OUT if set, else bench/results/validate-<device>-<date>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import date
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.train_bench import (  # noqa: E402
    _free,
    _gib,
    _sync,
    device_slug,
)
from ltx2core.models.source import TEXT_MAX_LENGTH as TEXT_MAX_LENGTH_1024  # noqa: E402
from ltx2core.validation.sampling import ValidationPrompt, load_sampler, sample_t2v  # noqa: E402
from ltx2core.validation.settings import MemoryOptions, ValidationSettings  # noqa: E402

GIB = 2**30
PROMPT_TOKENS, NEGATIVE_TOKENS = 200, 20
WARMUP_STEPS = 2
ROWS = {
    "plain": MemoryOptions(),
    "offload": MemoryOptions(group_offload=True, offload_type="block_level", blocks_per_group=1, use_stream=True),
}


@dataclass(frozen=True)
class Sizes:
    """Everything that differs between the full-size run and the tiny CPU run."""

    tiny: bool
    device: torch.device
    dtype: torch.dtype
    settings: ValidationSettings
    prompt_tokens: int
    negative_tokens: int
    text_max_length: int


def make_sizes(tiny: bool, steps: int | None) -> Sizes:
    if tiny:
        from ltx2core.models.tiny import TEXT_MAX_LENGTH

        settings = ValidationSettings(guidance=5.0, steps=2, resolutions=((64, 64),), num_frames=9)
        sizes = Sizes(True, torch.device("cpu"), torch.float32, settings, 20, 5, TEXT_MAX_LENGTH)
    else:
        settings = ValidationSettings(guidance=5.0, steps=30, resolutions=((768, 512),), num_frames=121,
                                      frame_rate=25.0, seed=42)
        sizes = Sizes(False, torch.device("cuda"), torch.bfloat16, settings, PROMPT_TOKENS, NEGATIVE_TOKENS,
                      TEXT_MAX_LENGTH_1024)
    return sizes if steps is None else replace(sizes, settings=replace(sizes.settings, steps=steps))


# ---- components and the sampler


def model_source(sizes: Sizes) -> Any:
    """The tiny model, or LTX-2.0 at full size with random weights drawn on the device (models/random_weights.py):
    `load_sampler` loads either as the validate stage does, transformer placement included."""
    from ltx2core.models.source import resolve_source

    return resolve_source("tiny" if sizes.tiny else "random", "2.0")


def random_prompts(sizes: Sizes, caption_channels: int) -> tuple[ValidationPrompt, ValidationPrompt]:
    generator = torch.Generator().manual_seed(0)

    def features(tokens: int) -> torch.Tensor:
        return torch.randn(tokens, caption_channels, generator=generator).to(sizes.dtype)

    return (ValidationPrompt("random prompt", features(sizes.prompt_tokens)),
            ValidationPrompt("random negative", features(sizes.negative_tokens)))


# ---- measuring


@contextmanager
def transformer_calls(transformer: torch.nn.Module, device: torch.device) -> Iterator[list[tuple[float, float]]]:
    """(start, end) perf_counter times of every transformer call in the block, the device synchronised at both."""
    calls: list[tuple[float, float]] = []
    started: list[float] = []

    def before(*_: Any) -> None:
        _sync(device)
        started.append(time.perf_counter())

    def after(*_: Any) -> None:
        _sync(device)
        calls.append((started.pop(), time.perf_counter()))

    handles = [transformer.register_forward_pre_hook(before), transformer.register_forward_hook(after)]
    try:
        yield calls
    finally:
        for handle in handles:
            handle.remove()


def run_row(name: str, memory: MemoryOptions, source: Any, sizes: Sizes) -> dict[str, Any]:
    device, settings = sizes.device, sizes.settings
    width, height = settings.resolutions[0]
    record: dict[str, Any] = {"row": name, "clip": f"{width}x{height}x{settings.num_frames}", "steps": settings.steps,
                              "guidance": settings.guidance, "memory": _memory_label(memory)}
    try:
        t0 = time.perf_counter()
        sampler = load_sampler(source, device=device, dtype=sizes.dtype, memory=memory)
        record["setup_s"] = round(time.perf_counter() - t0, 1)
        transformer = sampler.t2v.transformer
        record["transformer_params"] = sum(p.numel() for p in transformer.parameters())
        record["weights_gib"] = {name: _weights_gib(getattr(sampler.t2v, name)) for name in
                                 ("transformer", "vae", "audio_vae", "vocoder")} | {
                                     "connectors": _weights_gib(sampler.connectors)}
        prompt, negative = random_prompts(sizes, sampler.connectors.config.caption_channels)
        _free(device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
            record["resident_gib"] = _gib(torch.cuda.memory_allocated(device))
        # Two steps: one would give the scheduler a zero-width shift_terminal stretch (NaN sigmas).
        record["warmup_s"] = round(_timed(lambda: sample_t2v(sampler, [prompt], negative,
                                                             replace(settings, steps=WARMUP_STEPS)))[1], 2)
        with transformer_calls(transformer, device) as calls:
            samples, seconds = _timed(lambda: sample_t2v(sampler, [prompt], negative, settings))
            ended = time.perf_counter()
        denoise = calls[-1][1] - calls[0][0]
        sample = samples[0]
        record.update(
            sample_s=round(seconds, 2), denoise_s=round(denoise, 2), s_step=round(denoise / settings.steps, 3),
            decode_s=round(ended - calls[-1][1], 2), transformer_calls=len(calls),
            frames=list(sample.frames.shape), audio=list(sample.audio.shape), sample_rate=sample.sample_rate,
        )
        if device.type == "cuda":
            record["peak_gib"] = _gib(torch.cuda.max_memory_allocated(device))
            record["peak_reserved_gib"] = _gib(torch.cuda.max_memory_reserved(device))
    except Exception as exc:  # noqa: BLE001 - an OOM ends the row, not the run
        record["error"] = f"{type(exc).__name__}: {str(exc)[:400]}"
    finally:
        _free(device)
    return record


def _timed(fn: Any) -> tuple[Any, float]:
    t0 = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - t0


def _memory_label(memory: MemoryOptions) -> str:
    if not memory.group_offload:
        return "transformer on the device"
    return (f"group offload {memory.offload_type}, {memory.blocks_per_group} block(s)/group, "
            f"use_stream={memory.use_stream}")


def _weights_gib(module: torch.nn.Module) -> float:
    return _gib(sum(t.numel() * t.element_size() for t in [*module.parameters(), *module.buffers()]))


COLUMNS = (("sample_s", "sample s", "{:.1f}"), ("denoise_s", "denoise s", "{:.1f}"), ("s_step", "s/step", "{:.3f}"),
           ("decode_s", "decode s", "{:.1f}"), ("warmup_s", "warmup s", "{:.1f}"), ("setup_s", "setup s", "{:.1f}"),
           ("resident_gib", "res GiB", "{:.2f}"), ("peak_gib", "peak GiB", "{:.2f}"))


def format_row(record: dict[str, Any]) -> str:
    cells = [f"{record['row']:<8}"]
    for key, title, fmt in COLUMNS:
        value = record.get(key)
        cells.append(f"{fmt.format(value) if isinstance(value, float | int) else '':>{len(title)}}")
    return " ".join(cells) + (f"  FAILED {record['error'][:140]}" if "error" in record else "")


def header() -> str:
    return " ".join([f"{'row':<8}"] + [title for _, title, _ in COLUMNS])


# ---- main


def main() -> None:
    started = time.perf_counter()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="the tiny model on the CPU (a smoke test of this script)")
    parser.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated, of {', '.join(ROWS)}")
    parser.add_argument("--steps", type=int, default=None, help="denoising steps (default 30; tiny 2)")
    args = parser.parse_args()
    wanted = [name.strip() for name in args.rows.split(",") if name.strip()]
    unknown = [name for name in wanted if name not in ROWS]
    if unknown or not wanted:
        parser.error(f"--rows {args.rows!r}: choose from {', '.join(ROWS)}")
    if args.steps is not None and args.steps < 1:
        parser.error(f"--steps {args.steps} must be at least 1")
    if not args.tiny and not torch.cuda.is_available():
        parser.error("the full-size benchmark needs a CUDA GPU; use --tiny here")
    sizes = make_sizes(args.tiny, args.steps)
    # ROWS order: once group offload is on, the transformer cannot go back to plain.
    memory_rows = {name: memory for name, memory in ROWS.items() if name in wanted}
    if args.tiny:
        torch.set_num_threads(1)  # tiny convolutions gain nothing from threads on a busy shared CPU
        memory_rows = {name: replace(memory, use_stream=False) for name, memory in memory_rows.items()}  # CUDA only

    import diffusers

    device = sizes.device
    width, height = sizes.settings.resolutions[0]
    facts: dict[str, Any] = {
        "mode": "tiny (CPU, float32, random tiny model)" if sizes.tiny else "full size LTX-2.0, RANDOM bf16 weights",
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__, "diffusers": diffusers.__version__, "date": date.today().isoformat(),
        "clip": f"{width}x{height}x{sizes.settings.num_frames} at {sizes.settings.frame_rate:g} fps",
        "steps": sizes.settings.steps, "guidance": sizes.settings.guidance,
        "prompt_tokens": sizes.prompt_tokens, "negative_tokens": sizes.negative_tokens,
        "text_max_length": sizes.text_max_length,
    }
    out = Path(os.environ["OUT"]) if os.environ.get("OUT") else ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"validate-{device_slug(device, sizes.tiny)}-{facts['date']}.json"
    print(json.dumps(facts), flush=True)

    source = model_source(sizes)
    records: list[dict[str, Any]] = []
    print(header(), flush=True)
    for name, memory in memory_rows.items():
        t0 = time.perf_counter()
        record = run_row(name, memory, source, sizes)
        record["row_s"] = round(time.perf_counter() - t0, 1)
        records.append(record)
        print(format_row(record), flush=True)
        path.write_text(json.dumps({"facts": facts, "rows": records}, indent=1) + "\n")
    facts["elapsed_s"] = round(time.perf_counter() - started, 1)
    path.write_text(json.dumps({"facts": facts, "rows": records}, indent=1) + "\n")

    print("\n" + header())
    for record in records:
        print(format_row(record))
    print(json.dumps(facts, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
