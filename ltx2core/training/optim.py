"""The optimizer and LR schedule of a LoRA run."""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from typing import Any, Literal

import torch

Optimizer = Literal["adamw", "adamw8bit"]
LR_SCHEDULERS = ("constant", "constant_with_warmup", "linear", "cosine", "cosine_with_restarts", "polynomial")
ADAM_BETAS = (0.9, 0.999)  # torch's and SimpleTuner's defaults
WEIGHT_DECAY = 1e-2
EPSILON = 1e-8


def make_optimizer(name: str, params: Sequence[torch.nn.Parameter], *, learning_rate: float) -> torch.optim.Optimizer:
    """`adamw`: torch AdamW; `adamw8bit`: bitsandbytes' AdamW8bit (optimizer state in 8 bits, ~75% less)."""
    if name == "adamw":
        return torch.optim.AdamW(params, lr=learning_rate, betas=ADAM_BETAS, weight_decay=WEIGHT_DECAY, eps=EPSILON)
    if name == "adamw8bit":
        if importlib.util.find_spec("bitsandbytes") is None:
            raise ImportError("optimizer adamw8bit needs bitsandbytes: pip install bitsandbytes (or use adamw)")
        import bitsandbytes

        return bitsandbytes.optim.AdamW8bit(
            params, lr=learning_rate, betas=ADAM_BETAS, weight_decay=WEIGHT_DECAY, eps=EPSILON
        )
    raise ValueError(f"optimizer {name!r} is not implemented: use adamw or adamw8bit")


def make_lr_scheduler(
    name: str, optimizer: torch.optim.Optimizer, *, warmup_steps: int, total_steps: int
) -> Any:
    """diffusers' `get_scheduler` by name; counts optimizer steps."""
    from diffusers.optimization import get_scheduler

    if name not in LR_SCHEDULERS:
        raise ValueError(f"lr_scheduler {name!r} is not one of {', '.join(LR_SCHEDULERS)}")
    if name == "constant" and warmup_steps:
        raise ValueError(
            f"lr_scheduler constant ignores lr_warmup_steps {warmup_steps}: use constant_with_warmup, or "
            "lr_warmup_steps 0"
        )
    return get_scheduler(name, optimizer, num_warmup_steps=warmup_steps, num_training_steps=total_steps)
