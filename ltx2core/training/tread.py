"""TREAD token routing: during training, a random share of the video tokens skips a span of blocks.

For each route (`tread_config.routes`): at block `start` a random subset of (1 - selection_ratio) of
the video tokens is kept, drawn per clip from the training generator (so a resumed run draws the same
tokens). Blocks start..end run on the kept tokens only, with their RoPE frequencies, their per-token
timestep modulation and their rows and columns of the video self-attention mask. After block `end` the
kept tokens are scattered back into the full sequence, where the dropped tokens still hold the hidden
states they had before block `start`. Audio tokens and text are never routed; inside a span the audio
stream's video-to-audio attention sees the kept video tokens only. Routing is on only while the
transformer is in train mode with grad enabled, so validation and `eval()` run the plain model.

How: hooks on the stock LTX2VideoTransformer3DModel, not a copy of its forward. A pre-hook on the
transformer draws the kept tokens once per forward (gradient checkpointing recomputes blocks, never the
whole forward, so a recomputed block sees the same tokens); pre-hooks on the routed blocks shrink the
per-token arguments; a hook on each span's last block scatters. This mirrors diffusers 0.42.1, whose
forward computes RoPE and timestep embeddings for all video tokens once and hands the same full-length
tensors to every block (LTX2VideoTransformerBlock.forward's argument names are `PER_TOKEN_ARGUMENTS`
below). A diffusers release that changes that contract fails `_check_block_signature`, and
tests/ltx2core/training/test_tread.py compares the routed model with the stock forward (ratio 0: equal;
a route over every block: equal to the stock model run on the kept tokens alone).
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from ltx2core.config.train import TreadRoute

MIRRORS_DIFFUSERS = "0.42.1"
# LTX2VideoTransformerBlock.forward arguments that hold one entry per video token (dim 1, or dim 2 for
# "split" RoPE [B, heads, N, d]); the timestep ones only when the timestep is per token ([B, N]).
PER_TOKEN_ARGUMENTS = (
    "hidden_states", "temb", "temb_ca_scale_shift", "temb_ca_gate", "temb_prompt",
    "video_rotary_emb", "ca_video_rotary_emb", "self_attention_mask",
)
UNROUTABLE_ARGUMENTS = ("a2v_cross_attention_mask", "v2a_cross_attention_mask")  # None in 0.42.1's forward


@dataclass(frozen=True)
class Route:
    selection_ratio: float  # share of the video tokens that skip the span
    start: int  # first block of the span (resolved, >= 0)
    end: int  # last block of the span, inclusive


def resolve_routes(routes: Sequence[TreadRoute], num_layers: int) -> tuple[Route, ...]:
    """Config routes -> Routes with block indices resolved against `num_layers` (-1 = the last block).

    Raises ValueError naming every route that is out of range, reversed or overlapping another.
    """
    problems, resolved = [], []
    for i, route in enumerate(routes):
        key = f"tread_config.routes[{i}]"
        start, end = route.start_layer_idx, route.end_layer_idx
        bad = [(name, value) for name, value in (("start_layer_idx", start), ("end_layer_idx", end))
               if not -num_layers <= value < num_layers]
        for name, value in bad:
            problems.append(f"{key}.{name} {value} is outside the transformer's {num_layers} blocks "
                            f"(use 0..{num_layers - 1}, or -{num_layers}..-1 to count from the end)")
        if not 0 <= route.selection_ratio < 1:
            problems.append(f"{key}.selection_ratio {route.selection_ratio} must be in [0, 1)")
        if bad:
            continue
        first, last = start % num_layers, end % num_layers
        if first > last:
            problems.append(f"{key} starts at block {first} (start_layer_idx {start}) after it ends at block "
                            f"{last} (end_layer_idx {end}): swap them")
            continue
        resolved.append((i, Route(route.selection_ratio, first, last)))
    ordered = sorted(resolved, key=lambda item: item[1].start)
    for (i, one), (j, other) in zip(ordered, ordered[1:]):
        if other.start <= one.end:
            problems.append(f"tread_config.routes[{i}] (blocks {one.start}..{one.end}) and routes[{j}] (blocks "
                            f"{other.start}..{other.end}) overlap: a token can skip one span at a time")
    if problems:
        raise ValueError("; ".join(problems))
    return tuple(route for _, route in ordered)


def kept_tokens(batch: int, tokens: int, selection_ratio: float, generator: torch.Generator) -> torch.Tensor:
    """[B, K] sorted indices of the tokens that stay, K = tokens - floor(tokens * ratio), per clip at random.

    Drawn on the generator's device, so the stream does not depend on where the model runs.
    """
    keep = tokens - int(tokens * selection_ratio)
    scores = torch.rand(batch, tokens, generator=generator, device=generator.device)
    return scores.argsort(dim=1)[:, :keep].sort(dim=1).values


class TreadRouter:
    """Routes video tokens around `routes` while attached (from construction until `remove()`).

    Use as a context manager, or keep it for the whole run and call `remove()`. The kept tokens and the
    pre-route hidden states of the last forward stay referenced until the next forward: backward with
    gradient checkpointing recomputes the routed blocks from them.
    """

    def __init__(self, transformer: Any, routes: Sequence[Route], generator: torch.Generator) -> None:
        blocks = transformer.transformer_blocks
        for route in routes:
            if not 0 <= route.start <= route.end < len(blocks):
                raise ValueError(f"route {route} does not fit the transformer's {len(blocks)} blocks: "
                                 "resolve config routes with resolve_routes")
        self.routes = tuple(routes)
        self.generator = generator
        self._active = False
        self._tokens = 0
        self._kept: list[torch.Tensor] = []
        self._before: list[torch.Tensor | None] = []
        self._handles = [transformer.register_forward_pre_hook(self._draw, with_kwargs=True)]
        for r, route in enumerate(self.routes):
            for index in range(route.start, route.end + 1):
                block = blocks[index]
                signature = _check_block_signature(block)
                self._handles.append(block.register_forward_pre_hook(
                    self._shrink_hook(r, signature, first=index == route.start), with_kwargs=True
                ))
            self._handles.append(blocks[route.end].register_forward_hook(self._scatter_hook(r)))

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._kept, self._before = [], []

    def __enter__(self) -> TreadRouter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()

    def _draw(self, transformer: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        hidden = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
        self._active = transformer.training and torch.is_grad_enabled()
        batch, self._tokens = hidden.shape[:2]
        self._kept = [
            kept_tokens(batch, self._tokens, route.selection_ratio, self.generator).to(hidden.device)
            for route in self.routes
        ] if self._active else []
        self._before = [None] * len(self.routes)

    def _shrink_hook(self, r: int, signature: inspect.Signature, *, first: bool) -> Any:
        def shrink(block: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[tuple, dict] | None:
            if not self._active:
                return None
            bound = signature.bind(*args, **kwargs)
            values, kept = bound.arguments, self._kept[r]
            if any(values.get(name) is not None for name in UNROUTABLE_ARGUMENTS):
                raise NotImplementedError(f"TREAD cannot route {UNROUTABLE_ARGUMENTS}: turn tread_config off")
            if first:  # the span's input: dropped tokens keep these states until the scatter
                self._before[r] = values["hidden_states"]
                values["hidden_states"] = _take(values["hidden_states"], kept, 1)
            for name in ("temb", "temb_ca_scale_shift", "temb_ca_gate", "temb_prompt"):
                value = values.get(name)
                if value is not None and value.shape[1] == self._tokens:  # per-token timestep
                    values[name] = _take(value, kept, 1)
            for name in ("video_rotary_emb", "ca_video_rotary_emb"):
                if values.get(name) is not None:  # (cos, sin): [B, N, D] interleaved or [B, H, N, d] split
                    values[name] = tuple(_take(f, kept, 1 if f.ndim == 3 else 2) for f in values[name])
            if values.get("self_attention_mask") is not None:  # [B, N, N] additive bias
                values["self_attention_mask"] = _take(_take(values["self_attention_mask"], kept, 1), kept, 2)
            return bound.args, bound.kwargs

        return shrink

    def _scatter_hook(self, r: int) -> Any:
        def scatter(block: Any, args: tuple[Any, ...], output: tuple[torch.Tensor, torch.Tensor]) -> Any:
            if not self._active:
                return None
            hidden, audio = output
            before = self._before[r]
            index = self._kept[r][..., None].expand(-1, -1, hidden.shape[-1])
            return before.to(hidden.dtype).scatter(1, index, hidden), audio

        return scatter


def _take(x: torch.Tensor, kept: torch.Tensor, dim: int) -> torch.Tensor:
    """x[b, ..., kept[b], ...] along `dim`: [B, ..., N, ...] -> [B, ..., K, ...] (a batch of 1 broadcasts)."""
    moved = x.expand(kept.shape[0], *x.shape[1:]).movedim(dim, 1)
    index = kept.view(*kept.shape, *([1] * (moved.ndim - 2))).expand(-1, -1, *moved.shape[2:])
    return moved.gather(1, index).movedim(1, dim)


def _check_block_signature(block: Any) -> inspect.Signature:
    signature = inspect.signature(block.forward)
    missing = [name for name in (*PER_TOKEN_ARGUMENTS, *UNROUTABLE_ARGUMENTS) if name not in signature.parameters]
    if missing:
        raise RuntimeError(
            f"{type(block).__name__}.forward has no argument {missing}: TREAD mirrors the block contract of "
            f"diffusers {MIRRORS_DIFFUSERS}; pin that version or update ltx2core/training/tread.py"
        )
    return signature
