"""LTX-2.3 and 2.5 through the whole pipeline on their tiny models, and one store that never mixes flavours."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import av
import pytest
from safetensors.torch import load_file

from flows.pipeline import pipeline
from ltx2core.training.lora import lora_flavour
from storage.store import Store
from tests.flows.helpers import make_dataset, train_project
from tests.flows.test_cli import ltx2

ALL = ["probe", "filter", "bucket", "captions", "text-embeds", "latents", "train", "validate"]
CACHES = ["probe", "filter", "bucket", "captions", "text-embeds", "latents"]
VALIDATION = {"validation_prompt": "a red square moving right", "validation_resolution": "64x64",
              "validation_num_video_frames": 9, "validation_num_inference_steps": 2, "validation_steps": 0,
              "validation_using_datasets": True, "eval_dataset_id": "clips"}
# Scheduled sampling on: every flavour's transformer rolls its own inputs out (SimpleTuner's keys).
ROLLOUT = {"scheduled_sampling_max_step_offset": 3, "scheduled_sampling_probability": 1.0}


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("flavour-clips") / "videos")


def by_stage(reports: list[dict]) -> dict[str, dict]:
    return {r["stage"]: r for r in reports}


def rolled_out(output_dir: Path) -> bool:
    """Whether the run's loss.csv says some step's clips were rolled out (mean Euler steps above 0)."""
    with (output_dir / "loss.csv").open(newline="") as handle:
        return any(float(row["rollout_steps"] or 0) > 0 for row in csv.DictReader(handle))


def test_scheduled_sampling_trains_the_2_0_model_from_the_pipeline(tmp_path, clips, prefect_api, tiny):
    p = train_project(tmp_path, clips, max_train_steps=2, **ROLLOUT)
    reports = by_stage(pipeline(**p, stages=["probe", "filter", "bucket", "captions", "text-embeds", "latents",
                                             "train"]))
    assert reports["train"]["done"] == 2 and rolled_out(tmp_path / "output" / "run")


def test_a_simpletuner_2_3_config_trains_and_validates_from_ltx2_run(tmp_path, clips, prefect_api, tiny_of):
    tiny_of("2.3")  # built once per session, in the session's LTX2_HOME
    p = train_project(tmp_path, clips, model_flavour="2.3-dev", max_train_steps=2, **VALIDATION, **ROLLOUT)
    run = ltx2("run", "--config", p["config"], "--databackend", p["databackend"], "--storage", p["storage"],
               api=prefect_api)
    assert run.returncode == 0, run.stderr[-3000:]
    out = tmp_path / "output" / "run"
    assert lora_flavour(out / "pytorch_lora_weights.safetensors") == lora_flavour(out / "lora_comfyui.safetensors")
    assert lora_flavour(out / "pytorch_lora_weights.safetensors") == "2.3"
    assert rolled_out(out)
    store = Store.open(p["storage"])
    assert {r["flavour"] for r in store.read("checkpoints").to_pylist()} == {"2.3"}
    rows = store.read("validations").to_pylist()
    assert sorted(r["mode"] for r in rows) == ["i2v", "i2v", "t2v"]
    for row in rows:
        settings = json.loads(row["settings"])
        # 2.3's recipe: CFG 3 video / 7 audio, STG, modality guidance; the model label names the flavour
        assert (settings["guidance"], settings["audio_guidance"], settings["stg_scale"]) == (3.0, 7.0, 1.0)
        assert "flavour 2.3" in settings["model"]
        with av.open(row["video_path"]) as container:  # 2.3's vocoder: 48 kHz
            assert container.streams.audio[0].rate == 48000


@pytest.mark.parametrize("flavour", ["2.5", "2.3-distilled", "2.5-distilled"])
def test_2_5_and_the_distilled_flavours_train_and_validate(tmp_path, clips, prefect_api, tiny_of, flavour):
    tiny_of(flavour)
    p = train_project(tmp_path, clips, model_flavour=flavour, max_train_steps=2, **VALIDATION, **ROLLOUT)
    reports = by_stage(pipeline(**p, stages=ALL))
    assert reports["train"]["done"] == 2 and reports["validate"]["done"] == 3
    assert rolled_out(tmp_path / "output" / "run")
    assert lora_flavour(tmp_path / "output" / "run" / "pytorch_lora_weights.safetensors") == flavour
    settings = json.loads(Store.open(p["storage"]).read("validations").to_pylist()[0]["settings"])
    if "distilled" in flavour:  # unguided, on the fixed 8-sigma schedule
        assert (settings["guidance"], settings["audio_guidance"], settings["steps"]) == (1.0, 1.0, 8)


def test_one_store_keeps_each_flavour_s_rows_and_never_crosses_a_run_or_a_lora_over(tmp_path, clips, prefect_api,
                                                                                      tiny, tiny_of):
    tiny_of("2.3")
    base = train_project(tmp_path, clips, max_train_steps=2, **VALIDATION)
    first = by_stage(pipeline(**base, stages=ALL))
    store = Store.open(base["storage"])
    counts = {t: store.count(t) for t in ("text_embeds", "latents")}

    # The same store and output folder on 2.3: the model-dependent rows are computed again, the rest reused.
    config = Path(base["config"])
    config.write_text(json.dumps(json.loads(config.read_text()) | {"model_flavour": "2.3", "max_train_steps": 4}))
    switched = by_stage(pipeline(**base, stages=CACHES))
    assert all(switched[s]["up_to_date"] for s in ("probe", "filter", "bucket", "captions"))
    assert switched["text-embeds"]["done"] == first["text-embeds"]["done"] > 0
    assert switched["latents"]["done"] == first["latents"]["done"] > 0
    # 2.0's rows are kept beside them (text_embeds also holds 2.0's validation prompts)
    assert store.count("text_embeds") == counts["text_embeds"] + switched["text-embeds"]["done"]
    assert store.count("latents") == 2 * counts["latents"]

    # The 2.0 run is not resumed on 2.3, nor its LoRA validated there.
    with pytest.raises(Exception, match=r"model: .*flavour 2\.0.* -> .*flavour 2\.3"):
        pipeline(**base, stages=["train"])
    with pytest.raises(Exception, match=r"LoRA of LTX-2\.0, but model_flavour is '2\.3'"):
        pipeline(**base, stages=["validate"], force=["validate"])

    # Back to 2.0: nothing to compute.
    config.write_text(json.dumps(json.loads(config.read_text()) | {"model_flavour": "2.0", "max_train_steps": 2}))
    back = by_stage(pipeline(**base, stages=ALL))
    assert all(r["up_to_date"] for r in back.values()), {s: r["done"] for s, r in back.items()}
    assert load_file(tmp_path / "output" / "run" / "pytorch_lora_weights.safetensors")
    shutil.rmtree(tmp_path / "videos")


# Issue #19's audio modes on the later flavours (2.0's: tests/flows/test_caches.py), each with its own validation:
# mode -> (its validation keys, the validation mode it samples in).
AUDIO_MODES = {
    "joint": ({"audio_loss_weight": "auto", "validation_prompt": "rain on a tin roof"}, "t2v"),
    "video_to_audio": ({"validation_using_datasets": True, "eval_dataset_id": "clips"}, "v2a"),
    "audio_to_video": ({"validation_using_datasets": True, "eval_dataset_id": "clips"}, "a2v"),
    "audio_only": ({"validation_prompt": "rain on a tin roof"}, "audio"),
}


@pytest.mark.parametrize("flavour", ["2.3", "2.5"])
def test_every_audio_mode_trains_and_validates_on_the_flavour(tmp_path, clips, prefect_api, tiny_of, flavour):
    tiny_of(flavour)
    p = train_project(tmp_path, clips, model_flavour=flavour, max_train_steps=2, validation_resolution="64x64",
                      validation_num_video_frames=9, validation_num_inference_steps=2, validation_steps=0)
    backend = json.loads(Path(p["databackend"]).read_text())
    backend[0]["video"]["audio"] = {"sample_rate": 16000, "channels": 2, "allow_zero_audio": True}
    Path(p["databackend"]).write_text(json.dumps(backend))
    pipeline(**p, stages=CACHES)  # once: every mode trains from the same cached clips
    config = Path(p["config"])
    base = json.loads(config.read_text())
    store = Store.open(p["storage"])
    for mode, (validation, sampled) in AUDIO_MODES.items():
        out = tmp_path / "output" / mode
        config.write_text(json.dumps(base | validation | {"audio_video_mode": mode, "output_dir": str(out)}))
        reports = by_stage(pipeline(**p, stages=["train", "validate"]))
        assert reports["train"]["done"] == 2, mode
        with (out / "loss.csv").open(newline="") as handle:
            losses = list(csv.DictReader(handle))
        # the loss is each mode's: audio but for audio_to_video, video only where video is generated
        assert all(float(r["audio_loss"] or 0) for r in losses) == (mode != "audio_to_video"), mode
        assert all(float(r["video_loss"] or 0) for r in losses) == (mode in ("joint", "audio_to_video")), mode
        rows = [r for r in store.read("validations").to_pylist() if r["run_id"] == mode]
        assert reports["validate"]["done"] == len(rows) >= 1 and {r["mode"] for r in rows} == {sampled}, mode
        for row in rows:
            with av.open(row["video_path"]) as container:
                assert container.streams.video and container.streams.audio, (mode, row["video_path"])
    assert lora_flavour(tmp_path / "output" / "audio_only" / "pytorch_lora_weights.safetensors") == flavour
