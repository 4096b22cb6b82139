"""`ltx2 status`: per stage (and dataset), rows done, rows missing, rows failed, and the last error."""

from __future__ import annotations

from ltx2core.config.databackend import VideoDataset
from storage.sql import sql_eq
from storage.store import Store
from tasks import pending


def stage_status(storage: str, datasets: list[VideoDataset]) -> list[dict]:
    store = Store.open(storage)
    runs = {(r["stage"], r["scope"]): r for r in store.last_stage_runs()}
    rows = []

    def add(stage: str, scope: str, done: int, missing: int, failed: int) -> None:
        last = runs.get((stage, scope), {})
        finished = last.get("finished_at")
        rows.append({"stage": stage, "scope": scope, "done": done, "missing": missing, "failed": failed,
                     "last_run": f"{last['status']} {finished:%Y-%m-%d %H:%M:%S}" if finished else None,
                     "last_error": last.get("error")})

    folders = sorted({str(d.instance_data_dir) for d in datasets})
    probe = pending.probe_work(store, folders)
    add("probe", "*", probe.current, len(probe.todo), store.count("videos", where="error IS NOT NULL"))
    for d in datasets:
        where = sql_eq("dataset_id", d.id)
        f = pending.filter_work(store, d)
        add("filter", d.id, len(f.wanted) - len(f.stale), len(f.stale), store.count("samples", where + " AND NOT kept"))
        b = pending.bucket_work(store, d)
        add("bucket", d.id, len(b.kept) - len(b.stale), len(b.stale) + len(b.dropped), 0)
        c = pending.caption_work(store, d)
        no_caption = store.count("captions", where + " AND reason IS NOT NULL")
        add("captions", d.id, len(c.kept) - len(c.todo) - no_caption, len(c.todo), no_caption)
    return rows
