"""`ltx2 status`: per stage (and dataset), rows done, rows missing, rows failed, and the last error."""

from __future__ import annotations

from ltx2core.config.load import load_databackend
from storage.sql import sql_eq
from storage.store import Store
from tasks import bucket, captions, filter as filter_, probe


def stage_status(storage: str, config: str, databackend: str) -> list[dict]:
    datasets, _ = load_databackend(databackend)
    videos = [d for d in datasets if getattr(d, "dataset_type", None) == "video" and not d.disabled]
    store = Store.open(storage)
    runs = {(r["stage"], r["scope"]): r for r in store.last_stage_runs()}
    rows = []

    def add(stage: str, scope: str, done: int, missing: int, failed: int) -> None:
        last = runs.get((stage, scope), {})
        finished = last.get("finished_at")
        rows.append({"stage": stage, "scope": scope, "done": done, "missing": missing, "failed": failed,
                     "last_run": f"{last['status']} {finished:%Y-%m-%d %H:%M:%S}" if finished else None,
                     "last_error": last.get("error")})

    folders = sorted({str(d.instance_data_dir) for d in videos})
    work = probe.plan(store, folders)
    unusable = store.count("videos", where="error IS NOT NULL")
    add("probe", "*", work.current, len(work.todo), unusable)
    for d in videos:
        wanted, stale, _ = filter_.pending(store, d)
        rejected = store.count("samples", where=sql_eq("dataset_id", d.id) + " AND NOT kept")
        add("filter", d.id, len(wanted) - len(stale), len(stale), rejected)
        kept, stale_buckets, dropped = bucket.pending(store, d)
        add("bucket", d.id, len(kept) - len(stale_buckets), len(stale_buckets) + len(dropped), 0)
        kept, todo = captions.pending(store, d, captions.strategy_of(d))
        no_caption = store.count("captions", where=sql_eq("dataset_id", d.id) + " AND reason IS NOT NULL")
        add("captions", d.id, len(kept) - len(todo) - no_caption, len(todo), no_caption)
    return rows
