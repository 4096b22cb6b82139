"""deployments/ci-run.sh, as the README's CI snippet runs it: server up (with an auth string made for the run), one
deployment run watched, all stopped.

The script runs from the start of the session (tests/flows/conftest.py, `ci_run`): it waits for nothing else."""

from __future__ import annotations

import re
from pathlib import Path

from storage.store import Store
from tests.flows.helpers import KEPT, CiRun


def test_ci_script_runs_a_deployment_and_leaves_nothing_running(ci_run: CiRun):
    done, still_listening = ci_run.outcome.result(timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Completed" in done.stdout
    kept = Store.open(str(ci_run.storage)).read("samples", where="kept").to_pylist()
    assert {Path(r["path"]).name for r in kept} == KEPT
    assert not still_listening  # the server is gone with the script
    log = (ci_run.home / "ltx2-server.log").read_text()
    assert "API auth on (PREFECT_SERVER_API_AUTH_STRING)" in log, log  # a string made for the run ...
    assert not re.search(r"ci:[\w-]{20,}", log + done.stdout + done.stderr)  # ... and never printed
