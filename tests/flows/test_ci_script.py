"""deployments/ci-run.sh, as the README's CI snippet runs it: server up, one deployment run watched, all stopped."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

from storage.store import Store
from tests.flows.helpers import KEPT, REPO, free_port, make_dataset, write_configs


def test_ci_script_runs_a_deployment_and_leaves_nothing_running(tmp_path):
    data = make_dataset(tmp_path / "videos")
    config, backend = write_configs(tmp_path, data)
    storage = tmp_path / "store"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "PREFECT_HOME")}
    env |= {"PORT": str(port), "LTX2_BIN": str(Path(sys.executable).parent), "PREFECT_WORKER_QUERY_SECONDS": "2"}
    params = {"config": str(config), "databackend": str(backend), "storage": str(storage),
              "stages": ["probe", "filter", "bucket"]}
    args = [a for k, v in params.items() for a in ("--param", f"{k}={json.dumps(v)}")]
    done = subprocess.run(["deployments/ci-run.sh", "ltx2-pipeline/stages", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Completed" in done.stdout
    kept = Store.open(str(storage)).read("samples", where="kept").to_pylist()
    assert {Path(r["path"]).name for r in kept} == KEPT

    with socket.socket() as s:  # the server is gone with the script
        assert s.connect_ex(("127.0.0.1", port)) != 0
