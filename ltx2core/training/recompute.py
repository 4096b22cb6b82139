"""What backward recomputes, and whether the blocks are compiled.

Full checkpointing (diffusers' default) keeps each block's inputs and reruns the whole block in backward:
a LoRA step then costs ~3 forwards (forward, recompute, input gradients through the frozen base). The
selective policy keeps the outputs of the matmuls and attention kernels and recomputes only the cheap
ops between them (norms, modulation, activations, RoPE), so a step costs ~2 forwards plus elementwise
work, for the memory of those outputs (~0.6 GiB a block at 768x512x121 on the full model).

Compiling with a checkpoint around each block only works when the checkpoint is INSIDE the compiled
region (dynamo traces the selective policy into the graph; a policy around compiled code sees no ops).
So the blocks' own forward is wrapped in the checkpoint, diffusers' outer checkpoint is switched off,
and then each block is compiled (diffusers' regional compilation: blocks share one compiled graph).
"""

from __future__ import annotations

import functools
from typing import Any, Literal

import torch
from torch.utils.checkpoint import CheckpointPolicy, checkpoint, create_selective_checkpoint_contexts

Recompute = Literal["full", "selective", "none"]
RECOMPUTE_CHOICES: tuple[Recompute, ...] = ("full", "selective", "none")

# The ops whose outputs the selective policy keeps: every matmul (base, fp8 base and LoRA) and attention kernel.
_aten = torch.ops.aten
KEPT_OPS = {
    _aten.mm.default, _aten.addmm.default, _aten.bmm.default, _aten.baddbmm.default,
    _aten._scaled_mm.default,
    _aten._scaled_dot_product_flash_attention.default,
    _aten._scaled_dot_product_efficient_attention.default,
    _aten._scaled_dot_product_cudnn_attention.default,
    _aten._scaled_dot_product_flash_attention_for_cpu.default,
}


def _keep_matmuls(ctx: Any, op: Any, *args: Any, **kwargs: Any) -> CheckpointPolicy:
    return CheckpointPolicy.MUST_SAVE if op in KEPT_OPS else CheckpointPolicy.PREFER_RECOMPUTE


def _recompute_everything(ctx: Any, op: Any, *args: Any, **kwargs: Any) -> CheckpointPolicy:
    return CheckpointPolicy.PREFER_RECOMPUTE


def _selective_context() -> Any:
    return create_selective_checkpoint_contexts(_keep_matmuls)


def _full_context() -> Any:
    return create_selective_checkpoint_contexts(_recompute_everything)


def configure_blocks(transformer: Any, recompute: Recompute = "full", *, compile_blocks: bool = False,
                     selective_blocks: int | None = None, backend: str = "inductor") -> None:
    """Set how the transformer's blocks are checkpointed and, with `compile_blocks`, compile them.

    `selective_blocks` (selective only): how many blocks, from the first, keep their matmul outputs; the
    others are fully recomputed. None = all. Each selective block costs memory (~0.9 GiB at 768x512x121
    video-only on the full model): all 48 fit an H200, about 36 an H100 (BENCHMARKS.md).
    Call once, after the LoRA is added (compilation traces the LoRA layers) and before training.
    """
    if recompute not in RECOMPUTE_CHOICES:
        raise ValueError(f"recompute {recompute!r}: use one of {', '.join(RECOMPUTE_CHOICES)}")
    blocks = list(transformer.transformer_blocks)
    if selective_blocks is not None and not 0 <= selective_blocks <= len(blocks):
        raise ValueError(f"selective_blocks {selective_blocks}: use 0..{len(blocks)} (the model has {len(blocks)})")
    selective = set(blocks[:len(blocks) if selective_blocks is None else selective_blocks]) if (
        recompute == "selective") else set()
    if recompute == "none":
        transformer.disable_gradient_checkpointing()
    elif not compile_blocks:  # diffusers' checkpoint around each block, with the policy
        transformer.enable_gradient_checkpointing(gradient_checkpointing_func=functools.partial(
            _around, selective=selective))
    else:  # a policy must be inside the compiled region: checkpoint inside each block instead
        transformer.disable_gradient_checkpointing()
        for block in blocks:
            # Full recompute as an explicit policy too: without one, the compiled graph kept the outputs of matmuls
            # traced through an autograd.Function (fp8.py) for backward: 39 instead of 17 GiB on an H200.
            _inside(block, _selective_context if block in selective else _full_context)
    if compile_blocks:
        transformer.compile_repeated_blocks(fullgraph=False, backend=backend)


def _around(block: torch.nn.Module, *args: Any, selective: set[torch.nn.Module]) -> Any:
    # block.__call__, not forward: hooks (block swap) run again in the recompute
    context = {"context_fn": _selective_context} if block in selective else {}
    return checkpoint(block.__call__, *args, use_reentrant=False, **context)


def _inside(block: torch.nn.Module, context_fn: Any) -> None:
    forward = block.forward
    context = {"context_fn": context_fn} if context_fn else {}

    @functools.wraps(forward)
    def checkpointed(*args: Any, **kwargs: Any) -> Any:
        if not torch.is_grad_enabled():  # validation and sampling: nothing to save
            return forward(*args, **kwargs)
        return checkpoint(forward, *args, use_reentrant=False, **context, **kwargs)

    block.forward = checkpointed
