"""`ltx2 server` for real: a Prefect server, the deployments of deployments/prefect.yaml and a worker, driven by
`prefect deployment run` the way an operator would, then stopped with nothing left behind (loopback only)."""

from __future__ import annotations

import base64
import json
import re
import stat
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from flows.api_auth import AUTH_FILE
from flows.pipeline import pipeline
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


def test_beyond_loopback_the_api_answers_only_requests_with_the_auth_string(server):
    """The session's server listens beyond loopback (tests/flows/helpers.py, beyond_loopback): every API request
    without its string is refused with 401; the string comes from the file `ltx2 server` names, mode 600."""
    log = server.log.read_text(errors="replace")
    auth_file = Path(server.base_env["PREFECT_HOME"]) / AUTH_FILE
    assert f"API auth on: clients set PREFECT_API_AUTH_STRING to the string in {auth_file}" in log, log
    assert server.auth and server.auth not in log  # where to find it is printed, never the string
    assert stat.S_IMODE(auth_file.stat().st_mode) == 0o600
    deployments = server.http.post("/deployments/filter", json={}).json()
    assert {d["name"] for d in deployments} >= {"pipeline", "stages"}
    stages = next(d for d in deployments if d["name"] == "stages")
    runs_before = server.http.post("/flow_runs/count", json={}).json()

    create = f"/deployments/{stages['id']}/create_flow_run"
    for headers in ({}, {"Authorization": "Basic " + base64.b64encode(b"ltx2:wrong").decode()},
                    {"Authorization": "Bearer " + server.auth}):
        with httpx.Client(base_url=server.api_url, headers=headers, timeout=60) as anyone:
            assert anyone.post("/deployments/filter", json={}).status_code == 401
            assert anyone.get(f"/deployments/{stages['id']}").status_code == 401
            assert anyone.post(create, json={"parameters": {"stages": ["probe"]}}).status_code == 401
            assert anyone.get("/health").status_code == 200  # health checks stay open
    # The prefect CLI without the string is refused too; with it (server.env) it works (every test here).
    without = {k: v for k, v in server.env.items() if k != "PREFECT_API_AUTH_STRING"}
    done = subprocess.run([PREFECT, "deployment", "run", "ltx2-pipeline/stages"], env=without, cwd=server.root,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode != 0
    assert server.http.post("/flow_runs/count", json={}).json() == runs_before


CACHE_STAGES = ["probe", "filter", "bucket", "captions", "text-embeds", "latents"]
DATA_TABLES = ["files", "videos", "samples", "captions", "text_embeds"]  # what the stages before latents write
WAYS = ("ui", "cli", "deployment")  # the three ways to retry, in the order of the docstring below


def _flow_run_id(output: str) -> str:
    found = re.search(r"UUID: ([0-9a-f-]{36})", output)
    assert found, output
    return found.group(1)


def _wait_until_final(server: LocalServer, flow_run_id: str) -> str:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        state = server.http.get(f"/flow_runs/{flow_run_id}").json()["state"]
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


def test_a_run_failed_in_latents_is_retried_three_ways_recomputing_only_latents(server, prefect_api):
    """(a) Retry in the UI, (b) `prefect flow-run retry`, (c) the stage deployment with stages=latents: each
    redoes only the latents that are missing; the stages before it hold (no new rows, same table versions).

    The three ways run side by side (each flow run is a process of the worker), each on its own dataset and store:
    (a) from an empty store, (b) and (c) from a complete cache plus one new clip."""
    from ltx2core.media.synth import write_clip
    from ltx2core.models.tiny import make_tiny_model

    root = server.root / "retry"
    model = make_tiny_model(root / "model")
    params: dict[str, dict] = {}
    for way in WAYS:
        videos = make_dataset(root / way / "videos")
        config, backend = write_configs(root / way, videos)
        config.write_text(config.read_text().replace('"tiny"', json.dumps(str(model))))
        params[way] = {"config": str(config), "databackend": str(backend), "storage": str(root / way / "store")}
        if way != "ui":  # new work for every stage after a complete cache, so a retry that recomputed them would show
            pipeline(**params[way], stages=CACHE_STAGES)  # in this process, through the session's other Prefect API
            new_clip = videos / f"extra-{way}.mp4"
            seed = sum(map(ord, new_clip.name))  # distinct content per name: a byte-identical clip is no new video
            write_clip(new_clip, width=96, height=64, num_frames=40, fps=25, seed=seed)
            new_clip.with_suffix(".txt").write_text(f"clip {new_clip.name}")

    def failed_in_latents(way: str, failed: subprocess.CompletedProcess) -> tuple[str, dict]:
        assert failed.returncode != 0, failed.stdout
        run = _flow_run_id(failed.stdout)
        storage = params[way]["storage"]
        stages = _runs_of(Store.open(storage), run)
        assert [s for s, status, _ in stages if status == "failed"] == ["latents"], stages
        assert {s for s, status, _ in stages if status == "completed"} == set(CACHE_STAGES) - {"latents"}
        logs = server.http.post("/logs/filter", json={"logs": {"flow_run_id": {"any_": [run]}}}).json()
        failure = "\n".join(entry["message"] for entry in logs if "stage latents" in entry["message"])
        assert "vae is incomplete" in failure, failure
        assert "rebuild the tiny model with `ltx2 make-tiny-model" in failure, failure
        return run, Store.open(storage).versions(DATA_TABLES)

    def only_latents_ran(store: Store, stages: list[tuple[str, str, int]], versions: dict, encoded: int) -> None:
        assert ("latents", "completed", encoded) in stages, stages
        assert all(done == 0 for stage, status, done in stages if stage != "latents" and status == "completed")
        assert store.versions(DATA_TABLES) == versions  # nothing before latents wrote a row
        kept = store.count("samples", where="kept")
        assert store.count("latents", where="error IS NULL") == kept
        assert len(set(store.keys("latents"))) == store.count("latents")

    with ThreadPoolExecutor(len(WAYS)) as pool:
        with BrokenVae(model):
            failing = {way: pool.submit(_deployment_run, server, **params[way], stages=CACHE_STAGES) for way in WAYS}
            failed = {way: future.result() for way, future in failing.items()}
        (ui_run, ui_versions), (cli_run, cli_versions), (_, deployment_versions) = [
            failed_in_latents(way, failed[way]) for way in WAYS]

        def retry_in_the_ui() -> tuple[httpx.Response, str]:
            # the request the UI's Retry button sends (ui/assets: retryFlowRun -> set_state AwaitingRetry)
            retried = server.http.post(f"/flow_runs/{ui_run}/set_state", json={"state": {
                "type": "SCHEDULED", "name": "AwaitingRetry", "message": "Retry from the UI"}, "force": False})
            return retried, _wait_until_final(server, ui_run) if retried.status_code in (200, 201) else ""

        def retry_with_the_cli() -> tuple[subprocess.CompletedProcess, str]:
            done = subprocess.run([PREFECT, "flow-run", "retry", cli_run], env=server.env, cwd=server.root,
                                  capture_output=True, text=True, timeout=120, check=False)
            return done, _wait_until_final(server, cli_run) if done.returncode == 0 else ""

        ui = pool.submit(retry_in_the_ui)
        cli = pool.submit(retry_with_the_cli)
        deployment = pool.submit(_deployment_run, server, **params["deployment"], stages=["latents"])

    # (a) the UI's Retry button
    retried, final = ui.result()
    assert retried.status_code in (200, 201), retried.text
    assert final == "COMPLETED"
    store = Store.open(params["ui"]["storage"])
    second_attempt = _runs_of(store, ui_run)[len(CACHE_STAGES):]
    only_latents_ran(store, second_attempt, ui_versions, encoded=len(KEPT))

    # (b) `prefect flow-run retry`
    done, final = cli.result()
    assert done.returncode == 0, done.stdout + done.stderr
    assert final == "COMPLETED"
    store = Store.open(params["cli"]["storage"])
    only_latents_ran(store, _runs_of(store, cli_run)[len(CACHE_STAGES):], cli_versions, encoded=1)

    # (c) the stage deployment, stages=latents: a new flow run that runs that stage alone
    done = deployment.result()
    assert done.returncode == 0, done.stdout + done.stderr
    store = Store.open(params["deployment"]["storage"])
    stages = _runs_of(store, _flow_run_id(done.stdout))
    assert stages == [("latents", "completed", 1)]
    only_latents_ran(store, stages, deployment_versions, encoded=1)


def test_stopping_leaves_no_process_behind(server):
    spawned = descendants(server.proc.pid)
    assert len(spawned) >= 2, "expected a server and a worker under `ltx2 server`"
    code, left = stop_server(server)
    assert code == 0, server.log.read_text(errors="replace")
    assert "stopping the worker and the server" in server.log.read_text(errors="replace")
    assert left == []
