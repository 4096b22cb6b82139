"""LoRA targets on the tiny transformer, and the two LoRA files loaded back through LTX2Pipeline."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from diffusers import LTX2Pipeline
from peft.utils import get_peft_model_state_dict
from safetensors.torch import load_file

from ltx2core.models import loading
from ltx2core.models.source import ModelSource
from ltx2core.training.data import collate
from ltx2core.training.lora import (
    COMFY_FILE,
    DIFFUSERS_FILE,
    LoraSpec,
    add_lora,
    lora_state_dict,
    save_lora,
    target_modules,
)
from ltx2core.training.step import model_inputs
from tests.ltx2core.training.conftest import LORA_RANK
from tests.ltx2core.training.helpers import make_examples

BLOCKS = 2  # the tiny transformer's
PROJECTIONS = 4  # q, k, v, out


def _adapted(transformer: Any) -> list[str]:
    return [name for name, module in transformer.named_modules() if hasattr(module, "lora_A")]


def _randomise(transformer: Any) -> None:
    """Trained-looking weights: lora_B starts at zero, which would make every comparison trivial."""
    generator = torch.Generator().manual_seed(7)
    for param in transformer.parameters():
        if param.requires_grad:
            param.data = torch.randn(param.shape, generator=generator)


def _loaded(tiny: ModelSource, folder: Path, **kwargs: Any) -> Any:
    """The tiny LTX2Pipeline, as a user would load it, with the LoRA file loaded the diffusers way."""
    pipe = LTX2Pipeline.from_pretrained(tiny.name_or_path, dtype=torch.float32)
    pipe.load_lora_weights(folder, adapter_name="loaded", **kwargs)
    return pipe.transformer


def _video_prediction(transformer: Any, connectors: Any, text_max_length: int) -> torch.Tensor:
    batch = collate(list(make_examples(2).values()), connectors=connectors, text_max_length=text_max_length,
                    device="cpu", dtype=torch.float32)
    inputs = model_inputs(transformer, batch, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return transformer(**inputs.kwargs)[0]


def test_default_targets_are_video_attention_and_miss_the_audio_twins(
    lora_transformer: Callable[..., Any],
) -> None:
    adapted = _adapted(lora_transformer())
    assert len(adapted) == BLOCKS * 2 * PROJECTIONS
    assert all(name.split(".")[2] in ("attn1", "attn2") for name in adapted), adapted

    with_audio = _adapted(lora_transformer(with_audio=True))
    assert len(with_audio) == BLOCKS * 6 * PROJECTIONS
    assert any(".audio_attn1." in name for name in with_audio)
    assert any(".video_to_audio_attn." in name for name in with_audio)


def test_feed_forward_targets_follow_the_data(tiny: ModelSource) -> None:
    assert target_modules(None, with_audio=False, feed_forward=True)[-2:] == ["ff.net.0.proj", "ff.net.2"]
    assert "audio_ff.net.2" in target_modules(None, with_audio=True, feed_forward=True)
    assert target_modules(["to_q", "to_q", "ff.net.2"], with_audio=False) == ["to_q", "ff.net.2"]
    transformer = loading.load_transformer(tiny, dtype=torch.float32)
    add_lora(transformer, LoraSpec(2, 2.0, 0.0, tuple(target_modules(None, with_audio=False, feed_forward=True))),
             seed=0)
    adapted = _adapted(transformer)
    assert "transformer_blocks.1.ff.net.2" in adapted and "transformer_blocks.1.audio_ff.net.2" not in adapted


def test_a_target_that_matches_nothing_is_refused(tiny: ModelSource) -> None:
    transformer = loading.load_transformer(tiny, dtype=torch.float32)
    with pytest.raises(ValueError, match=r"attn3\.to_q"):
        add_lora(transformer, LoraSpec(2, 2.0, 0.0, ("attn1.to_q", "attn3.to_q")), seed=0)


def test_lora_init_is_seeded_and_leaves_the_callers_rng_alone(tiny: ModelSource) -> None:
    transformers = [loading.load_transformer(tiny, dtype=torch.float32) for _ in range(3)]
    spec = LoraSpec(LORA_RANK, LORA_RANK, 0.0, tuple(target_modules(None, with_audio=False)))
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    for transformer, seed in zip(transformers, (5, 5, 6), strict=True):
        add_lora(transformer, spec, seed=seed)
    assert torch.equal(torch.random.get_rng_state(), before)
    a, b, c = (lora_state_dict(t) for t in transformers)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)
    assert all(v.dtype == torch.float32 for v in a.values())


def test_both_files_load_into_ltx2pipeline_with_the_trained_weights(
    tiny: ModelSource, lora_transformer: Callable[..., Any], connectors: Any, text_max_length: int, tmp_path: Path
) -> None:
    trained = lora_transformer()
    _randomise(trained)
    files = save_lora(trained, tmp_path, flavour="2.0")
    assert [f.name for f in files] == [DIFFUSERS_FILE, COMFY_FILE]
    comfy_keys = load_file(str(tmp_path / COMFY_FILE)).keys()
    assert all(k.startswith("diffusion_model.transformer_blocks.") and ".lora_" in k for k in comfy_keys)

    expected = lora_state_dict(trained)
    reference = _video_prediction(trained, connectors, text_max_length)
    for kwargs in ({}, {"weight_name": COMFY_FILE}):  # the folder alone picks the diffusers file
        loaded = _loaded(tiny, tmp_path, **kwargs)
        weights = get_peft_model_state_dict(loaded, adapter_name="loaded")
        assert weights.keys() == expected.keys()
        assert all(torch.equal(weights[k], expected[k]) for k in expected), kwargs
        assert torch.equal(_video_prediction(loaded, connectors, text_max_length), reference), kwargs


def test_alpha_other_than_rank_gives_the_same_model_from_both_files(
    tiny: ModelSource, lora_transformer: Callable[..., Any], connectors: Any, text_max_length: int, tmp_path: Path
) -> None:
    trained = lora_transformer(alpha=2 * LORA_RANK)  # scale 2: a power of two, so folding it in is exact
    _randomise(trained)
    save_lora(trained, tmp_path, flavour="2.0")
    expected = lora_state_dict(trained)
    reference = _video_prediction(trained, connectors, text_max_length)

    diffusers_side = _loaded(tiny, tmp_path)
    assert diffusers_side.peft_config["loaded"].lora_alpha == 2 * LORA_RANK
    comfy_side = _loaded(tiny, tmp_path, weight_name=COMFY_FILE)
    assert comfy_side.peft_config["loaded"].lora_alpha == LORA_RANK  # no alpha in the file: scale 1 ...
    comfy = get_peft_model_state_dict(comfy_side, adapter_name="loaded")
    for key, value in expected.items():  # ... with the scale folded into lora_B
        assert torch.equal(comfy[key], value * 2 if ".lora_B." in key else value), key
    for loaded in (diffusers_side, comfy_side):
        torch.testing.assert_close(_video_prediction(loaded, connectors, text_max_length), reference,
                                   rtol=1e-6, atol=1e-6)


def test_a_lora_trained_with_dropout_loads_for_inference_from_both_files(
    tiny: ModelSource, lora_transformer: Callable[..., Any], connectors: Any, text_max_length: int, tmp_path: Path
) -> None:
    trained = lora_transformer(dropout=0.1)  # the config's default
    _randomise(trained)
    save_lora(trained, tmp_path, flavour="2.0")
    reference = _video_prediction(trained.eval(), connectors, text_max_length)
    for kwargs in ({}, {"weight_name": COMFY_FILE}):
        loaded = _loaded(tiny, tmp_path, **kwargs)
        assert loaded.peft_config["loaded"].lora_dropout == 0
        first, second = (_video_prediction(loaded, connectors, text_max_length) for _ in range(2))
        assert torch.equal(first, second) and torch.equal(first, reference), kwargs


@pytest.mark.parametrize("flavour", ["2.3", "2.5"])
def test_a_2_3_or_2_5_lora_records_its_flavour_and_both_files_load_into_that_release_s_pipeline(
    tiny_of: Callable[[str], ModelSource], flavour: str, tmp_path: Path
) -> None:
    """Default targets leave 2.3's gate logits out; the ComfyUI file's keys go through diffusers' converter for
    original-format LoRAs into the release's transformer (2.5: transformer_full, the trained one)."""
    from ltx2core.training.lora import lora_flavour

    source = tiny_of(flavour)
    trained = loading.load_transformer(source, dtype=torch.float32)
    spec = LoraSpec(rank=LORA_RANK, alpha=LORA_RANK, dropout=0.0,
                    targets=tuple(target_modules(None, with_audio=True, feed_forward=True)))
    add_lora(trained, spec, seed=0)
    assert _adapted(trained) and not [name for name in _adapted(trained) if "gate" in name]
    _randomise(trained)
    save_lora(trained, tmp_path, flavour=flavour)
    assert lora_flavour(tmp_path / DIFFUSERS_FILE) == lora_flavour(tmp_path / COMFY_FILE) == flavour

    expected = lora_state_dict(trained)
    for kwargs in ({}, {"weight_name": COMFY_FILE}):
        pipe = LTX2Pipeline.from_pretrained(source.name_or_path, dtype=torch.float32,
                                            transformer=loading.load_transformer(source, dtype=torch.float32))
        pipe.load_lora_weights(tmp_path, adapter_name="loaded", **kwargs)
        weights = get_peft_model_state_dict(pipe.transformer, adapter_name="loaded")
        assert weights.keys() == expected.keys(), kwargs
        assert all(torch.equal(weights[k], expected[k]) for k in expected), kwargs


def test_gate_logits_train_when_asked(tiny_of: Callable[[str], ModelSource], tmp_path: Path) -> None:
    trained = loading.load_transformer(tiny_of("2.3"), dtype=torch.float32)
    add_lora(trained, LoraSpec(rank=2, alpha=2, dropout=0.0, targets=("attn1.to_q", "attn1.to_gate_logits")), seed=0)
    assert [name for name in _adapted(trained) if name.endswith("to_gate_logits")]
    save_lora(trained, tmp_path, flavour="2.3")  # inside transformer_blocks: the ComfyUI export takes them
    assert any("to_gate_logits" in k for k in load_file(str(tmp_path / COMFY_FILE)))
