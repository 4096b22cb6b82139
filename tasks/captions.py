"""Stage `captions`: each kept sample's caption, from the dataset's caption_strategy.

Recipe: the dataset's kept samples -> the fingerprint of each caption's source (a stat, not a read) ->
read only the captions whose source changed -> write `captions`; a missing, empty or undecodable
caption is a row with a reason naming the file.
"""

from __future__ import annotations

import time

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from ltx2core.config.databackend import VideoDataset
from ltx2core.data import captions as strategies
from storage.files import read_parquet_rows
from storage.sql import sql_eq
from storage.store import Store
from tasks.datasets import batches, samples_of
from tasks.progress import sink
from tasks.report import StageReport, reason_kind

BATCH_SIZE = 1024


def strategy_of(dataset: VideoDataset):
    match dataset.caption_strategy:
        case "textfile":
            return strategies.TextFile()
        case "filename":
            return strategies.FromFilename()
        case "instanceprompt":
            return strategies.InstancePrompt(dataset.instance_prompt)
        case "parquet" | "jsonl":
            p = dataset.parquet
            reader = strategies.read_jsonl if str(p.path).endswith((".jsonl", ".json")) else read_parquet_rows
            return strategies.CaptionTable(str(p.path), p.filename_column, p.caption_column, reader)
    raise ValueError(f"dataset '{dataset.id}': unknown caption_strategy {dataset.caption_strategy!r}")


def pending(store: Store, dataset: VideoDataset, strategy, force: bool = False) -> tuple[list, list]:
    """(kept sample rows, [(sample row, caption source)] whose caption is missing or stale)."""
    current = store.column_map("captions", "source_fp", where=sql_eq("dataset_id", dataset.id))
    kept = samples_of(store, dataset.id, ["sample_id", "path"], kept_only=True)
    sources = ((s, strategy.source(s["path"])) for s in kept)
    return kept, [(s, src) for s, src in sources if force or current.get(s["sample_id"]) != src.fp]


@task(name="captions", cache_policy=NO_CACHE)
def ingest_captions(store_uri: str, dataset: VideoDataset, force: bool = False) -> StageReport:
    t0 = time.perf_counter()
    store = Store.open(store_uri)
    report = StageReport("captions", scope=dataset.id)
    strategy = strategy_of(dataset)
    kept_rows, todo = pending(store, dataset, strategy, force)
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
    report.versions = store.versions(["captions"])
    report.seconds = time.perf_counter() - t0
    sink().finish(f"captions {dataset.id}", "up to date" if report.up_to_date else f"{report.done} read")
    get_run_logger().info("captions %s: %d captioned, %d without caption%s", dataset.id, report.counts["captioned"],
                          report.failed, "" if report.up_to_date else f"; {report.done} read")
    return report
