"""FP8 base weights (`base_model_precision: fp8-e4m3fn`): frozen Linear weights stored in float8_e4m3fn.

Every frozen `nn.Linear` inside the transformer blocks (98% of LTX-2's weights) becomes an `Fp8Linear`: the weight
as float8_e4m3fn with one float32 scale per output row (weight ~= fp8 * scale), the bias as it was. The LoRA
adapters are not touched (float32, from lora.add_lora). Layers outside the blocks (patchify, timestep
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

How it multiplies, by the compute dtype (the autocast dtype, else the input's):
  bfloat16, on a GPU with fp8 tensor cores (compute capability 8.9+: Ada, Hopper) or on the CPU: in fp8
      (`torch._scaled_mm`, twice bf16's matmul rate on an H100). The input is quantized per row (each token's
      largest magnitude to 448) and the weight's row scales go in as the output's column scales, so the matmul
      writes scaled bf16 directly. Backward (the input's gradient; the weight is frozen) is the same with the
      gradient, times the row scales, quantized per row: the fp8 weight is transposed, never upcast. Quantizing
      costs a pass over the input: one compiled kernel, and inside compiled blocks (`compile_blocks`) it fuses
      with the ops around it. Measured at 768x512x121 on an H100 (BENCHMARKS.md): with compiled blocks 0.89
      s/step at 17 GiB against bf16's 1.11 s at 29 GiB; eager, 1.17x slower than bf16 (the per-layer passes
      and launches cost more than the faster matmuls save).
  anything else (float32, fp16, older GPUs): the weight is upcast to the compute dtype inside the matmul.
Rounding the activations and gradients to 3 mantissa bits on top of the weights: LoRA gradients 4.3% off bf16's
(relative L2, tiny model, tests/ltx2core/training/test_fp8.py), as the weights alone cost.

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


def _quantize_rows_eager(rows: torch.Tensor, multiplier: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """[M, K] (times `multiplier` [K] first, when given) -> (fp8 [M, K], float32 scale [M, 1]), row max -> 448."""
    values = rows.float() if multiplier is None else rows.float() * multiplier.float()
    scale = (values.abs().amax(dim=1, keepdim=True) / FP8_MAX).clamp(min=torch.finfo(torch.float32).tiny)
    return (values / scale).clamp(-FP8_MAX, FP8_MAX).to(FP8), scale


_quantize_rows_compiled: Any = None


def _quantize_rows(rows: torch.Tensor, multiplier: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    # Compiled blocks trace the plain function into their graph; the CPU path exists for tests (no compiler there).
    if rows.device.type != "cuda" or torch.compiler.is_compiling():
        return _quantize_rows_eager(rows, multiplier)
    global _quantize_rows_compiled
    if _quantize_rows_compiled is None:
        _quantize_rows_compiled = torch.compile(_quantize_rows_eager, dynamic=True)
    return _quantize_rows_compiled(rows, multiplier)


def _fp8_matmul_runs(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether x @ weight.T can run in fp8 (see the module docstring)."""
    if x.dtype != torch.bfloat16 or weight.shape[0] % 16 or weight.shape[1] % 16:  # _scaled_mm's alignment
        return False
    return x.device.type == "cpu" or (x.device.type == "cuda" and torch.cuda.get_device_capability(x.device) >= (8, 9))


def _scaled_matmul(rows: torch.Tensor, multiplier: torch.Tensor | None, weight_t: torch.Tensor,
                   column_scale: torch.Tensor | None) -> torch.Tensor:
    """[M, K] @ fp8 [K, N] (column-major) in fp8 with per-row input scales and per-column output scales."""
    quantized, row_scale = _quantize_rows(rows, multiplier)
    if column_scale is None:
        column_scale = torch.ones(1, weight_t.shape[1], device=rows.device, dtype=torch.float32)
    return torch._scaled_mm(quantized, weight_t, scale_a=row_scale, scale_b=column_scale, out_dtype=rows.dtype)


class _Fp8ScaledMatmul(torch.autograd.Function):
    """y = (x @ fp8.T) * scale computed in fp8 (module docstring); x is bf16 [..., in]."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(weight, scale)  # the weight is frozen: x is not needed
        rows = x.reshape(-1, x.shape[-1])
        # weight [out, in] row-major: its .t() is the column-major [in, out] _scaled_mm wants
        y = _scaled_matmul(rows, None, weight.t(), scale.float()[None, :])
        return y.reshape(*x.shape[:-1], weight.shape[0])

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, None, None]:
        if not ctx.needs_input_grad[0]:
            return None, None, None
        weight, scale = ctx.saved_tensors
        rows = grad.reshape(-1, grad.shape[-1])
        # d/dx of (x @ W.T) * s: (grad * s) @ W, with W [out, in] as a column-major matrix (a transposed copy)
        grad_x = _scaled_matmul(rows, scale, weight.t().contiguous().t(), None)
        return grad_x.reshape(*grad.shape[:-1], weight.shape[1]), None, None


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
        # an FP8 checkpoint's own values and scales (single_file.load_component), else quantized here
        quantized, scale = getattr(linear, "prequantized", None) or quantize_fp8(linear.weight)
        self.weight = torch.nn.Parameter(quantized, requires_grad=False)
        self.register_buffer("scale", scale)
        self.bias = linear.bias  # kept as loaded (frozen)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        device = x.device.type
        dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else x.dtype
        x = x.to(dtype)
        matmul = _Fp8ScaledMatmul if _fp8_matmul_runs(x, self.weight) else _Fp8Matmul
        y = matmul.apply(x, self.weight, self.scale)
        return y if self.bias is None else y + self.bias.to(dtype)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


def apply_fp8_base(transformer: Any, device: torch.device | str | None = None) -> int:
    """Store the frozen Linear weights of the transformer blocks in fp8 (module docstring); returns bytes saved
    against their bf16 (or loaded) size.

    In place, on the weights' device, or with `device` each block first moves there: a model loaded on the host
    then holds the bf16 weights of one block at a time on the GPU, not all of them. Layers loaded from an FP8
    checkpoint (`prequantized`) are converted before the move: they have no bf16 weights to carry. LoRA layers and
    trainable weights are left alone. A second call finds nothing left to convert and returns 0.
    """
    saved = converted = 0
    for block in transformer.transformer_blocks:
        before_move = _to_fp8(block, prequantized_only=True)
        if device is not None:
            block.to(device)
        after_move = _to_fp8(block, prequantized_only=False)
        saved += before_move[0] + after_move[0]
        converted += before_move[1] + after_move[1]
    log.info("fp8 base weights: %d Linear layers, %.2f GiB saved", converted, saved / 2**30)
    return saved


def _to_fp8(block: torch.nn.Module, *, prequantized_only: bool) -> tuple[int, int]:
    """Replace the frozen Linear layers of `block` (only those holding an FP8 checkpoint's weights, when asked) by
    Fp8Linear; (bytes saved, layers replaced). Each old layer is let go at once, its bf16 weight with it."""
    saved = converted = 0
    for parent in list(block.modules()):
        for name, child in list(parent.named_children()):
            if (type(child) is torch.nn.Linear and not child.weight.requires_grad
                    and (hasattr(child, "prequantized") or not prequantized_only)):
                replacement = Fp8Linear(child)
                setattr(parent, name, replacement)
                saved += _nbytes(child) - _nbytes(replacement)  # a stand-in counts at its full shape
                converted += 1
    return saved, converted


def _nbytes(module: torch.nn.Module) -> int:
    tensors = [*module.parameters(), *module.buffers()]
    return sum(t.numel() * t.element_size() for t in tensors)
