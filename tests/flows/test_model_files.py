"""Lightricks' whole-checkpoint file as `pretrained_model_name_or_path` through the pipeline: the caches made with
the diffusers folder of the same weights are the file's too, a run trains and validates on it, and a file of
another release stops the run before any stage, naming it."""

from __future__ import annotations

import json
from pathlib import Path

from flows.pipeline import pipeline
from storage.store import Store
from tests.flows.helpers import make_dataset, train_project
from tests.flows.test_cli import ltx2
from tests.ltx2core.models.checkpoint_files import whole_checkpoint

ALL = ["probe", "filter", "bucket", "captions", "text-embeds", "latents", "train", "validate"]
CACHES = ["probe", "filter", "bucket", "captions", "text-embeds", "latents"]


def by_stage(reports: list[dict]) -> dict[str, dict]:
    return {r["stage"]: r for r in reports}


def test_a_run_on_a_whole_checkpoint_file_reuses_the_folder_s_caches_and_trains(tmp_path, prefect_api, tiny_of):
    source = tiny_of("2.3")
    clips = make_dataset(tmp_path / "clips")
    p = train_project(tmp_path, clips, model_flavour="2.3", max_train_steps=2, validation_prompt="a red square",
                      validation_resolution="64x64", validation_num_video_frames=9, validation_num_inference_steps=2)
    first = by_stage(pipeline(**p, stages=CACHES))
    assert first["text-embeds"]["done"] > 0 and first["latents"]["done"] > 0
    file = whole_checkpoint(source, tmp_path / "ltx-2.3-tiny.safetensors")
    config = Path(p["config"])
    config.write_text(json.dumps(json.loads(config.read_text()) | {
        "pretrained_model_name_or_path": str(file), "text_encoder_path": source.name_or_path}))

    reports = by_stage(pipeline(**p, stages=ALL))
    # the file's connectors and VAE are the folder's weights: no text or latent key changes
    assert all(reports[s]["up_to_date"] for s in CACHES), {s: reports[s]["done"] for s in CACHES}
    assert reports["train"]["done"] == 2 and reports["validate"]["done"] == 1
    settings = json.loads(Store.open(p["storage"]).read("validations").to_pylist()[0]["settings"])
    assert "audio_vae+connectors+transformer+vae+vocoder from ltx-2.3-tiny.safetensors" in settings["model"]


def test_a_transformer_file_of_another_release_stops_the_run_with_one_message(tmp_path, prefect_api, tiny, tiny_of):
    file = whole_checkpoint(tiny_of("2.3"), tmp_path / "ltx-2.3-22b-dev.safetensors", components=("transformer",))
    clips = make_dataset(tmp_path / "clips")
    p = train_project(tmp_path, clips, max_train_steps=2, pretrained_transformer_model_name_or_path=str(file))
    run = ltx2("run", "--config", p["config"], "--databackend", p["databackend"], "--storage", p["storage"],
               api=prefect_api)
    assert run.returncode != 0 and "Traceback" not in run.stderr, run.stderr
    assert ("a model file does not fit: ltx-2.3-22b-dev.safetensors holds an LTX-2.3 transformer but model_flavour "
            "is '2.0': set model_flavour to '2.3'") in run.stderr
    assert "fix:   change the file or the setting the cause names" in run.stderr
