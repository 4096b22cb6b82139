"""What a shard's parameters cost Prefect to submit: a plain list of probe entries against the same list in a
`tasks.shards.Shard` (an object Prefect does not walk for futures).

    .venv/bin/python bench/shard_submit_bench.py [--sizes 1,2048,8192] [--repeats 3]

A no-op task on prefect-dask's DaskTaskRunner (one in-process worker thread), submitted from a flow; per size and
way: the submit call (the flow's thread: what delays the next shard) and submit to result, medians of --repeats
after one warm-up submit. Prints a line each.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "WARNING")

from prefect import flow, task  # noqa: E402
from prefect.cache_policies import NO_CACHE  # noqa: E402
from prefect_dask import DaskTaskRunner  # noqa: E402

from ltx2core.data.discover import FileEntry  # noqa: E402
from tasks.shards import Shard  # noqa: E402


@task(cache_policy=NO_CACHE)
def noop(store_uri: str, shard, force: bool) -> int:
    return len(shard)


@flow(task_runner=DaskTaskRunner(cluster_kwargs={"n_workers": 1, "threads_per_worker": 1, "processes": False}))
def measure(sizes: list[int], repeats: int) -> None:
    noop.submit("s", [], False).result()  # warm-up
    for n in sizes:
        entries = [FileEntry(path=f"/data/clips/clip_{i:05d}.mp4", size=123_456 + i, mtime_ns=1_700_000_000 + i)
                   for i in range(n)]
        for way, value in (("list", entries), ("Shard", Shard(entries))):
            submit, total = [], []
            for _ in range(repeats):
                started = time.perf_counter()
                future = noop.submit("s", value, False)
                submit.append(time.perf_counter() - started)
                future.result()
                total.append(time.perf_counter() - started)
            print(f"{n:6d} entries as {way:5}: submit {1000 * statistics.median(submit):6.1f} ms, "
                  f"to result {1000 * statistics.median(total):6.1f} ms", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="1,2048,8192")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    measure([int(s) for s in args.sizes.split(",")], args.repeats)
