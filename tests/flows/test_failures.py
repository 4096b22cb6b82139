"""Failures a user can act on: one block on the terminal (stage, cause, fix, where the traceback went), and
nothing already stored lost. The full disk is a real one: a small tmpfs under the store."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from flows.pipeline import pipeline
from storage.store import Store
from tests.flows.helpers import REPO, make_dataset, train_project

CACHE = ["probe", "filter", "bucket", "captions"]
TABLES = ["files", "videos", "samples", "captions", "text_embeds", "latents", "checkpoints"]
DISK_MIB = 24


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={DISK_MIB}m", "tmpfs", str(disk)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"mounting a tmpfs needs root: {mounted.stderr.strip()}")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=False)


def _fill(disk: Path) -> Path:
    """Everything the disk has left, in one file."""
    ballast = disk / "ballast"
    subprocess.run(["dd", "if=/dev/zero", f"of={ballast}", "bs=64k"], capture_output=True)
    return ballast


def _rows(storage: str) -> dict[str, list]:
    """Each table's rows, without what depends on where or when it ran."""
    store = Store.open(storage)
    volatile = {"created_at", "lora_path", "mtime_ns", "path", "source", "instance_data_dir", "video_path"}
    out = {}
    for table in TABLES:
        rows = [{k: _safetensors(v) if k == "lora" else v for k, v in r.items() if k not in volatile}
                for r in store.read(table).to_pylist()]
        out[table] = sorted(json.dumps(r, default=repr, sort_keys=True) for r in rows)
    return out


def _safetensors(data: bytes) -> dict:
    """A safetensors file's header and tensors: its header's key order varies from one writer process to
    the next (a hash map), so equal files can differ in bytes."""
    size = int.from_bytes(data[:8], "little")
    return {"header": json.loads(data[8:8 + size]), "tensors": data[8 + size:].hex()}


def ltx2_run(project: dict, *extra: str, api: str) -> subprocess.CompletedProcess:
    env = os.environ | {"PREFECT_API_URL": api, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "flows.cli", "run", "--config", project["config"], "--databackend",
                           project["databackend"], "--storage", project["storage"], *extra],
                          env=env, capture_output=True, text=True, timeout=600)


def test_a_full_disk_is_one_block_and_a_rerun_after_freeing_space_ends_as_a_clean_run(
    tmp_path: Path, small_disk: Path, prefect_api, tiny
) -> None:
    clips = make_dataset(tmp_path / "clips")
    clean = train_project(tmp_path / "clean", clips)
    pipeline(**clean)

    project = train_project(tmp_path / "full", clips) | {"storage": str(small_disk / "store")}
    pipeline(**project, stages=CACHE)
    before = _rows(project["storage"])
    ballast = _fill(small_disk)

    run = ltx2_run(project, api=prefect_api)
    assert run.returncode == 1
    said = run.stdout + run.stderr
    assert "Traceback" not in said
    block = run.stderr.strip().splitlines()  # stderr is the block and nothing else
    assert block[0].startswith("ltx2 run failed") and all(line.startswith("  ") for line in block[1:]), block
    assert "ltx2 run failed before any stage ran" in run.stderr  # the first write: the store's writer lease
    assert "cause: the disk is full" in run.stderr and "fix:   free space on that disk" in run.stderr
    log_file = Path(run.stderr.split("full traceback: ")[1].split(" and the flow run")[0])
    assert log_file.is_file() and "Traceback" in log_file.read_text()
    assert _rows(project["storage"]) | {"text_embeds": [], "latents": [], "checkpoints": []} == before

    ballast.unlink()
    pipeline(**project)
    after, reference = _rows(project["storage"]), _rows(clean["storage"])
    assert after == reference
    lora = "output/run/pytorch_lora_weights.safetensors"
    assert _safetensors((tmp_path / "full" / lora).read_bytes()) == _safetensors((tmp_path / "clean" / lora)
                                                                                  .read_bytes())


def test_a_store_this_user_may_not_write_is_one_block_naming_the_fix(tmp_path: Path, small_disk: Path, prefect_api,
                                                                      tiny) -> None:
    project = train_project(tmp_path, make_dataset(tmp_path / "clips")) | {"storage": str(small_disk / "store")}
    pipeline(**project, stages=CACHE)
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)  # as root, chmod would not stop us

    run = ltx2_run(project, api=prefect_api)
    assert run.returncode == 1 and "Traceback" not in run.stdout + run.stderr
    assert "cause: this user may not write" in run.stderr and "make it writable for this user" in run.stderr


def test_resuming_with_changed_settings_says_what_changed_and_how_to_start_again(tmp_path: Path, prefect_api,
                                                                                 tiny) -> None:
    project = train_project(tmp_path, make_dataset(tmp_path / "clips"), max_train_steps=2)
    pipeline(**project)
    config = json.loads(Path(project["config"]).read_text())
    Path(project["config"]).write_text(json.dumps(config | {"learning_rate": 0.01, "max_train_steps": 4}))

    run = ltx2_run(project, "--stages", "train", api=prefect_api)
    assert run.returncode == 1 and "Traceback" not in run.stdout + run.stderr
    assert "ltx2 run failed in stage train" in run.stderr
    assert "learning_rate: 0.001 -> 0.01" in run.stderr and "ltx2 run --force train" in run.stderr


def test_out_of_gpu_memory_in_training_names_what_to_lower_and_what_to_turn_on(tmp_path: Path) -> None:
    import torch

    from ltx2core.config.train import TrainConfig
    from tasks.failures import explain, mark_stage

    error = torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 11.48 GiB (GPU 0; 79.1 GiB total)")
    mark_stage(error, "train", "run")
    failure = explain(error, TrainConfig(musubi_blocks_to_swap=4, output_dir=tmp_path))
    assert failure.where() == "in stage train (run)"
    assert failure.cause.startswith("the GPU ran out of memory (OutOfMemoryError: CUDA out of memory.")
    for advice in ("--resolution 512 --num-frames 49", "musubi_blocks_to_swap: 16", "fp8-e4m3fn",
                   "now: batch 1, base_model_precision no_change, musubi_blocks_to_swap 4"):
        assert advice in failure.fix


def _session(sid: int) -> list[str]:
    """The command lines of the live processes in session `sid`."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[3]) == sid and fields[0] != "Z":  # session id; zombies are gone already
                found.append((stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode())
        except (OSError, IndexError):
            continue
    return found


def test_kill_9_of_a_run_leaves_no_process_of_it(tmp_path: Path, tiny) -> None:
    project = train_project(tmp_path, make_dataset(tmp_path / "clips"), max_train_steps=200)
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"} | {
        "PYTHONPATH": str(REPO), "PREFECT_HOME": str(tmp_path / "prefect")}  # a temporary API of its own
    run = subprocess.Popen([sys.executable, "-m", "flows.cli", "run", "--config", project["config"], "--databackend",
                            project["databackend"], "--storage", project["storage"]], env=env, cwd=tmp_path,
                           start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not any("uvicorn" in c for c in _session(run.pid)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert any("uvicorn" in c for c in _session(run.pid)), "the run never started its Prefect API"
    time.sleep(3)  # into the stages
    run.kill()
    run.wait()
    deadline = time.monotonic() + 30
    while _session(run.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _session(run.pid) == []


def test_a_second_run_on_the_same_store_or_output_dir_is_refused_naming_the_first(tmp_path: Path, prefect_api,
                                                                                  tiny) -> None:
    project = train_project(tmp_path, make_dataset(tmp_path / "clips"), max_train_steps=5000, checkpointing_steps=100)
    env = os.environ | {"PREFECT_API_URL": prefect_api, "PYTHONPATH": str(REPO)}
    first = subprocess.Popen([sys.executable, "-m", "flows.cli", "run", "--config", project["config"],
                              "--databackend", project["databackend"], "--storage", project["storage"]], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    holder = []
    while time.monotonic() < deadline and not holder:
        time.sleep(0.2)
        if Path(project["storage"]).is_dir():
            holder = Store.open(project["storage"]).read("leases").to_pylist()
    assert holder and holder[0]["pid"] == first.pid

    second = ltx2_run(project, api=prefect_api)  # the same store and output_dir
    assert second.returncode == 1 and "Traceback" not in second.stdout + second.stderr
    assert f"is being written by another run: flow run {holder[0]['flow_run_id']}, pid {first.pid}" in second.stderr
    while time.monotonic() < deadline and not list((tmp_path / "output" / "run").glob(".ltx2-writer.lock")):
        time.sleep(0.2)
    other_store = ltx2_run(project | {"storage": str(tmp_path / "other-store")}, "--stages", "train",
                           api=prefect_api)  # another store, the same output_dir
    assert other_store.returncode == 1 and f"pid {first.pid}" in other_store.stderr
    assert "output/run is being written by another run" in other_store.stderr

    assert first.poll() is None  # still training, undisturbed

    first.kill()  # dies holding both: the kernel drops the lock file's lock, the lease row stays
    first.wait()
    after = ltx2_run(project, "--stages", "probe", "--force", "probe", api=prefect_api)  # takes the lease over
    assert after.returncode == 0, after.stderr
    assert Store.open(project["storage"]).read("leases").num_rows == 0  # and released it
