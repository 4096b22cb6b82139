"""INT8 base weights (`base_model_precision: int8-torchao`, SimpleTuner's LTX-2 default): the frozen Linear
weights of the transformer blocks quantized to int8 by torchao (weight-only, one scale per output row).

torchao does the quantization and the int8 matmuls (a tensor subclass on the layer's weight; the layer stays
an `nn.Linear`, so PEFT's LoRA wrapper keeps calling it as its base layer); we choose which layers: the same
ones as FP8 (fp8.py), every frozen Linear inside the blocks, after `lora.add_lora`, so the LoRA adapters stay
float32 and trainable. Weight-only: activations and gradients keep the compute dtype, the input's gradient
flows through the int8 weight. int8 keeps ~8 bits per weight against fp8's 3-bit mantissa, so LoRA training
stays closer to bf16 (tests/ltx2core/training/test_int8.py).

Combinations not verified with torchao's weights (block swap, compiled blocks, FSDP) are refused in the config.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

log = logging.getLogger(__name__)


def apply_int8_base(transformer: Any, device: torch.device | str | None = None) -> int:
    """Quantize the frozen Linear weights of the transformer blocks to int8 in place; returns bytes saved.

    With `device`, each block first moves there (a model loaded on the host then has one block's bf16 weights
    on the GPU at a time). LoRA layers are left alone; a second call finds nothing left and returns 0.
    """
    try:
        from torchao.quantization import Int8WeightOnlyConfig, quantize_
    except ImportError as error:
        raise RuntimeError("base_model_precision int8-torchao needs torchao: pip install torchao (make setup "
                           f"installs it): {error}") from None
    saved = converted = 0
    for block in transformer.transformer_blocks:
        if device is not None:
            block.to(device)
        frozen = [m for m in block.modules() if _frozen_linear(m)]
        if not frozen:
            continue
        before = sum(_nbytes(m) for m in frozen)
        quantize_(block, Int8WeightOnlyConfig(), filter_fn=lambda module, _name: _frozen_linear(module))
        saved += before - sum(_nbytes(m) for m in frozen)
        converted += len(frozen)
    log.info("int8 base weights (torchao): %d Linear layers, %.2f GiB saved", converted, saved / 2**30)
    return saved


def _frozen_linear(module: torch.nn.Module) -> bool:
    """A plain Linear whose float weight does not train (torchao's weights are no longer plain tensors)."""
    return (type(module) is torch.nn.Linear and not module.weight.requires_grad
            and type(module.weight.data) is torch.Tensor)


def _nbytes(module: torch.nn.Module) -> int:
    """Bytes a Linear's weight and bias hold, a quantized weight counted by its int8 data and scales."""
    total = 0
    for tensor in (module.weight, module.bias):
        if tensor is None:
            continue
        names = getattr(tensor, "__tensor_flatten__", lambda: ([], None))()[0]
        inner = [t for t in (getattr(tensor, name) for name in names) if t is not None]
        total += sum(t.numel() * t.element_size() for t in inner) if inner else tensor.numel() * tensor.element_size()
    return total
