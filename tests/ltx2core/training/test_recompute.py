"""What backward recomputes (recompute.configure_blocks): every policy gives the gradients of no checkpointing.

On the CPU in float32 the recompute is exact, so the LoRA gradients must be equal to the bit; the compiled
variant (aot_eager: dynamo and AOT autograd trace the selective policy into the graph, nothing is generated)
checks that the policy survives compilation.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch

from ltx2core.training.data import collate
from ltx2core.training.recompute import configure_blocks
from ltx2core.training.step import training_step
from tests.ltx2core.training.helpers import make_examples, train_steps

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _lora_grads(transformer: Any, connectors: Any, text_max_length: int, device: str = "cpu",
                dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    transformer.train()
    batch = collate(list(make_examples(2, audio=True).values()), connectors=connectors,
                    text_max_length=text_max_length, device=torch.device(device), dtype=dtype)
    with torch.autocast(device, dtype=dtype, enabled=dtype != torch.float32):
        output = training_step(transformer, batch, generator=torch.Generator(device).manual_seed(3))
    output.loss.backward()
    return {name: p.grad.float().cpu() for name, p in transformer.named_parameters() if p.requires_grad}


@pytest.fixture(scope="module")
def reference(tiny, connectors: Any, text_max_length: int) -> dict[str, torch.Tensor]:
    from ltx2core.models import loading
    from ltx2core.training.lora import LoraSpec, add_lora, target_modules

    transformer = loading.load_transformer(tiny, dtype=torch.float32)
    add_lora(transformer, LoraSpec(4, 4, 0.0, tuple(target_modules(None, with_audio=True))), seed=1)
    configure_blocks(transformer, "none")
    return _lora_grads(transformer, connectors, text_max_length)


@pytest.mark.parametrize(("recompute", "compiled"), [("full", False), ("selective", False), ("selective", True)])
def test_every_policy_gives_the_gradients_of_no_checkpointing(
    lora_transformer: Callable[..., Any], connectors: Any, text_max_length: int, reference: dict[str, torch.Tensor],
    recompute: str, compiled: bool,
) -> None:
    transformer = lora_transformer(with_audio=True)
    configure_blocks(transformer, recompute, compile_blocks=compiled, backend="aot_eager")
    try:
        grads = _lora_grads(transformer, connectors, text_max_length)
    finally:
        torch._dynamo.reset()
    assert grads.keys() == reference.keys()
    assert any(g.abs().max() > 0 for g in grads.values())
    for name, grad in grads.items():
        torch.testing.assert_close(grad, reference[name], rtol=0, atol=0, msg=name)


def test_selective_blocks_choose_how_many_blocks_keep_their_matmuls(
    lora_transformer: Callable[..., Any], connectors: Any, text_max_length: int, reference: dict[str, torch.Tensor],
) -> None:
    from torch.utils.flop_counter import FlopCounterMode

    """Selective blocks run no matmul again in backward: with all of them a step costs what no checkpointing
    costs; with none, what full checkpointing costs; the gradients are the same throughout."""
    flops = []
    blocks = len(lora_transformer().transformer_blocks)
    for recompute, count in (("selective", 0), ("selective", 1), ("selective", blocks), ("none", None),
                             ("full", None)):
        transformer = lora_transformer(with_audio=True)
        configure_blocks(transformer, recompute, selective_blocks=count)
        with FlopCounterMode(display=False) as counter:
            grads = _lora_grads(transformer, connectors, text_max_length)
        flops.append(counter.get_total_flops())
        for name, grad in grads.items():
            torch.testing.assert_close(grad, reference[name], rtol=0, atol=0, msg=name)
    selective_0, selective_1, selective_all, none, full = flops
    assert selective_0 == full > selective_1 > selective_all == none


def test_the_loop_trains_the_lora_of_full_checkpointing_with_the_selective_policy(
    lora_transformer: Callable[..., Any], connectors: Any, text_max_length: int, tmp_path,
) -> None:
    full = train_steps(lora_transformer(with_audio=True), connectors, text_max_length, tmp_path / "full")
    selective = train_steps(lora_transformer(with_audio=True), connectors, text_max_length, tmp_path / "selective",
                            recompute="selective", selective_blocks=1)
    for name, value in full.items():
        torch.testing.assert_close(selective[name], value, rtol=0, atol=0, msg=name)


def test_unknown_policy_or_block_count_is_refused(lora_transformer: Callable[..., Any]) -> None:
    with pytest.raises(ValueError, match="use one of full, selective, none"):
        configure_blocks(lora_transformer(), "some")
    with pytest.raises(ValueError, match="selective_blocks 99: use 0..2"):
        configure_blocks(lora_transformer(), "selective", selective_blocks=99)


@pytest.mark.gpu
@needs_cuda
def test_cuda_selective_compiled_bf16_matches_full_checkpointing(
    lora_transformer: Callable[..., Any], connectors: Any, text_max_length: int,
) -> None:
    import copy

    cuda_connectors = copy.deepcopy(connectors).to("cuda", torch.bfloat16)  # collate runs them outside autocast
    grads = {}
    for recompute, compiled in (("full", False), ("selective", True)):
        transformer = lora_transformer(with_audio=True).to("cuda")
        configure_blocks(transformer, recompute, compile_blocks=compiled)
        grads[recompute] = _lora_grads(transformer, cuda_connectors, text_max_length, "cuda", torch.bfloat16)
        torch._dynamo.reset()
    flat = {k: torch.cat([g.flatten() for g in v.values()]) for k, v in grads.items()}
    assert torch.nn.functional.cosine_similarity(flat["full"], flat["selective"], dim=0) > 0.999
