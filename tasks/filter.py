"""Stage `filter`: keep or reject each video (or sound file) of a dataset by its length at the dataset's frame rate.

Recipe: the dataset's videos (from `files` + `videos`) -> the rows of `samples` whose filter fingerprint
or path is stale -> judge them -> write `samples`; drop samples whose video left the folder.
"""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from ltx2core.config.databackend import VideoDataset
from ltx2core.data.frames import judge
from ltx2core.keys import filter_fingerprint, limits_of
from storage.sql import sql_in
from tasks.datasets import batches, samples_of
from tasks.pending import filter_work
from tasks.progress import sink
from tasks.report import StageReport, reason_kind, reporting

BATCH_SIZE = 2048


@task(name="filter", cache_policy=NO_CACHE)
def filter_dataset(store_uri: str, dataset: VideoDataset, force: bool = False) -> StageReport:
    with reporting(store_uri, "filter", dataset.id, tables=["samples"], verb="judged") as (store, report):
        limits, row_fp = limits_of(dataset), filter_fingerprint(dataset)
        work = filter_work(store, dataset, force)
        wanted, stale, gone = work.wanted, work.stale, work.gone
        report.skipped = len(wanted) - len(stale)
        sink().start(f"filter {dataset.id}", len(stale))

        videos = {r["video_id"]: r for r in store.read(
            "videos", ["video_id", "num_frames", "fps", "duration_s", "error"],
            where=sql_in("video_id", [wanted[sid][0] for sid in stale])).to_pylist()} if stale else {}
        for chunk in batches(stale, BATCH_SIZE):
            rows = []
            for sid in chunk:
                vid, path = wanted[sid]
                v = videos[vid]
                verdict = judge(num_frames=v["num_frames"], fps=v["fps"], error=v["error"], limits=limits,
                                duration_s=v["duration_s"])
                rows.append({"sample_id": sid, "dataset_id": dataset.id, "video_id": vid, "path": path,
                             "kept": verdict.kept, "reason": verdict.reason, "frames_at_rate": verdict.frames_at_rate,
                             "repeats": dataset.repeats, "filter_fp": row_fp})
            store.upsert("samples", rows)
            report.done += len(rows)
            sink().advance(f"filter {dataset.id}", len(rows))

        if gone:  # the video left the folder, or the clip spec changed
            store.delete("samples", gone)
        report.counts["removed"] = len(gone)
        for r in samples_of(store, dataset.id, ["kept", "reason"]):
            if not r["kept"]:
                report.add_reason(reason_kind(r["reason"]))
        report.counts["kept"] = len(wanted) - report.failed
    get_run_logger().info("filter %s: %s", dataset.id,
                          f"{report.counts['kept']} kept, {report.failed} rejected {report.reasons}; "
                          + ("up to date" if report.up_to_date else f"{report.done} judged"))
    return report
