"""The validate stage on the tiny model: T2V and I2V samples as .mp4, rows, Prefect artifacts, determinism."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import av
import numpy as np
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
from prefect.client.schemas.sorting import FlowRunSort

from flows.pipeline import pipeline
from storage.store import Store
from tests.flows.helpers import make_dataset, write_configs

ALL = ["probe", "filter", "bucket", "captions", "text-embeds", "latents", "train", "validate"]


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("validate-clips") / "videos")


@pytest.fixture
def project(tmp_path, clips, prefect_api, tiny) -> dict:
    data = shutil.copytree(clips, tmp_path / "videos")
    config, backend = write_configs(tmp_path, data)
    config.write_text(json.dumps(json.loads(config.read_text()) | {
        "output_dir": str(tmp_path / "output" / "run"), "lora_rank": 4, "max_train_steps": 2,
        "checkpointing_steps": 2, "validation_steps": 0, "mixed_precision": "no", "seed": 3,
        "validation_prompt": "a red square moving right", "validation_resolution": "64x64,96x64",
        "validation_num_video_frames": 9, "validation_num_inference_steps": 2, "validation_guidance": 3.0,
        "validation_using_datasets": True, "eval_dataset_id": "clips"}))
    return {"config": str(config), "databackend": str(backend), "storage": str(tmp_path / "store")}


def frames_of(path: str) -> tuple[np.ndarray, float]:
    with av.open(path) as c:
        stream = c.streams.video[0]
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(stream)]), float(stream.average_rate)


def test_validate_writes_t2v_and_i2v_videos_rows_and_artifacts_and_is_deterministic(project):
    reports = {(r["stage"], r["scope"]): r for r in pipeline(**project, stages=ALL)}
    assert reports[("validate", "run")]["counts"]["step"] == 2
    rows = Store.open(project["storage"]).read("validations").to_pylist()
    # one t2v prompt x 2 resolutions, two i2v eval clips x 2 resolutions
    assert sorted((r["mode"], r["width"], r["height"]) for r in rows) == sorted(
        [("t2v", 64, 64), ("t2v", 96, 64)] + [("i2v", 64, 64), ("i2v", 96, 64)] * 2)
    for r in rows:
        frames, fps = frames_of(r["video_path"])
        assert frames.shape == (9, r["height"], r["width"], 3) and fps == 25.0
        assert r["lora"] and r["step"] == 2 and Path(r["video_path"]).read_bytes() == r["video"]
    with get_client(sync_client=True) as client:  # the artifacts of this flow run (the API holds the session's)
        last = client.read_flow_runs(sort=FlowRunSort.START_TIME_DESC, limit=1)[0]
        found = client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(
            any_=[last.id])))
    assert sum(a.key.startswith("validation-run-") for a in found if a.key) == len(rows)

    from ltx2core.config.load import load_project
    from tasks.status import stage_status

    loaded = load_project(project["config"], project["databackend"], check_paths=False)
    status = {r["stage"]: r for r in stage_status(project["storage"], loaded.datasets[:1], loaded.config)}
    assert (status["validate"]["done"], status["validate"]["missing"]) == (len(rows), 0)

    first = {r["key"]: frames_of(r["video_path"])[0] for r in rows}
    again = {(r["stage"], r["scope"]): r for r in pipeline(**project, stages=["validate"], force=["validate"])}
    assert again[("validate", "run")]["done"] == len(rows)
    rows_again = Store.open(project["storage"]).read("validations").to_pylist()
    assert {r["key"] for r in rows_again} == set(first)  # same seed, checkpoint and settings: same keys ...
    diffs = {(r["mode"], r["width"]): float(np.abs(frames_of(r["video_path"])[0].astype(int) - first[r["key"]]).max())
             for r in rows_again}
    assert all(d == 0 for d in diffs.values()), diffs  # ... and the same video


def test_validating_a_missing_checkpoint_names_the_fix(project):
    pipeline(**project, stages=ALL[:-1])
    with pytest.raises(ValueError, match="no a checkpoint at step 7|no a checkpoint"):
        pipeline(**project, stages=["validate"], checkpoint=7)


def test_validation_during_training_and_a_base_model_sample(project):
    config = json.loads(Path(project["config"]).read_text())
    Path(project["config"]).write_text(json.dumps(config | {
        "validation_steps": 1, "validation_resolution": "64x64", "validation_using_datasets": False}))
    pipeline(**project, stages=ALL[:-1])  # no validate stage: the samples come from the training loop
    rows = Store.open(project["storage"]).read("validations", ["step", "lora", "mode"]).to_pylist()
    assert sorted((r["step"], r["lora"]) for r in rows) == [(1, True), (2, True)]

    Path(project["config"]).write_text(json.dumps(json.loads(Path(project["config"]).read_text())
                                                  | {"validation_base_model": True}))
    pipeline(**project, stages=["validate"], force=["validate"])
    rows = Store.open(project["storage"]).read("validations", ["step", "lora"]).to_pylist()
    assert (0, False) in {(r["step"], r["lora"]) for r in rows}
