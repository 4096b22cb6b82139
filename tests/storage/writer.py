"""Child process for the multi-process storage tests: upserts `files` rows in batches.

    python tests/storage/writer.py URI FIRST STOP BATCH [GO_FILE]

Writes rows FIRST..STOP-1 (keys from `file_row`), one upsert per BATCH rows, printing
"committed <n>" after each commit. With GO_FILE it prints "ready" once the store is open and
waits for that file to exist, so several writers start their commits together. With MERGE_BATCH_BYTES in its
environment, each merge's source is streamed to Lance in batches of that many bytes (1: a row a batch).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import storage.store
from storage import Store


def file_row(i: int) -> dict[str, object]:
    # A quote and a backslash in every key: paths are user data.
    return {"path": f"/data/it's\\clip_{i:06d}.mp4", "size": 1000 + i, "mtime_ns": 7 * i, "video_id": f"v{i}"}


def main(uri: str, first: int, stop: int, batch: int, go_file: str | None) -> None:
    if "MERGE_BATCH_BYTES" in os.environ:
        storage.store.MERGE_BATCH_BYTES = int(os.environ["MERGE_BATCH_BYTES"])
    store = Store.open(uri)
    if go_file:
        print("ready", flush=True)
        while not Path(go_file).exists():
            time.sleep(0.005)
    for start in range(first, stop, batch):
        store.upsert("files", [file_row(i) for i in range(start, min(start + batch, stop))])
        print(f"committed {min(start + batch, stop) - first}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5] if len(sys.argv) > 5 else None)
