"""A transformer from a single checkpoint file (`pretrained_transformer_model_name_or_path`) through the pipeline:
the caches made with the diffusers folder are the file's too, a run trains and validates on it, and a bad file
stops the train stage with one message that names it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from flows.pipeline import pipeline
from ltx2core.models import loading
from ltx2core.models.original_keys import PREFIX, to_original
from storage.store import Store
from tests.flows.helpers import make_dataset, train_project

ALL = ["probe", "filter", "bucket", "captions", "text-embeds", "latents", "train", "validate"]
CACHES = ["probe", "filter", "bucket", "captions", "text-embeds", "latents"]


def whole_checkpoint(source, path: Path) -> Path:
    """The tiny model's transformer in Lightricks' single-file layout, beside a VAE tensor (ignored)."""
    state = loading.load_transformer(source, dtype=torch.bfloat16).state_dict()
    tensors = {PREFIX + original: state[name].contiguous() for name, original in to_original(state).items()}
    save_file(tensors | {"vae.decoder.conv_in.conv.weight": torch.zeros(2)}, path)
    return path


def by_stage(reports: list[dict]) -> dict[str, dict]:
    return {r["stage"]: r for r in reports}


def test_a_run_on_a_single_file_transformer_reuses_the_caches_and_trains(tmp_path, prefect_api, tiny_of):
    source = tiny_of("2.3")
    clips = make_dataset(tmp_path / "clips")
    p = train_project(tmp_path, clips, model_flavour="2.3", max_train_steps=2, validation_prompt="a red square",
                      validation_resolution="64x64", validation_num_video_frames=9, validation_num_inference_steps=2)
    by_stage(pipeline(**p, stages=CACHES))
    file = whole_checkpoint(source, tmp_path / "ltx-2.3-tiny.safetensors")
    config = Path(p["config"])
    config.write_text(json.dumps(json.loads(config.read_text()) | {
        "pretrained_transformer_model_name_or_path": str(file)}))

    reports = by_stage(pipeline(**p, stages=ALL))
    assert all(reports[s]["up_to_date"] for s in CACHES)  # the file changes no text or latent key
    assert reports["train"]["done"] == 2 and reports["validate"]["done"] == 1
    settings = json.loads(Store.open(p["storage"]).read("validations").to_pylist()[0]["settings"])
    assert "transformer ltx-2.3-tiny.safetensors" in settings["model"]


def test_a_transformer_file_of_another_release_stops_the_run_naming_it(tmp_path, prefect_api, tiny, tiny_of):
    file = whole_checkpoint(tiny_of("2.3"), tmp_path / "ltx-2.3-22b-dev.safetensors")
    clips = make_dataset(tmp_path / "clips")
    p = train_project(tmp_path, clips, max_train_steps=2, pretrained_transformer_model_name_or_path=str(file))
    with pytest.raises(Exception, match=r"ltx-2\.3-22b-dev\.safetensors holds an LTX-2\.3 transformer but "
                                        r"model_flavour is '2\.0'"):
        pipeline(**p, stages=["probe", "filter", "bucket", "captions", "text-embeds"])
