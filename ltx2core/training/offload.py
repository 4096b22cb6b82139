"""The train stage's offload keys as one block-swap plan: `musubi_blocks_to_swap`, and `enable_group_offload`
mapped onto the same swapper (block_swap.py).

diffusers' group offloading is not used for training. Measured on an H100 (research/group_offload_check_h100.json:
a 4-block LTX-2 with LoRA, 3 AdamW steps against a run without offload): block_level with a stream and gradient
checkpointing runs but drops every LoRA update (the loss is the same at every step), leaf_level with
checkpointing raises CheckpointError, and every mode without checkpointing fails in backward with weights left
on the CPU. So `enable_group_offload` runs the block swapper instead and logs a warning saying so:

  blocks off the GPU        all of them: group offloading keeps every block group on the offload device too
  blocks streamed ahead     group_offload_blocks_per_group: diffusers brings a group of that many blocks in at
                            once; the swapper copies that many blocks ahead of the running one, so about as
                            many blocks are on the GPU at a time, and their copies overlap compute
  group_offload_use_stream  changes nothing: the swapper always copies on a side CUDA stream (waiting per block)
  group_offload_type        leaf_level runs at block granularity too (leaf-level offload fails with checkpointing)
  layers outside the blocks stay on the GPU (about 2% of LTX-2's weights)
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch

from ltx2core.training.block_swap import BlockSwapper

log = logging.getLogger(__name__)

# The config keys swap_plan reads: swap_plan(num_blocks=..., **config.model_dump(include=set(SWAP_KEYS)))
SWAP_KEYS = (
    "musubi_blocks_to_swap", "musubi_block_swap_device", "enable_group_offload", "group_offload_type",
    "group_offload_blocks_per_group", "group_offload_use_stream", "gradient_checkpointing",
)
GROUP_OFFLOAD_WARNING = (
    "enable_group_offload: diffusers group offloading is not used for training (measured: with gradient "
    "checkpointing and a stream it silently drops every LoRA update, the other modes fail in backward). Running "
    "the block swapper instead: all {blocks} blocks off the GPU, {prefetch} streamed ahead on a side CUDA stream "
    "(from group_offload_blocks_per_group {per_group}; group_offload_type {kind} and group_offload_use_stream "
    "{stream} change nothing). To keep some blocks on the GPU, set musubi_blocks_to_swap instead."
)


@dataclass(frozen=True)
class SwapPlan:
    blocks_to_swap: int  # the last N blocks keep their frozen weights on swap_device
    swap_device: str
    prefetch: int  # swapped blocks copied ahead of the running one

    def attach(self, transformer: Any, device: torch.device | str) -> BlockSwapper:
        """Swap `transformer`'s blocks by this plan (after lora.add_lora and fp8.apply_fp8_base)."""
        return BlockSwapper(
            transformer, self.blocks_to_swap, device=device, swap_device=self.swap_device, prefetch=self.prefetch
        )


def swap_plan(
    *,
    num_blocks: int,
    musubi_blocks_to_swap: int = 0,
    musubi_block_swap_device: str = "cpu",
    enable_group_offload: bool = False,
    group_offload_type: str = "block_level",
    group_offload_blocks_per_group: int = 1,
    group_offload_use_stream: bool = False,
    gradient_checkpointing: bool = True,
) -> SwapPlan | None:
    """The block swap the config asks for, or None; `num_blocks` is transformer/config.json's num_layers.

    Raises ValueError listing every problem: both options set, a swap without gradient checkpointing (the
    swapper needs it to train correctly), more blocks than the model has.
    """
    problems = []
    if musubi_blocks_to_swap and enable_group_offload:
        problems.append(
            "musubi_blocks_to_swap and enable_group_offload both move transformer blocks off the GPU: set one "
            "(enable_group_offload runs the same block swapper with every block swapped)"
        )
    if (musubi_blocks_to_swap or enable_group_offload) and not gradient_checkpointing:
        key = "musubi_blocks_to_swap" if musubi_blocks_to_swap else "enable_group_offload"
        problems.append(f"{key} needs gradient_checkpointing true: without it backward would read swapped weights "
                        "from the host")
    if musubi_blocks_to_swap > num_blocks:
        problems.append(f"musubi_blocks_to_swap {musubi_blocks_to_swap}: the transformer has {num_blocks} blocks")
    if group_offload_blocks_per_group < 1:
        problems.append(f"group_offload_blocks_per_group {group_offload_blocks_per_group} must be at least 1")
    if problems:
        raise ValueError("; ".join(problems))

    if musubi_blocks_to_swap:
        return SwapPlan(blocks_to_swap=musubi_blocks_to_swap, swap_device=musubi_block_swap_device, prefetch=1)
    if not enable_group_offload:
        return None
    prefetch = min(group_offload_blocks_per_group, num_blocks - 1)
    log.warning(GROUP_OFFLOAD_WARNING.format(
        blocks=num_blocks, prefetch=prefetch, per_group=group_offload_blocks_per_group, kind=group_offload_type,
        stream=str(group_offload_use_stream).lower(),
    ))
    return SwapPlan(blocks_to_swap=num_blocks, swap_device="cpu", prefetch=prefetch)
