"""`kill -9` in the middle of a stage loses at most a batch; the rerun ends with exactly the right rows."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from ltx2core.media.synth import make_many_clips
from storage.store import Store
from tests.flows.helpers import write_configs

N_FILES = 1500


def ltx2(*args: str, env: dict) -> list[str]:
    return [sys.executable, "-m", "flows.cli", *args]


def test_probe_killed_mid_stage_resumes_without_duplicates_or_losses(tmp_path, prefect_api):
    folder = tmp_path / "many"
    make_many_clips(folder, N_FILES)
    config, backend = write_configs(tmp_path, folder)
    store_uri = str(tmp_path / "store")
    env = os.environ | {"PREFECT_API_URL": prefect_api}
    cmd = [sys.executable, "-m", "flows.cli", "run", "--stages", "probe", "--config", str(config),
           "--databackend", str(backend), "--storage", store_uri]

    proc = subprocess.Popen(cmd, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    store = Store.open(store_uri)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if store.count("files") > 0:
            break
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = store.count("files")
    assert 0 < partial < N_FILES, f"kill landed outside the stage ({partial} rows)"

    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    files = store.read("files").to_pylist()
    assert len(files) == N_FILES == len({f["path"] for f in files})
    videos = store.read("videos").to_pylist()
    assert len(videos) == N_FILES == len({v["video_id"] for v in videos})
    assert all(v["error"] is None for v in videos)
