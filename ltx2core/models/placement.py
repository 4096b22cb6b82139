"""Put a component on the accelerator only while a stage uses it.

With `offload_during_startup: true` the text-embeds and latents stages wrap their model calls in
`on_device(...)`: the text encoder goes back to the CPU before the VAE comes to the GPU, so the two are never
resident together (Gemma-3-12B alone is ~24 GB in bf16).
"""

from __future__ import annotations

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
