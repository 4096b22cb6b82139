"""INT8 base weights through torchao on the tiny LTX-2: what is quantized, and training on an int8 base close to
the bf16 run (the same checks as FP8, tests/ltx2core/training/test_fp8.py)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from ltx2core.config.train import TrainConfig
from ltx2core.training.int8 import apply_int8_base
from ltx2core.training.lora import lora_state_dict
from tests.ltx2core.training.helpers import train_steps

logging.getLogger("torchao").setLevel(logging.ERROR)  # its CUDA kernels do not load on a CPU build: said at import

# int8 keeps ~8 bits a weight (fp8: 3 mantissa bits). Measured on the tiny model, 3 AdamW steps at lr 1e-2 under
# bf16 autocast: the LoRA update at cosine 0.994 to the bf16 run's (fp8: 0.986 to float32's).
UPDATE_MIN_COSINE = 0.98


def test_apply_int8_base_quantizes_the_frozen_block_linears_only(lora_transformer: Callable[..., Any]) -> None:
    from torchao.quantization import Int8Tensor

    transformer = lora_transformer(with_audio=True)
    lora_before = lora_state_dict(transformer)
    saved = apply_int8_base(transformer)

    bases = [m.base_layer for m in transformer.modules() if hasattr(m, "base_layer")]
    assert bases and all(isinstance(b.weight, Int8Tensor) for b in bases)
    others = [m for m in transformer.transformer_blocks.modules() if type(m) is torch.nn.Linear]
    assert all(isinstance(m.weight, Int8Tensor) or m.weight.requires_grad for m in others)
    assert type(transformer.proj_in.weight) is torch.nn.Parameter  # outside the blocks: as loaded
    lora_after = lora_state_dict(transformer)
    assert all(torch.equal(lora_before[k], lora_after[k]) and lora_after[k].dtype == torch.float32 for k in lora_before)
    assert saved > 0 and apply_int8_base(transformer) == 0


def test_training_on_an_int8_base_stays_close_to_bf16(
    lora_transformer: Callable[..., Any], connectors: Any, text_max_length: int, tmp_path: Path
) -> None:
    initial = lora_state_dict(lora_transformer(with_audio=True))
    bf16 = train_steps(lora_transformer(with_audio=True), connectors, text_max_length, tmp_path / "bf16",
                       mixed_precision="bf16")
    int8_base = lora_transformer(with_audio=True)
    apply_int8_base(int8_base)
    int8 = train_steps(int8_base, connectors, text_max_length, tmp_path / "int8", mixed_precision="bf16")
    bf16_update = torch.cat([(bf16[k] - initial[k]).flatten() for k in initial])
    int8_update = torch.cat([(int8[k] - initial[k]).flatten() for k in initial])
    cosine = torch.nn.functional.cosine_similarity(bf16_update, int8_update, dim=0)
    assert UPDATE_MIN_COSINE < cosine < 1, float(cosine)


@pytest.mark.parametrize("key", ["musubi_blocks_to_swap", "compile_blocks"])
def test_unverified_combinations_with_int8_are_refused(key: str) -> None:
    with pytest.raises(ValueError, match=f"{key} with base_model_precision int8-torchao is not verified"):
        TrainConfig(base_model_precision="int8-torchao", **{key: 4 if key == "musubi_blocks_to_swap" else True})


def test_simpletuners_other_precisions_are_refused_naming_the_supported_ones() -> None:
    with pytest.raises(ValueError, match="'no_change', 'fp8-e4m3fn' or 'int8-torchao'"):
        TrainConfig(base_model_precision="int8-quanto")
