"""`ltx2 server` for real: a Prefect server, the deployments of deployments/prefect.yaml and a worker, driven by
`prefect deployment run` the way an operator would, then stopped with nothing left behind (loopback only)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from storage.store import Store
from tests.flows.helpers import (
    KEPT,
    LocalServer,
    descendants,
    make_dataset,
    stop_server,
    write_configs,
)

PREFECT = str(Path(sys.executable).with_name("prefect"))


def _deployment_run(server: LocalServer, **params) -> subprocess.CompletedProcess:
    args = [f"{k}={json.dumps(v)}" for k, v in params.items()]
    cmd = [PREFECT, "deployment", "run", "ltx2-pipeline/stages", *[a for p in args for a in ("--param", p)],
           "--watch", "--watch-interval", "1", "--watch-timeout", "300"]
    return subprocess.run(cmd, env=server.env, cwd=server.root, capture_output=True, text=True, timeout=400,
                          check=False)


def test_unknown_stage_is_rejected_before_any_work(server):
    storage = server.root / "never-written"
    done = _deployment_run(server, storage=str(storage), stages=["nope"])
    assert done.returncode != 0
    output = done.stdout + done.stderr
    assert "Error creating flow run" in output, output  # refused by the API: no flow run exists to do work
    assert "nope" in output and "stages" in output, output
    assert not storage.exists()


CACHE_STAGES = ["probe", "filter", "bucket", "captions", "text-embeds", "latents"]
DATA_TABLES = ["files", "videos", "samples", "captions", "text_embeds"]  # what the stages before latents write


def _flow_run_id(output: str) -> str:
    found = re.search(r"UUID: ([0-9a-f-]{36})", output)
    assert found, output
    return found.group(1)


def _wait_until_final(server: LocalServer, flow_run_id: str) -> str:
    api = server.api_url
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        state = httpx.get(f"{api}/flow_runs/{flow_run_id}").json()["state"]
        if state["type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
            return state["type"]
        time.sleep(1)
    pytest.fail(f"flow run {flow_run_id} did not finish in 300 s")


def _runs_of(store: Store, flow_run_id: str) -> list[tuple[str, str, int]]:
    """(stage, status, done) of every stage run recorded by one flow run, in order."""
    rows = sorted(store.read("stage_runs", where=f"flow_run_id = '{flow_run_id}'").to_pylist(),
                  key=lambda r: r["started_at"])
    return [(r["stage"], r["status"], r["done"]) for r in rows]


class BrokenVae:
    """The VAE's weights missing on this machine: the latents stage cannot proceed until they are back."""

    def __init__(self, model: Path) -> None:
        self.weights = model / "vae" / "diffusion_pytorch_model.safetensors"
        self.hidden = model / "vae.weights.hidden"

    def __enter__(self) -> None:
        self.weights.rename(self.hidden)

    def __exit__(self, *exc) -> None:
        self.hidden.rename(self.weights)


def test_a_run_failed_in_latents_is_retried_three_ways_recomputing_only_latents(server):
    """(a) Retry in the UI, (b) `prefect flow-run retry`, (c) the stage deployment with stages=latents: each
    redoes only the latents that are missing; the stages before it hold (no new rows, same table versions)."""
    from ltx2core.media.synth import write_clip
    from ltx2core.models.tiny import make_tiny_model

    root = server.root / "retry"
    model = make_tiny_model(root / "model")
    videos = make_dataset(root / "videos")
    config, backend = write_configs(root, videos)
    config.write_text(config.read_text().replace('"tiny"', json.dumps(str(model))))
    storage = root / "store"
    params = {"config": str(config), "databackend": str(backend), "storage": str(storage)}
    api = server.api_url

    def fail_in_latents(new_clip: str | None) -> tuple[str, dict]:
        if new_clip:  # new work for every stage, so a retry that recomputed them would show it
            seed = sum(map(ord, new_clip))  # distinct content per name: a byte-identical clip is no new video
            write_clip(videos / new_clip, width=96, height=64, num_frames=40, fps=25, seed=seed)
            (videos / new_clip).with_suffix(".txt").write_text(f"clip {new_clip}")
        with BrokenVae(model):
            failed = _deployment_run(server, **params, stages=CACHE_STAGES)
        assert failed.returncode != 0, failed.stdout
        run = _flow_run_id(failed.stdout)
        stages = _runs_of(Store.open(str(storage)), run)
        assert [s for s, status, _ in stages if status == "failed"] == ["latents"], stages
        assert {s for s, status, _ in stages if status == "completed"} == set(CACHE_STAGES) - {"latents"}
        logs = httpx.post(f"{api}/logs/filter", json={"logs": {"flow_run_id": {"any_": [run]}}}).json()
        failure = "\n".join(entry["message"] for entry in logs if "stage latents" in entry["message"])
        assert "vae is incomplete" in failure, failure
        assert "rebuild the tiny model with `ltx2 make-tiny-model" in failure, failure
        return run, Store.open(str(storage)).versions(DATA_TABLES)

    def only_latents_ran(store: Store, stages: list[tuple[str, str, int]], versions: dict, encoded: int) -> None:
        assert ("latents", "completed", encoded) in stages, stages
        assert all(done == 0 for stage, status, done in stages if stage != "latents" and status == "completed")
        assert store.versions(DATA_TABLES) == versions  # nothing before latents wrote a row
        kept = store.count("samples", where="kept")
        assert store.count("latents", where="error IS NULL") == kept
        assert len(set(store.keys("latents"))) == store.count("latents")

    # (a) the UI's Retry button: the request its code sends (ui/assets: retryFlowRun -> set_state AwaitingRetry)
    run, versions = fail_in_latents(None)
    retried = httpx.post(f"{api}/flow_runs/{run}/set_state", json={"state": {
        "type": "SCHEDULED", "name": "AwaitingRetry", "message": "Retry from the UI"}, "force": False})
    assert retried.status_code in (200, 201), retried.text
    assert _wait_until_final(server, run) == "COMPLETED"
    store = Store.open(str(storage))
    second_attempt = _runs_of(store, run)[len(CACHE_STAGES):]
    only_latents_ran(store, second_attempt, versions, encoded=len(KEPT))

    # (b) `prefect flow-run retry`
    run, versions = fail_in_latents("extra1.mp4")
    done = subprocess.run([PREFECT, "flow-run", "retry", run], env=server.env, cwd=server.root,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert _wait_until_final(server, run) == "COMPLETED"
    store = Store.open(str(storage))
    only_latents_ran(store, _runs_of(store, run)[len(CACHE_STAGES):], versions, encoded=1)

    # (c) the stage deployment, stages=latents: a new flow run that runs that stage alone
    _, versions = fail_in_latents("extra2.mp4")
    done = _deployment_run(server, **params, stages=["latents"])
    assert done.returncode == 0, done.stdout + done.stderr
    store = Store.open(str(storage))
    stages = _runs_of(store, _flow_run_id(done.stdout))
    assert stages == [("latents", "completed", 1)]
    only_latents_ran(store, stages, versions, encoded=1)


def test_stopping_leaves_no_process_behind(server):
    spawned = descendants(server.proc.pid)
    assert len(spawned) >= 2, "expected a server and a worker under `ltx2 server`"
    code, left = stop_server(server)
    assert code == 0, server.log.read_text(errors="replace")
    assert "stopping the worker and the server" in server.log.read_text(errors="replace")
    assert left == []
