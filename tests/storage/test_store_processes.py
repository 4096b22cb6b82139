"""Store under real processes: a writer killed with SIGKILL mid-run, and concurrent writers.

The writers are `tests/storage/writer.py` run as child processes on a Lance database in tmp_path.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import lancedb
import pytest
from writer import file_row

from storage import Store

REPO = Path(__file__).resolve().parents[2]
WRITER = Path(__file__).with_name("writer.py")
BATCH = 25


def start_writer(uri: str, first: int, stop: int, go_file: Path | None = None,
                 merge_batch_bytes: int | None = None) -> subprocess.Popen[str]:
    args = [sys.executable, str(WRITER), uri, str(first), str(stop), str(BATCH)] + ([str(go_file)] if go_file else [])
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    if merge_batch_bytes is not None:
        env["MERGE_BATCH_BYTES"] = str(merge_batch_bytes)
    return subprocess.Popen(args, env=env, stdout=subprocess.PIPE, text=True)


def stored_paths(uri: str) -> list[str]:
    """Every key row as Lance stores it, duplicates included (a fresh connection, no Store logic)."""
    return lancedb.connect(uri).open_table("files").to_arrow().column("path").to_pylist()


@pytest.mark.parametrize("merge_batch_bytes", [None, 1], ids=["one-batch", "row-a-batch"])
def test_writer_killed_mid_run_leaves_whole_batches_and_resumes(tmp_path: Path, merge_batch_bytes: int | None) -> None:
    uri = str(tmp_path / "db")
    total = 100_000  # far more than it can write before the kill
    child = start_writer(uri, 0, total, merge_batch_bytes=merge_batch_bytes)
    assert child.stdout is not None
    for _ in range(4):  # let a few commits land, then kill wherever it is
        assert child.stdout.readline().startswith("committed"), "writer died before its first commits"
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)

    paths = stored_paths(uri)
    assert len(paths) >= 4 * BATCH and len(paths) % BATCH == 0
    assert len(set(paths)) == len(paths)
    store = Store.open(uri)
    done = store.keys("files")
    expected = {file_row(i)["path"]: i for i in range(len(paths))}
    assert done == set(expected)  # batches land in order, whole

    # Resume the way a stage does: compute only the missing keys, in batches.
    resume_to = len(paths) + 3 * BATCH
    missing = [file_row(i) for i in range(resume_to) if file_row(i)["path"] not in done]
    for start in range(0, len(missing), BATCH):
        store.upsert("files", missing[start : start + BATCH])
    paths = stored_paths(uri)
    assert sorted(paths) == sorted(file_row(i)["path"] for i in range(resume_to))
    assert store.column_map("files", "size") == {file_row(i)["path"]: 1000 + i for i in range(resume_to)}


# The store's own batches (these small rows: one a merge), and a row a batch: a merge whose source is a stream of
# batches, as the text-embeds stage's are, must be as atomic and as safe against a concurrent writer.
@pytest.mark.parametrize("merge_batch_bytes", [None, 1], ids=["one-batch", "row-a-batch"])
def test_concurrent_writers_store_each_row_once(tmp_path: Path, merge_batch_bytes: int | None) -> None:
    uri = str(tmp_path / "db")
    go = tmp_path / "go"
    # Two writers insert the same new keys at the same moment (without the table's primary key
    # declaration that left 125-250 duplicated rows, measured); a third writes disjoint keys.
    # All three also race to create the table.
    ranges = [(0, 300), (0, 300), (300, 600)]
    writers = [start_writer(uri, first, stop, go, merge_batch_bytes) for first, stop in ranges]
    for writer in writers:
        assert writer.stdout is not None and writer.stdout.readline().strip() == "ready"
    go.touch()
    for writer in writers:
        writer.communicate(timeout=120)
        assert writer.returncode == 0

    counts = Counter(stored_paths(uri))
    assert set(counts) == {file_row(i)["path"] for i in range(600)}
    assert max(counts.values()) == 1
