"""Put a component on the accelerator only while a stage uses it.

The latents stage wraps its VAE calls in `on_device(...)` (back to the CPU afterwards with
`offload_during_startup: true`); the text-embeds stage loads Gemma straight onto the device and drops it when its
shard ends (`release_memory`), so the text encoder (~24 GB in bf16) and the VAE are never resident together.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TypeVar

import torch

log = logging.getLogger(__name__)

ModuleT = TypeVar("ModuleT", bound=torch.nn.Module)
HOME = torch.device("cpu")


@contextmanager
def on_device(module: ModuleT, device: torch.device | str, *, offload: bool = True) -> Iterator[ModuleT]:
    """Move `module` to `device` for the block; with `offload`, back to the CPU afterwards, also on error.

    Moving back frees the accelerator memory for the next component (the cache allocator is emptied too).
    """
    device = torch.device(device)
    name = type(module).__name__
    log.debug("%s -> %s", name, device)
    module.to(device)
    try:
        yield module
    finally:
        if offload:
            module.to(HOME)
            log.debug("%s -> %s", name, HOME)
            if device.type == "cuda":
                torch.cuda.empty_cache()


def release_memory() -> None:
    """Free the components just dropped: the collector for a model in a reference cycle, then the accelerator's
    cached blocks back to the driver (for the next stage's model; nothing where CUDA was never used)."""
    gc.collect()
    torch.cuda.empty_cache()
