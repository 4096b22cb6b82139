"""Block swap on the tiny LTX-2 made 4 blocks deep: where each block's weights are at every forward and recompute,
and that training through the swapper gives the LoRA of a plain run (CPU: bit for bit; CUDA: the gpu tests).

On the CPU the device and the swap device are both the host, so "on the device" is checked by storage: a resident
block computes with a fresh copy, a released block's parameters point at the master taken when the swapper was made.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from ltx2core.models.source import ModelSource, component_config
from ltx2core.training.block_swap import BlockSwapper
from ltx2core.training.data import collate
from ltx2core.training.lora import LoraSpec, add_lora, lora_state_dict, target_modules
from ltx2core.training.step import training_step
from tests.ltx2core.training.conftest import LORA_RANK, LORA_SEED
from tests.ltx2core.training.helpers import make_examples, train_steps

BLOCKS = 4
STEPS = 3
LEARNING_RATE = 1e-2  # large: a few steps must move a rank-4 LoRA visibly
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture(scope="module")
def deep_transformer(tiny: ModelSource) -> Callable[[], Any]:
    """A factory: the tiny transformer's config with 4 blocks, random weights (always the same), and a LoRA."""
    from diffusers import LTX2VideoTransformer3DModel

    config = {**component_config(tiny, "transformer"), "num_layers": BLOCKS}

    def make() -> Any:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            transformer = LTX2VideoTransformer3DModel.from_config(config).eval().requires_grad_(False)
        spec = LoraSpec(LORA_RANK, LORA_RANK, 0.1, tuple(target_modules(None, with_audio=True, feed_forward=True)))
        add_lora(transformer, spec, seed=LORA_SEED)
        return transformer

    return make


def _frozen_pointers(block: torch.nn.Module) -> dict[str, int]:
    return {name: p.data_ptr() for name, p in block.named_parameters() if not p.requires_grad}


@pytest.fixture(scope="module")
def plain_lora(
    deep_transformer: Callable[[], Any], connectors: Any, text_max_length: int, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, torch.Tensor]:
    """The LoRA after STEPS steps without swapping (CPU), trained once for the tests of this module."""
    return train_steps(deep_transformer(), connectors, text_max_length, tmp_path_factory.mktemp("plain"))


@pytest.mark.parametrize(("swap", "prefetch"), [(1, 1), (2, 0), (BLOCKS, 2)])
def test_training_with_block_swap_gives_the_plain_runs_lora(
    deep_transformer: Callable[[], Any], plain_lora: dict[str, torch.Tensor], connectors: Any, text_max_length: int,
    tmp_path: Path, swap: int, prefetch: int,
) -> None:
    transformer = deep_transformer()
    frozen_before = {n: p.clone() for n, p in transformer.named_parameters() if not p.requires_grad}
    swapper = BlockSwapper(transformer, swap, device="cpu", prefetch=prefetch)
    swapped = train_steps(transformer, connectors, text_max_length, tmp_path)

    assert swapper.swapped == tuple(range(BLOCKS - swap, BLOCKS))
    initial = lora_state_dict(deep_transformer())
    assert all(not torch.equal(plain_lora[key], initial[key]) for key in plain_lora if ".lora_B." in key)  # trained
    assert plain_lora.keys() == swapped.keys()
    assert all(torch.equal(plain_lora[key], swapped[key]) for key in plain_lora)
    frozen_after = {n: p for n, p in transformer.named_parameters() if not p.requires_grad}
    assert all(torch.equal(frozen_before[name], frozen_after[name]) for name in frozen_before)


def test_each_block_computes_with_device_weights_and_only_its_window_is_resident(
    deep_transformer: Callable[[], Any], connectors: Any, text_max_length: int
) -> None:
    transformer = deep_transformer()
    transformer.enable_gradient_checkpointing()
    transformer.train()
    swapper = BlockSwapper(transformer, 3, device="cpu", prefetch=1)  # blocks 1, 2, 3
    blocks = transformer.transformer_blocks
    masters = {i: _frozen_pointers(blocks[i]) for i in swapper.swapped}  # all released after construction
    lora_pointers = {n: p.data_ptr() for n, p in transformer.named_parameters() if p.requires_grad}
    seen: list[tuple[int, tuple[int, ...]]] = []

    def check(index: int, module: Any, args: Any) -> None:  # registered after the swapper's: sees its result
        seen.append((index, swapper.resident))
        for i in swapper.swapped:
            pointers = _frozen_pointers(blocks[i])
            at_master = [pointers[name] == masters[i][name] for name in pointers]
            assert not any(at_master) if i in swapper.resident else all(at_master), (index, i)

    for i, block in enumerate(blocks):
        block.register_forward_pre_hook(lambda module, args, i=i: check(i, module, args))
    examples = make_examples(2, audio=True)
    batch = collate(list(examples.values()), connectors=connectors, text_max_length=text_max_length, device="cpu",
                    dtype=torch.float32)
    training_step(transformer, batch, generator=torch.Generator().manual_seed(0)).loss.backward()

    forward = [(0, (1,)), (1, (1, 2)), (2, (2, 3)), (3, (3,))]  # running block + the next one streaming in
    backward = [(3, (2, 3)), (2, (1, 2)), (1, (1,)), (0, ())]  # checkpointing recomputes, last block first
    assert seen == forward + backward
    assert swapper.resident == ()
    trained = {n: p for n, p in transformer.named_parameters() if p.requires_grad}
    assert all(trained[name].data_ptr() == pointer for name, pointer in lora_pointers.items())  # never swapped
    assert all(trained[name].grad is not None for name in trained if ".3." in name and "attn1" in name)


def test_inference_forward_matches_and_leaves_nothing_on_the_device(
    deep_transformer: Callable[[], Any], connectors: Any, text_max_length: int
) -> None:
    plain, swapped = deep_transformer(), deep_transformer()
    swapper = BlockSwapper(swapped, 2, device="cpu")
    examples = make_examples(2, audio=True)
    batch = collate(list(examples.values()), connectors=connectors, text_max_length=text_max_length, device="cpu",
                    dtype=torch.float32)
    with torch.no_grad():
        expected = training_step(plain, batch, generator=torch.Generator().manual_seed(0)).loss
        got = training_step(swapped, batch, generator=torch.Generator().manual_seed(0)).loss
    assert torch.equal(expected, got)
    assert swapper.resident == ()


def test_training_without_gradient_checkpointing_is_refused(
    deep_transformer: Callable[[], Any], connectors: Any, text_max_length: int, tmp_path: Path
) -> None:
    transformer = deep_transformer()
    BlockSwapper(transformer, 1, device="cpu")
    with pytest.raises(RuntimeError, match="needs gradient_checkpointing true"):
        train_steps(transformer, connectors, text_max_length, tmp_path, gradient_checkpointing=False)


@pytest.mark.parametrize("swap", [0, BLOCKS + 1])
def test_a_block_count_the_model_does_not_have_is_refused(deep_transformer: Callable[[], Any], swap: int) -> None:
    with pytest.raises(ValueError, match=f"musubi_blocks_to_swap {swap}: the transformer has {BLOCKS} blocks"):
        BlockSwapper(deep_transformer(), swap, device="cpu")


def test_a_weight_made_trainable_after_the_swapper_is_refused(
    deep_transformer: Callable[[], Any], connectors: Any, text_max_length: int, tmp_path: Path
) -> None:
    transformer = deep_transformer()
    BlockSwapper(transformer, 1, device="cpu")
    transformer.transformer_blocks[-1].ff.net[2].weight.requires_grad_(True)  # its updates would be lost
    with pytest.raises(RuntimeError, match="was made trainable after the block swapper took it"):
        train_steps(transformer, connectors, text_max_length, tmp_path)


# ---- CUDA: streams, events, pinned masters (run on the GPU machine: pytest -m gpu)


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize(("swap", "prefetch"), [(2, 1), (BLOCKS, 2)])
def test_cuda_training_with_block_swap_gives_the_plain_runs_lora(
    deep_transformer: Callable[[], Any], connectors: Any, text_max_length: int, tmp_path: Path, swap: int,
    prefetch: int,
) -> None:
    initial = lora_state_dict(deep_transformer())
    plain = train_steps(deep_transformer().to("cuda"), connectors, text_max_length, tmp_path / "plain",
                        device="cuda")
    transformer = deep_transformer()  # built on the host: the swapper moves what stays to the GPU
    swapper = BlockSwapper(transformer, swap, device="cuda", prefetch=prefetch)
    for i in swapper.swapped:
        frozen = [p for p in transformer.transformer_blocks[i].parameters() if not p.requires_grad]
        assert all(p.device.type == "cpu" and p.is_pinned() for p in frozen)
    swapped = train_steps(transformer, connectors, text_max_length, tmp_path / "swapped", device="cuda")

    assert all(p.device.type == "cuda" for p in transformer.parameters() if p.requires_grad)
    assert len(swapper.resident) <= 1  # the first swapped block, recomputed last
    # CUDA kernels (attention backward) need not repeat bit for bit: compare the updates as vectors
    plain_update = torch.cat([(plain[key] - initial[key]).flatten() for key in initial])
    swapped_update = torch.cat([(swapped[key] - initial[key]).flatten() for key in initial])
    assert float((swapped_update - plain_update).norm() / plain_update.norm()) < 1e-4


@pytest.mark.gpu
@needs_cuda
def test_cuda_swapped_weights_do_not_occupy_the_device(deep_transformer: Callable[[], Any]) -> None:
    torch.cuda.synchronize()
    start = torch.cuda.memory_allocated()
    plain = deep_transformer().to("cuda")
    whole = torch.cuda.memory_allocated() - start
    del plain
    start = torch.cuda.memory_allocated()
    transformer = deep_transformer()
    swapper = BlockSwapper(transformer, 3, device="cuda")
    resident = torch.cuda.memory_allocated() - start

    blocks = transformer.transformer_blocks
    swapped = [p for i in swapper.swapped for p in blocks[i].parameters() if not p.requires_grad]
    # the CUDA caching allocator books each tensor rounded up to 512 bytes
    assert whole - resident == sum(-(-p.numel() * p.element_size() // 512) * 512 for p in swapped)
    assert sum(p.numel() * p.element_size() for p in swapped) == swapper.bytes_swapped
