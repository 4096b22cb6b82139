"""`kill -9` in the middle of a stage loses at most a batch; the rerun ends with exactly the right rows.

Each case is its own `ltx2 run` process on its own clips and store; the three run side by side (most of a
process's time is its imports, on one core) and each test checks its own case."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pytest

from flows.pipeline import pipeline
from ltx2core.media.synth import make_many_clips
from storage.store import Store
from tests.flows.helpers import write_configs

# stage -> (files, stages that must have run before, table the stage writes)
CASES = {
    "probe": (2500, [], "files"),  # commits every 1024 files: the kill lands between two commits
    "text-embeds": (1500, ["probe", "filter", "bucket", "captions"], "text_embeds"),
    "latents": (150, ["probe", "filter", "bucket", "captions"], "latents"),
}


@dataclass
class Case:
    store_uri: str
    table: str
    expected: int  # rows the stage must end with
    cmd: list[str]
    proc: subprocess.Popen | None = None
    partial: int | None = None  # rows when the first run was killed
    rerun: subprocess.CompletedProcess | None = None


@pytest.fixture(scope="module")
def killed_and_rerun(tmp_path_factory, prefect_api, tiny) -> dict[str, Case]:
    """Every case: start `ltx2 run --stages STAGE`, SIGKILL its process group once the stage's first rows are
    stored, then run the same command again to the end."""
    env = os.environ | {"PREFECT_API_URL": prefect_api}
    cases: dict[str, Case] = {}
    for stage, (n_files, before, table) in CASES.items():
        root = tmp_path_factory.mktemp(f"resume-{stage}")
        folder = root / "many"
        make_many_clips(folder, n_files)
        # filename captions: every clip has its own caption, so every clip needs its own text embedding
        config, backend = write_configs(root, folder, block={"caption_strategy": "filename"}, num_frames=9,
                                        min_frames=9)
        store_uri = str(root / "store")
        if before:
            pipeline(config=str(config), databackend=str(backend), storage=store_uri, stages=before)
        cmd = [sys.executable, "-m", "flows.cli", "run", "--stages", stage, "--config", str(config),
               "--databackend", str(backend), "--storage", store_uri]
        case = cases[stage] = Case(store_uri, table, rows_wanted(Store.open(store_uri), stage, n_files), cmd)
        # started now: it imports while the next case gets ready
        case.proc = subprocess.Popen(cmd, env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)

    stores = {stage: Store.open(case.store_uri) for stage, case in cases.items()}
    deadline = time.monotonic() + 180
    running = dict(cases)
    while running:
        for stage, case in list(running.items()):
            if time.monotonic() > deadline or case.proc.poll() is not None or stores[stage].count(case.table) > 0:
                os.killpg(case.proc.pid, signal.SIGKILL)
                case.proc.wait()
                case.partial = stores[stage].count(case.table)
                del running[stage]
        time.sleep(0.02)

    with ThreadPoolExecutor(len(cases)) as pool:
        reruns = {stage: pool.submit(subprocess.run, case.cmd, env=env, capture_output=True, text=True, timeout=600)
                  for stage, case in cases.items()}
    for stage, rerun in reruns.items():
        cases[stage].rerun = rerun.result()
    return cases


@pytest.mark.parametrize("stage", list(CASES))
def test_a_stage_killed_mid_way_resumes_without_duplicates_or_losses(stage, killed_and_rerun):
    case = killed_and_rerun[stage]
    assert case.expected > 100
    assert 0 < case.partial < case.expected, f"the kill landed outside the stage ({case.partial} rows)"
    assert case.rerun.returncode == 0, case.rerun.stderr
    store = Store.open(case.store_uri)
    keys = store.read(case.table, [store_key(case.table)]).column(0).to_pylist()
    assert len(keys) == case.expected == len(set(keys))
    if case.table == "latents":
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
