"""Where and in what precision the models run: from the config, with a plain CPU fallback."""

from __future__ import annotations

import torch

PRECISIONS = {"bf16": torch.bfloat16, "fp16": torch.float16, "no": torch.float32}


def pick_device(requested: str | None = None) -> torch.device:
    """The requested device, else the first GPU, else the CPU."""
    if requested:
        return torch.device(requested)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def compute_dtype(mixed_precision: str, device: torch.device) -> torch.dtype:
    """The config's precision on a GPU; float32 on the CPU, where bf16 matmuls are slow and only tests run."""
    return PRECISIONS[mixed_precision] if device.type == "cuda" else torch.float32
