"""FP8 base weights on the tiny LTX-2: the float8 round trip, the layer's forward and backward, what is converted,
and training on an fp8 base (close to the float32 run; checkpointed backward identical to the plain one)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from ltx2core.training.block_swap import BlockSwapper
from ltx2core.training.data import collate
from ltx2core.training.fp8 import FP8, Fp8Linear, _fp8_matmul_runs, apply_fp8_base, dequantize_fp8, quantize_fp8
from ltx2core.training.lora import lora_state_dict
from ltx2core.training.step import training_step
from tests.ltx2core.training.helpers import make_examples, train_steps

STEPS = 3
LEARNING_RATE = 1e-2
# fp8 keeps 3 mantissa bits: each weight is off by up to 2^-4 relative. Measured on the tiny model: LoRA gradients
# 4.4% off (relative L2), the LoRA update after 3 AdamW steps at cosine 0.986 to the float32 run's.
GRADIENT_TOLERANCE = 0.1
UPDATE_MIN_COSINE = 0.95
FP8_MATMUL_TOLERANCE = 0.05  # relative L2 of one fp8 matmul (inputs and weights in fp8) to the exact product
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _fp8(transformer: Any) -> Any:
    apply_fp8_base(transformer)
    return transformer


def _lora_gradients(transformer: Any, connectors: Any, text_max_length: int) -> torch.Tensor:
    """The LoRA gradients of one checkpointed step, from a LoRA that is not zero (lora_B starts at zero)."""
    generator = torch.Generator().manual_seed(0)
    params = [p for p in transformer.parameters() if p.requires_grad]
    for param in params:
        param.data = torch.randn(param.shape, generator=generator) * 0.1
    transformer.enable_gradient_checkpointing()
    batch = collate(list(make_examples(2, audio=True).values()), connectors=connectors,
                    text_max_length=text_max_length, device="cpu", dtype=torch.float32)
    training_step(transformer, batch, generator=torch.Generator().manual_seed(1)).loss.backward()
    return torch.cat([p.grad.flatten() for p in params])


def test_the_float8_round_trip_is_within_fp8_precision() -> None:
    generator = torch.Generator().manual_seed(0)
    # rows 10^6 apart in magnitude (a per-tensor scale would flush the small ones to zero) and an all-zero row
    weight = torch.randn(8, 64, generator=generator) * torch.logspace(-3, 3, 8)[:, None]
    weight[3] = 0
    quantized, scale = quantize_fp8(weight)
    restored = dequantize_fp8(quantized, scale)

    assert quantized.dtype == FP8 and quantized.shape == weight.shape and scale.shape == (8,)
    # 3 mantissa bits: relative error <= 2^-4; subnormals (below 2^-6 of the scale): absolute error <= 2^-10 * scale
    bound = torch.maximum(weight.abs() * 2**-4, scale[:, None] * 2**-10)
    assert ((restored - weight).abs() <= bound * (1 + 1e-6)).all()
    assert torch.equal(restored[3], weight[3])
    assert (restored - weight).abs().max() > 0  # fp8 really rounds
    largest = weight.abs().amax(dim=1)
    rows = largest > 0
    torch.testing.assert_close(restored.abs().amax(dim=1)[rows], largest[rows])  # each row's max is exact (448)


def test_fp8_linear_computes_with_the_dequantized_weight_forward_and_backward() -> None:
    torch.manual_seed(0)
    linear = torch.nn.Linear(16, 24).requires_grad_(False)
    layer = Fp8Linear(linear)
    x = torch.randn(3, 5, 16, requires_grad=True)
    y = layer(x)
    (y * torch.linspace(-1, 1, 24)).sum().backward()
    reference_x = x.detach().clone().requires_grad_(True)
    expected = torch.nn.functional.linear(reference_x, dequantize_fp8(layer.weight, layer.scale), linear.bias)
    (expected * torch.linspace(-1, 1, 24)).sum().backward()

    assert layer.weight.dtype == FP8 and not layer.weight.requires_grad
    torch.testing.assert_close(y, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(x.grad, reference_x.grad, rtol=1e-5, atol=1e-6)
    assert (y - linear(x)).abs().max() > 0  # not the float32 layer


def test_fp8_linear_multiplies_bf16_in_fp8_within_fp8_precision() -> None:
    """bf16 compute takes the fp8 matmul (input and gradient quantized per row); float32 the upcast above."""
    torch.manual_seed(0)
    linear = torch.nn.Linear(64, 96).requires_grad_(False)
    layer = Fp8Linear(linear)
    x = torch.randn(3, 7, 64, dtype=torch.bfloat16, requires_grad=True)
    y = layer(x)
    (y.float() * torch.linspace(-1, 1, 96)).sum().backward()
    reference_x = x.detach().float().requires_grad_(True)
    expected = torch.nn.functional.linear(reference_x, dequantize_fp8(layer.weight, layer.scale), linear.bias)
    (expected * torch.linspace(-1, 1, 96)).sum().backward()
    upcast = torch.nn.functional.linear(x.detach(), dequantize_fp8(layer.weight, layer.scale, torch.bfloat16),
                                        linear.bias.bfloat16())

    def error(got: torch.Tensor, want: torch.Tensor) -> float:
        return float((got.detach().float() - want).norm() / want.norm())

    assert y.dtype == x.grad.dtype == torch.bfloat16
    # each input (gradient) element rounded to 3 mantissa bits, relative error <= 2^-4: 2.5% in L2 measured
    assert error(y, expected.detach()) < FP8_MATMUL_TOLERANCE and error(x.grad, reference_x.grad) < FP8_MATMUL_TOLERANCE
    assert error(y, upcast.float()) > 4 * error(upcast, expected.detach())  # the input really went through fp8


def test_apply_fp8_base_converts_the_frozen_block_linears_and_reports_the_bytes(
    lora_transformer: Callable[..., Any],
) -> None:
    transformer = lora_transformer(with_audio=True)

    def stored_bytes() -> int:
        tensors = [*transformer.parameters(), *transformer.buffers()]
        return sum(t.numel() * t.element_size() for t in tensors)

    before = stored_bytes()
    lora_before = lora_state_dict(transformer)
    saved = apply_fp8_base(transformer)

    assert saved == before - stored_bytes() > 0
    block_linears = [m for m in transformer.transformer_blocks.modules() if isinstance(m, torch.nn.Linear)]
    assert block_linears and all(m.weight.requires_grad for m in block_linears)  # only the LoRA's lora_A / lora_B
    fp8_layers = [m for m in transformer.transformer_blocks.modules() if isinstance(m, Fp8Linear)]
    assert {type(m.base_layer) for m in transformer.modules() if hasattr(m, "base_layer")} == {Fp8Linear}
    assert all(m.weight.dtype == FP8 for m in fp8_layers)
    assert type(transformer.proj_in) is torch.nn.Linear and transformer.proj_in.weight.dtype == torch.float32
    lora_after = lora_state_dict(transformer)
    assert all(torch.equal(lora_before[key], lora_after[key]) and lora_after[key].dtype == torch.float32
               for key in lora_before)
    assert apply_fp8_base(transformer) == 0


def test_lora_gradients_on_an_fp8_base_are_close_to_float32(
    lora_transformer: Callable[..., Any], connectors: Any, text_max_length: int
) -> None:
    full = _lora_gradients(lora_transformer(with_audio=True), connectors, text_max_length)
    fp8 = _lora_gradients(_fp8(lora_transformer(with_audio=True)), connectors, text_max_length)
    error = float((fp8 - full).norm() / full.norm())
    assert 0 < error < GRADIENT_TOLERANCE


def test_lora_gradients_through_fp8_matmuls_are_close_to_bf16(
    lora_transformer: Callable[..., Any], connectors: Any, text_max_length: int
) -> None:
    """Under bf16 autocast (as on the GPU) the blocks multiply in fp8: compared with the same step in bf16."""
    transformer = _fp8(lora_transformer(with_audio=True))
    video_layers = [m for block in transformer.transformer_blocks for part in (block.attn1, block.attn2, block.ff)
                    for m in part.modules() if isinstance(m, Fp8Linear)]
    assert video_layers and all(  # (the tiny audio layers, 8 wide, are not 16-aligned: they upcast)
        _fp8_matmul_runs(torch.ones(1, m.in_features, dtype=torch.bfloat16), m.weight) for m in video_layers)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        bf16 = _lora_gradients(lora_transformer(with_audio=True), connectors, text_max_length)
        fp8 = _lora_gradients(transformer, connectors, text_max_length)
    error = float((fp8 - bf16).norm() / bf16.norm())
    assert 0 < error < GRADIENT_TOLERANCE  # 4.3% measured


def test_training_on_an_fp8_base_stays_close_to_float32_and_checkpointing_changes_nothing(
    lora_transformer: Callable[..., Any], connectors: Any, text_max_length: int, tmp_path: Path
) -> None:
    initial = lora_state_dict(lora_transformer(with_audio=True))
    full = train_steps(lora_transformer(with_audio=True), connectors, text_max_length, tmp_path / "full")
    fp8 = train_steps(_fp8(lora_transformer(with_audio=True)), connectors, text_max_length, tmp_path / "fp8")
    fp8_plain = train_steps(_fp8(lora_transformer(with_audio=True)), connectors, text_max_length, tmp_path / "plain",
                            gradient_checkpointing=False)

    full_update = torch.cat([(full[key] - initial[key]).flatten() for key in initial])
    fp8_update = torch.cat([(fp8[key] - initial[key]).flatten() for key in initial])
    cosine = torch.nn.functional.cosine_similarity(full_update, fp8_update, dim=0)
    assert UPDATE_MIN_COSINE < cosine < 1
    # the recompute sees the same fp8 weights as the forward: bit-identical to backward without checkpointing
    assert all(torch.equal(fp8[key], fp8_plain[key]) for key in fp8)


def test_fp8_base_with_block_swap_trains_the_same_lora(
    lora_transformer: Callable[..., Any], connectors: Any, text_max_length: int, tmp_path: Path
) -> None:
    alone = train_steps(_fp8(lora_transformer(with_audio=True)), connectors, text_max_length, tmp_path / "alone")
    transformer = _fp8(lora_transformer(with_audio=True))
    swapper = BlockSwapper(transformer, 1, device="cpu")
    swapped = train_steps(transformer, connectors, text_max_length, tmp_path / "swapped")

    block = transformer.transformer_blocks[swapper.swapped[0]]
    assert any(p.dtype == FP8 for p in block.parameters())  # the swapper streams the fp8 weights
    assert all(torch.equal(alone[key], swapped[key]) for key in alone)


# ---- CUDA, bf16 autocast (run on the GPU machine: pytest -m gpu)


def _bf16_on_cuda(transformer: Any) -> Any:
    """The production layout: frozen base in bf16, LoRA in float32 (as lora.add_lora leaves it), all on the GPU."""
    transformer.to("cuda")
    for param in transformer.parameters():
        if not param.requires_grad:
            param.data = param.data.to(torch.bfloat16)
    return transformer


def _update_cosine(got: dict[str, torch.Tensor], expected: dict[str, torch.Tensor],
                   initial: dict[str, torch.Tensor]) -> float:
    got_update = torch.cat([(got[key] - initial[key]).flatten() for key in initial])
    expected_update = torch.cat([(expected[key] - initial[key]).flatten() for key in initial])
    return float(torch.nn.functional.cosine_similarity(got_update, expected_update, dim=0))


def _allocated(tensors: list[torch.Tensor]) -> int:
    """What the CUDA caching allocator books for these tensors: each rounded up to 512 bytes."""
    return sum(-(-t.numel() * t.element_size() // 512) * 512 for t in tensors)


@pytest.mark.gpu
@needs_cuda
def test_cuda_fp8_base_frees_the_bf16_weights_and_trains_close_to_bf16(
    lora_transformer: Callable[..., Any], connectors: Any, text_max_length: int, tmp_path: Path
) -> None:
    initial = lora_state_dict(lora_transformer(with_audio=True))
    full = train_steps(_bf16_on_cuda(lora_transformer(with_audio=True)), connectors, text_max_length,
                       tmp_path / "bf16", device="cuda", mixed_precision="bf16")
    transformer = _bf16_on_cuda(lora_transformer(with_audio=True))
    freed = _allocated([m.weight for m in transformer.transformer_blocks.modules()  # no reference kept
                        if type(m) is torch.nn.Linear and not m.weight.requires_grad])
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    apply_fp8_base(transformer)
    torch.cuda.synchronize()
    layers = [m for m in transformer.modules() if isinstance(m, Fp8Linear)]
    stored = _allocated([t for m in layers for t in (m.weight, m.scale)])
    assert before - torch.cuda.memory_allocated() == freed - stored
    fp8 = train_steps(transformer, connectors, text_max_length, tmp_path / "fp8", device="cuda",
                      mixed_precision="bf16")

    assert all(torch.isfinite(fp8[key]).all() for key in fp8)
    assert _update_cosine(fp8, full, initial) > UPDATE_MIN_COSINE


@pytest.mark.gpu
@needs_cuda
def test_cuda_fp8_base_with_compiled_blocks_and_checkpointing_trains(
    lora_transformer: Callable[..., Any], connectors: Any, text_max_length: int, tmp_path: Path
) -> None:
    """The combination that fails with diffusers' layerwise casting (CheckpointError, research/fp8_probe)."""
    initial = lora_state_dict(lora_transformer(with_audio=True))
    eager = train_steps(_fp8(_bf16_on_cuda(lora_transformer(with_audio=True))), connectors, text_max_length,
                        tmp_path / "eager", device="cuda", mixed_precision="bf16")
    transformer = _fp8(_bf16_on_cuda(lora_transformer(with_audio=True)))
    transformer.compile_repeated_blocks(fullgraph=False)
    compiled = train_steps(transformer, connectors, text_max_length, tmp_path / "compiled", device="cuda",
                           mixed_precision="bf16")
    # compiled kernels keep fused intermediates in float32 where eager rounds them to bf16: 0.995 on an H100
    assert _update_cosine(compiled, eager, initial) > 0.99


@pytest.mark.gpu
@needs_cuda
def test_cuda_fp8_base_with_block_swap_trains_the_same_lora(
    lora_transformer: Callable[..., Any], connectors: Any, text_max_length: int, tmp_path: Path
) -> None:
    initial = lora_state_dict(lora_transformer(with_audio=True))
    alone = train_steps(_fp8(lora_transformer(with_audio=True)).to("cuda"), connectors, text_max_length,
                        tmp_path / "alone", device="cuda")
    transformer = _fp8(lora_transformer(with_audio=True))
    BlockSwapper(transformer, 2, device="cuda")
    swapped = train_steps(transformer, connectors, text_max_length, tmp_path / "swapped", device="cuda")
    assert _update_cosine(swapped, alone, initial) > 1 - 1e-6
