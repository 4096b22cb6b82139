"""The random-weights model: configs only on disk, each component drawn at load with the sizes the configs say."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ltx2core.models import loading
from ltx2core.models.fingerprint import component_fingerprint
from ltx2core.models.source import resolve_source
from tests.ltx2core.models.test_full_size import TRANSFORMER_PARAMETERS, _parameters

LOADERS = ("load_transformer", "load_vae", "load_audio_vae", "load_connectors", "load_vocoder", "load_text_encoder")


@pytest.mark.parametrize("flavour", ["2.0", "2.3", "2.5"])
def test_tiny_random_draws_every_component_the_tiny_model_has(ltx2_home, flavour):
    drawn, saved = resolve_source("tiny-random", flavour), resolve_source("tiny", flavour)
    assert drawn.random_weights and drawn.untrained and drawn.tiny_sized and drawn.text_max_length == 64
    assert not list((ltx2_home / f"random-tiny-{flavour}-v1").rglob("*.safetensors"))  # nothing but configs
    for name in LOADERS:
        a, b = (getattr(loading, name)(s, dtype=torch.float32) for s in (drawn, saved))
        assert type(a) is type(b) and [p.shape for p in a.parameters()] == [p.shape for p in b.parameters()], name
        assert not any(p.requires_grad for p in a.parameters())
    first, again = (loading.load_transformer(drawn, dtype=torch.float32) for _ in range(2))
    assert all(torch.equal(p, q) for p, q in zip(first.parameters(), again.parameters()))  # one seed, same draw
    assert loading.load_tokenizer(drawn)("a cat").input_ids == loading.load_tokenizer(saved)("a cat").input_ids
    assert component_fingerprint(drawn, "transformer") != component_fingerprint(saved, "transformer")


@pytest.mark.parametrize("flavour", ["2.0", "2.3", "2.5", "2.5-distilled"])
def test_random_is_the_full_size_model_of_the_flavour(ltx2_home, flavour):
    from diffusers import LTX2VideoTransformer3DModel

    from ltx2core.models.source import component_config

    source = resolve_source("random", flavour)
    assert source.random_weights and not source.tiny_sized and source.text_max_length == 1024
    assert "full-size random weights: UNTRAINED" in source.label
    config = component_config(source, "transformer")
    assert _parameters(LTX2VideoTransformer3DModel, config) == TRANSFORMER_PARAMETERS[flavour.split("-")[0]]
    tokens = loading.load_tokenizer(source)("a cat", padding="max_length", max_length=source.text_max_length)
    assert len(tokens.input_ids) == 1024 and tokens.input_ids[-1] != 0  # padded on the left, as the real one


def test_the_full_size_text_encoder_is_gemma_3_12b(ltx2_home):
    from transformers import Gemma3ForConditionalGeneration

    from ltx2core.models.full_size import text_encoder

    with torch.device("meta"):
        model = Gemma3ForConditionalGeneration(text_encoder("2.3"))
    assert model.lm_head.weight is model.model.language_model.embed_tokens.weight  # tied, as in the real model
    assert round(sum(p.numel() for p in model.parameters()) / 1e9, 2) == 12.19  # google/gemma-3-12b-it: 12.19e9


def test_every_random_fill_of_a_drawn_model_passes_through_fills_on(ltx2_home):
    """On a GPU machine, fills_on draws these numbers on the GPU for a model built on the CPU: every initialiser's
    fill must pass through it, or a full-size draw falls back to the CPU's pace for what it misses."""
    from transformers import Gemma3ForConditionalGeneration

    from ltx2core.models import random_weights

    source = resolve_source("tiny-random", "2.3")
    config = Gemma3ForConditionalGeneration.config_class.from_pretrained(Path(source.name_or_path) / "text_encoder")
    with random_weights.fills_on("cpu") as seen:
        model = random_weights.draw(Gemma3ForConditionalGeneration, config, dtype=torch.float32, device="cpu")
    weights = sum(p.numel() for name, p in model.named_parameters() if name.endswith("weight") and p.dim() > 1)
    assert seen.elements >= weights  # every matrix and embedding (norms are filled with constants)
