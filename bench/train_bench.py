r"""Train-step benchmark: our LoRA training step beside the research baseline, on the full-size LTX-2.0 transformer.

Full size: the LTX-2.0 transformer (18.9 B parameters, its diffusers config as in ../shared/research/baseline_train_step.py)
and text connectors (1.4 B) with RANDOM bf16 weights, built straight on the GPU (nothing is downloaded, nothing
trained: times and memory are real, values are not). Batch 1, LoRA r32 (alpha 32, no dropout, as
config/examples/ltx2-lora-768x512.json), gradient checkpointing, bf16 autocast, AdamW lr 1e-4. The model is built
once; rows swap LoRAs (unload_lora / add). Rows that change the model for good (block swap, fp8, compile) run last,
in this order, and the model is rebuilt (~seconds) when a later row needs it plain.

Rows (`--rows a,b,c`; default: every row not marked *; `--rows all` adds those). 768 = 768x512x121 (6,144 video
tokens), 512 = 512x512x49 (1,792); video-only unless "av" (126 audio tokens: 121 frames at 24 fps, 25 latents/s):
  baseline-768, baseline-512, baseline-av-768   ../shared/research/baseline_train_step.py's step: random connector-shaped text
        embeddings (1024 x 3840) fed straight in, LoRA on to_q/to_k/to_v/to_out.0 of ALL six attentions (fp32), loss
        = mean(v^2) (+ mean(a^2)), backward, AdamW step. Inputs as there (timestep 500, sigma 0.5).
  ours-av-768, ours-768, ours-512   our step as ltx2core.training.loop.train runs it: collate (the cached caption
        features, 200 tokens, through the frozen connectors to 1024 tokens, every step, no grad), training_step
        (sigma sampling, noise, flow-matching loss), backward, loss.item(), clip_grad_norm_ 1.0, AdamW step. LoRA by
        lora.add_lora on target_modules(): video attn1/attn2 q/k/v/out (fp32); with audio all six attentions.
        The loop's LR scheduler step, sinks and checkpoints are left out.
  ours-768-noconn     ours-768 fed random connector-shaped embeddings instead of running the connectors (the
        baseline's inputs): the difference is what the per-step connector run costs.
  connectors          collate alone (connectors forward, no grad): its s/call.
  ours-bf16lora-768, ours-bf16lora-512   ours with the LoRA parameters cast to bf16 after add_lora (lora.py has
        no option for it: add_lora always makes them float32).
  ours-tread-768      ours with TREAD (tread.TreadRouter): 50 % of the video tokens skip blocks 2..46, the route of
        config/examples/ltx2-lora-768x512.json; the row attaches the router itself, as the loop does from
        `tread_config.routes`.
  ours-blockswap16-768   ours with block_swap.BlockSwapper: the last 16 blocks' frozen weights in pinned host
        memory, streamed in one block ahead.
  ours-fp8-768        ours with fp8.apply_fp8_base (frozen block Linears in float8_e4m3fn; on an H100/H200 the
        matmuls run in fp8, torch._scaled_mm, since this session's run 7; before, bf16 compute on upcast weights).
  ours-fp8-compile-768 *   fp8 base + compile_repeated_blocks.
  ours-int8-park-precap-768 *   int8.apply_int8_base (the same layers in int8 through torchao, weight-only).
  ours-compile-768, ours-bf16lora-compile-768, ours-bf16lora-compile-512   ours + transformer.compile_repeated_blocks
        (fullgraph=False; torch._dynamo.reset() before each row, so each compiles for its own shape and dtype): the
        first step, which compiles, is reported apart (first_s) and excluded from s/step.
  Rows marked *: sac = selective recompute (recompute.configure_blocks; sac36: the first 36 blocks); precap = the
        caption expanded once and the connectors moved off the GPU (as the train stage does); park = video-only with
        the audio stream parked on the host (audio_stream.park_audio_stream, as the train stage does on video-only
        data: 10.5 GiB of weights less on the GPU, the same loss to the bit).

Per row: s/step = median of `--steps` timed steps after the warm-up (2 steps; 3 when compiled), with the min;
peak GiB = torch.cuda.max_memory_allocated after a reset at the row's start (absolute: weights, LoRA, connectors
when resident, Adam state); resident GiB = allocated at the row's start.

FLOPs are COUNTED, not modelled: each row's first warm-up step runs under torch.utils.flop_counter.FlopCounterMode,
which sums the FLOPs of every matmul and attention kernel that runs: forward, the checkpointed recompute and
backward (input gradients through the frozen base, LoRA weight gradients); elementwise work and AdamW are not
counted. Compiled rows reuse the count of the same step uncompiled. TFLOP/s = counted FLOPs / median s; MFU =
that / 790 TFLOP/s (bf16 matmul peak measured on these cards). `tflops_scaled` uses the fixed figure 5.8e14 FLOPs
per step at 768x512x121 video-only scaled linearly by (video + audio) tokens / 6,144: it ignores that attention
grows with tokens squared and the audio stream's own layers, so read it as a cross-check of the count. The same
counter over this model on the meta device (no GPU; the baseline's inputs, our LoRA) gave per step 5.66e14 at 768
video-only (forward 1.78e14, x3.17), 1.47e14 at 512 (x3.00) and 6.33e14 at 768 with audio (x3.16).

On the GPU box (torch, transformers, peft are there; .whl carries diffusers 0.42.1 and the rest), from the
repository root, with carry [".whl"]; an estimated 6.5 minutes on one H100 for the default rows (the plan with
per-row estimates is printed first; a row that would run past --deadline-s, default 500, is skipped and says so):
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD || exit; PYTHONUNBUFFERED=1 python3 bench/train_bench.py
Here, the same code paths on the tiny model and the CPU in float32, one thread (compile with the "eager" backend:
dynamo traces, nothing is generated; no autocast; the CPU attention kernel is not in the FLOP counter's table, so
tiny FLOP counts miss attention), in about 40 s:
  .venv/bin/python bench/train_bench.py --tiny
Prints a table; writes JSON (after every row) to $OUT if set, else bench/results/train-<device>-<date>.json.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import re
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ltx2core.models import full_size  # noqa: E402
from ltx2core.models.flavours import FLAVOURS, Flavour  # noqa: E402
from ltx2core.models.random_weights import default_dtype as _default_dtype  # noqa: E402
from ltx2core.models.runtime import compute_dtype  # noqa: E402
from ltx2core.models.scale import LTX2  # noqa: E402
from ltx2core.models.source import TEXT_MAX_LENGTH as TEXT_MAX_LENGTH_1024  # noqa: E402
from ltx2core.models.text import projection_widths  # noqa: E402
from ltx2core.training.data import TrainBatch, TrainExample, collate  # noqa: E402
from ltx2core.training.lora import LoraSpec, add_lora, target_modules  # noqa: E402
from ltx2core.training.optim import make_optimizer  # noqa: E402
from ltx2core.training.rollout import Rollout  # noqa: E402
from ltx2core.training.step import training_step  # noqa: E402

GIB = 2**30
RANK = 32
SEED = 42
LEARNING_RATE = 1e-4
MAX_GRAD_NORM = 1.0
FPS = 24.0
AUDIO_LATENTS_PER_SECOND = 16000 / 160 / 4  # LTX-2 audio VAE: 16 kHz, hop 160, 4x down in time
BASELINE_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")  # the research baseline: all six attentions
PEAK_TFLOPS = 790.0  # bf16 matmul peak measured on the lent H100/H200 cards
REFERENCE_FLOPS, REFERENCE_TOKENS = 5.8e14, 6144  # the count: 768x512x121 video-only, full checkpointing
SWAP_BLOCKS = 16
TREAD_RATIO, TREAD_FIRST, TREAD_FROM_END = 0.5, 2, 2  # example config route: blocks 2..-2

# ---- sizes and rows


@dataclass(frozen=True)
class Shape:
    label: str  # the full-size clip this row stands for
    width: int
    height: int
    frames: int

    @property
    def latent_dims(self) -> tuple[int, int, int]:
        return LTX2.latent_frames(self.frames), self.height // LTX2.spatial, self.width // LTX2.spatial

    @property
    def video_tokens(self) -> int:
        frames, height, width = self.latent_dims
        return frames * height * width

    @property
    def audio_tokens(self) -> int:
        return round(self.frames / FPS * AUDIO_LATENTS_PER_SECOND)


@dataclass(frozen=True)
class Sizes:
    """Everything that differs between the full-size run and the tiny CPU run."""

    tiny: bool
    device: torch.device
    dtype: torch.dtype  # the weights' and compute dtype
    shapes: dict[str, Shape]
    caption_tokens: int  # real tokens of the cached caption features
    text_max_length: int  # what the connectors pad captions to
    compile_backend: str
    flavour: Flavour


FULL_SHAPES = {"768": Shape("768x512x121", 768, 512, 121), "512": Shape("512x512x49", 512, 512, 49)}
TINY_SHAPES = {"768": Shape("768x512x121", 96, 64, 17), "512": Shape("512x512x49", 64, 64, 9)}


@dataclass(frozen=True)
class Row:
    name: str
    family: str  # baseline | ours | connectors
    shape: str = "768"
    audio: bool = False
    connectors: bool = True  # ours: run the connectors every step (else random connector-shaped embeddings)
    bf16_lora: bool = False
    tread: bool = False
    block_swap: int = 0
    fp8: bool = False
    int8: bool = False  # int8.apply_int8_base: the same layers in int8 through torchao (weight-only)
    compile: bool = False
    recompute: str = "full"  # recompute.configure_blocks: full | selective (matmul and attention outputs kept)
    selective_blocks: int | None = None  # selective: how many blocks keep their outputs (None = all)
    precap: bool = False  # the caption expanded once (data.expand_captions) and the connectors moved off the GPU
    park: bool = False  # video-only: the audio stream parked on the host (audio_stream.park_audio_stream)
    rollout: int = 0  # scheduled sampling on every clip, k drawn from 0..rollout (training/rollout.py); 0 = off
    reference: int = 0  # IC-LoRA: a reference at the clip's size / this, packed after its tokens; 0 = none
    default: bool = True
    estimate_s: float = 15.0  # full size on one H100, row setup included

    @property
    def adapter(self) -> str:
        return "baseline" if self.family == "baseline" else "ours-av" if self.audio else "ours-video"

    @property
    def mods(self) -> frozenset[str]:
        """Changes to the model that are not undone after the row."""
        return frozenset(m for m, on in (("park", self.park), ("fp8", self.fp8), ("int8", self.int8),
                                          ("swap", self.block_swap > 0),
                                          ("compile", self.compile),
                                          (f"selective{self.selective_blocks or ''}", self.recompute == "selective"))
                         if on)

    @property
    def flop_key(self) -> tuple[Any, ...]:
        return self.family, self.shape, self.audio, self.tread, self.connectors


ROWS = (  # in run order: LoRA changes kept few, model-changing rows last
    Row("baseline-768", "baseline", estimate_s=18),
    Row("baseline-512", "baseline", "512", estimate_s=14),
    Row("baseline-av-768", "baseline", audio=True, estimate_s=18),
    Row("ours-av-768", "ours", audio=True, estimate_s=22),
    Row("ours-768", "ours", estimate_s=17),
    Row("ours-768-noconn", "ours", connectors=False, estimate_s=15),
    Row("ours-512", "ours", "512", estimate_s=14),
    Row("connectors", "connectors", estimate_s=3),
    Row("ours-bf16lora-768", "ours", bf16_lora=True, estimate_s=13),
    Row("ours-bf16lora-512", "ours", "512", bf16_lora=True, estimate_s=12),
    Row("ours-tread-768", "ours", tread=True, estimate_s=11),
    Row("ours-blockswap16-768", "ours", block_swap=SWAP_BLOCKS, estimate_s=40),
    Row("ours-fp8-768", "ours", fp8=True, estimate_s=22),
    Row("ours-fp8-compile-768", "ours", fp8=True, compile=True, default=False, estimate_s=55),
    Row("ours-compile-768", "ours", compile=True, estimate_s=50),
    Row("ours-bf16lora-compile-768", "ours", bf16_lora=True, compile=True, estimate_s=45),
    Row("ours-bf16lora-compile-512", "ours", "512", bf16_lora=True, compile=True, estimate_s=38),
    Row("ours-sac-768", "ours", recompute="selective", default=False, estimate_s=20),
    Row("ours-bf16lora-sac-compile-768", "ours", bf16_lora=True, compile=True, recompute="selective", default=False,
        estimate_s=50),
    Row("ours-bf16lora-sac-compile-512", "ours", "512", bf16_lora=True, compile=True, recompute="selective",
        default=False, estimate_s=40),
    Row("ours-av-bf16lora-sac-compile-768", "ours", audio=True, bf16_lora=True, compile=True, recompute="selective",
        default=False, estimate_s=60),
    # what fits an 80 GiB card: each selective block costs ~0.9 GiB video-only, ~1.2 GiB with audio (H200 run)
    Row("ours-precap-768", "ours", precap=True, default=False, estimate_s=17),
    Row("ours-blockswap16-precap-768", "ours", block_swap=SWAP_BLOCKS, precap=True, default=False, estimate_s=40),
    Row("ours-fp8-precap-768", "ours", fp8=True, precap=True, default=False, estimate_s=22),
    Row("ours-bf16lora-sac36-compile-768", "ours", bf16_lora=True, compile=True, recompute="selective",
        selective_blocks=36, default=False, estimate_s=50),
    Row("ours-av-bf16lora-sac26-compile-768", "ours", audio=True, bf16_lora=True, compile=True, recompute="selective",
        selective_blocks=26, default=False, estimate_s=60),
    # video-only with the audio stream parked (what the train stage does on video-only data): 10.5 GiB less
    Row("ours-park-precap-768", "ours", precap=True, park=True, default=False, estimate_s=25),
    Row("ours-blockswap16-park-precap-768", "ours", block_swap=SWAP_BLOCKS, precap=True, park=True, default=False,
        estimate_s=40),
    Row("ours-fp8-park-precap-768", "ours", fp8=True, precap=True, park=True, default=False, estimate_s=30),
    # Training modes (issue #19), each beside ours-precap-768: scheduled sampling on every clip with k in 0..10
    # (5 extra forward passes a step on average), and an IC-LoRA reference at half resolution (+1/4 tokens).
    Row("ours-precap-rollout10-768", "ours", precap=True, rollout=10, default=False, estimate_s=40),
    Row("ours-precap-ic2-768", "ours", precap=True, reference=2, default=False, estimate_s=20),
    Row("ours-int8-park-precap-768", "ours", int8=True, precap=True, park=True, default=False, estimate_s=40),
    Row("ours-fp8-bf16lora-sac-compile-park-precap-768", "ours", fp8=True, bf16_lora=True, compile=True,
        recompute="selective", precap=True, park=True, default=False, estimate_s=60),
    Row("ours-bf16lora-sac-compile-park-precap-768", "ours", bf16_lora=True, compile=True, recompute="selective",
        precap=True, park=True, default=False, estimate_s=55),
    # what the train stage runs on video-only data with selective recompute and compiled blocks: a float32 LoRA
    # (its optimizer state too: bf16 Adam updates vanish), the row `ltx2 rehearse`'s train figure is compared with
    Row("ours-sac-compile-park-precap-768", "ours", compile=True, recompute="selective", precap=True, park=True,
        default=False, estimate_s=55),
    Row("ours-sac-compile-park-precap-512", "ours", "512", compile=True, recompute="selective", precap=True,
        park=True, default=False, estimate_s=40),
    Row("ours-fp8-bf16lora-compile-park-precap-768", "ours", fp8=True, bf16_lora=True, compile=True, precap=True,
        park=True, default=False, estimate_s=55),
    Row("ours-bf16lora-compile-park-precap-768", "ours", bf16_lora=True, compile=True, precap=True, park=True,
        default=False, estimate_s=50),
    Row("ours-av-bf16lora-sac28-compile-precap-768", "ours", audio=True, bf16_lora=True, compile=True,
        recompute="selective", selective_blocks=28, precap=True, default=False, estimate_s=60),
)
FIXED_OVERHEAD_S = 45  # imports, first model build, connectors build (estimate)


# ---- the model, kept across rows


class Bench:
    """The transformer (built once, rebuilt only when a row needs it without a change an earlier row made for
    good), its current LoRA, and the connectors."""

    def __init__(self, sizes: Sizes, facts: dict[str, Any]) -> None:
        self.sizes = sizes
        self.facts = facts
        self.transformer: Any = None
        self.connectors: Any = None
        self.adapter: str | None = None
        self.mods: set[str] = set()
        self.broken = False  # a model change failed half-way: rebuild before the next row

    def prepare(self, row: Row) -> tuple[Any, list[torch.nn.Parameter]]:
        """The transformer with `row`'s LoRA (in its dtype) and model changes; returns it and the LoRA params."""
        fixed_before_lora = self.mods & {"fp8", "int8", "swap"}  # these must come after the LoRA is added
        if (self.transformer is None or self.broken or self.mods - row.mods
                or (fixed_before_lora and self.adapter != row.adapter)
                or (row.park and "park" not in self.mods and fixed_before_lora)):  # park comes before both
            self.rebuild()
        try:
            if self.adapter != row.adapter:
                self._set_adapter(row.adapter)
            params = [p for p in self.transformer.parameters() if p.requires_grad]
            dtype = torch.bfloat16 if row.bf16_lora else torch.float32
            for param in params:
                if param.dtype != dtype:
                    param.data = param.data.to(dtype)
            self._apply_mods(row)
        except Exception:
            self.broken = True
            raise
        return self.transformer, params

    def rebuild(self) -> None:
        self.release()
        t0 = time.perf_counter()
        self.transformer = build_transformer(self.sizes)
        self.facts.setdefault("build_s", []).append(round(time.perf_counter() - t0, 2))
        self.facts["transformer_params"] = sum(p.numel() for p in self.transformer.parameters())
        self.facts["transformer_weights_gib"] = round(_bytes(self.transformer) / GIB, 2)

    def release(self) -> None:
        if "compile" in self.mods:
            torch._dynamo.reset()  # compiled code holds the old blocks
        self.transformer, self.adapter, self.mods, self.broken = None, None, set(), False
        _free(self.sizes.device)

    def clear_grads(self) -> None:
        if self.transformer is not None:
            for param in self.transformer.parameters():
                param.grad = None

    def get_connectors(self) -> Any:
        if self.connectors is None:
            self.connectors = build_connectors(self.sizes)
            self.facts["connectors_weights_gib"] = round(_bytes(self.connectors) / GIB, 2)
        return self.connectors

    def _set_adapter(self, adapter: str) -> None:
        transformer = self.transformer
        if self.adapter is not None:
            transformer.unload_lora()
            self.adapter = None
        if adapter == "baseline":  # ../shared/research/baseline_train_step.py
            from peft import LoraConfig

            transformer.add_adapter(LoraConfig(r=RANK, lora_alpha=RANK, init_lora_weights=True,
                                               target_modules=list(BASELINE_TARGETS)))
            for param in transformer.parameters():
                if param.requires_grad:
                    param.data = param.data.float()
        else:
            targets = target_modules(None, with_audio=adapter == "ours-av")
            add_lora(transformer, LoraSpec(rank=RANK, alpha=RANK, dropout=0.0, targets=tuple(targets)), seed=SEED)
        self.adapter = adapter

    def _apply_mods(self, row: Row) -> None:
        transformer, device = self.transformer, self.sizes.device
        if row.park and "park" not in self.mods:
            from ltx2core.training.audio_stream import park_audio_stream

            self.mods.add("park")
            self.facts[f"{row.name}: parked_gib"] = round(park_audio_stream(transformer).bytes / GIB, 2)
        if row.fp8 and "fp8" not in self.mods:
            from ltx2core.training.fp8 import apply_fp8_base

            self.mods.add("fp8")
            self.facts[f"{row.name}: fp8_saved_gib"] = round(apply_fp8_base(transformer) / GIB, 2)
        if row.int8 and "int8" not in self.mods:
            from ltx2core.training.int8 import apply_int8_base

            self.mods.add("int8")
            self.facts[f"{row.name}: int8_saved_gib"] = round(apply_int8_base(transformer) / GIB, 2)
        if row.block_swap and "swap" not in self.mods:
            from ltx2core.training.block_swap import BlockSwapper

            self.mods.add("swap")
            t0 = time.perf_counter()
            swapper = BlockSwapper(transformer, min(row.block_swap, len(transformer.transformer_blocks) - 1),
                                   device=device)
            self.facts[f"{row.name}: swapped_gib"] = round(swapper.bytes_swapped / GIB, 2)
            self.facts[f"{row.name}: swap_setup_s"] = round(time.perf_counter() - t0, 1)
        if row.compile:
            torch._dynamo.reset()  # each compile row compiles for its own shape and LoRA dtype
        blocks_mods = {m for m in row.mods if m == "compile" or m.startswith("selective")}
        if blocks_mods - self.mods:
            from ltx2core.training.recompute import configure_blocks

            self.mods |= blocks_mods
            configure_blocks(transformer, row.recompute, compile_blocks=row.compile,
                             selective_blocks=None if row.selective_blocks is None else min(  # tiny: 2 blocks
                                 row.selective_blocks, len(transformer.transformer_blocks)),
                             backend=self.sizes.compile_backend)


def build_transformer(sizes: Sizes) -> Any:
    if sizes.tiny:
        from ltx2core.models.loading import load_transformer
        from ltx2core.models.source import resolve_source

        transformer = load_transformer(resolve_source("tiny", sizes.flavour.name), dtype=sizes.dtype)
    else:
        from diffusers import LTX2VideoTransformer3DModel

        torch.manual_seed(0)
        config = full_size.TRANSFORMER[sizes.flavour.release]
        with _default_dtype(sizes.dtype), torch.device(sizes.device):  # random init straight on the GPU
            transformer = LTX2VideoTransformer3DModel.from_config(config)
    transformer.requires_grad_(False)
    transformer.enable_gradient_checkpointing()
    transformer.train()
    return transformer


def build_connectors(sizes: Sizes) -> Any:
    if sizes.tiny:
        from ltx2core.models.loading import load_connectors
        from ltx2core.models.source import resolve_source

        return load_connectors(resolve_source("tiny", sizes.flavour.name), dtype=sizes.dtype)
    from diffusers.pipelines.ltx2 import LTX2TextConnectors

    with _default_dtype(sizes.dtype), torch.device(sizes.device):
        connectors = LTX2TextConnectors(**full_size.connectors(sizes.flavour.name))
    return connectors.eval().requires_grad_(False)



def _bytes(module: torch.nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in [*module.parameters(), *module.buffers()])


# ---- inputs and steps


def context_widths(transformer_config: Any) -> tuple[int, int]:
    """(video, audio) widths of the text the transformer takes: 2.0 projects its 3840-wide captions itself."""
    if transformer_config.use_prompt_embeddings:
        return transformer_config.caption_channels, transformer_config.caption_channels
    return transformer_config.cross_attention_dim, transformer_config.audio_cross_attention_dim


def make_example(sizes: Sizes, shape: Shape, transformer_config: Any, caption_channels: int,
                 audio: bool) -> TrainExample:
    """One clip as the train stage's source hands it over: float32 tensors on the host."""
    generator = torch.Generator().manual_seed(0)
    channels = transformer_config.in_channels
    return TrainExample(
        key="bench",
        latents=torch.randn(channels, *shape.latent_dims, generator=generator),
        text_features=torch.randn(sizes.caption_tokens, caption_channels, generator=generator),
        frame_rate=FPS,
        audio_latents=torch.randn(shape.audio_tokens, transformer_config.audio_in_channels, generator=generator)
        if audio else None,
    )


def random_text_batch(sizes: Sizes, example: TrainExample, widths: tuple[int, int]) -> TrainBatch:
    """`example` collated with random connector-shaped embeddings in place of the connectors' output."""
    device, dtype, length = sizes.device, sizes.dtype, sizes.text_max_length

    def embeds(width: int) -> torch.Tensor:
        return torch.randn(1, length, width, device=device, dtype=dtype)

    audio = example.audio_latents
    return TrainBatch(
        keys=(example.key,), latents=example.latents[None].to(device, dtype), text=embeds(widths[0]),
        audio_text=embeds(widths[1]),
        text_mask=torch.ones(1, length, dtype=torch.long, device=device), frame_rates=(example.frame_rate,),
        audio_latents=None if audio is None else audio[None].to(device, dtype),
        reference_latents=None if example.reference_latents is None else example.reference_latents[None].to(
            device, dtype),
    )


def baseline_step(sizes: Sizes, transformer: Any, params: list[torch.nn.Parameter], shape: Shape,
                  audio: bool) -> Callable[[], torch.Tensor]:
    """../shared/research/baseline_train_step.py's `make_inputs` and step, unchanged in substance; for 2.3+ the
    text at the transformer's widths, sigma = the scaled timestep and use_cross_timestep, as the pipeline calls it."""
    device, dtype, config = sizes.device, sizes.dtype, transformer.config
    video_width, audio_width = context_widths(config)
    frames, height, width = shape.latent_dims
    audio_len, text_len = (shape.audio_tokens if audio else 1), sizes.text_max_length

    def rand(*size: int) -> torch.Tensor:
        return torch.randn(*size, device=device, dtype=dtype)

    inputs = dict(
        hidden_states=rand(1, shape.video_tokens, config.in_channels),
        audio_hidden_states=rand(1, audio_len, config.audio_in_channels),
        encoder_hidden_states=rand(1, text_len, video_width),
        audio_encoder_hidden_states=rand(1, text_len, audio_width),
        timestep=torch.tensor([500.0], device=device),
        sigma=torch.tensor([500.0 if sizes.flavour.release != "2.0" else 0.5], device=device),
        use_cross_timestep=sizes.flavour.use_cross_timestep,
        encoder_attention_mask=torch.ones(1, text_len, device=device),
        audio_encoder_attention_mask=torch.ones(1, text_len, device=device),
        num_frames=frames, height=height, width=width, fps=FPS, audio_num_frames=audio_len,
        isolate_modalities=not audio, return_dict=False,
    )
    optimizer = torch.optim.AdamW(params, lr=LEARNING_RATE)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")

    def step() -> torch.Tensor:
        with autocast:
            video, audio_out = transformer(**inputs)
            loss = video.float().pow(2).mean() + (audio_out.float().pow(2).mean() if audio else 0)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    return step


def our_step(sizes: Sizes, transformer: Any, params: list[torch.nn.Parameter], example: TrainExample,
             connectors: Any, batch: TrainBatch | None, generator: torch.Generator,
             rollout: Rollout | None = None) -> Callable[[], float]:
    """One optimizer step as ltx2core.training.loop.train takes it (gradient accumulation 1)."""
    device = sizes.device
    dtype = compute_dtype("bf16", device)
    optimizer = make_optimizer("adamw", params, learning_rate=LEARNING_RATE)
    autocast = torch.autocast(device.type, dtype=dtype, enabled=device.type == "cuda" and dtype != torch.float32)
    steps = iter(range(1, 1 << 30))

    def step() -> float:
        clip = batch if batch is not None else collate(
            [example], connectors=connectors, text_max_length=sizes.text_max_length, device=device, dtype=dtype)
        with autocast:
            output = training_step(transformer, clip, generator=generator,
                                   cross_timestep=sizes.flavour.use_cross_timestep, rollout=rollout,
                                   step=next(steps))
        output.loss.backward()
        loss = output.loss.item()
        torch.nn.utils.clip_grad_norm_(params, MAX_GRAD_NORM)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss

    return step


# ---- measuring


@dataclass
class Measured:
    times: list[float]
    first_s: float
    flops: float | None
    last_loss: float


def measure_steps(step: Callable[[], Any], device: torch.device, *, warmup: int, steps: int,
                  count_flops: bool) -> Measured:
    """Run warmup + steps steps, each timed alone; the first (a warm-up) under the FLOP counter when asked."""
    from torch.utils.flop_counter import FlopCounterMode

    times, first, flops, last = [], 0.0, None, None
    for i in range(warmup + steps):
        _sync(device)
        t0 = time.perf_counter()
        if i == 0 and count_flops:
            with FlopCounterMode(display=False) as counter:
                last = step()
            flops = float(counter.get_total_flops())
            if device.type == "cuda":
                # The counter's dispatch mode keeps checkpointed activations alive (measured: ~100 GiB peaks at
                # 768x512x121 against ~40 without it): the peak is what the plain steps after it reach.
                torch.cuda.reset_peak_memory_stats(device)
        else:
            last = step()
        _sync(device)
        seconds = time.perf_counter() - t0
        first = seconds if i == 0 else first
        if i >= warmup:
            times.append(seconds)
    return Measured(times, first, flops, float(last) if isinstance(last, torch.Tensor | float) else float("nan"))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _gib(value: float) -> float:
    return round(value / GIB, 2)


# ---- rows


@dataclass
class Report:
    facts: dict[str, Any]
    rows: list[dict[str, Any]] = field(default_factory=list)
    path: Path | None = None

    def add(self, record: dict[str, Any]) -> None:
        self.rows.append(record)
        print(format_row(record), flush=True)
        self.save()

    def save(self) -> None:
        if self.path is not None:
            self.path.write_text(json.dumps({"facts": self.facts, "rows": self.rows}, indent=1) + "\n")


COLUMNS = (("s_step", "s/step", "{:.3f}"), ("s_min", "min", "{:.3f}"), ("first_s", "first s", "{:.1f}"),
           ("tflop_step", "TFLOP/st", "{:.3g}"), ("peak_gib", "peak GiB", "{:.2f}"),
           ("resident_gib", "res GiB", "{:.2f}"),
           ("tflops", "TFLOP/s", "{:.0f}"), ("mfu_pct", "MFU%", "{:.0f}"), ("tflops_scaled", "TF/s sc", "{:.0f}"))


def format_row(record: dict[str, Any]) -> str:
    cells = [f"{record['row']:<26}", f"{record.get('tokens', ''):<10}"]
    for key, title, fmt in COLUMNS:
        value = record.get(key)
        cells.append(f"{fmt.format(value) if isinstance(value, float | int) else '':>{max(len(title), 7)}}")
    return " ".join(cells) + ("  " + record["note"] if record.get("note") else "")


def header() -> str:
    cells = [f"{'row':<26}", f"{'tokens v+a':<10}"] + [f"{title:>{max(len(title), 7)}}" for _, title, _ in COLUMNS]
    return " ".join(cells)


def run_row(bench: Bench, row: Row, steps: int, flop_counts: dict[tuple[Any, ...], float],
            count_flops: bool = True) -> dict[str, Any]:
    sizes = bench.sizes
    shape = sizes.shapes[row.shape]
    audio_tokens = shape.audio_tokens if row.audio else 1 if row.family != "connectors" else 0
    record: dict[str, Any] = {"row": row.name, "clip": shape.label, "video_tokens": shape.video_tokens,
                              "audio_tokens": audio_tokens, "tokens": f"{shape.video_tokens}+{audio_tokens}"}
    device = sizes.device
    router = None
    try:
        if row.family == "connectors":
            transformer, params = bench.transformer, []
            if transformer is None:
                bench.rebuild()
                transformer = bench.transformer
        else:
            transformer, params = bench.prepare(row)
            record["lora_params"] = sum(p.numel() for p in params)
            record["lora_dtype"] = str(params[0].dtype).removeprefix("torch.")
        connectors = bench.get_connectors() if row.connectors and row.family != "baseline" else None
        # (without connectors the features are not read: random connector-shaped text stands in, or the baseline's)
        caption_channels = sum(projection_widths(connectors)) if connectors is not None else 1
        example = make_example(sizes, shape, transformer.config, caption_channels, row.audio)
        if row.reference:  # random latents at the clip's size / the factor, the same frames
            from dataclasses import replace

            frames, height, width = shape.latent_dims
            # the tiny clip's 2x3 latent grid does not halve: a full-size reference there
            factor = row.reference if height % row.reference == 0 and width % row.reference == 0 else 1
            record["reference_factor"] = factor
            example = replace(example, reference_latents=torch.randn(
                transformer.config.in_channels, frames, height // factor, width // factor))
        if row.precap:  # as the train stage does when the run's captions fit in host memory
            from dataclasses import replace

            from ltx2core.training.data import expand_captions

            caption = expand_captions({"clip": example.text_features}, connectors=connectors,
                                      text_max_length=sizes.text_max_length, device=device,
                                      dtype=compute_dtype("bf16", device))["clip"]
            example = replace(example, caption=caption)
            connectors.to("cpu")
        _free(device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
            record["resident_gib"] = _gib(torch.cuda.memory_allocated(device))
        generator = torch.Generator(device=device).manual_seed(SEED)
        if row.family == "connectors":
            def step() -> Any:
                with torch.no_grad():
                    return collate([example], connectors=connectors, text_max_length=sizes.text_max_length,
                                   device=device, dtype=compute_dtype("bf16", device)).text.sum()
        elif row.family == "baseline":
            step = baseline_step(sizes, transformer, params, shape, row.audio)
        else:
            batch = None if row.connectors else random_text_batch(sizes, example, context_widths(transformer.config))
            rollout = Rollout(max_step_offset=row.rollout, probability=1.0) if row.rollout else None
            step = our_step(sizes, transformer, params, example, connectors, batch, generator, rollout)
        if row.tread:
            from ltx2core.training.tread import Route, TreadRouter

            blocks = len(transformer.transformer_blocks)
            first = min(TREAD_FIRST, blocks - 1)
            route = Route(TREAD_RATIO, first, max(first, blocks - TREAD_FROM_END))
            router = TreadRouter(transformer, [route], generator)
            record["tread_route"] = f"{route.selection_ratio} of video tokens skip blocks {route.start}..{route.end}"
        counted = count_flops and not row.compile
        measured = measure_steps(step, device, warmup=3 if row.compile else 2, steps=steps, count_flops=counted)
        median = statistics.median(measured.times)
        record.update(s_step=round(median, 4), s_min=round(min(measured.times), 4), first_s=round(measured.first_s, 2),
                      times=[round(t, 4) for t in measured.times], loss_finite=bool(torch.isfinite(
                          torch.tensor(measured.last_loss))))
        if device.type == "cuda":
            record["peak_gib"] = _gib(torch.cuda.max_memory_allocated(device))
            record["peak_reserved_gib"] = _gib(torch.cuda.max_memory_reserved(device))
        if measured.flops is not None:
            flop_counts[row.flop_key] = measured.flops
        flops = flop_counts.get(row.flop_key)
        if row.family != "connectors":
            if flops:
                record.update(flops=flops, tflop_step=flops / 1e12, tflops=round(flops / median / 1e12, 1),
                              mfu_pct=round(100 * flops / median / 1e12 / PEAK_TFLOPS, 1))
            if not sizes.tiny:
                scaled = REFERENCE_FLOPS * (shape.video_tokens + audio_tokens) / REFERENCE_TOKENS
                record.update(flops_scaled=scaled, tflops_scaled=round(scaled / median / 1e12, 1))
                if flops:
                    record["counted_over_scaled"] = round(flops / scaled, 3)
        if row.compile:
            record["note"] = f"first step (compile) {measured.first_s:.1f} s"
    except Exception as exc:  # noqa: BLE001 - an OOM or a missing feature ends the row, not the run
        record["error"] = f"{type(exc).__name__}: {str(exc)[:400]}"
        record["note"] = f"FAILED {type(exc).__name__}: {str(exc).splitlines()[0][:140] if str(exc) else ''}"
        if row.mods:
            bench.broken = True
    finally:
        if row.precap and bench.connectors is not None:
            bench.connectors.to(device)
        if router is not None:
            router.remove()
        bench.clear_grads()
        _free(device)
    return record


# ---- main


def device_slug(device: torch.device, tiny: bool) -> str:
    if tiny:
        return "tiny-cpu"
    name = torch.cuda.get_device_name(device).lower().replace("nvidia", "")
    match = re.search(r"\b[a-z]\d{2,3}\b", name)
    return match.group(0) if match else re.sub(r"[^a-z0-9]+", "-", name).strip("-")


def choose_rows(spec: str, parser: argparse.ArgumentParser) -> list[Row]:
    by_name = {row.name: row for row in ROWS}
    if spec in ("", "default"):
        return [row for row in ROWS if row.default]
    if spec == "all":
        return list(ROWS)
    wanted = [name.strip() for name in spec.split(",") if name.strip()]
    unknown = [name for name in wanted if name not in by_name]
    if unknown:
        parser.error(f"unknown rows {unknown}: choose from {', '.join(by_name)} (or default, all)")
    return [row for row in ROWS if row.name in wanted]  # run order, whatever order they were named in


def main() -> None:
    started = time.perf_counter()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="the tiny model on the CPU (a smoke test of this script)")
    parser.add_argument("--rows", default="default", help="comma-separated row names, or default, or all")
    parser.add_argument("--flavour", default="2.0", choices=["2.0", "2.3", "2.5"],
                        help="the release's full transformer and connectors (the distilled ones have the same shapes)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per row, after the warm-up")
    parser.add_argument("--no-flops", action="store_true",
                        help="skip the FLOP count (its warm-up step ran the baseline out of memory on an H100)")
    parser.add_argument("--deadline-s", type=float, default=500,
                        help="skip a row whose estimate would end past this many seconds (full size; 0 = never)")
    args = parser.parse_args()
    if args.steps < 1:
        parser.error(f"--steps {args.steps} must be at least 1")
    rows = choose_rows(args.rows, parser)
    if not args.tiny and not torch.cuda.is_available():
        parser.error("the full-size benchmark needs a CUDA GPU; use --tiny here")
    device = torch.device("cpu" if args.tiny else "cuda")
    if args.tiny:
        torch.set_num_threads(1)  # tiny matmuls gain nothing from threads, and lose 10x on a busy shared CPU
    from ltx2core.models.tiny import TEXT_MAX_LENGTH

    sizes = Sizes(
        tiny=args.tiny, device=device, dtype=compute_dtype("bf16", device),
        shapes=TINY_SHAPES if args.tiny else FULL_SHAPES, caption_tokens=20 if args.tiny else 200,
        text_max_length=TEXT_MAX_LENGTH if args.tiny else TEXT_MAX_LENGTH_1024,
        compile_backend="eager" if args.tiny else "inductor", flavour=FLAVOURS[args.flavour],
    )

    import diffusers
    import peft

    facts: dict[str, Any] = {
        "mode": "tiny (CPU, float32, random tiny model)" if args.tiny else "full size, RANDOM bf16 weights",
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__, "diffusers": diffusers.__version__, "peft": peft.__version__,
        "date": date.today().isoformat(), "steps": args.steps, "lora_rank": RANK, "flavour": args.flavour,
        "flops": "counted with torch.utils.flop_counter.FlopCounterMode over one whole step (see docstring)",
        "peak_tflops_reference": PEAK_TFLOPS,
    }
    out = Path(os.environ["OUT"]) if os.environ.get("OUT") else ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    report = Report(facts, path=out / f"train-{args.flavour}-{device_slug(device, args.tiny)}-{facts['date']}.json")
    print(json.dumps(facts), flush=True)

    estimate = FIXED_OVERHEAD_S + sum(row.estimate_s for row in rows)
    print(f"plan (estimated full-size seconds on one H100, {estimate:.0f} s in all with ~{FIXED_OVERHEAD_S} s of "
          f"imports and builds):", flush=True)
    for row in rows:
        print(f"  {row.name:<28} ~{row.estimate_s:.0f} s", flush=True)
    facts["estimated_s"] = estimate

    bench, flop_counts = Bench(sizes, facts), {}
    print(header(), flush=True)
    for row in rows:
        elapsed = time.perf_counter() - started
        if not args.tiny and args.deadline_s and elapsed + row.estimate_s > args.deadline_s:
            report.add({"row": row.name, "note": f"skipped: {elapsed:.0f} s gone, ~{row.estimate_s:.0f} s more would "
                                                  f"pass --deadline-s {args.deadline_s:.0f}"})
            continue
        t0 = time.perf_counter()
        record = run_row(bench, row, args.steps, flop_counts, count_flops=not args.no_flops)
        record["row_s"] = round(time.perf_counter() - t0, 1)
        report.add(record)
    facts["elapsed_s"] = round(time.perf_counter() - started, 1)
    report.save()

    print("\n" + header())
    for record in report.rows:
        print(format_row(record))
    print(json.dumps(facts, indent=1))
    print(f"wrote {report.path}")


if __name__ == "__main__":
    main()
