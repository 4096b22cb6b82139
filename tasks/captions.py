"""Stage `captions`: each kept sample's caption, from the dataset's caption_strategy.

Recipe: the dataset's kept samples -> the fingerprint of each caption's source (a stat, not a read) ->
read only the captions whose source changed -> write `captions`; a missing, empty or undecodable
caption is a row with a reason naming the file.
"""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from ltx2core.config.databackend import VideoDataset
from ltx2core.keys import caption_source
from storage.files import read_parquet_rows
from storage.sql import sql_eq
from tasks.datasets import batches
from tasks.pending import caption_work
from tasks.progress import sink
from tasks.report import StageReport, reason_kind, reporting

BATCH_SIZE = 1024


@task(name="captions", cache_policy=NO_CACHE)
def ingest_captions(store_uri: str, dataset: VideoDataset, force: bool = False) -> StageReport:
    with reporting(store_uri, "captions", dataset.id, tables=["captions"], verb="read") as (store, report):
        strategy = caption_source(dataset, read_parquet_rows)
        work = caption_work(store, dataset, strategy, force)
        kept_rows, todo = work.kept, work.todo
        sink().start(f"captions {dataset.id}", len(todo))
        for chunk in batches(todo, BATCH_SIZE):
            rows = []
            for s, src in chunk:
                c = strategy.read(s["path"])
                rows.append({"sample_id": s["sample_id"], "dataset_id": dataset.id, "caption": c.caption,
                             "reason": c.reason, "source": src.source, "source_fp": src.fp})
            store.upsert("captions", rows)
            report.done += len(rows)
            sink().advance(f"captions {dataset.id}", len(rows))

        kept = {s["sample_id"] for s in kept_rows}
        problems = [r["reason"] for r in store.read("captions", ["sample_id", "reason"],
                                                    where=sql_eq("dataset_id", dataset.id)).to_pylist()
                    if r["sample_id"] in kept and r["reason"]]
        for reason in problems:
            report.add_reason(reason_kind(reason))
        for reason in problems[:20]:  # name the files, so the fix is obvious from the log
            get_run_logger().warning("captions %s: %s", dataset.id, reason)
        report.skipped = len(kept) - report.done
        report.counts["captioned"] = len(kept) - report.failed
    get_run_logger().info("captions %s: %d captioned, %d without caption%s", dataset.id, report.counts["captioned"],
                          report.failed, "" if report.up_to_date else f"; {report.done} read")
    return report
