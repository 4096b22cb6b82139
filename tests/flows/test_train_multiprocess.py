"""The train stage with num_processes 2: torchrun with two gloo ranks on the CPU, through the real flow (data
parallel, and FSDP2 with validation during training)."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from safetensors.torch import load_file

from flows.pipeline import pipeline
from storage.store import Store
from tests.flows.helpers import make_dataset, train_project

STAGES = ["probe", "filter", "bucket", "captions", "text-embeds", "latents", "train"]


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("multiprocess-clips") / "videos")


def project(root: Path, clips: Path, **train) -> dict:
    return train_project(root, clips, **{"num_processes": 2, "validation_steps": 0} | train)


def run(p: dict) -> dict:
    return {(r["stage"], r["scope"]): r for r in pipeline(**p, stages=STAGES)}


def test_two_processes_train_and_rank_0_alone_writes_the_lora_and_each_checkpoint_row(tmp_path, clips, prefect_api,
                                                                                       tiny):
    p = project(tmp_path, clips)
    reports = run(p)
    assert reports[("train", "run")]["done"] == 4
    store = Store.open(p["storage"])
    rows = store.read("checkpoints").to_pylist()
    assert sorted(r["step"] for r in rows) == [2, 4] and all(r["run_id"] == "run" for r in rows)
    out = tmp_path / "output" / "run"
    final = load_file(out / "pytorch_lora_weights.safetensors")
    assert any(t.abs().sum() > 0 for k, t in final.items() if "lora_B" in k)  # it trained
    assert load_file(out / "lora_comfyui.safetensors")
    with (out / "loss.csv").open() as handle:
        assert [int(float(row["step"])) for row in csv.DictReader(handle)] == [1, 2, 3, 4]  # one writer
    assert (out / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # The ranks resume the checkpoint and refuse other settings: the stage fails with that rank's error.
    p = project(tmp_path, clips, max_train_steps=6, learning_rate=5e-4)
    with pytest.raises(Exception, match=r"(?s)training failed on rank [01]: CheckpointMismatch: .*learning_rate: "
                                        r"0\.001 -> 0\.0005"):
        run(p)
    assert store.count("checkpoints") == 2


def test_fsdp_ranks_sample_together_and_rank_0_alone_writes_each_validation(tmp_path, clips, prefect_api, tiny):
    p = project(tmp_path, clips, fsdp_enable=True, validation_steps=2, validation_prompt="a red square moving right",
                validation_resolution="64x64", validation_num_video_frames=9, validation_num_inference_steps=2)
    reports = run(p)
    assert reports[("train", "run")]["done"] == 4
    rows = Store.open(p["storage"]).read("validations", ["step", "lora", "mode", "video_path"]).to_pylist()
    assert sorted((r["step"], r["mode"], r["lora"]) for r in rows) == [(2, "t2v", True), (4, "t2v", True)]
    assert all(Path(r["video_path"]).stat().st_size > 0 for r in rows)
    assert len(list((tmp_path / "output" / "run" / "validation").glob("*.mp4"))) == 2  # no second writer
