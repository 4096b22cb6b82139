"""Data-parallel LoRA training over the processes `torchrun` starts: the process group, each rank's device,
the gradient sum, and FSDP2 sharding of the frozen base.

How the ranks share a step (loop.py): every rank builds the same model and the same `BucketBatches`, so each
knows every step's batches without talking. Rank r trains its own batches of the step, its loss weighted by
its share of the step's clips; `sum_gradients` then adds the LoRA gradients over the ranks, which makes them
the mean over all the step's clips, and every rank takes the same optimizer step: the LoRA stays identical
on all ranks without ever being broadcast.

Why one hand-written all-reduce and not torch DDP: only the LoRA trains (about 0.5 % of LTX-2's weights), so
one all-reduce of its gradients after backward is all the communication a step needs (a few ms at full size
against about 1.5 s of compute; bench/multigpu_bench.py measures both). It also works where DDP does not:
with block swap (DDP's reducer holds on to parameters the swapper re-points between host and GPU), with FSDP2
sharding the frozen base (the LoRA stays outside FSDP, whole on every rank), with gradient accumulation
(nothing to sync until the step ends, no `no_sync`) and with a rank whose share of a step is empty. What DDP
would add, overlapping that all-reduce with backward, is worth those few ms.

FSDP2 (`shard_base`): `fully_shard` on every transformer block and on the root splits the frozen base weights
over the ranks (each GPU keeps 1/N of them; a block's weights are all-gathered right before it runs, in the
forward and again in the recomputation of gradient checkpointing, and freed after). The LoRA parameters are
left out of FSDP (`ignored_params`), so the optimizer, clipping and checkpoints see plain tensors, the same
on every rank, and a checkpoint from N ranks resumes on any M. Validation during training needs the whole
model on rank 0, so it is not run under FSDP (the validate stage samples the LoRA afterwards).

FSDP2 with gradient checkpointing. research/ddp_fsdp_probe.py (torch 2.11, MixedPrecisionPolicy(param_dtype=
bf16)) failed in backward with "Recomputed values ... have different metadata": saved bfloat16, recomputed
float32, on the video RoPE's cos/sin ([1, 32, 6144, 1, 64]). Cause: FSDP's pre-forward hook casts a block's
floating-point inputs to param_dtype (`cast_forward_inputs`), but when checkpoint recomputes the block in
backward the hook sees the PRE_BACKWARD state and, before torch 2.13, returned without casting
(pytorch/pytorch#159359, fixed by #182580). The float32 RoPE therefore reached the attention as bfloat16 in the
forward and as float32 in the recomputation. Here the base is already loaded in the compute dtype and autocast
casts inside each op, so FSDP is given no param_dtype and `cast_forward_inputs=False`: the forward and its
recomputation see the same inputs, on every torch version (tests/ltx2core/training/test_distributed.py trains
FSDP2 + checkpointing on CPU and compares the LoRA with one process; bench/multigpu_bench.py runs it in bf16
on two GPUs).
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)

# Ranks wait for rank 0 while it writes a checkpoint or validates (minutes at full size); they wait on a
# CPU (gloo) group with this timeout, so a long validation never trips the GPU collectives' shorter one.
WAIT_TIMEOUT = timedelta(hours=2)
BUCKET_ELEMENTS = 2**24  # gradients summed per all-reduce call: 64 MiB of float32, a few calls for a full LoRA


@dataclass(frozen=True)
class World:
    """This process's place among the training processes."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0  # index of this rank's GPU on its machine
    waits: Any = None  # the gloo process group `wait_for_main` blocks on; None on one process

    @property
    def main(self) -> bool:
        """Rank 0: the one that writes checkpoints and LoRA files and validates."""
        return self.rank == 0


SINGLE = World()


def process_count(requested: int | None, device: torch.device) -> int:
    """`num_processes` resolved: None = every visible GPU on CUDA, 1 on the CPU. Refuses more GPUs than visible."""
    if device.type != "cuda":
        return requested or 1
    visible = torch.cuda.device_count()
    if requested is None:
        return max(visible, 1)
    if requested > visible:
        raise ValueError(
            f"num_processes {requested} but {visible} GPU{'s are' if visible != 1 else ' is'} visible: set "
            f"num_processes to {visible} or less (or null for all), or make more GPUs visible (CUDA_VISIBLE_DEVICES)"
        )
    return requested


def join_world(device_type: str) -> World:
    """Join the process group `torchrun` set up in the environment (nccl on CUDA, gloo on the CPU).

    Outside torchrun, or with one process, there is no group: SINGLE.
    """
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size == 1:
        return SINGLE
    rank, local_rank = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
    if device_type == "cuda":
        torch.cuda.set_device(local_rank)
        dist.init_process_group("nccl", device_id=torch.device("cuda", local_rank))
    else:
        dist.init_process_group("gloo")
    waits = dist.new_group(backend="gloo", timeout=WAIT_TIMEOUT)
    return World(rank=rank, size=size, local_rank=local_rank, waits=waits)


def leave_world(world: World) -> None:
    if world.size > 1 and dist.is_initialized():
        dist.destroy_process_group()


def rank_device(world: World, device_type: str) -> torch.device:
    """This rank's device: its own GPU (by local rank), or the CPU."""
    return torch.device("cuda", world.local_rank) if device_type == "cuda" else torch.device("cpu")


def wait_for_main(world: World) -> None:
    """Every rank waits here until all have arrived (rank 0 after its checkpoint or validation)."""
    if world.size > 1:
        dist.barrier(group=world.waits)


def sum_gradients(params: Sequence[torch.nn.Parameter], world: World) -> None:
    """Replace each parameter's gradient by its sum over the ranks (None counts as zeros), in place.

    The gradients are flattened into a few large buffers (BUCKET_ELEMENTS), one all-reduce each: hundreds of
    small LoRA matrices would otherwise cost one collective call apiece.
    """
    if world.size == 1:
        return
    for param in params:
        if param.grad is None:  # a rank that trained nothing this step (or a parameter its batches never reached)
            param.grad = torch.zeros_like(param)
    for bucket in _buckets([p.grad for p in params]):
        flat = torch.cat([grad.reshape(-1) for grad in bucket])
        dist.all_reduce(flat)
        offset = 0
        for grad in bucket:
            grad.copy_(flat[offset : offset + grad.numel()].view_as(grad))
            offset += grad.numel()


def sum_values(values: Sequence[float], world: World, device: torch.device) -> list[float]:
    """Each value summed over the ranks (one small all-reduce; float64)."""
    if world.size == 1:
        return list(values)
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return tensor.tolist()


def shard_base(transformer: Any, *, reshard_after_forward: bool = True) -> None:
    """FSDP2 over the frozen base: fully_shard per transformer block, then the root; the LoRA stays whole.

    Call after the LoRA is added and with the model on this rank's device. `reshard_after_forward` frees
    each block's gathered weights after its forward (gathered again for backward): less memory, one more
    all-gather per block per step. See the module docstring for the mixed-precision settings.
    """
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    trainable = {p for p in transformer.parameters() if p.requires_grad}
    policy = MixedPrecisionPolicy(param_dtype=None, cast_forward_inputs=False)
    for block in transformer.transformer_blocks:
        fully_shard(block, reshard_after_forward=reshard_after_forward, mp_policy=policy, ignored_params=trainable)
    fully_shard(transformer, mp_policy=policy, ignored_params=trainable)
    # FSDP warns on every forward that the transformer returns a view (diffusers reshapes its output), in
    # case the caller modifies it in place; training_step never does.
    warnings.filterwarnings("ignore", message=r"FSDP2-wrapped module .* returned a view tensor")
    log.info("FSDP2: %d blocks and the root sharded over the ranks; %d LoRA tensors kept whole",
             len(transformer.transformer_blocks), len(trainable))


def is_sharded(transformer: Any) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(transformer, FSDPModule)


def _buckets(grads: list[torch.Tensor]) -> list[list[torch.Tensor]]:
    """Runs of gradients of one dtype and device, up to BUCKET_ELEMENTS each (a larger one alone)."""
    buckets: list[list[torch.Tensor]] = []
    size = 0
    for grad in grads:
        last = buckets[-1] if buckets else None
        if last is None or (last[0].dtype, last[0].device) != (grad.dtype, grad.device) or (
                size + grad.numel() > BUCKET_ELEMENTS):
            buckets.append([grad])
            size = grad.numel()
        else:
            last.append(grad)
            size += grad.numel()
    return buckets
