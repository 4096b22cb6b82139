"""`ltx2 rehearse` on the tiny-sized random model: every stage runs through the pipeline flow (Prefect, Lance,
PyAV on the synthetic clips it writes) and gets its figures; the user's files and folders are left alone."""

from __future__ import annotations

import json

from tests.flows.test_cli import ltx2


def test_rehearse_measures_every_stage_and_leaves_the_user_s_files_alone(tmp_path, prefect_api, ltx2_home):
    user = tmp_path / "project"
    user.mkdir()
    config = {"model_family": "ltxvideo2", "model_flavour": "2.3", "output_dir": str(user / "output"),
              "lora_rank": 4, "mixed_precision": "no", "max_train_steps": 500, "validation_prompt": "a red square",
              "validation_resolution": "64x64", "validation_num_video_frames": 9,
              "validation_num_inference_steps": 2}
    backend = [{"id": "clips", "type": "local", "dataset_type": "video", "instance_data_dir": str(user / "videos"),
                "caption_strategy": "parquet", "parquet": {"path": str(user / "captions.parquet")},
                "resolution": 64, "video": {"num_frames": 17, "frame_rate": 25}},
               {"id": "text-embeds", "dataset_type": "text_embeds", "default": True, "type": "local"}]
    (user / "config.json").write_text(json.dumps(config))
    (user / "multidatabackend.json").write_text(json.dumps(backend))
    figures, kept = tmp_path / "figures.json", tmp_path / "kept"

    done = ltx2("rehearse", "--config", str(user / "config.json"), "--databackend", str(user / "multidatabackend.json"),
                "--model", "tiny-random", "--clips", "3", "--steps", "4", "--json", str(figures), "--keep", str(kept),
                api=prefect_api)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr and "train fits this machine as configured" in done.stdout
    lines = [line for line in done.stderr.splitlines() if line.startswith("ltx2 rehearse: ")]
    assert [line.split(":")[1].strip() for line in lines] == [  # a line as each stage ends, before the table
        "probe", "filter", "bucket", "captions", "text-embeds", "latents", "train", "validate"]
    assert lines[0].startswith("ltx2 rehearse: probe: 3 files in ") and lines[0].endswith(": ok")

    result = json.loads(figures.read_text())
    assert "LTX-2 flavour 2.3, tiny random weights: UNTRAINED" in result["model"] and result["device"] == "cpu"
    assert result["shapes"] == {"clips": "96x64x17"}
    stages = {s["stage"]: s for s in result["stages"]}
    assert list(stages) == ["probe", "filter", "bucket", "captions", "text-embeds", "latents", "train", "validate"]
    assert {name: s["items"] for name, s in stages.items()} == {
        "probe": 3, "filter": 3, "bucket": 3, "captions": 3, "text-embeds": 3, "latents": 3, "train": 4, "validate": 1}
    for s in stages.values():
        assert s["error"] is None and s["host_peak_gib"] > 0.1 and s["gpu_peak_gib"] is None
        assert 0 < s["stage_seconds"] <= s["seconds"]  # the flow call holds the stage
    assert stages["train"]["per_item_s"] > 0  # the median s/step of its loss.csv
    for name in ("text-embeds", "latents"):  # their models' load, apart: a fixed cost more items do not repeat
        assert 0 < stages[name]["load_seconds"] < stages[name]["stage_seconds"]
    assert {s["stage"] for s in result["stages"] if s["load_seconds"]} == {"text-embeds", "latents"}
    assert " loaded), GPU peak" in lines[4] and " loaded)" not in lines[0]
    assert result["advice"] == ["latents fits this machine as configured", "train fits this machine as configured"]
    assert sorted(p.name for p in user.iterdir()) == ["config.json", "multidatabackend.json"]  # nothing written
    assert json.loads((user / "config.json").read_text()) == config

    # Again in the kept folder: its store already holds every row, yet each rehearsed stage does all its work
    # (figures of a resume would say nothing), and a stage left out is reused (here the probe's rows).
    again = ltx2("rehearse", "--config", str(user / "config.json"), "--databackend",
                 str(user / "multidatabackend.json"), "--model", "tiny-random", "--clips", "3", "--steps", "4",
                 "--stages", "filter,bucket,captions,text-embeds", "--json", str(figures), "--keep", str(kept),
                 api=prefect_api)
    assert again.returncode == 0, again.stderr
    assert {s["stage"]: s["items"] for s in json.loads(figures.read_text())["stages"]} == {
        "filter": 3, "bucket": 3, "captions": 3, "text-embeds": 3}


def test_rehearse_refuses_an_unknown_stage_before_any_work(tmp_path, prefect_api):
    done = ltx2("rehearse", "--stages", "probe,encode", "--config", str(tmp_path / "config.json"), api=prefect_api)
    assert done.returncode == 2 and "ltx2 rehearse: unknown stage(s) encode" in done.stderr
