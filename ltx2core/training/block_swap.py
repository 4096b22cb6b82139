"""Block swap: the frozen weights of the last N transformer blocks live off the GPU and stream in ahead of use.

For LoRA training the base is frozen, so weights only ever travel host -> device. Each swapped block's frozen
parameters and buffers get one master copy on the swap device (pinned host memory when that is the CPU and the
compute device a GPU). The block's LoRA parameters (requires_grad) stay on the device, where the optimizer
updates them: they are never copied, so no update can be lost.

When copies happen (forward hooks only; the model's code is unchanged):
  forward   block i's pre-hook makes i resident (the compute stream waits for its copy) and starts copying the
            next `prefetch` swapped blocks (i+1, ...) on a side CUDA stream; swapped blocks outside that window
            go back to their masters. The transformer's forward pre-hook starts the first window.
  backward  gradient checkpointing recomputes each block's forward, last block first, right before its backward:
            the same pre-hook fires, now prefetching i-1, ... The transformer's forward post-hook starts copying
            the last block(s), which backward needs first.
"Goes back" only points the parameter at its master again: the device copy is freed by the caching allocator
once nothing uses it. The tensors that checkpointing saves during a block's recompute are detached views of that
copy, so they keep it alive until the block's backward is done. Without gradient checkpointing autograd would
save the parameters themselves, which point at the host master again by backward time: training therefore
requires gradient checkpointing (refused at the first forward otherwise).

Every device copy is allocated on the compute stream, and the side stream waits for the work already queued
there before writing into it, so reused memory is never overwritten early; a block dropped before it was used
makes the compute stream wait for its copy first, for the same reason.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch

log = logging.getLogger(__name__)


@dataclass
class _Swapped:
    """One frozen tensor of a swapped block: where it sits in the model and its master copy."""

    owner: torch.nn.Module
    name: str
    is_parameter: bool
    master: torch.Tensor  # on the swap device, contiguous (pinned when the swap device is the host of a GPU)

    def install(self, tensor: torch.Tensor) -> None:
        if self.is_parameter:
            self.owner._parameters[self.name].data = tensor  # same Parameter object, new storage
        else:
            self.owner._buffers[self.name] = tensor

    def current(self) -> torch.Tensor:
        return self.owner._parameters[self.name] if self.is_parameter else self.owner._buffers[self.name]


@dataclass
class _Block:
    index: int
    tensors: list[_Swapped]
    resident: bool = False
    ready: torch.cuda.Event | None = None  # recorded on the side stream after this block's copies


class BlockSwapper:
    """Keep the frozen weights of the last `blocks_to_swap` transformer blocks on `swap_device`.

    Construct it after the LoRA is added (lora.add_lora) and after apply_fp8_base, on a transformer anywhere
    (load it on the CPU when it does not fit the GPU): the swapped blocks' frozen tensors move to their masters,
    everything else (the other blocks, the LoRA weights, the layers outside the blocks) moves to `device`.
    `prefetch` swapped blocks are copied ahead of the running one; at most 1 + prefetch swapped blocks are
    wanted on the device at a time (plus, in backward, the one whose gradients are still being computed).

    Raises ValueError for a block count or device pair that cannot work, and RuntimeError at a forward with
    gradients but without gradient checkpointing (see the module docstring).
    """

    def __init__(
        self,
        transformer: Any,
        blocks_to_swap: int,
        *,
        device: torch.device | str,
        swap_device: torch.device | str = "cpu",
        prefetch: int = 1,
    ) -> None:
        blocks = transformer.transformer_blocks
        if not 1 <= blocks_to_swap <= len(blocks):
            raise ValueError(
                f"musubi_blocks_to_swap {blocks_to_swap}: the transformer has {len(blocks)} blocks; swap 1 to "
                f"{len(blocks)} of them (0 turns block swap off)"
            )
        if prefetch < 0:
            raise ValueError(f"prefetch {prefetch} must be 0 (copy each block when it is needed) or more")
        self.device = _resolved(torch.device(device))
        self.swap_device = _resolved(torch.device(swap_device))
        if self.swap_device == self.device and self.device.type != "cpu":
            raise ValueError(
                f"musubi_block_swap_device {swap_device!r} is the training device {self.device}: swapping would "
                "save nothing; set it to 'cpu'"
            )
        self.prefetch = prefetch
        self._count = len(blocks)
        self._cuda = self.device.type == "cuda"
        self._stream = torch.cuda.Stream(device=self.device) if self._cuda else None
        self._direction = 1  # +1 while the forward runs, -1 while backward recomputes the blocks
        pin = self._cuda and self.swap_device.type == "cpu"

        first = self._count - blocks_to_swap
        self._blocks = {i: self._take(i, blocks[i], pin) for i in range(first, self._count)}
        swapped_ids = {id(t.current()) for block in self._blocks.values() for t in block.tensors}
        _move_except(transformer, swapped_ids, self.device)

        transformer.register_forward_pre_hook(self._before_model)
        transformer.register_forward_hook(self._after_model)
        for i, block in enumerate(blocks):
            block.register_forward_pre_hook(partial(self._before_block, i))
        log.info(
            "block swap: blocks %d..%d (%.2f GiB of frozen weights) on %s, streamed to %s %d block(s) ahead",
            first, self._count - 1, self.bytes_swapped / 2**30, self.swap_device, self.device, prefetch,
        )

    @property
    def swapped(self) -> tuple[int, ...]:
        """Indices of the swapped blocks."""
        return tuple(self._blocks)

    @property
    def resident(self) -> tuple[int, ...]:
        """Swapped blocks whose frozen weights are on the device now (copied or being copied)."""
        return tuple(i for i, block in self._blocks.items() if block.resident)

    @property
    def bytes_swapped(self) -> int:
        """Bytes of frozen weights kept off the device."""
        return sum(t.master.numel() * t.master.element_size() for b in self._blocks.values() for t in b.tensors)

    # ---- hooks

    def _before_model(self, module: Any, args: Any) -> None:
        if torch.is_grad_enabled() and not getattr(module, "gradient_checkpointing", False):
            raise RuntimeError(
                "block swap (musubi_blocks_to_swap / enable_group_offload) needs gradient_checkpointing true when "
                "training: without it backward would read swapped weights from the host"
            )
        self._direction = 1
        self._keep(self._window(0))

    def _after_model(self, module: Any, args: Any, output: Any) -> None:
        if torch.is_grad_enabled():  # backward follows: it recomputes the last block first
            self._direction = -1
            self._keep(self._window(self._count - 1))
        else:
            self._keep(())

    def _before_block(self, index: int, module: Any, args: Any) -> None:
        self._keep(self._window(index))
        block = self._blocks.get(index)
        if block is not None and block.ready is not None:
            torch.cuda.current_stream(self.device).wait_event(block.ready)

    # ---- mechanics

    def _window(self, index: int) -> list[int]:
        """The swapped blocks among `index` and the next `prefetch` in the current direction, nearest first."""
        ahead = (index + self._direction * k for k in range(self.prefetch + 1))
        return [i for i in ahead if i in self._blocks]

    def _keep(self, wanted: tuple[int, ...] | list[int]) -> None:
        for index, block in self._blocks.items():
            if block.resident and index not in wanted:
                self._release(block)
        for index in wanted:
            if not self._blocks[index].resident:
                self._load(self._blocks[index])

    def _load(self, block: _Block) -> None:
        for tensor in block.tensors:
            if tensor.is_parameter and tensor.current().requires_grad:
                raise RuntimeError(
                    f"block {block.index} {tensor.name} was made trainable after the block swapper took it; its "
                    "updates would be lost: add the LoRA (lora.add_lora) before creating the BlockSwapper"
                )
        if self._cuda:
            compute = torch.cuda.current_stream(self.device)
            copies = [torch.empty_like(t.master, device=self.device) for t in block.tensors]
            self._stream.wait_stream(compute)  # the memory may have been in use by queued kernels
            with torch.cuda.stream(self._stream):
                for copy, tensor in zip(copies, block.tensors, strict=True):
                    copy.copy_(tensor.master, non_blocking=True)
                block.ready = torch.cuda.Event()
                block.ready.record(self._stream)
        else:
            copies = [t.master.to(self.device, copy=True) for t in block.tensors]
        for copy, tensor in zip(copies, block.tensors, strict=True):
            tensor.install(copy)
        block.resident = True

    def _release(self, block: _Block) -> None:
        if block.ready is not None:  # dropped before use: its memory must not be reused while the copy runs
            torch.cuda.current_stream(self.device).wait_event(block.ready)
            block.ready = None
        for tensor in block.tensors:
            tensor.install(tensor.master)
        block.resident = False

    def _take(self, index: int, block: torch.nn.Module, pin: bool) -> _Block:
        """Move a block's frozen tensors to their masters (the block starts released)."""
        tensors = []
        for owner in block.modules():
            for name, param in owner._parameters.items():
                if param is not None and not param.requires_grad:
                    tensors.append(_Swapped(owner, name, True, self._master(param.detach(), pin)))
            for name, buffer in owner._buffers.items():
                if buffer is not None:
                    tensors.append(_Swapped(owner, name, False, self._master(buffer, pin)))
        swapped = _Block(index, tensors)
        self._release(swapped)
        return swapped

    def _master(self, tensor: torch.Tensor, pin: bool) -> torch.Tensor:
        master = tensor.to(self.swap_device).contiguous()
        return master.pin_memory() if pin else master


def _move_except(transformer: torch.nn.Module, skip: set[int], device: torch.device) -> None:
    """Move every parameter and buffer whose tensor is not in `skip` (by id) to `device`, in place."""
    for module in transformer.modules():
        for param in module._parameters.values():
            if param is not None and id(param) not in skip:
                param.data = param.data.to(device)
        for name, buffer in module._buffers.items():
            if buffer is not None and id(buffer) not in skip:
                module._buffers[name] = buffer.to(device)


def _resolved(device: torch.device) -> torch.device:
    """'cuda' -> 'cuda:N' of the current device, so that device comparisons and stream lookups agree."""
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    return device
