"""The `ltx2` command as a user runs it: summary, status, and bad input without a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from prefect.client.orchestration import get_client

from tests.flows.helpers import REPO, make_dataset, write_configs


def ltx2(*args: str, api: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = os.environ | {"PREFECT_API_URL": api, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "flows.cli", *args], env=env, capture_output=True, text=True,
                          timeout=300, cwd=cwd)


def test_run_prints_a_summary_and_status_reports_each_stage(tmp_path, prefect_api, tiny):  # tiny: LTX2_HOME in tmp
    data = make_dataset(tmp_path / "videos")
    config, backend = write_configs(tmp_path, data)
    common = ["--config", str(config), "--databackend", str(backend), "--storage", str(tmp_path / "store")]
    run = ltx2("run", *common, api=prefect_api)
    assert run.returncode == 0, run.stderr
    assert "shorter than min_frames: 1" in run.stdout and "results in" in run.stdout

    with ThreadPoolExecutor(2) as pool:  # a status and a run that changes nothing it reads go side by side
        with get_client(sync_client=True) as client:
            runs_before = len(client.read_flow_runs())
            status = pool.submit(ltx2, "status", "--json", *common, api=prefect_api)
            again = ltx2("run", *common, api=prefect_api)
            runs_after = len(client.read_flow_runs())
        status = status.result()
        assert status.returncode == 0, status.stderr
        rows = {(r["stage"], r["scope"]): r for r in json.loads(status.stdout)}
        assert rows[("probe", "*")] | {"last_run": None} == {"stage": "probe", "scope": "*", "done": 6, "missing": 0,
                                                             "rejected": 0, "failed": 0, "last_run": None,
                                                             "last_error": None}
        assert (rows[("filter", "clips")]["done"], rows[("filter", "clips")]["rejected"]) == (5, 2)
        assert rows[("filter", "clips")]["failed"] == 0  # too short or too long is a verdict, not a failure
        assert rows[("captions", "clips")]["missing"] == 0 and rows[("captions", "clips")]["done"] == 3
        assert rows[("captions", "clips")]["last_run"].startswith("completed")

        # Nothing pending: the rerun reports so without creating a flow run.
        assert again.returncode == 0, again.stderr
        assert "up to date: nothing to run" in again.stdout
        assert runs_after == runs_before

        (data / "new.mp4").write_bytes((data / "beach.mp4").read_bytes() + b"\0")  # new bytes, not yet probed
        after = pool.submit(ltx2, "status", "--json", *common, api=prefect_api)  # the filter stage reads no file
        forced = ltx2("run", *common, "--stages", "filter", "--force", "filter", api=prefect_api)
        assert forced.returncode == 0 and "filter" in forced.stdout and "nothing to run" not in forced.stdout
        after = {(r["stage"], r["scope"]): r for r in json.loads(after.result().stdout)}
        assert after[("probe", "*")]["missing"] == 1


def test_a_config_error_is_a_message_naming_file_and_fix_not_a_traceback(tmp_path, prefect_api):
    data = make_dataset(tmp_path / "videos")
    config, backend = write_configs(tmp_path, data, num_frames=61, min_frames=61)
    run = ltx2("run", "--config", str(config), "--databackend", str(backend), "--storage", str(tmp_path / "s"),
               api=prefect_api)
    assert run.returncode == 2
    assert "Traceback" not in run.stderr
    assert str(backend) in run.stderr and "use 57 or 65" in run.stderr
    assert not (tmp_path / "s").exists()  # nothing was started


def test_the_cli_says_what_it_does(tmp_path, prefect_api, tiny):
    data = make_dataset(tmp_path / "videos")
    (data / "notes.mp4").write_text("meeting notes, not a video\n")
    config, backend = write_configs(tmp_path, data)
    # A SimpleTuner config names its datasets file (beside it here) and has a typo: no --databackend given.
    config.write_text(json.dumps(json.loads(config.read_text()) | {"data_backend_config": backend.name,
                                                                   "lora_rnak": 8}))
    store = str(tmp_path / "store")
    run = ltx2("run", "--config", str(config), "--storage", store, "--stages", "probe,filter", api=prefect_api)
    assert run.returncode == 0, run.stderr
    said = run.stdout + run.stderr
    assert said.count("lora_rnak") == 1 and "did you mean lora_rank?" in said  # one warning, once
    assert "3 kept" in run.stdout  # the config's datasets file was used

    idle = ltx2("run", "--config", str(config), "--storage", store, "--stages", "probe", "--force", "filter",
                api=prefect_api)
    assert idle.returncode == 2 and "--force filter" in idle.stderr and "Traceback" not in idle.stderr

    elsewhere = tmp_path / "elsewhere"  # no config/config.json here: the store alone answers
    elsewhere.mkdir()
    status = ltx2("status", "--json", "--storage", store, api=prefect_api, cwd=elsewhere)
    assert status.returncode == 0, status.stderr
    rows = {(r["stage"], r["scope"]): r for r in json.loads(status.stdout)}
    assert rows[("filter", "clips")] | {"last_run": None} == {
        "stage": "filter", "scope": "clips", "done": 6, "missing": None, "rejected": 2, "failed": 1,
        "last_run": None, "last_error": None}
    failed = json.loads(ltx2("status", "--failed", "--json", "--storage", store, api=prefect_api).stdout)
    assert sorted((f["stage"], f["kind"], Path(f["path"]).name) for f in failed) == [
        ("filter", "rejected", "fast.mp4"), ("filter", "rejected", "long.webm"), ("probe", "failed", "notes.mp4")]
    assert all(f["reason"] for f in failed)

    missing = ltx2("status", "--storage", str(tmp_path / "no-such-store"), api=prefect_api, cwd=elsewhere)
    assert missing.returncode == 2 and "no store at" in missing.stderr
    assert not (tmp_path / "no-such-store").exists()

    # `ltx2 status --json | head`: the reader leaves before the output is written
    env = os.environ | {"PREFECT_API_URL": prefect_api, "PYTHONPATH": str(REPO)}
    reader_gone = subprocess.Popen([sys.executable, "-m", "flows.cli", "status", "--json", "--storage", store],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=elsewhere)
    reader_gone.stdout.close()
    assert reader_gone.wait(120) == 0 and b"Traceback" not in reader_gone.stderr.read()

    version = ltx2("--version", api=prefect_api)
    assert version.returncode == 0 and version.stdout.startswith("ltx2 ")
