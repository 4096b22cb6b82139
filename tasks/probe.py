"""Stage `probe`: what is in each video file, keyed by the hash of its bytes.

Recipe: list the dataset folders -> drop rows of files that are gone -> for each new or changed file
(path, size, mtime), hash it and probe it unless its content is already known -> write `videos` and
`files` in batches.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from ltx2core.data.discover import FileEntry
from ltx2core.data.fingerprint import fingerprint
from ltx2core.media.pool import ProbePool, examine
from storage.store import Store
from tasks.pending import probe_work
from tasks.progress import sink
from tasks.report import StageReport, reason_kind, reporting
from tasks.shards import ONE, Shard, Spread

SHARD_SIZE = 2048  # most files per Prefect task: enough that orchestration stays a few percent
# Files per commit: a killed stage loses at most this much work (~1 s). Every commit adds a fragment that later
# upserts look through, so small commits cost a large probe dearly (256: 61 s of upserts for 100,000 files,
# 1024: 8 s; bench/upsert_bench.py, BENCHMARKS.md).
BATCH_SIZE = 1024


@task(name="probe-shard", cache_policy=NO_CACHE, retries=1)
def probe_shard(store_uri: str, shard: Shard[FileEntry], force: bool) -> dict:
    """Hash and probe one shard of files, committing every BATCH_SIZE files.

    It writes only its own `files` rows (keyed by path). Byte-identical files in two shards share a `videos`
    key: both shards write that row (the same probe), and the table's primary key keeps one."""
    entries = shard.items
    store = Store.open(store_uri)
    known = store.keys("videos")
    probed = 0
    with _examiner() as examine_all:
        results = examine_all(e.path for e in entries)
        for start in range(0, len(entries), BATCH_SIZE):
            batch = entries[start:start + BATCH_SIZE]
            files, videos = [], {}
            for entry, (digest, probe) in zip(batch, results, strict=False):
                # Unreadable as bytes (a directory, a broken link): key the error by path, so it is reported once.
                video_id = digest or "unreadable-" + fingerprint(entry.path)
                files.append({"path": entry.path, "size": entry.size, "mtime_ns": entry.mtime_ns, "video_id": video_id})
                if (force or video_id not in known) and video_id not in videos:  # one row per content
                    videos[video_id] = probe | {"video_id": video_id, "path": entry.path}
            # Videos before files: a `files` row never points at a video that is not stored.
            store.upsert("videos", list(videos.values()))
            store.upsert("files", files)
            known.update(videos)
            probed += len(videos)
            sink().advance("probe", len(batch))
    return {"hashed": len(entries), "probed": probed}


@contextmanager
def _examiner() -> Iterator[Callable[[Iterable[str]], Iterator[tuple[str | None, dict]]]]:
    """Examine files on every core (a process pool); in this process inside a daemonic process, which may
    not start children: a Dask worker under its nanny, where the cluster's worker processes are the cores."""
    if multiprocessing.current_process().daemon:
        yield lambda paths: map(examine, paths)
        return
    with ProbePool() as pool:
        yield pool.examine


def run(store_uri: str, folders: list[str], force: bool = False, spread: Spread = ONE) -> StageReport:
    """Probe new and changed files in the shards `spread` asks for (one per worker slot of a cluster)."""
    with reporting(store_uri, "probe", tables=["files", "videos"], verb="files examined") as (store, report):
        work = probe_work(store, folders, force)
        report.skipped = work.current
        sink().start("probe", len(work.todo))
        if work.gone:
            store.delete("files", work.gone)
        shards = spread.cut(work.todo, most=SHARD_SIZE)
        for result in spread.submit(shards, lambda shard: probe_shard.submit(store_uri, shard, force)):
            out = result.result()
            report.done += out["hashed"]
            report.counts["probed"] = report.counts.get("probed", 0) + out["probed"]
        _summarise(store, folders, report)
        report.counts["removed"] = len(work.gone)
    get_run_logger().info("probe: %s", _describe(report))
    return report


def _summarise(store: Store, folders: list[str], report: StageReport) -> None:
    """Files seen, distinct videos, duplicates and unusable files under the dataset folders."""
    prefixes = tuple(str(f).rstrip("/") + "/" for f in folders)
    files = [r for r in store.read("files", ["path", "video_id"]).to_pylist() if r["path"].startswith(prefixes)]
    distinct = {r["video_id"] for r in files}
    report.counts |= {"files": len(files), "videos": len(distinct), "duplicates": len(files) - len(distinct)}
    for r in store.read("videos", ["video_id", "error"], where="error IS NOT NULL").to_pylist():
        if r["video_id"] in distinct:
            report.add_reason(reason_kind("unusable file: " + r["error"]))


def _describe(report: StageReport) -> str:
    c = report.counts
    state = "up to date" if report.up_to_date else f"examined {report.done} files ({c.get('probed', 0)} probed)"
    return (f"{state}; {c['files']} files, {c['videos']} distinct videos, {c['duplicates']} duplicates, "
            f"{report.failed} unusable")
