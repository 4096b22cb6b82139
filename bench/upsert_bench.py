"""Store benchmark: what one upsert costs as a table grows within a stage, for two commit sizes.

    .venv/bin/python bench/upsert_bench.py [--rows 20000] [--batches 256,1024] [--out FILE]

Each batch size fills a fresh local store's `files` table with --rows new rows (the probe stage's rows:
path, size, mtime, video id) in commits of that many rows, as a probe shard commits, and records the
seconds of every `Store.upsert`. Every commit adds a fragment, and an upsert first looks its keys up over all
of them (to drop unchanged rows) before merging, so its cost grows with the commits before it. Prints the
cost of the first and last few commits and the total rows/s per batch size; writes
bench/results/upsert-cpu-<date>.json (or --out).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def rows(start: int, count: int) -> list[dict]:
    return [{"path": f"/data/videos/clip{i:07d}.mp4", "size": 100_000 + i, "mtime_ns": 1_700_000_000 + i,
             "video_id": f"{i:064x}"} for i in range(start, start + count)]


def fill(total: int, batch: int) -> list[float]:
    """Seconds of each upsert filling an empty `files` table with `total` rows, `batch` at a time."""
    from storage.store import Store

    with tempfile.TemporaryDirectory() as tmp:
        store = Store.open(tmp)
        seconds = []
        for start in range(0, total, batch):
            chunk = rows(start, min(batch, total - start))
            t0 = time.perf_counter()
            store.upsert("files", chunk)
            seconds.append(time.perf_counter() - t0)
        assert store.count("files") == total
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--batches", default="256,1024", help="rows per commit to compare")
    parser.add_argument("--out", help="results file (default bench/results/upsert-cpu-<date>.json)")
    args = parser.parse_args()

    results = []
    for batch in [int(b) for b in args.batches.split(",")]:
        seconds = fill(args.rows, batch)
        row = {"batch": batch, "commits": len(seconds), "total_s": round(sum(seconds), 2),
               "rows_per_s": round(args.rows / sum(seconds)),
               "first_5_ms": round(1000 * statistics.median(seconds[:5]), 1),
               "last_5_ms": round(1000 * statistics.median(seconds[-5:]), 1)}
        results.append(row)
        print(f"batch {batch:5d}: {row['commits']:4d} commits, {row['total_s']:6.2f} s, {row['rows_per_s']:6d} rows/s,"
              f" upsert {row['first_5_ms']} ms at first -> {row['last_5_ms']} ms at the end (medians of 5)", flush=True)
    result = {"date": date.today().isoformat(), "machine": f"{platform.node()} {os.cpu_count()} cores, local disk",
              "command": " ".join([".venv/bin/python bench/upsert_bench.py", *sys.argv[1:]]), "rows": args.rows,
              "results": results}
    out = Path(args.out or ROOT / "bench" / "results" / f"upsert-cpu-{result['date']}.json")
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
