"""Parking the audio stream for video-only training: equal LoRA to the bit, less on the device, refusals, restore."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from ltx2core.models import loading
from ltx2core.models.source import ModelSource
from ltx2core.training.audio_stream import AUDIO_LAYERS, CROSS_MODAL, park_audio_stream
from ltx2core.training.block_swap import BlockSwapper
from ltx2core.training.data import BucketBatches, collate
from ltx2core.training.fp8 import apply_fp8_base
from ltx2core.training.loop import TrainSettings, train
from ltx2core.training.lora import LoraSpec, add_lora, lora_state_dict, target_modules
from ltx2core.training.step import model_inputs
from tests.ltx2core.training.conftest import LORA_RANK, LORA_SEED
from tests.ltx2core.training.helpers import BUCKET, MemorySource, make_examples


def _add_lora(transformer: Any, *, with_audio: bool = False) -> Any:
    spec = LoraSpec(LORA_RANK, LORA_RANK, 0.0, tuple(target_modules(None, with_audio=with_audio)))
    add_lora(transformer, spec, seed=LORA_SEED)
    return transformer


def _train_video_only(transformer: Any, connectors: Any, text_max_length: int, output_dir: Path) -> dict[str, Any]:
    examples = make_examples(4)
    batches = BucketBatches({BUCKET: [(key, 0) for key in examples]}, batch_size=2, seed=8)
    settings = TrainSettings(output_dir=output_dir, max_steps=3, text_max_length=text_max_length, model="tiny",
                             learning_rate=1e-2, seed=5, mixed_precision="no")
    result = train(transformer, MemorySource(examples), batches, connectors=connectors, settings=settings)
    return {"lora": lora_state_dict(transformer), "losses": [row["loss"] for row in result.history]}


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_parked_video_only_training_equals_the_full_model_to_the_bit(
    tiny: ModelSource, connectors: Any, text_max_length: int, tmp_path: Path
) -> None:
    full = _add_lora(loading.load_transformer(tiny, dtype=torch.float32))
    parked_model = loading.load_transformer(tiny, dtype=torch.float32)
    before = _count(parked_model)
    parked = park_audio_stream(parked_model)
    assert len(parked.layers) == len(parked_model.transformer_blocks) * (len(AUDIO_LAYERS) + len(CROSS_MODAL))
    assert parked.bytes == (before - _count(parked_model)) * 4 > 0  # float32: what left the model is what parked
    _add_lora(parked_model)

    expected = _train_video_only(full, connectors, text_max_length, tmp_path / "full")
    got = _train_video_only(parked_model, connectors, text_max_length, tmp_path / "parked")
    assert got["losses"] == expected["losses"]
    assert got["lora"].keys() == expected["lora"].keys()
    for name, tensor in expected["lora"].items():
        assert torch.equal(got["lora"][name], tensor), name
    assert all(tensor.any() for name, tensor in expected["lora"].items() if "lora_B" in name)  # B starts at 0


def test_parking_composes_with_fp8_and_block_swap(
    tiny: ModelSource, connectors: Any, text_max_length: int, tmp_path: Path
) -> None:
    """As the train stage orders them: park, LoRA, fp8, swap; the LoRA equals that of fp8 + swap unparked."""

    def fp8_swapped(park: bool) -> dict[str, Any]:
        transformer = loading.load_transformer(tiny, dtype=torch.float32)
        if park:
            park_audio_stream(transformer)
        apply_fp8_base(_add_lora(transformer))
        BlockSwapper(transformer, 1, device="cpu")
        return _train_video_only(transformer, connectors, text_max_length, tmp_path / f"park{park}")

    expected, got = fp8_swapped(park=False), fp8_swapped(park=True)
    assert got["losses"] == expected["losses"]
    assert all(torch.equal(got["lora"][name], tensor) for name, tensor in expected["lora"].items())


def test_a_parked_stream_refuses_audio_and_restored_runs_it_as_before(
    tiny: ModelSource, connectors: Any, text_max_length: int
) -> None:
    full = loading.load_transformer(tiny, dtype=torch.float32).eval()
    parked_model = loading.load_transformer(tiny, dtype=torch.float32).eval()
    parked = park_audio_stream(parked_model)
    batch = collate(list(make_examples(2, audio=True).values()), connectors=connectors,
                    text_max_length=text_max_length, device="cpu", dtype=torch.float32)
    joint = model_inputs(full, batch, generator=torch.Generator().manual_seed(3)).kwargs
    assert not joint["isolate_modalities"]  # audio data: the joint model

    with torch.no_grad():
        with pytest.raises(RuntimeError, match="audio stream is parked.*restore"):
            parked_model(**joint)  # 9 audio tokens through a silent audio layer
        with pytest.raises(RuntimeError, match="audio<->video attention cannot run"):
            parked_model(**{**joint, "audio_hidden_states": joint["audio_hidden_states"][:, :1],
                            "audio_num_frames": 1})
        expected = full(**joint)
        with parked.restored("cpu"):
            got = parked_model(**joint)
        assert all(torch.equal(g, e) for g, e in zip(got, expected, strict=True))
        with pytest.raises(RuntimeError, match="audio stream is parked"):  # parked again afterwards
            parked_model(**joint)


def test_parking_refuses_an_audio_lora(tiny: ModelSource) -> None:
    transformer = _add_lora(loading.load_transformer(tiny, dtype=torch.float32), with_audio=True)
    with pytest.raises(ValueError, match="audio_attn1 has trainable parameters"):
        park_audio_stream(transformer)
