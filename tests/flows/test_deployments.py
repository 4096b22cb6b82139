"""`ltx2 server` for real: a Prefect server, the deployments of deployments/prefect.yaml and a worker, driven by
`prefect deployment run` the way an operator would, then stopped with nothing left behind (loopback only)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from storage.store import Store
from tests.flows.helpers import CLIPS, KEPT, make_dataset, write_configs

REPO = Path(__file__).resolve().parents[2]
PREFECT = str(Path(sys.executable).with_name("prefect"))
READY = "Prefect UI:"
STARTUP_S = 240


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:  # it exited while we looked
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            tree.setdefault(ppid, []).append(int(entry.name))
    return tree


def _descendants(pid: int) -> set[int]:
    tree, found, todo = _children(), set(), [pid]
    while todo:
        for child in tree.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[dict]:
    root = tmp_path_factory.mktemp("server")
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env |= {"PREFECT_HOME": str(root / "prefect-home"), "PREFECT_WORKER_QUERY_SECONDS": "2",
            "PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL": "WARNING"}
    log = root / "serve.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "flows.cli", "server", "--port", str(port)], cwd=REPO, env=env,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + STARTUP_S
    while READY not in log.read_text(errors="replace"):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"`ltx2 server` did not get ready (exit {proc.poll()}):\n{log.read_text(errors='replace')}")
        time.sleep(0.5)
    env["PREFECT_API_URL"] = f"http://127.0.0.1:{port}/api"
    yield {"proc": proc, "env": env, "root": root, "log": log, "port": port}
    if proc.poll() is None:  # a test failed before stopping it
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(60)


def _deployment_run(server: dict, **params) -> subprocess.CompletedProcess:
    args = [f"{k}={json.dumps(v)}" for k, v in params.items()]
    cmd = [PREFECT, "deployment", "run", "ltx2-pipeline/stages", *[a for p in args for a in ("--param", p)],
           "--watch", "--watch-interval", "1", "--watch-timeout", "300"]
    return subprocess.run(cmd, env=server["env"], cwd=server["root"], capture_output=True, text=True, timeout=400)


def test_deployment_run_executes_chosen_stages_on_the_worker(server):
    data = make_dataset(server["root"] / "videos")
    config, backend = write_configs(server["root"], data)
    storage = server["root"] / "store"
    done = _deployment_run(server, config=str(config), databackend=str(backend), storage=str(storage),
                           stages=["probe", "filter", "bucket", "captions"])
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Completed" in done.stdout

    store = Store.open(str(storage))
    samples = {Path(r["path"]).name: r for r in store.read("samples").to_pylist()}
    assert set(samples) == set(CLIPS)
    assert {name for name, r in samples.items() if r["kept"]} == KEPT
    captions = store.column_map("captions", "caption")
    assert {captions[samples[n]["sample_id"]] for n in KEPT} == {"clip beach", "clip portrait", "clip ntsc"}


def test_unknown_stage_is_rejected_before_any_work(server):
    storage = server["root"] / "never-written"
    done = _deployment_run(server, storage=str(storage), stages=["nope"])
    assert done.returncode != 0
    output = done.stdout + done.stderr
    assert "Error creating flow run" in output, output  # refused by the API: no flow run exists to do work
    assert "nope" in output and "stages" in output, output
    assert not storage.exists()


def test_stopping_leaves_no_process_behind(server):
    proc = server["proc"]
    spawned = _descendants(proc.pid)
    assert len(spawned) >= 2, "expected a server and a worker under `ltx2 server`"
    os.kill(proc.pid, signal.SIGTERM)
    assert proc.wait(90) == 0, server["log"].read_text(errors="replace")
    assert "stopping the worker and the server" in server["log"].read_text(errors="replace")
    assert [p for p in spawned if _alive(p)] == []
    assert [p for p in spawned if _group_alive(p)] == []
