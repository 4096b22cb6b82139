"""FP8 base weights (`base_model_precision: fp8-e4m3fn`): frozen Linear weights stored in float8_e4m3fn.

Every frozen `nn.Linear` inside the transformer blocks (98% of LTX-2's weights) becomes an `Fp8Linear`: the weight
as float8_e4m3fn with one float32 scale per output row (weight ~= fp8 * scale), the bias as it was. Forward upcasts
the weight to the compute dtype (the autocast dtype, else the input's) and multiplies; nothing is computed in fp8.
The LoRA adapters are not touched (float32, from lora.add_lora). Layers outside the blocks (patchify, timestep
and caption embeddings, the output projection) stay as loaded: they are 2% of the weights and the most
sensitive to rounding.

Why not diffusers' `enable_layerwise_casting(storage_dtype=float8_e4m3fn)`: its hooks cast the parameter itself
to bf16 before a layer and back to fp8 after, so gradient checkpointing's recompute can see other dtypes than the
forward saved (measured with compile_repeated_blocks: CheckpointError, research/fp8_probe_h200.json). Here the
parameter stays fp8 for good and the bf16 copy is a temporary inside the matmul, the same in forward and in
recompute. A custom autograd function keeps only the fp8 weight for backward (plain F.linear would keep the bf16
copy of every layer alive until backward when checkpointing is off).

A scale per output row rather than per tensor: a row with large weights then does not push the small rows of
the same matrix into fp8's subnormal range; it costs 4 bytes per row.

Apply it after lora.add_lora: PEFT casts new adapters to their base layer's dtype, so an adapter added on top of
an fp8 layer would start rounded to fp8 (and PEFT does not recognise Fp8Linear as a target).
"""

from __future__ import annotations

import logging
from typing import Any

import torch

log = logging.getLogger(__name__)

FP8 = torch.float8_e4m3fn
FP8_MAX = torch.finfo(FP8).max  # 448


def quantize_fp8(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[out, in] weight -> (float8_e4m3fn [out, in], float32 scale [out]) with weight ~= fp8.float() * scale[:, None].

    Each row's largest magnitude maps to fp8's largest value (448); elements keep 3 mantissa bits (relative error
    at most 2^-4), and those below 2^-6 * scale fall into fp8's subnormals (absolute error at most 2^-10 * scale).
    """
    rows = weight.detach().float()
    # an all-zero row would give 0/0: any positive scale stores its zeros exactly
    scale = (rows.abs().amax(dim=1) / FP8_MAX).clamp(min=torch.finfo(torch.float32).tiny)
    quantized = (rows / scale[:, None]).clamp(-FP8_MAX, FP8_MAX).to(FP8)
    return quantized, scale


def dequantize_fp8(quantized: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The weight an Fp8Linear computes with: fp8 [out, in] * scale [out] -> dtype [out, in]."""
    return quantized.to(dtype) * scale.to(dtype)[:, None]


class _Fp8Matmul(torch.autograd.Function):
    """y = (x @ fp8.T) * scale in x's dtype; saves the fp8 weight (not an upcast copy) for backward."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(weight, scale)
        # [..., in] @ [in, out] -> [..., out]; the row scale applies to the output, cheaper than to the weight
        return torch.nn.functional.linear(x, weight.to(x.dtype)) * scale.to(x.dtype)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, None, None]:
        if not ctx.needs_input_grad[0]:
            return None, None, None
        weight, scale = ctx.saved_tensors
        # d/dx of (x @ W.T) * s: (grad * s) @ W, [..., out] @ [out, in] -> [..., in]
        return (grad * scale.to(grad.dtype)) @ weight.to(grad.dtype), None, None


class Fp8Linear(torch.nn.Module):
    """A frozen Linear whose weight is stored in float8_e4m3fn with a per-row scale (see the module docstring)."""

    def __init__(self, linear: torch.nn.Linear) -> None:
        super().__init__()
        if linear.weight.requires_grad:
            raise ValueError("Fp8Linear stores frozen weights only: this Linear's weight requires grad")
        self.in_features, self.out_features = linear.in_features, linear.out_features
        quantized, scale = quantize_fp8(linear.weight)
        self.weight = torch.nn.Parameter(quantized, requires_grad=False)
        self.register_buffer("scale", scale)
        self.bias = linear.bias  # kept as loaded (frozen)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        device = x.device.type
        dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else x.dtype
        y = _Fp8Matmul.apply(x.to(dtype), self.weight, self.scale)
        return y if self.bias is None else y + self.bias.to(dtype)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


def apply_fp8_base(transformer: Any) -> int:
    """Store the frozen Linear weights of the transformer blocks in fp8 (module docstring); returns bytes saved.

    In place, on the weights' device; LoRA layers and trainable weights are left alone. A second call finds
    nothing left to convert and returns 0.
    """
    saved = converted = 0
    for block in transformer.transformer_blocks:
        for parent in list(block.modules()):
            for name, child in list(parent.named_children()):
                if type(child) is torch.nn.Linear and not child.weight.requires_grad:
                    replacement = Fp8Linear(child)
                    setattr(parent, name, replacement)
                    saved += _nbytes(child) - _nbytes(replacement)
                    converted += 1
    log.info("fp8 base weights: %d Linear layers, %.2f GiB saved", converted, saved / 2**30)
    return saved


def _nbytes(module: torch.nn.Module) -> int:
    tensors = [*module.parameters(), *module.buffers()]
    return sum(t.numel() * t.element_size() for t in tensors)
