"""`kill -9` in the middle of a stage loses at most a batch; the rerun ends with exactly the right rows."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from flows.pipeline import pipeline
from ltx2core.media.synth import make_many_clips
from storage.store import Store
from tests.flows.helpers import write_configs

# stage -> (files, stages that must have run before, table the stage writes)
CASES = {
    "probe": (1500, [], "files"),
    "text-embeds": (1500, ["probe", "filter", "bucket", "captions"], "text_embeds"),
    "latents": (150, ["probe", "filter", "bucket", "captions"], "latents"),
}


@pytest.mark.parametrize("stage", list(CASES))
def test_a_stage_killed_mid_way_resumes_without_duplicates_or_losses(stage, tmp_path, prefect_api, tiny):
    n_files, before, table = CASES[stage]
    folder = tmp_path / "many"
    make_many_clips(folder, n_files)
    # filename captions: every clip has its own caption, so every clip needs its own text embedding
    config, backend = write_configs(tmp_path, folder, block={"caption_strategy": "filename"}, num_frames=9,
                                    min_frames=9)
    store_uri = str(tmp_path / "store")
    if before:
        pipeline(config=str(config), databackend=str(backend), storage=store_uri, stages=before)
    expected = rows_wanted(Store.open(store_uri), stage, n_files)
    assert expected > 100
    env = os.environ | {"PREFECT_API_URL": prefect_api}
    cmd = [sys.executable, "-m", "flows.cli", "run", "--stages", stage, "--config", str(config),
           "--databackend", str(backend), "--storage", store_uri]

    proc = subprocess.Popen(cmd, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    store = Store.open(store_uri)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and proc.poll() is None and store.count(table) == 0:
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = store.count(table)
    assert 0 < partial < expected, f"the kill landed outside the stage ({partial} rows)"

    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    keys = store.read(table, [store_key(table)]).column(0).to_pylist()
    assert len(keys) == expected == len(set(keys))
    if table == "latents":
        assert store.count("latents", where="error IS NOT NULL") == 0
        assert store.count("latents", where="latents IS NULL") == 0  # no row without its tensor


def rows_wanted(store: Store, stage: str, n_files: int) -> int:
    """What the stage must end with, read from the tables the earlier stages wrote."""
    if stage == "probe":
        return n_files
    kept = {r["sample_id"] for r in store.read("samples", ["sample_id"], where="kept").to_pylist()}
    if stage == "latents":
        return len(kept)  # every clip is distinct, so one latent per kept sample
    captions = store.read("captions", ["sample_id", "caption"], where="caption IS NOT NULL").to_pylist()
    return len({r["caption"] for r in captions if r["sample_id"] in kept})


def store_key(table: str) -> str:
    return "path" if table == "files" else "key"
