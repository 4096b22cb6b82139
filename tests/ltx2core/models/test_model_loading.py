"""Tiny model: written once in the diffusers layout, read back through the real loaders (local and hub cache)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from diffusers import (
    AutoencoderKLLTX2Audio,
    AutoencoderKLLTX2Video,
    FlowMatchEulerDiscreteScheduler,
    LTX2VideoTransformer3DModel,
)
from diffusers.pipelines.ltx2 import LTX2TextConnectors, LTX2Vocoder
from huggingface_hub import constants as hf_constants
from transformers import Gemma3ForConditionalGeneration, GemmaTokenizer

from ltx2core.models import loading
from ltx2core.models import tiny as tiny_model
from ltx2core.models.fingerprint import component_fingerprint
from ltx2core.models.scale import LTX2, ScaleFactors
from ltx2core.models.source import COMPONENTS, ModelSource, resolve_source

SUBFOLDERS = {"transformer", "vae", "audio_vae", "connectors", "text_encoder", "tokenizer", "scheduler", "vocoder"}
MODELS = {
    "transformer": (loading.load_transformer, LTX2VideoTransformer3DModel),
    "vae": (loading.load_vae, AutoencoderKLLTX2Video),
    "audio_vae": (loading.load_audio_vae, AutoencoderKLLTX2Audio),
    "connectors": (loading.load_connectors, LTX2TextConnectors),
    "text_encoder": (loading.load_text_encoder, Gemma3ForConditionalGeneration),
    "vocoder": (loading.load_vocoder, LTX2Vocoder),
}
FAKE_COMMIT = "0123456789abcdef0123456789abcdef01234567"


def test_tiny_is_written_once_in_diffusers_layout_and_labelled_untrained(tiny: ModelSource, ltx2_home: Path) -> None:
    folder = Path(tiny.name_or_path)
    assert folder == ltx2_home / f"tiny-2.0-v{tiny_model.VERSION}"
    assert SUBFOLDERS <= {p.name for p in folder.iterdir() if p.is_dir()}
    assert not [p.name for p in ltx2_home.iterdir() if p.name.startswith(".")]  # no staging folder left behind
    index = json.loads((folder / "model_index.json").read_text())
    assert index["_class_name"] == "LTX2Pipeline" and index["_ltx2_untrained"] is True
    assert index["_ltx2_release"] == "2.0"
    assert tiny.untrained and "UNTRAINED" in tiny.label and tiny.flavour.name == "2.0"

    written = (folder / "model_index.json").stat().st_mtime_ns
    assert resolve_source("tiny") == tiny
    assert (folder / "model_index.json").stat().st_mtime_ns == written  # reused, not rebuilt


@pytest.fixture(scope="module")
def built() -> Any:
    return tiny_model.build_tiny_pipeline()


@pytest.mark.parametrize("component", sorted(MODELS))
def test_round_trip_gives_the_class_and_the_weights_that_were_built(
    tiny: ModelSource, built: Any, component: str
) -> None:
    load, cls = MODELS[component]
    loaded = load(tiny, dtype=torch.float32)
    assert isinstance(loaded, cls)
    assert not any(p.requires_grad for p in loaded.parameters())
    expected, found = getattr(built, component).state_dict(), loaded.state_dict()
    assert expected.keys() == found.keys()
    assert all(torch.equal(expected[k], found[k]) for k in expected)


def test_vae_keeps_the_ltx2_compression_ratios(tiny_vae: AutoencoderKLLTX2Video) -> None:
    # The class would compute 64/16 for this layout if the config did not carry 32/8.
    assert (tiny_vae.spatial_compression_ratio, tiny_vae.temporal_compression_ratio) == (32, 8)
    assert ScaleFactors.from_vae_config(tiny_vae.config) == LTX2


def test_tokenizer_and_scheduler_load_with_ltx2_settings(tiny: ModelSource) -> None:
    tokenizer = loading.load_tokenizer(tiny)
    assert isinstance(tokenizer, GemmaTokenizer) and tokenizer.padding_side == "left"
    assert tokenizer("a cat")["input_ids"][0] == tokenizer.bos_token_id
    scheduler = loading.load_scheduler(tiny)
    assert isinstance(scheduler, FlowMatchEulerDiscreteScheduler)
    assert scheduler.config.use_dynamic_shifting and scheduler.config.shift_terminal == pytest.approx(0.1)


def test_loader_gives_the_dtype_asked(tiny: ModelSource) -> None:
    transformer = loading.load_transformer(tiny, dtype=torch.bfloat16, device="cpu")
    assert {p.dtype for p in transformer.parameters()} == {torch.bfloat16}
    assert {p.device.type for p in transformer.parameters()} == {"cpu"}


def test_hub_id_loads_offline_from_the_hf_cache(
    tiny: ModelSource, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = tmp_path / "models--Lightricks--LTX-2"
    shutil.copytree(tiny.name_or_path, repo / "snapshots" / FAKE_COMMIT)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(FAKE_COMMIT)
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)

    source = resolve_source("Lightricks/LTX-2", "2.0", cache_dir=tmp_path)
    assert not source.is_local and source.flavour.name == "2.0" and not source.untrained
    assert isinstance(loading.load_vae(source, dtype=torch.float32), AutoencoderKLLTX2Video)
    assert isinstance(loading.load_tokenizer(source), GemmaTokenizer)
    assert loading.load_vae_config(source)["latent_channels"] == 8

    # Offline, the fingerprint is the cached commit: it moves when refs/main does.
    before = component_fingerprint(source, "vae")
    shutil.copytree(repo / "snapshots" / FAKE_COMMIT, repo / "snapshots" / ("f" * 40))
    (repo / "refs" / "main").write_text("f" * 40)
    assert component_fingerprint(source, "vae") != before


@pytest.mark.parametrize(
    ("name", "flavour", "error", "hint"),
    [
        ("Lightricks/LTX-2", "3.0", ValueError, "use one of 2.0, 2.3, 2.3-distilled, 2.5, 2.5-distilled"),
        ("Lightricks/LTX-2", "tiny", ValueError, "not supported"),
        ("./no/such/folder", "2.0", FileNotFoundError, "neither an existing folder nor a hub id"),
    ],
)
def test_unusable_sources_are_refused_with_the_fix(name: str, flavour: str, error: type, hint: str) -> None:
    with pytest.raises(error, match=hint):
        resolve_source(name, flavour)


def test_a_folder_without_model_index_is_refused(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="model_index.json"):
        resolve_source(str(tmp_path))


def test_make_tiny_model_refuses_an_existing_folder(tiny: ModelSource) -> None:
    with pytest.raises(FileExistsError, match="already exists"):
        tiny_model.make_tiny_model(Path(tiny.name_or_path))


def test_make_tiny_model_folder_is_tiny_and_identical_to_the_cached_one(tiny: ModelSource, tmp_path: Path) -> None:
    folder = tmp_path / "tiny"
    folder.mkdir()  # an empty folder is fine, as `ltx2 make-tiny-model DIR` may get one
    tiny_model.make_tiny_model(folder)
    source = resolve_source(str(folder), "2.0")  # the folder says it is tiny
    assert source.flavour.name == "2.0" and source.untrained
    # Fixed seed: a second build has the same files as the first, so the same fingerprints.
    assert all(component_fingerprint(source, c) == component_fingerprint(tiny, c) for c in COMPONENTS)
