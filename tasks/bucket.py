"""Stage `bucket`: the W x H @ F each kept sample trains at, and how to cut it from its video.

Recipe: the dataset's kept samples whose bucket fingerprint is stale -> their videos' oriented sizes ->
plan each clip (ltx2core.data.buckets) -> write the bucket columns of `samples`.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from ltx2core.config.databackend import VideoDataset
from ltx2core.data.buckets import plan_bucket
from ltx2core.keys import bucket_spec
from storage.sql import sql_in
from tasks.datasets import batches, samples_of
from tasks.pending import BUCKET_COLUMNS, bucket_work
from tasks.progress import sink
from tasks.report import StageReport, reporting

BATCH_SIZE = 2048


@task(name="bucket", cache_policy=NO_CACHE)
def bucket_dataset(store_uri: str, dataset: VideoDataset, force: bool = False) -> StageReport:
    with reporting(store_uri, "bucket", dataset.id, tables=["samples"], verb="planned") as (store, report):
        spec = bucket_spec(dataset)
        work = bucket_work(store, dataset, force)
        kept, stale, dropped = work.kept, work.stale, work.dropped
        report.skipped = len(kept) - len(stale)
        sink().start(f"bucket {dataset.id}", len(stale))
        if dropped:  # a sample the filter now rejects has no bucket
            store.update("samples", [{"sample_id": r["sample_id"]} | dict.fromkeys(BUCKET_COLUMNS) for r in dropped])
            report.done += len(dropped)

        sizes = {r["video_id"]: (r["width"], r["height"]) for r in store.read(
            "videos", ["video_id", "width", "height"], where=sql_in("video_id", [r["video_id"] for r in stale])
        ).to_pylist()} if stale else {}
        for chunk in batches(stale, BATCH_SIZE):
            for row in chunk:
                width, height = sizes[row["video_id"]]
                if width is None:  # a sound file of an audio-only dataset: its zero video has the dataset's square
                    width = height = 1
                row.update(asdict(plan_bucket(width, height, row["frames_at_rate"], spec)), bucket_fp=spec.fingerprint)
            store.update("samples", chunk)
            report.done += len(chunk)
            sink().advance(f"bucket {dataset.id}", len(chunk))

        # Clips per bucket; `repeats` shows each one 1 + repeats times an epoch, which the train stage counts.
        buckets = Counter(r["bucket"] for r in samples_of(store, dataset.id, ["bucket"], kept_only=True))
        report.counts = dict(sorted(buckets.items()))
    get_run_logger().info("bucket %s: clips per bucket: %s", dataset.id,
                          ", ".join(f"{b}: {n}" for b, n in report.counts.items()))
    return report
